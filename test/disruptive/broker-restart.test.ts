import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openTestDb, outage, outagesSettled, startBusyRun, useTestPlace, waitFor } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";

/**
 * RabbitMQ goes away for a few seconds in the middle of a run (a real server, the project's own,
 * stopped and started again: server-control.ts) and the system finishes the run as if nothing happened:
 * every unit terminal, every rule kept, the outbox never over its maximum.
 * The test queues are classic, durable, with persistent messages: they survive the restart.
 */
// More than the ~300 of the database test: `rabbitmqctl stop_app` takes a second or more, and
// the run goes on meanwhile; the outage must land while plenty of work is left. 500 were once
// enough (about half done when the broker stopped); on a loaded machine a run of 500 has been
// seen to end before stop_app did.
const UNITS = 1_500;
const MAX_QUEUE = 20;
const DOWN_MS = 5_000;

const place = useTestPlace({ perTest: true });
let h: DbHandle;

beforeEach(() => {
  h = place.own(openTestDb(place));
});
afterEach(async () => {
  // A failed or timed-out test may still be in its outage: the broker must be back before the
  // place's teardown (registered first, so it runs after this hook) stops the run and drops it.
  await outagesSettled();
});

describe("a RabbitMQ restart in the middle of a run", () => {
  it("is survived by the api, the leader and the agents: every unit finishes, every rule holds", async () => {
    const run = place.own(await startBusyRun(place, h.db, { units: UNITS, maxQueue: MAX_QUEUE }));
    const s = run.system;

    let whileDown: { state: any; ready: { status: number; body: any } } | undefined;
    const report = await outage("broker", {
      downMs: DOWN_MS,
      whileDown: async () => {
        const state = await waitFor("GET / to report the broker disconnected", async () => {
          const st = await s.get("/");
          return st.broker.connected === false ? st : null;
        }, 10_000);
        const res = await s.api.app.request("/readyz");
        whileDown = { state, ready: { status: res.status, body: await res.json() } };
      },
    });

    // While RabbitMQ was down: the api saw it, said so, and the run was not over.
    expect(whileDown).toBeDefined();
    expect(whileDown!.state.broker.connected).toBe(false);
    expect(whileDown!.state.done).toBe(false);
    expect(whileDown!.ready).toEqual({ status: 503, body: { ready: false, database: true, broker: false, inbox: true } });

    // Back up: the api reconnected on its own.
    const reconnected = await waitFor("the api to reconnect to the broker", async () => {
      const st = await s.get("/");
      return st.broker.connected && st.broker.reconnects > 0 ? st : null;
    }, 60_000);
    expect(reconnected.broker.reconnects).toBeGreaterThanOrEqual(1);
    expect((await s.api.app.request("/readyz")).status).toBe(200);

    // The leader and both agents reconnected too: every connection was closed by the restart,
    // so a consumer on the outbox (the leader), on jobs.simulate (the agents) and on the inbox
    // (the api) now is one they set up again on a new connection.
    const t = place.topology;
    const consumers = async (queue: string) => (await s.api.broker.inspectQueue(queue))?.consumers;
    await waitFor("the leader, both agents and the api to consume again", async () => {
      const [outbox, jobs, inbox] = await Promise.all([consumers(t.box), consumers(t.jobQueue("simulate")), consumers(t.inbox)]);
      return outbox === 1 && jobs === 2 && inbox === 1;
    }, 60_000);

    // The run completes, every rule holds, and units reached their terminal status once
    // RabbitMQ answered again.
    const final = await run.settle(report.upAt);
    console.log(
      `broker outage (${report.how}): stopping ${report.stoppingMs} ms, down ${report.downMs} ms, starting ${report.startingMs} ms; ` +
        `at the outage ${whileDown!.state.counts.success + whileDown!.state.counts.error}/${UNITS} units done; api reconnects ${reconnected.broker.reconnects}; ` +
        `re-published ${final.publishes.republished}, ignored reports ${JSON.stringify(final.reports.ignored)}`,
    );
  });
});
