import { serve, type ServerType } from "@hono/node-server";
import { createDb, migrateToLatest, seedIfEmpty, waitForDatabase, type DbHandle } from "@rtb/db";
import { connectBrokerFromConfig, formatHostPort, maxPayloadBytes, createPublisher, defaultInstanceId, noTracing, startService, within, type Broker, type Logger, type Tracing } from "@rtb/runtime";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { ApiConfig } from "./config.ts";
import { createDispatcher, type Dispatcher } from "./dispatcher.ts";
import { createApp } from "./http/app.ts";
import { startInboxConsumer } from "./inbox-consumer.ts";
import { createCancelAnnouncer, type CancelAnnouncer } from "./cancel-announcer.ts";
import { startReconciler, type Reconciler } from "./reconciler.ts";
import { startScheduler, type Scheduler } from "./scheduler.ts";
import { startRetention, type Retention } from "./retention.ts";
import { createStats, type ApiStats } from "./stats.ts";
import { startDuties, type Duties } from "./duties.ts";
import { collectApiMetrics, createApiMetrics, type ApiMetrics } from "./api-metrics.ts";
import { startCallbackDeliverer, type CallbackDeliverer } from "./callback-deliverer.ts";
import { callbackUrlProblem } from "./callback-policy.ts";

export interface ApiService {
  app: OpenAPIHono;
  database: DbHandle;
  broker: Broker;
  dispatcher: Dispatcher;
  scheduler: Scheduler;
  /** Announces cancels to the agents (the control exchange). */
  cancels: CancelAnnouncer;
  reconciler: Reconciler;
  /** The duties done once across api replicas that this api holds (duties.ts). */
  duties: Duties;
  /** The retention duty's passes (RTB_RETENTION). */
  retention: Retention;
  stats: ApiStats;
  /** This api's own metrics (GET /metrics serves its registry). */
  metrics: ApiMetrics;
  /** The listening address, when `listen` was asked for. */
  address: { host: string; port: number } | null;
  /** Stops intake first, then drains, then closes the broker and the database. */
  stop(): Promise<void>;
}

/**
 * Build and start the api: database (wait, migrate, seed), broker, dispatcher, inbox consumer,
 * reconciler, HTTP. Used by main.ts and by the tests, with the same parts.
 */
