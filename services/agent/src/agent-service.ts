import { createPublisher, defaultInstanceId, serveMetricsAndConnect, startControlListener, startHeartbeat, startService, within, type BrokerSettings, type HostPort, type ListenAt, type Logger, type Tracing } from "@rtb/runtime";
import { MAX_AGENT_KINDS } from "@rtb/protocol";
import type { Handler } from "./handler.ts";
import { createAgentMetrics, type AgentMetrics } from "./agent-metrics.ts";
import { createAgentStats, type AgentStats } from "./agent-stats.ts";
import { startWorker } from "./worker.ts";
import { createCancellations } from "./cancellations.ts";

/** What an agent needs besides its handlers; AgentConfig satisfies it. */
export interface AgentSettings extends BrokerSettings {
  RTB_AGENT_ID?: string | undefined;
  RTB_AGENT_CONCURRENCY: number;
  RTB_AGENT_TIMEOUT_MS: number;
  RTB_SHUTDOWN_TIMEOUT_MS: number;
  /** Default 5000. */
  RTB_HEARTBEAT_MS?: number;
  /** Serve GET /metrics here (metricsAddress); unset: no listener. */
  RTB_METRICS_PORT?: ListenAt | undefined;
  RTB_API_HOST?: HostPort | undefined;
}

export interface AgentService {
  id: string;
  stats: AgentStats;
  metrics: AgentMetrics;
  /** GET /metrics, when RTB_METRICS_PORT is set. */
  metricsUrl: string | null;
  stop(): Promise<void>;
}

/**
 * Start an agent serving `handlers` (kind -> handler). This is also the library entry for
 * writing your own agents: `startAgent(loadAgentConfig(process.env), logger, new Map([...]))`.
 * `opts.tracing` (startTracing of @rtb/runtime): spans of each unit's receive and handler; default none.
 */
export async function startAgent(config: AgentSettings, logger: Logger, handlers: ReadonlyMap<string, Handler>, opts: { tracing?: Tracing } = {}): Promise<AgentService> {
  if (handlers.size > MAX_AGENT_KINDS) throw new Error(`an agent serves at most ${MAX_AGENT_KINDS} kinds (its heartbeat names them all); got ${handlers.size} handlers: run several agents`);
  const id = config.RTB_AGENT_ID ?? defaultInstanceId("agent");
  // Every line this agent logs (and its handlers, through job.logger) carries its id.
  const log = logger.child({ agentId: id });
  const stats = createAgentStats();
  const metrics = createAgentMetrics(stats, [...handlers.keys()]);
  // Stopped in reverse: jobs in hand finish (or are handed back), then confirms, the connection, the metrics listener.
  const agent = await startService(log, config.RTB_SHUTDOWN_TIMEOUT_MS, async (parts) => {
    const { broker, metricsServer, ready } = await serveMetricsAndConnect(config, metrics, log, parts);
    const publisher = await createPublisher(broker, "agent", log, { metrics, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES });
    parts.add("publisher", (left) => within(publisher.drain(), left(500)));
    const heartbeat = startHeartbeat({ service: "agent", id, publisher, topology: broker.topology, everyMs: config.RTB_HEARTBEAT_MS ?? 5_000, logger: log });
    parts.add("heartbeat", () => heartbeat.stop());
    // Listening before consuming jobs: a cancel heard first drops its job when it arrives.
    const cancellations = createCancellations();
    const control = await startControlListener({ broker, logger: log, onMessage: (m) => cancellations.cancel(m.units) });
    parts.add("control listener", () => control.stop());
    const worker = await startWorker({
      broker,
      publisher,
      logger: log,
      heartbeat,
      handlers,
      concurrency: config.RTB_AGENT_CONCURRENCY,
      timeoutMs: config.RTB_AGENT_TIMEOUT_MS,
      maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES,
      stats,
      cancellations,
      metrics,
      tracing: opts.tracing,
    });
    parts.add("worker", (left) => worker.stop(left(1_000)));
    // Its queues exist and are consumed: units of these kinds waiting for an agent may come.
    heartbeat.announceKinds([...handlers.keys()]);
    ready();
    return { metricsUrl: metricsServer?.url ?? null };
  });
  log.info({ kinds: [...handlers.keys()], concurrency: config.RTB_AGENT_CONCURRENCY }, "agent ready");
  return { id, stats, metrics, ...agent };
}
