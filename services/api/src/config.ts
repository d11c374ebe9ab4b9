import { validate as validCron } from "node-cron";
import { z } from "zod";
import { bool, brokerConfig, duration, hostPort, int, loadConfig, logConfig, secret, type Env } from "@rtb/runtime";
import { dbConfig } from "@rtb/db";
import { allowedHostsSetting, webhookSecretProblem } from "./callback-policy.ts";

export const apiConfigSchema = z.object({
  ...dbConfig,
  ...brokerConfig,
  ...logConfig,
  RTB_API_HOST: hostPort("0.0.0.0:8080", 8080, { anyPort: true }),
  RTB_API_ID: z.string().min(1).max(200).optional(),
  RTB_API_TOKEN: secret(z.string().min(16, { message: "expected a token of at least 16 characters (e.g. openssl rand -hex 32)" }).max(1_000, { message: "expected a token of at most 1000 characters" }).optional()),
  RTB_API_TOKEN_READS: bool(false),
  RTB_API_MAX_BATCH: int(10_000, { min: 1, max: 100_000 }),
  RTB_API_MAX_BODY_BYTES: int(16 * 1024 * 1024, { min: 1024, max: 1024 * 1024 * 1024 }),
  RTB_BROADCAST_MAX_QUEUE: int(50, { min: 1, max: 100_000 }),
  RTB_SEED_UNITS: int(100, { min: 0, max: 10_000_000 }),
  RTB_MAX_ATTEMPTS: int(3, { min: 1, max: 1000 }),
  RTB_RETRY_BACKOFF_MS: int(1_000, { min: 0 }),
  RTB_RETRY_BACKOFF_MAX_MS: int(60_000, { min: 0 }),
  RTB_DISPATCH_TIMEOUT_MS: int(30_000, { min: 100 }),
  RTB_PROCESSING_TIMEOUT_MS: int(300_000, { min: 100 }),
  /** How long a unit may wait for an agent of its kind before the reconciler cancels it; 0: forever. */
  RTB_NO_AGENT_TIMEOUT_MS: int(86_400_000, { min: 0 }),
  /**
   * Finished units (and their timelines) older than this are deleted (retention.ts); 0 keeps
   * everything. 7 days: long enough to look into last week's failures, and what pg-boss keeps.
   */
  RTB_RETENTION: duration("7d"),
  RTB_RECONCILE_CRON: z
    .string()
    .default("*/5 * * * * *")
    .refine((v) => validCron(v), { message: "expected a cron expression (5 or 6 fields, e.g. */5 * * * * * for every 5 seconds)" }),
  /** An occurrence fired later than this is missed: its schedule's policy (skip, once, each:N) decides. */
  /**
   * How long an api's lease on a duty done once across replicas (the reconciler, schedules,
   * retention, the tally folds) lasts unless renewed (every third of it): when the holder dies,
   * another api takes its duties within about this long.
   */
  RTB_DUTY_LEASE_MS: int(10_000, { min: 300, max: 600_000 }),
  RTB_SCHEDULE_GRACE_MS: int(60_000, { min: 0, max: 86_400_000 }),
  RTB_INBOX_PREFETCH: int(500, { min: 1, max: 65_535 }),
  RTB_INBOX_BATCH_MS: int(0, { min: 0, max: 10_000 }),
  RTB_SHUTDOWN_TIMEOUT_MS: int(10_000, { min: 0 }),
  /** Completion callbacks (callback-policy.ts, callback-deliverer.ts): the hosts they may go to; empty: off. */
  RTB_WEBHOOK_ALLOWED_HOSTS: allowedHostsSetting,
  /** The Standard Webhooks signing key (whsec_ + base64); required, and checked, when RTB_WEBHOOK_ALLOWED_HOSTS is set. */
  RTB_WEBHOOK_SECRET: secret(z.string().optional()),
  /** Attempts of one delivery before it is given up (the first included). */
  RTB_WEBHOOK_MAX_ATTEMPTS: int(10, { min: 1, max: 100 }),
  /** One request's limit: connecting, sending and the answer's head. */
  RTB_WEBHOOK_TIMEOUT_MS: int(10_000, { min: 100, max: 300_000 }),
  /** Requests this api has open at once. */
  RTB_WEBHOOK_CONCURRENCY: int(8, { min: 1, max: 1_000 }),
  /** Of those, at most this many to one host: a slow receiver leaves the other slots to the rest. */
  RTB_WEBHOOK_HOST_CONCURRENCY: int(4, { min: 1, max: 1_000 }),
  /** The wait after a first failed attempt, doubled after each (with jitter), up to RTB_WEBHOOK_BACKOFF_MAX_MS. */
  RTB_WEBHOOK_BACKOFF_MS: int(5_000, { min: 10, max: 3_600_000 }),
  RTB_WEBHOOK_BACKOFF_MAX_MS: int(3_600_000, { min: 10, max: 86_400_000 }),
}).superRefine((c, ctx) => {
  // Refused at start rather than per request: an api that takes callbacks it cannot sign would
  // only find out when the first unit ends. Unused while callbacks are off (no host allowed).
  if (c.RTB_WEBHOOK_ALLOWED_HOSTS.length === 0) return;
  const problem =
    c.RTB_WEBHOOK_SECRET === undefined
      ? 'required when RTB_WEBHOOK_ALLOWED_HOSTS is set: callbacks are signed (make one with: echo "whsec_$(openssl rand -base64 32)")'
      : webhookSecretProblem(c.RTB_WEBHOOK_SECRET);
  if (problem) ctx.addIssue({ code: "custom", path: ["RTB_WEBHOOK_SECRET"], message: problem });
});

export type ApiConfig = z.infer<typeof apiConfigSchema>;

export const loadApiConfig = (env: Env): ApiConfig => loadConfig(apiConfigSchema, env);
