import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { findRabbitSbin, freePorts, killRabbitIn, launchRabbit, prepareRabbitNode, rabbitAnswers, rabbitCtl, removeStaleFolders, waitUntil, type OwnedRabbit } from "./owned-servers.ts";

/**
 * A RabbitMQ cluster the test suite owns, for test/disruptive/broker-cluster.test.ts: nodes
 * made as owned-servers.ts makes its one node (each with its own name, AMQP and distribution
 * ports on 127.0.0.1, configuration, plugins file, data and logs, in `node-<n>` of a temporary
 * folder), sharing an Erlang cookie of their own (a HOME of their own, so neither the
 * machine's RabbitMQ nor its cookie is ever read or used), started in parallel and joined
 * with `rabbitmqctl join_cluster`. Quorum queues declared on it get a member on every node.
 * Stopping it kills every node and deletes the folder; a folder left by a killed run is
 * removed by the next one.
 */
export interface OwnedCluster {
  root: string;
  /** The nodes, the one the others joined first. */
  nodes: OwnedRabbit[];
  /** RTB_BROKER_HOST naming every node, in the order of `nodes`. */
  brokerHost: string;
  /** How long starting and joining took (ms). */
  startMs: number;
  /** Kill one node (SIGKILL: a crash, no goodbye to clients or peers) and wait until its port is closed. */
  kill(node: OwnedRabbit): Promise<void>;
  /** Kill every node and delete the folder. Never throws. */
  stop(): Promise<void>;
}

const PREFIX = "rtb-test-cluster-";

/** `host:port` of a node, as RTB_BROKER_HOST and GET / broker.hosts write it. */
export const nodeHost = (r: OwnedRabbit) => `127.0.0.1:${r.port}`;

/** Start `size` nodes in parallel and join them into one cluster; on any failure, what was started is removed and the error thrown. */
export async function startOwnedCluster(id: string, size = 3): Promise<OwnedCluster> {
  findRabbitSbin();
  removeStaleFolders(PREFIX, killNodesIn);
  const started = Date.now();
  const root = mkdtempSync(path.join(tmpdir(), PREFIX));
  chmodSync(root, 0o755);
  writeFileSync(path.join(root, "owner.pid"), String(process.pid));
  const stop = async () => {
    killNodesIn(root);
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const nodes = await prepareNodes(root, id, size);
    await Promise.all(nodes.map(launchRabbit));
    await joinCluster(nodes);
    return {
      root,
      nodes,
      brokerHost: nodes.map(nodeHost).join(","),
      startMs: Date.now() - started,
      kill: (node) => killNode(root, nodes, node),
      stop,
    };
  } catch (err) {
    await stop();
    throw new Error(`cannot start the test's own RabbitMQ cluster: ${(err as Error).message}`, { cause: err });
  }
}

/** The nodes' folders, under one HOME whose Erlang cookie (written here) they share. */
async function prepareNodes(root: string, id: string, size: number): Promise<OwnedRabbit[]> {
  const home = path.join(root, "home");
  mkdirSync(home, { mode: 0o700 });
  writeFileSync(path.join(home, ".erlang.cookie"), randomBytes(20).toString("hex").toUpperCase(), { mode: 0o400 });
  const ports = await freePorts(size * 2);
  return Array.from({ length: size }, (_, i) =>
    prepareRabbitNode({ dir: path.join(root, `node-${i + 1}`), node: `rtb-test-${id}-${i + 1}@localhost`, port: ports[2 * i]!, distPort: ports[2 * i + 1]!, home }),
  );
}

/**
 * Every node after the first joins the first (stop_app, join_cluster, start_app), one after
 * the other: two joining at once can both be told the cluster is changing. Then the first
 * must see them all running.
 */