export async function startApiService(config: ApiConfig, logger: Logger, opts: { listen?: boolean; signal?: AbortSignal; tracing?: Tracing } = {}): Promise<ApiService> {
  const tracing = opts.tracing ?? noTracing;
  const apiId = config.RTB_API_ID ?? defaultInstanceId("api");
  const startedAt = new Date();
  // Tells open streams (GET /events) to end, so closing the HTTP server does not wait for them.
  const closing = new AbortController();
  // Stopped in reverse: intake first, then the batches in hand, then the broker and the database.
  return startService(logger, config.RTB_SHUTDOWN_TIMEOUT_MS, async (parts) => {
    const database = createDb(config, logger);
    parts.add("database", (left) => within(database.close(), left()));
    await waitForDatabase(database, config, logger, { deadlineMs: config.RTB_CONNECT_TIMEOUT_MS, signal: opts.signal });
    const migrated = await migrateToLatest(database.db);
    if (migrated.length > 0) logger.info({ migrations: migrated.map((m) => m.migrationName) }, "database migrated");
    const seeded = await seedIfEmpty(database.db, config.RTB_SEED_UNITS, config.RTB_MAX_ATTEMPTS);
    if (seeded > 0) logger.info({ units: seeded }, "backlog was empty: seeded it (RTB_SEED_UNITS)");

    const broker = await connectBrokerFromConfig(config, logger);
    const topology = broker.topology;
    parts.add("broker", (left) => within(broker.close(), left()));

    // Claimed before the parts that do the duties start (so a lone api holds them from its
    // first tick), and given up after those parts stopped, before the database closes.
    let scheduler: Scheduler | undefined;
    let retention: Retention | undefined;
    const duties = await startDuties({
      db: database.db,
      logger,
      holder: apiId,
      leaseMs: config.RTB_DUTY_LEASE_MS,
      onGained: (gained) => {
        if (gained.includes("schedules")) void scheduler?.refresh("duty taken");
        if (gained.includes("retention")) void retention?.pass();
      },
    });
    parts.add("duties", (left) => within(duties.stop(), left(1_000)));

    const stats = createStats();
    const metrics = createApiMetrics();
    collectApiMetrics(metrics, {
      db: database.db,
      broker,
      stats,
      statements: () => database.statements,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      retentionMs: config.RTB_RETENTION.ms,
      logger,
      duties,
    });
    const publisher = await createPublisher(broker, "outbox", logger, { metrics, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES });
    parts.add("publisher", (left) => within(publisher.drain(), left()));
    const dispatcher = createDispatcher({
      db: database.db,
      publisher,
      topology,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES,
      stats,
      metrics,
      logger,
      folds: () => duties.holds("tallies"),
      tracing,
    });
    parts.add("dispatcher", (left) => within(dispatcher.stop(), left(500)));
    const cancels = createCancelAnnouncer({ publisher, topology, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES, logger });
    parts.add("cancel announcements", (left) => within(cancels.stop(), left(500)));

    let callbacks: CallbackDeliverer | undefined;
    const inbox = await startInboxConsumer({
      db: database.db,
      broker,
      stats,
      metrics,
      logger,
      prefetch: config.RTB_INBOX_PREFETCH,
      batchMs: config.RTB_INBOX_BATCH_MS,
      retryBaseMs: config.RTB_RETRY_BACKOFF_MS,
      retryMaxMs: config.RTB_RETRY_BACKOFF_MAX_MS,
      maxAttempts: config.RTB_MAX_ATTEMPTS,
      onFreed: () => {
        dispatcher.trigger("inbox batch");
        callbacks?.wake();
      },
      // An agent runs a cancelled attempt: it did not hear the cancel (started or reconnected since).
      onCancelledRunning: (units) => void cancels.announce(units, "a cancelled attempt was reported running"),
      tracing,
    });
    // Most of the budget: the batch in hand is applied and acked, or handed back.
    parts.add("inbox", (left) => inbox.stop(left(1_500)));

    // Completion callbacks. Started with callbacks off too (no allowed host; the config requires
    // a secret with one): deliveries written for groups that kept a URL are then given up after
    // their retries, not left pending for ever, and rtb_callbacks_pending is served either way.
    // Stopped before the inbox: a request cut off is sent again once its claim's lease ends.
    const allowed = config.RTB_WEBHOOK_ALLOWED_HOSTS;
    const deliverer = startCallbackDeliverer({
      db: database.db,
      logger,
      registry: metrics.registry,
      settings: {
        allowed,
        secret: config.RTB_WEBHOOK_SECRET,
        maxAttempts: config.RTB_WEBHOOK_MAX_ATTEMPTS,
        timeoutMs: config.RTB_WEBHOOK_TIMEOUT_MS,
        concurrency: config.RTB_WEBHOOK_CONCURRENCY,
        hostConcurrency: config.RTB_WEBHOOK_HOST_CONCURRENCY,
        backoffMs: config.RTB_WEBHOOK_BACKOFF_MS,
        backoffMaxMs: config.RTB_WEBHOOK_BACKOFF_MAX_MS,
      },
    });
    callbacks = deliverer;
    parts.add("callbacks", (left) => within(deliverer.stop(), left(1_000)));

    // Stopped before the dispatcher it triggers; its first look fires what came due while no api ran.
    scheduler = startScheduler({ db: database.db, dispatcher, stats, logger, graceMs: config.RTB_SCHEDULE_GRACE_MS, duties, tracing });
    parts.add("scheduler", (left) => within(scheduler!.stop(), left(500)));

    const reconciler = startReconciler({
      db: database.db,
      broker,
      dispatcher,
      stats,
      logger,
      cron: config.RTB_RECONCILE_CRON,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
      processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
      noAgentTimeoutMs: config.RTB_NO_AGENT_TIMEOUT_MS,
      retryBaseMs: config.RTB_RETRY_BACKOFF_MS,
      retryMaxMs: config.RTB_RETRY_BACKOFF_MAX_MS,
      inboxHealthyForMs: () => inbox.healthyForMs(),
      scheduler,
      duties,
      self: () => ({ service: "api", id: apiId, startedAt, deadLettered: Object.values(stats.deadLettered).reduce((a, b) => a + b, 0) }),
    });
    parts.add("reconciler", (left) => within(reconciler.stop(), left(2_000)));
    // Its own timer, not the reconciler's tick: a pass with much to prune takes many batches.
    retention = startRetention({ db: database.db, logger, stats, retention: config.RTB_RETENTION, apiId, duties });
    parts.add("retention", (left) => within(retention!.stop(), left(2_000)));

    const app = createApp({
      db: database.db,
      broker,
      dispatcher,
      scheduler,
      cancels,
      stats,
      duties,
      metrics: metrics.registry,
      logger,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      auth: { token: config.RTB_API_TOKEN, reads: config.RTB_API_TOKEN_READS },
      closing: closing.signal,
      inboxFailingForMs: () => inbox.failingForMs(),
      tracing,
      settings: {
        maxBatch: config.RTB_API_MAX_BATCH,
        maxBodyBytes: config.RTB_API_MAX_BODY_BYTES,
        maxPayloadBytes: maxPayloadBytes(config.RTB_BROKER_MAX_MESSAGE_BYTES),
        maxAttempts: config.RTB_MAX_ATTEMPTS,
        dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
        processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
        retention: config.RTB_RETENTION,
        broker: { host: formatHostPort(config.RTB_BROKER_HOST[0]!), vhost: config.RTB_BROKER_VHOST, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES },
        ...(allowed.length > 0 ? { callbackUrl: (url: string) => callbackUrlProblem(allowed, url) } : {}),
      },
    });
    let address: ApiService["address"] = null;
    if (opts.listen) {
      const server = await listen(app, config.RTB_API_HOST.host, config.RTB_API_HOST.port);
      address = { host: config.RTB_API_HOST.host, port: (server.address() as { port: number }).port };
      parts.add("http server", (left) => within(closeServer(server), left(2_000)));
      logger.info({ url: `http://${address.host === "0.0.0.0" ? "localhost" : address.host}:${address.port}/` }, "api listening");
    }
    parts.add("streams", () => closing.abort());
    // Dispatching may already be on (it survives restarts): resume.
    dispatcher.trigger("start");
    void scheduler.refresh("start");
    return { app, database, broker, dispatcher, scheduler, cancels, reconciler, duties, retention, stats, metrics, address };
  });
}

function listen(app: OpenAPIHono, hostname: string, port: number): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname, port }, () => resolve(server));
    server.once("error", (err: Error) =>
      reject(new Error(`cannot listen on ${hostname}:${port} (RTB_API_HOST): ${err.message}`, { cause: err })),
    );
  });
}

function closeServer(server: ServerType): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    // Idle keep-alive connections would hold close() open.
    if ("closeIdleConnections" in server) server.closeIdleConnections();
  });
}
