import { expect, it, onTestFinished } from "vitest";
import { sql } from "kysely";
import { catchUpAndPause, clusterPerTest, logLines, startOtlpReceiver, waitFor, type Cluster, type OtlpReceiver, type ReceivedSpan } from "@rtb/testing";

/**
 * Traces across every hop (README "Traces"), with real processes: an api, a leader and an
 * agent exporting over OTLP/HTTP to a local receiver (test/support/otlp-receiver.ts). A
 * producer's traceparent is continued through enqueue, dispatch, route, receive, handle and
 * apply, in the api, leader and agent processes, and a retried unit's two attempts are in one
 * trace. Without an endpoint nothing is exported, and a producer's trace context still is
 * kept with its unit.
 */
const clusters = clusterPerTest();

const PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN = "00f067aa0ba902b7";
const producer = `00-${PRODUCER_TRACE}-${PRODUCER_SPAN}-01`;
const MALFORMED = "00-not-a-trace-context";

async function receiver(): Promise<OtlpReceiver> {
  const r = await startOtlpReceiver();
  onTestFinished(() => r.close());
  return r;
}

/** POST /units with a traceparent header: the created units' ids. */
async function enqueue(c: Cluster, traceparent: string, units: object[]): Promise<number[]> {
  const res = await fetch(`${c.url}/units`, { method: "POST", headers: { "content-type": "application/json", traceparent }, body: JSON.stringify(units) });
  const body = (await res.json()) as { units: { id: number }[] };
  expect(res.status, JSON.stringify(body)).toBe(201);
  c.expectUnits(units.length);
  return body.units.map((u) => u.id);
}

const storedTraceparents = async (c: Cluster, ids: number[]) =>
  (await sql<{ id: number; traceparent: string | null }>`SELECT id, traceparent FROM units WHERE id = ANY(${ids}::bigint[]) ORDER BY id`.execute(c.db)).rows.map((r) => r.traceparent);