async function joinCluster(nodes: OwnedRabbit[]): Promise<void> {
  const [first, ...rest] = nodes;
  for (const r of rest) {
    await rabbitCtl(r, ["stop_app"]);
    await rabbitCtl(r, ["join_cluster", first!.node]);
    // start_app returns once the app is up: no await_startup needed.
    await rabbitCtl(r, ["start_app"]);
  }
  const running = await runningNodes(first!);
  const missing = nodes.filter((r) => !running.includes(r.node));
  if (missing.length > 0) throw new Error(`after joining, ${first!.node} does not see ${missing.map((r) => r.node).join(", ")} running (it sees ${running.join(", ")})`);
}

/** The nodes `r` sees running in its cluster. */
export async function runningNodes(r: OwnedRabbit): Promise<string[]> {
  const status = JSON.parse(await rabbitCtl(r, ["cluster_status", "--formatter", "json"])) as { running_nodes?: string[] };
  return status.running_nodes ?? [];
}

/** A quorum queue's leader and members, as a node of the cluster reports them. */
export interface QuorumQueue {
  name: string;
  type: string;
  leader: string;
  members: string[];
}

/** The queues whose names start with `prefix`, with their type, leader and members, asked of `r`. */
export async function clusterQueues(r: OwnedRabbit, prefix: string): Promise<QuorumQueue[]> {
  const rows = JSON.parse(await rabbitCtl(r, ["list_queues", "name", "type", "leader", "members", "--formatter", "json"])) as QuorumQueue[];
  return rows.filter((q) => q.name.startsWith(prefix));
}

async function killNode(root: string, nodes: OwnedRabbit[], node: OwnedRabbit): Promise<void> {
  if (!nodes.includes(node)) throw new Error(`refusing to kill ${node.node}: not a node of the cluster in ${root}`);
  killRabbitIn(node.dir, root);
  await waitUntil(`${node.node} to stop answering on ${nodeHost(node)}`, async () => !(await rabbitAnswers(`amqp://guest:guest@${nodeHost(node)}/`)), 30_000);
}

/** SIGKILL every node still running in `root` (only processes started there: see killIfOurs). */
function killNodesIn(root: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(root).filter((n) => /^node-\d+$/.test(n));
  } catch {
    // gone already
  }
  for (const name of names) killRabbitIn(path.join(root, name), root);
}

/**
 * rtb's connections (named `rtb consume` and `rtb publish`) per node of the cluster, as `r`
 * lists them: where every service's connections are, leader's and agents' included.
 */
export async function rtbConnectionsByNode(r: OwnedRabbit, nodes: OwnedRabbit[]): Promise<Record<string, number>> {
  const rows = JSON.parse(await rabbitCtl(r, ["list_connections", "port", "client_properties", "--formatter", "json"])) as { port: number; client_properties: [string, string, unknown][] }[];
  const counts: Record<string, number> = Object.fromEntries(nodes.map((n) => [n.node, 0]));
  for (const row of rows) {
    const name = row.client_properties.find(([key]) => key === "connection_name")?.[2];
    const node = nodes.find((n) => n.port === row.port);
    if (node && typeof name === "string" && name.startsWith("rtb ")) counts[node.node]!++;
  }
  return counts;
}

/**
 * Consumers per queue (names starting with `prefix`) that are live: `up`, or the single
 * active one. Not the queue's consumer count (queue.declare-ok, `inspectQueue`): while a node
 * is down, a quorum queue keeps the consumers whose channels were there (`suspected_down`,
 * waiting for the node to come back), and its count includes them.
 */
export async function liveConsumers(r: OwnedRabbit, prefix: string): Promise<Record<string, number>> {
  const rows = JSON.parse(await rabbitCtl(r, ["list_consumers", "queue_name", "activity_status", "--formatter", "json"])) as { queue_name: string; activity_status: string }[];
  const counts: Record<string, number> = {};
  for (const row of rows) {
    if (!row.queue_name.startsWith(prefix) || !["up", "single_active"].includes(row.activity_status)) continue;
    counts[row.queue_name] = (counts[row.queue_name] ?? 0) + 1;
  }
  return counts;
}
