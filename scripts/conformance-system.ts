/**
 * The real system the conformance suite (conformance-cases.ts) drives an agent through: an api
 * and a leader of this checkout as processes, on a database and broker names of the run's own
 * (scratchPlace), the agent under test started from its command line with the RTB_* settings an
 * agent needs, and a broker connection of the suite's own to look at (and feed) the queues.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect, type Channel, type ChannelModel, type ConfirmChannel, type GetMessage } from "amqplib";
import { jobUnits, parseJob, type AnyJobMessage, type JobUnit } from "@rtb/protocol";
import { brokerUrl, createTopology, type Topology } from "@rtb/runtime";
import { benchServiceEnv, readyWithin, startService, stopAll, type ServiceProc } from "./bench-services.ts";
import { scratchPlace } from "./scratch-place.ts";
// Plain node:http (no test runner): the collector the api and the leader export their spans to.
import { startOtlpReceiver, type OtlpReceiver } from "../test/support/otlp-receiver.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
export const KIND = "conformance";

/** The agent settings the suite runs with: short, so a whole run takes seconds. */
export const AGENT_SETTINGS = {
  RTB_AGENT_KINDS: KIND,
  RTB_AGENT_CONCURRENCY: "2",
  RTB_AGENT_TIMEOUT_MS: "15000",
  RTB_SHUTDOWN_TIMEOUT_MS: "1000",
  RTB_HEARTBEAT_MS: "500",
  RTB_LOG_LEVEL: "info",
  RTB_LOG_FORMAT: "json",
} as const;

/**
 * A command line as a shell splits it into words (single and double quotes, backslash escapes),
 * with leading `NAME=value` words as environment: `PYTHONPATH=python python3 agent.py`. No
 * pipes or redirections (use `sh -c 'exec ...'` for those): the suite signals the process it
 * started, which must be the agent itself.
 */
export function parseCommandLine(line: string): { env: Record<string, string>; argv: string[] } {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new Error(`--agent: unclosed ${c} in ${JSON.stringify(line)}`);
      word = (word ?? "") + line.slice(i + 1, end).replace(c === '"' ? /\\(["\\$`])/g : /$^/, "$1");
      i = end;
    } else if (c === "\\" && i + 1 < line.length) word = (word ?? "") + line[++i];
    else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else word = (word ?? "") + c;
  }
  if (word !== null) words.push(word);
  const env: Record<string, string> = {};
  while (words.length > 0 && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0]!)) {
    const w = words.shift()!;
    env[w.slice(0, w.indexOf("="))] = w.slice(w.indexOf("=") + 1);
  }
  if (words.length === 0) throw new Error("--agent: expected a command line (for example --agent \"python3 agent.py\")");
  return { env, argv: words };
}

export interface AgentProc {
  readonly id: string;
  readonly child: ChildProcess;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  output(): string;
}

export type System = Awaited<ReturnType<typeof startConformanceSystem>>;