it("one unit is one trace: the producer's, through the api, the leader and the agent, every attempt in it", async () => {
  const otlp = await receiver();
  const c = await clusters.start({ RTB_SEED_UNITS: "0", RTB_AGENT_ERROR_RATE: "0", OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: "100" });
  await c.start("api");
  await c.start("leader-1");
  await c.start("agent-1");
  await c.get("/go");
  const [plain, retried] = await enqueue(c, producer, [
    { kind: "simulate", payload: { n: 1 } },
    // Attempt 1 fails retryably (the simulate handler's failAttempts), attempt 2 succeeds.
    { kind: "simulate", payload: { failAttempts: 1 }, maxAttempts: 3 },
  ]);
  const [fresh] = await enqueue(c, MALFORMED, [{ kind: "simulate", payload: { n: 2 } }]);
  // A workflow is one trace, the steps its handler fans out included.
  const wf = await fetch(`${c.url}/workflows`, {
    method: "POST",
    headers: { "content-type": "application/json", traceparent: producer },
    body: JSON.stringify({ name: "traced", steps: [{ step: "a", kind: "simulate", payload: { spawn: { steps: [{ step: "x", kind: "simulate" }] } } }, { step: "b", kind: "simulate", dependsOn: ["a"] }] }),
  });
  expect(wf.status).toBe(201);
  const workflowId = ((await wf.json()) as { workflow: { id: number } }).workflow.id;
  c.expectUnits(3);
  // A schedule's occurrence starts a trace of its own.
  expect((await c.post("/schedules", { name: "tick", cron: "* * * * * *", unit: { kind: "simulate" } })).status).toBe(201);
  await catchUpAndPause(c, "tick");
  await c.waitDone();
  const ticked = Number((await sql<{ id: string }>`SELECT min(id) AS id FROM units WHERE schedule_name = 'tick'`.execute(c.db)).rows[0]!.id);
  expect((await c.get(`/units/${retried}`)).attempt).toBe(2);

  const spansOf = (id: number) => otlp.spans.filter((s) => s.attributes["rtb.unit.id"] === id);
  const find = (id: number, name: string, attempt: number, extra: (s: ReceivedSpan) => boolean = () => true) =>
    spansOf(id).find((s) => s.name === name && s.attributes["rtb.unit.attempt"] === attempt && extra(s));
  const applied = (id: number, attempt: number, status: string) => find(id, "apply", attempt, (s) => s.attributes["rtb.unit.status"] === status);
  // Exported within OTEL_BSP_SCHEDULE_DELAY of their end, by each process on its own: the
  // api's apply of a success ends last, but the agent's spans of it may arrive after it.
  const exported = (id: number, attempt: number) => applied(id, attempt, "success") && ["dispatch", "route", "receive", "handle"].every((hop) => find(id, hop, attempt));
  await waitFor("the spans of every hop", () => exported(plain!, 1) && exported(retried!, 2) && find(retried!, "handle", 1) && applied(retried!, 1, "error") && exported(fresh!, 1) && exported(ticked, 1));

  const enqueues = otlp.spans.filter((s) => s.name === "enqueue");
  const ours = enqueues.find((s) => s.traceId === PRODUCER_TRACE && s.attributes["http.route"] === "/units")!;
  expect(ours).toMatchObject({ service: "rtb-api", parentSpanId: PRODUCER_SPAN, kind: 2 });
  expect(ours.attributes).toMatchObject({ "http.route": "/units", "rtb.units": 2, "rtb.units.created": 2 });

  /** The chain of one attempt, each span a child of the one before, each from its process. */
  function expectChain(id: number, attempt: number, enqueue: ReceivedSpan, outcome: "success" | "error") {
    const dispatch = find(id, "dispatch", attempt)!;
    const route = find(id, "route", attempt)!;
    const receive = find(id, "receive", attempt)!;
    const handle = find(id, "handle", attempt)!;
    const apply = applied(id, attempt, outcome)!;
    const chain = [enqueue, dispatch, route, receive, handle, apply];
    expect(chain.map((s) => s?.service), `unit ${id} attempt ${attempt}`).toEqual(["rtb-api", "rtb-api", "rtb-leader", "rtb-agent", "rtb-agent", "rtb-api"]);
    for (const [i, s] of chain.entries()) {
      expect(s.traceId).toBe(enqueue.traceId);
      if (i > 0) expect(s.parentSpanId, `${s.name} of unit ${id} attempt ${attempt}`).toBe(chain[i - 1]!.spanId);
    }
    // The reports on the way: the leader's queued (under its route span), the agent's processing (under its receive span).
    expect(applied(id, attempt, "queued")?.parentSpanId).toBe(route.spanId);
    expect(applied(id, attempt, "processing")?.parentSpanId).toBe(receive.spanId);
    // Semantic-convention messaging attributes, and the handler's outcome.
    expect(dispatch.attributes).toMatchObject({ "messaging.system": "rabbitmq", "messaging.operation.type": "send", "messaging.destination.name": c.place.topology.box, "rtb.unit.kind": "simulate" });
    expect(route.attributes).toMatchObject({ "messaging.operation.type": "send", "messaging.destination.name": c.place.topology.jobsExchange, "messaging.rabbitmq.destination.routing_key": "simulate" });
    expect(receive.attributes).toMatchObject({ "messaging.operation.type": "receive", "messaging.destination.name": c.place.topology.jobQueue("simulate"), "rtb.outcome": "reported" });
    expect(handle.attributes).toMatchObject({ "rtb.unit.kind": "simulate", "rtb.outcome": outcome });
    expect([dispatch.kind, route.kind, receive.kind, handle.kind, apply.kind]).toEqual([4, 4, 5, 1, 5]);
    return handle;
  }

  expectChain(plain!, 1, ours, "success");
  const failed = expectChain(retried!, 1, ours, "error");
  expectChain(retried!, 2, ours, "success");
  // The failed attempt's handler span says why, as an error, retryable.
  expect(failed).toMatchObject({ status: 2, events: ["exception"] });
  expect(failed.attributes).toMatchObject({ "rtb.error.retryable": true, "error.type": "HandlerFailure" });
  // Both attempts, every span of the unit: one trace, the producer's.
  expect(new Set(spansOf(retried!).map((s) => s.traceId))).toEqual(new Set([PRODUCER_TRACE]));
  expect(new Set(spansOf(retried!).map((s) => s.service))).toEqual(new Set(["rtb-api", "rtb-leader", "rtb-agent"]));

  // A malformed traceparent was ignored: the unit is in a trace of its own, begun at its enqueue.
  const own = enqueues.find((s) => s.traceId !== PRODUCER_TRACE)!;
  const workflow = enqueues.find((s) => s.traceId === PRODUCER_TRACE && s.attributes["http.route"] === "/workflows")!;
  expect(workflow).toMatchObject({ parentSpanId: PRODUCER_SPAN });
  const steps = (await sql<{ step: string; traceparent: string | null }>`SELECT step, traceparent FROM units WHERE workflow_id = ${workflowId} ORDER BY step`.execute(c.db)).rows;
  expect(steps).toEqual(["a", "a/x", "b"].map((step) => ({ step, traceparent: `00-${PRODUCER_TRACE}-${workflow.spanId}-01` })));
  expect(own.parentSpanId).toBe("");
  expectChain(fresh!, 1, own, "success");
  const fired = otlp.spans.filter((s) => s.name === "fire schedule" && s.parentSpanId === "" && s.traceId === find(ticked, "dispatch", 1)?.traceId);
  expect(fired).toHaveLength(1);
  expect(fired[0]).toMatchObject({ service: "rtb-api", kind: 4 });
  expect(fired[0]!.attributes["rtb.schedule"]).toBe("tick");
  expectChain(ticked, 1, fired[0]!, "success");
  expect(await storedTraceparents(c, [plain!, retried!, fresh!])).toEqual([
    `00-${PRODUCER_TRACE}-${ours.spanId}-01`,
    `00-${PRODUCER_TRACE}-${ours.spanId}-01`,
    `00-${own.traceId}-${own.spanId}-01`,
  ]);
}, 90_000);

