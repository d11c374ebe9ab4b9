import { z } from "zod";
import { MAX_JOB_UNITS } from "@rtb/protocol";
import { brokerConfig, heartbeatConfig, int, loadConfig, logConfig, metricsConfig, type Env } from "@rtb/runtime";

export const leaderConfigSchema = z.object({
  ...brokerConfig,
  ...logConfig,
  ...heartbeatConfig,
  ...metricsConfig,
  RTB_LEADER_ID: z.string().min(1).max(200).optional(),
  RTB_LEADER_PREFETCH: int(20, { min: 1, max: 65_535 }),
  // The most units in one job message (job-size.ts); 1 sends every unit alone, as before.
  RTB_JOB_MAX_UNITS: int(50, { min: 1, max: MAX_JOB_UNITS }),
  RTB_TRACKER_REFRESH_MS: int(1_000, { min: 100 }),
  RTB_SHUTDOWN_TIMEOUT_MS: int(10_000, { min: 0 }),
});

export type LeaderConfig = z.infer<typeof leaderConfigSchema>;
export const loadLeaderConfig = (env: Env): LeaderConfig => loadConfig(leaderConfigSchema, env);