export async function startConformanceSystem(opts: { agent: string; cwd?: string }) {
  const command = parseCommandLine(opts.agent);
  const place = scratchPlace("conformance");
  const { servers } = place;
  const topology: Topology = createTopology({ prefix: place.prefix, box: servers.RTB_BROKER_BOX, queueType: servers.RTB_BROKER_QUEUE_TYPE, deliveryLimit: servers.RTB_BROKER_DELIVERY_LIMIT });
  const env = benchServiceEnv({ dbName: place.dbName, prefix: place.prefix, maxQueue: 50 }, {
    RTB_RETRY_BACKOFF_MS: "100",
    RTB_RETRY_BACKOFF_MAX_MS: "200",
    RTB_MAX_ATTEMPTS: "3",
    RTB_TRACKER_REFRESH_MS: "200",
    RTB_HEARTBEAT_MS: "500",
    RTB_SHUTDOWN_TIMEOUT_MS: "3000",
    RTB_BROKER_QUEUE_TYPE: servers.RTB_BROKER_QUEUE_TYPE,
    RTB_LOG_LEVEL: "warn",
  });
  const services: ServiceProc[] = [];
  const agents: AgentProc[] = [];
  let conn: ChannelModel | null = null;
  let otlp: OtlpReceiver | null = null;
  async function stop(): Promise<void> {
    for (const a of agents) if (a.running()) a.child.kill("SIGKILL");
    await Promise.all(agents.map((a) => a.exit));
    await stopAll(services, 5_000);
    await conn?.close().catch(() => {});
    await otlp?.close().catch(() => {});
    await place.drop([KIND]);
  }
  try {
    // The api and the leader trace (spans out within 200 ms): the api's `apply` span of a report
    // is a child of the report's traceparent, which is how the suite sees that the agent echoed it.
    otlp = await startOtlpReceiver();
    Object.assign(env, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: "200" });
    const api = startService(root, "api", "api", { ...env, RTB_API_ID: "conformance-api", RTB_LOG_LEVEL: "info" });
    services.push(api);
    const ready = await readyWithin(api, 60_000);
    const url = String(ready.url).replace(/\/$/, "");
    const leader = startService(root, "leader", "leader", { ...env, RTB_LEADER_ID: "conformance-leader", RTB_LOG_LEVEL: "info" });
    services.push(leader);
    await readyWithin(leader, 60_000);
    conn = await connect(brokerUrl(servers));
    conn.on("error", () => {});
    const pub: ConfirmChannel = await conn.createConfirmChannel();
    const look: Channel = await conn.createChannel();
    look.on("error", () => {});

    const http = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<any> => {
      const res = await fetch(url + path, { method, signal: AbortSignal.timeout(10_000), ...(body === undefined ? { headers } : { body: JSON.stringify(body), headers: { "content-type": "application/json", ...headers } }) });
      const json = await res.json();
      if (res.status >= 300) throw new Error(`${method} ${path} answered ${res.status}: ${JSON.stringify(json)}`);
      return json;
    };
    await http("POST", "/go");
    let started = 0;

    return {
      url,
      topology,
      get: (path: string) => http("GET", path),
      post: (path: string, body?: unknown) => http("POST", path, body),
      /** POST /units (in the producer's trace `traceparent`, if given): the ids of the units made, in order. */
      async enqueue(payloads: unknown[], traceparent?: string): Promise<number[]> {
        const answer = await http("POST", "/units", payloads.map((payload) => ({ kind: KIND, payload })), traceparent ? { traceparent } : {});
        return answer.units.map((u: { id: number }) => u.id);
      },
      /** The spans the api and the leader exported so far. */
      spans: () => otlp!.spans,
      /** Start the agent under test (its own id each time), with the suite's settings and `extra`. */
      startAgent(extra: Record<string, string> = {}): AgentProc {
        const id = `conformance-agent-${++started}`;
        const agentEnv = {
          ...(process.env as Record<string, string>),
          RTB_BROKER_HOST: env.RTB_BROKER_HOST ?? `${servers.RTB_BROKER_HOST[0]!.host}:${servers.RTB_BROKER_HOST[0]!.port}`,
          RTB_BROKER_USER: servers.RTB_BROKER_USER,
          RTB_BROKER_PASSWORD: servers.RTB_BROKER_PASSWORD,
          RTB_BROKER_VHOST: servers.RTB_BROKER_VHOST,
          RTB_BROKER_PREFIX: place.prefix,
          RTB_BROKER_QUEUE_TYPE: servers.RTB_BROKER_QUEUE_TYPE,
          RTB_BROKER_DELIVERY_LIMIT: String(servers.RTB_BROKER_DELIVERY_LIMIT),
          ...AGENT_SETTINGS,
          RTB_AGENT_ID: id,
          ...command.env,
          ...extra,
        };
        const child = spawn(command.argv[0]!, command.argv.slice(1), { cwd: opts.cwd ?? process.cwd(), env: agentEnv, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        let exited = false;
        child.stdout!.on("data", (d) => (output = (output + d).slice(-20_000)));
        child.stderr!.on("data", (d) => (output = (output + d).slice(-20_000)));
        const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
          child.on("error", (err) => {
            output += `\ncannot start ${command.argv[0]}: ${err.message}`;
            exited = true;
            resolve({ code: null, signal: null });
          });
          child.on("exit", (code, signal) => {
            exited = true;
            resolve({ code, signal });
          });
        });
        const agent: AgentProc = { id, child, exit, running: () => !exited, output: () => output };
        agents.push(agent);
        return agent;
      },
      /** Ready messages in a queue of the run. */
      async depth(queue: string): Promise<number> {
        return (await look.checkQueue(queue)).messageCount;
      },
      publishJob(body: Buffer): Promise<void> {
        return new Promise((resolve, reject) => pub.publish(topology.jobsExchange, KIND, body, { persistent: true, contentType: "application/json" }, (err) => (err ? reject(err) : resolve())));
      },
      /**
       * Take the jobs holding `unitIds` off the job queue while no agent consumes it (either
       * form; a message that is not a job is left), until all are found or `timeoutMs` passes;
       * `then` gets the units found and what is missing, and the jobs taken are acked after it.
       * Every other message is handed back untouched.
       */
      async takeJobs(unitIds: readonly number[], timeoutMs: number, then: (units: JobUnit[], missing: number[]) => Promise<void>): Promise<void> {
        const ch = await conn!.createChannel();
        ch.on("error", () => {});
        const wanted = new Set(unitIds);
        const ours: GetMessage[] = [];
        const units: JobUnit[] = [];
        const others: GetMessage[] = [];
        const deadline = Date.now() + timeoutMs;
        try {
          while (wanted.size > 0 && Date.now() < deadline) {
            const msg = await ch.get(topology.jobQueue(KIND));
            if (msg === false) {
              await new Promise((r) => setTimeout(r, 50));
              continue;
            }
            const job = parseJob(msg.content);
            const found = job.ok ? jobUnits(job.value).filter((u) => wanted.has(u.unitId)) : [];
            if (found.length === 0) {
              others.push(msg);
              continue;
            }
            ours.push(msg);
            // A job with other units too (an agent's own hand-back batch) is taken whole.
            for (const u of jobUnits((job as { ok: true; value: AnyJobMessage }).value)) {
              wanted.delete(u.unitId);
              units.push(u);
            }
          }
          await then(units, [...wanted]);
          for (const m of ours) ch.ack(m);
        } finally {
          for (const m of others) ch.nack(m, false, true);
          await ch.close().catch(() => {});
        }
      },
      logs: () => services.map((s) => `--- ${s.name}\n${s.tail()}`).join("\n"),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