it("exports nothing without an endpoint (or with OTEL_SDK_DISABLED), keeps a producer's trace context, ignores a malformed one", async () => {
  const otlp = await receiver();
  // The api has an endpoint but the SDK disabled; the leader and the agent have no endpoint at all.
  const c = await clusters.start({ RTB_SEED_UNITS: "0", RTB_AGENT_ERROR_RATE: "0", OTEL_BSP_SCHEDULE_DELAY: "100" });
  await c.start("api", { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_SDK_DISABLED: "true" });
  await c.start("leader-1");
  await c.start("agent-1");
  await c.get("/go");
  const [kept] = await enqueue(c, producer, [{ kind: "simulate", payload: { failAttempts: 1 }, maxAttempts: 2 }]);
  const [ignored] = await enqueue(c, MALFORMED, [{ kind: "simulate" }]);
  await c.waitDone();
  // Enqueued while nothing traces, and dispatched only once the api does (below).
  expect((await c.post("/pause", {})).status).toBe(200);
  const [late] = await enqueue(c, MALFORMED, [{ kind: "simulate", payload: { failAttempts: 1 }, maxAttempts: 3 }]);
  // Not traced, the unit still carries its producer's context (every hop passes it on unchanged).
  expect(await storedTraceparents(c, [kept!, ignored!])).toEqual([producer, null]);
  expect((await c.get(`/units/${kept}`)).status).toBe("success");
  // A clean stop flushes whatever a tracer holds: had any process traced, the receiver would have it now.
  for (const name of ["agent-1", "leader-1", "api"] as const) expect((await c.kill(name, "SIGTERM")).code).toBe(0);
  expect(otlp.requests).toBe(0);
  for (const name of ["api", "leader-1", "agent-1"]) expect(logLines(c.output(name)).filter((l) => l.msg === "exporting traces (OTLP/HTTP)")).toEqual([]);

  // Tracing turned on later: a unit stored without a trace gets one at its first traced
  // dispatch, kept with it, so its retry joins the same trace instead of starting another.
  expect(await storedTraceparents(c, [late!])).toEqual([null]);
  await c.start("api", { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url });
  await c.start("leader-1");
  await c.start("agent-1");
  await c.get("/go");
  await c.waitDone();
  expect((await c.get(`/units/${late}`)).attempt).toBe(2);
  const dispatches = () => otlp.spans.filter((s) => s.name === "dispatch" && s.attributes["rtb.unit.id"] === late);
  await waitFor("both dispatch spans of the late unit", () => dispatches().length === 2);
  const [first, second] = [1, 2].map((a) => dispatches().find((s) => s.attributes["rtb.unit.attempt"] === a)!);
  expect(first!.parentSpanId).toBe("");
  expect(second!.traceId).toBe(first!.traceId);
  expect(await storedTraceparents(c, [late!])).toEqual([`00-${first!.traceId}-${first!.spanId}-01`]);
  expect((await c.get(`/units/${late}`)).traceId).toBe(first!.traceId);
}, 90_000);
