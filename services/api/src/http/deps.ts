import type { Db } from "@rtb/db";
import type { Broker, Duration, Logger, Registry, Tracing } from "@rtb/runtime";
import type { Dispatcher } from "../dispatcher.ts";
import type { Scheduler } from "../scheduler.ts";
import type { CancelAnnouncer } from "../cancel-announcer.ts";
import type { ApiStats } from "../stats.ts";
import type { AuthOptions } from "./auth.ts";
import type { Duties } from "../duties.ts";
import type { CallbackUrlCheck } from "@rtb/protocol";

/**
 * What the HTTP surface is given: the route modules, the event hub and the state builder
 * take what they need from here, and app.ts only assembles them (so no route module
 * imports the file that imports it).
 */
export interface AppSettings {
  /** RTB_API_MAX_BATCH */
  maxBatch: number;
  /** RTB_API_MAX_BODY_BYTES */
  maxBodyBytes: number;
  /** The largest payload one broker message can carry (maxPayloadBytes of RTB_BROKER_MAX_MESSAGE_BYTES) */
  maxPayloadBytes: number;
  /** RTB_MAX_ATTEMPTS: for units enqueued without maxAttempts */
  maxAttempts: number;
  /** RTB_DISPATCH_TIMEOUT_MS, RTB_PROCESSING_TIMEOUT_MS: what `stuck` means */
  dispatchTimeoutMs: number;
  processingTimeoutMs: number;
  /** RTB_RETENTION: finished units older than this are pruned (GET / shows it) */
  retention: Duration;
  /** For GET /asyncapi.json: the first of RTB_BROKER_HOST (`host:port`), RTB_BROKER_VHOST, RTB_BROKER_MAX_MESSAGE_BYTES */
  broker: { host: string; vhost: string; maxMessageBytes: number };
  /** What a callbackUrl must be (RTB_WEBHOOK_ALLOWED_HOSTS, callback-policy.ts); absent: callbacks are off. */
  callbackUrl?: CallbackUrlCheck;
}

export interface AppDeps {
  auth: AuthOptions;
  db: Db;
  broker: Broker;
  dispatcher: Dispatcher;
  /** Told of every schedule change, so its timer is re-armed at once. */
  scheduler: Pick<Scheduler, "refresh">;
  /** Tells the agents of cancelled attempts (the control exchange). */
  cancels: CancelAnnouncer;
  stats: ApiStats;
  /** This api's share of the work done once across replicas (GET / shows who holds what). */
  duties: Pick<Duties, "holder" | "held">;
  /** This api's metrics registry (GET /metrics). */
  metrics: Registry;
  logger: Logger;
  maxQueue: number;
  settings: AppSettings;
  /** Aborted when the api starts stopping: long-lived responses (GET /events) end then. */
  closing: AbortSignal;
  /** How long the inbox has been unable to apply reports (InboxConsumer.failingForMs). */
  inboxFailingForMs?: () => number;
  /** Where enqueue spans go (a unit's trace starts there); default: not traced. */
  tracing?: Tracing;
}
