import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  clusterQueues,
  liveConsumers,
  nodeHost,
  openTestDb,
  rtbConnectionsByNode,
  startBusyRun,
  startOwnedCluster,
  testServers,
  useTestPlace,
  waitFor,
  type OwnedCluster,
  type TestPlace,
} from "@rtb/testing";
import type { DbHandle } from "@rtb/db";

/**
 * A RabbitMQ cluster of three nodes of the test's own (owned-cluster.ts: started here, killed
 * and deleted at the end, never the machine's RabbitMQ), rtb on it with RTB_BROKER_HOST listing
 * all three and its quorum queues replicated on every node. In the middle of a run the node
 * that is hardest to lose dies (SIGKILL): the first listed, so the one every connection of the
 * api, the leader and both agents is on, and the leader of the outbox, inbox and job queue
 * (quorum queues are led by the node of the client that declared them: `client-local`, the
 * default of 3.x and 4.x). Every connection moves to the next node, the queues elect new
 * leaders on the two left, and the run finishes with every rule kept: nothing lost, the
 * outbox never over its maximum.
 */
type Node = OwnedCluster["nodes"][number];

const UNITS = 1_500;
const MAX_QUEUE = 20;

// The services' warnings go to the output, so that a failure here shows what they went through.
const logLevel = process.env.RTB_TEST_LOG_LEVEL;
process.env.RTB_TEST_LOG_LEVEL ??= "warn";

const place = useTestPlace({ perTest: true });
let h: DbHandle;
let cluster: OwnedCluster | undefined;

beforeAll(async () => {
  cluster = await startOwnedCluster(testServers().runId);
});
afterAll(async () => {
  await cluster?.stop();
  if (logLevel === undefined) delete process.env.RTB_TEST_LOG_LEVEL;
});
beforeEach(() => {
  h = place.own(openTestDb(place));
});

/** The test's place (database, names) with the cluster as its broker. */
const onCluster = (c: OwnedCluster): TestPlace => ({
  dbName: place.dbName,
  prefix: place.prefix,
  topology: place.topology,
  env: { ...place.env, RTB_BROKER_HOST: c.brokerHost },
});

describe("a RabbitMQ cluster losing a node in the middle of a run", () => {
  it("keeps rtb going on the other two: connections fail over, quorum queues elect new leaders, nothing is lost", async () => {
    const c = cluster!;
    const [first, second, third] = c.nodes as [Node, Node, Node];
    const t = place.topology;
    const workQueues = [t.box, t.inbox, t.jobQueue("simulate")];
    const run = place.own(await startBusyRun(onCluster(c), h.db, { units: UNITS, maxQueue: MAX_QUEUE }));
    const s = run.system;

    // Before: every connection on the first node listed; the queues quorum queues with a
    // member on each node, led from the first.
    expect((await s.get("/")).broker.hosts).toEqual({ consume: nodeHost(first), publish: nodeHost(first) });
    expect(await rtbConnectionsByNode(second, c.nodes)).toEqual({ [first.node]: 8, [second.node]: 0, [third.node]: 0 });
    const before = await clusterQueues(second, place.prefix);
    const members = c.nodes.map((n) => n.node).sort();
    for (const q of workQueues) {
      expect(before.find((x) => x.name === q), q).toMatchObject({ type: "quorum", leader: first.node });
      expect(before.find((x) => x.name === q)!.members.sort(), q).toEqual(members);
    }

    const killedAt = Date.now();
    const atKill = await s.get("/");
    await c.kill(first);

    // The api moves on to a node left (the next listed, unless that one failed an attempt
    // too), and says so.
    const left = [nodeHost(second), nodeHost(third)];
    const failedOver = await waitFor("the api to connect to a node left", async () => {
      const st = await s.get("/");
      // reconnects counts a connection once its attachments ran, a moment after it is in use.
      return st.broker.connected && st.broker.reconnects >= 2 && left.includes(st.broker.hosts.consume) && left.includes(st.broker.hosts.publish) ? st : null;
    }, 60_000);
    const apiFailoverMs = Date.now() - killedAt;
    expect(failedOver.broker.reconnects).toBe(2);

    // So do the leader and both agents: all 8 connections on the nodes left, and every
    // consumer back (the leader on the outbox, the agents on the job queue, the api on the inbox).
    let where: Record<string, number> = {};
    await waitFor("every connection on the nodes left", async () => {
      where = await rtbConnectionsByNode(second, c.nodes);
      return where[first.node] === 0 && where[second.node]! + where[third.node]! === 8;
    }, 60_000, 200);
    // Counted from the consumers' list: the queues' own counts still include the dead node's (liveConsumers).
    await waitFor("the leader, both agents and the api to consume again", async () => {
      const live = await liveConsumers(second, place.prefix);
      return live[t.box] === 1 && live[t.jobQueue("simulate")] === 2 && live[t.inbox] === 1;
    }, 60_000, 200);
    const allFailoverMs = Date.now() - killedAt;

    // The queues are led from the two nodes left, still three members each (one down).
    const after = await clusterQueues(second, place.prefix);
    for (const q of workQueues) {
      const info = after.find((x) => x.name === q)!;
      expect([second.node, third.node], q).toContain(info.leader);
      expect(info.members.sort(), q).toEqual(members);
    }

    // The run was not over when the node died, and it finishes with every rule kept.
    expect(atKill.done).toBe(false);
    const final = await run.settle(killedAt);
    const runMs = Date.now() - killedAt;
    console.log(
      `cluster: started and joined in ${c.startMs} ms; killed ${first.node} at ${atKill.counts.success + atKill.counts.error}/${UNITS} units done; ` +
        `api on ${JSON.stringify(failedOver.broker.hosts)} after ${apiFailoverMs} ms, every connection and consumer back after ${allFailoverMs} ms ` +
        `(connections per node ${JSON.stringify(where)}); ` +
        `run finished ${runMs} ms after the kill; re-published ${final.publishes.republished}, ignored reports ${JSON.stringify(final.reports.ignored)}`,
    );
  });
});
