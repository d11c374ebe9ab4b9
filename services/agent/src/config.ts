import { z } from "zod";
import { brokerConfig, heartbeatConfig, int, loadConfig, logConfig, metricsConfig, kindList, ratio, type Env } from "@rtb/runtime";

export const agentConfigSchema = z
  .object({
    ...brokerConfig,
    ...logConfig,
    ...heartbeatConfig,
    ...metricsConfig,
    RTB_AGENT_ID: z.string().min(1).max(200).optional(),
    RTB_AGENT_KINDS: kindList("simulate"),
    RTB_AGENT_CONCURRENCY: int(4, { min: 1, max: 10_000 }),
    RTB_AGENT_TIMEOUT_MS: int(30_000, { min: 1 }),
    RTB_AGENT_ERROR_RATE: ratio(0.1),
    RTB_AGENT_WORK_MIN_MS: int(200, { min: 0 }),
    RTB_AGENT_WORK_MAX_MS: int(1_000, { min: 0 }),
    RTB_SHUTDOWN_TIMEOUT_MS: int(10_000, { min: 0 }),
    // The api's setting, read here only to check against when it is in the agent's environment
    // too (a shared .env, compose): a handler allowed to run longer than the api lets an
    // attempt stay `processing` would be expired while it runs, and run twice.
    RTB_PROCESSING_TIMEOUT_MS: z.coerce.number({ message: "expected an integer" }).int({ message: "expected an integer" }).min(100).optional(),
  })
  .refine((c) => c.RTB_AGENT_WORK_MAX_MS >= c.RTB_AGENT_WORK_MIN_MS, {
    path: ["RTB_AGENT_WORK_MAX_MS"],
    message: "expected a value >= RTB_AGENT_WORK_MIN_MS",
  })
  .refine((c) => c.RTB_PROCESSING_TIMEOUT_MS === undefined || c.RTB_AGENT_TIMEOUT_MS < c.RTB_PROCESSING_TIMEOUT_MS, {
    path: ["RTB_AGENT_TIMEOUT_MS"],
    message: "expected a value below RTB_PROCESSING_TIMEOUT_MS (the api expires an attempt processing that long, and it would run again)",
  });

export type AgentConfig = z.infer<typeof agentConfigSchema>;
export const loadAgentConfig = (env: Env): AgentConfig => loadConfig(agentConfigSchema, env);
