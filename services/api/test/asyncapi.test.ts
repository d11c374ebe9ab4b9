import type { Channel } from "amqplib";
import { Parser } from "@asyncapi/parser";
import { Ajv, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import { z } from "zod";
import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { loadAgentConfig, PermanentJobError, startAgent, type Handler } from "@rtb/agent";
import { encodeJob } from "@rtb/leader";
import * as protocol from "@rtb/protocol";
import { assertControlQueue, assertJobQueue, assertTopology, type Topology } from "@rtb/runtime";
import { rawBroker, testLogger, useTestPlace, waitFor } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// The api serves GET /asyncapi.json from the topology it declares and the message schemas; this
// file checks the document against the AsyncAPI parser, against what the topology code really
// declares on the broker, and against messages the services really produce (a real agent's
// reports and heartbeats, the leader's job encoder, the api's own dispatch and cancel messages).
const KIND = "proto";
const place = useTestPlace({ kinds: [KIND] });
// A second place for a real agent, whose inbox nobody else consumes: the test reads its reports.
const tap = useTestPlace({ kinds: [KIND] });
let api: ApiService;
let doc: any;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_SEED_UNITS: "0" }));
  const res = await call(api, "/asyncapi.json");
  expect(res.status).toBe(200);
  doc = res.body;
});

/** The parsed document's payload schema of each message, compiled (formats checked). */
async function validators(body: unknown): Promise<Record<string, ValidateFunction>> {
  const { document, diagnostics } = await new Parser().parse(JSON.stringify(body));
  if (!document) throw new Error(`the document does not parse: ${diagnostics.map((d) => d.message).join("; ")}`);
  // strict off: the parser marks schemas with x-parser-* keywords.
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats.default(ajv);
  return Object.fromEntries(document.components().messages().all().map((m) => [m.id(), ajv.compile(m.payload()!.json())]));
}

describe("GET /asyncapi.json", () => {
  it("is an AsyncAPI 3.0 document @asyncapi/parser reads without an error", async () => {
    expect(doc.asyncapi).toBe("3.0.0");
    const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc));
    const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.code}: ${d.message} at ${d.path.join(".")}`);
    expect(errors).toEqual([]);
    expect(document).toBeDefined();
    // The parser does fail a broken one: a binding with a wrong type.
    const broken = structuredClone(doc);
    broken.channels.inbox.bindings.amqp.queue.durable = "yes";
    const again = await new Parser().parse(JSON.stringify(broken));
    expect(again.diagnostics.filter((d) => d.severity === 0).length).toBeGreaterThan(0);
  });

  it("names the broker and vhost this api uses, and the limits it runs with", () => {
    expect(doc.servers.broker).toMatchObject({ host: place.env.RTB_BROKER_HOST, protocol: "amqp" });
    expect(doc.servers.broker.description).toContain(`"${place.env.RTB_BROKER_VHOST}"`);
    expect(doc.info.description).toContain(`${16 * 1024 * 1024} bytes here`);
    expect(doc.channels.outbox.address).toBe(`${place.prefix}outbox`);
    expect(doc.channels.jobQueue.address).toBe(`${place.prefix}jobs.{kind}`);
  });
});

type Declared = { exchanges: Map<string, object>; queues: Map<string, object> };

/**
 * What the topology code declares on the broker: assertTopology, an agent's job queue and its
 * control queue, run against a channel that records each declare and binding and passes it on
 * to the real broker (where the api already declared them: an argument that differed would be
 * a 406). A job queue is recorded under its name for the kind `{kind}`; a server-named queue as "".
 */
async function declared(t: Topology, ch: Channel): Promise<Declared> {
  const exchanges = new Map<string, object>();
  const queues = new Map<string, { durable: boolean; exclusive: boolean; autoDelete: boolean; arguments: object; bindings: object[] }>();
  const serverNamed = new Set<string>();
  const general = (name: string) => (serverNamed.has(name) ? "" : name === t.jobQueue(KIND) ? t.jobQueue("{kind}") : name);
  const recorder = {
    async assertExchange(name: string, type: string, o: { durable?: boolean; autoDelete?: boolean }) {
      exchanges.set(name, { name, type, durable: o.durable ?? true, autoDelete: o.autoDelete ?? false });
      return ch.assertExchange(name, type, o);
    },
    async assertQueue(name: string, o: { durable?: boolean; exclusive?: boolean; autoDelete?: boolean; arguments?: object }) {
      const ok = await ch.assertQueue(name, o);
      if (name === "") serverNamed.add(ok.queue);
      queues.set(general(ok.queue), { durable: o.durable ?? true, exclusive: o.exclusive ?? false, autoDelete: o.autoDelete ?? false, arguments: o.arguments ?? {}, bindings: [] });
      return ok;
    },
    async bindQueue(queue: string, exchange: string, routingKey: string) {
      queues.get(general(queue))!.bindings.push({ exchange, routingKey: routingKey === KIND ? "{kind}" : routingKey });
      return ch.bindQueue(queue, exchange, routingKey);
    },
  } as unknown as Channel;
  await assertTopology(recorder, t);
  await assertJobQueue(recorder, t, KIND);
  await assertControlQueue(recorder, t);
  return { exchanges, queues };
}

/** What the document says of the same: its channels, exchanges and queues by name. */
function documented(body: any): Declared {
  const exchanges = new Map<string, object>();
  const queues = new Map<string, object>();
  for (const channel of Object.values(body.channels) as any[]) {
    const amqp = channel.bindings.amqp;
    if (amqp.is === "routingKey") exchanges.set(amqp.exchange.name, { name: amqp.exchange.name, type: amqp.exchange.type, durable: amqp.exchange.durable, autoDelete: amqp.exchange.autoDelete });
    else queues.set(amqp.queue.name ?? "", { durable: amqp.queue.durable, exclusive: amqp.queue.exclusive, autoDelete: amqp.queue.autoDelete, arguments: amqp["x-arguments"], bindings: amqp["x-bindings"] });
    // A channel's address is its exchange's or queue's name (null for a server-named queue).
    expect(channel.address).toBe(amqp.is === "routingKey" ? amqp.exchange.name : (amqp.queue.name ?? null));
  }
  return { exchanges, queues };
}

/** Everything declared but not documented, or documented but not declared, or documented otherwise. */
function differences(a: Declared, b: Declared): string[] {
  const out: string[] = [];
  for (const what of ["exchanges", "queues"] as const) {
    for (const name of a[what].keys()) if (!b[what].has(name)) out.push(`${what} ${name || "(server-named)"} is declared but not documented`);
    for (const [name, v] of b[what]) {
      if (!a[what].has(name)) out.push(`${what} ${name || "(server-named)"} is documented but not declared`);
      else if (JSON.stringify(a[what].get(name)) !== JSON.stringify(v)) out.push(`${what} ${name}: declared ${JSON.stringify(a[what].get(name))}, documented ${JSON.stringify(v)}`);
    }
  }
  return out;
}

describe("the channels are the topology's", () => {
  it("every exchange and queue the topology declares is a channel, with the same arguments, and every channel is declared", async () => {
    const conn = place.own(await rawBroker());
    const ch = await conn.createChannel();
    const real = await declared(api.broker.topology, ch);
    expect([...real.queues.keys()]).toEqual(expect.arrayContaining([`${place.prefix}outbox`, `${place.prefix}inbox`, `${place.prefix}dead`, `${place.prefix}jobs.{kind}`, ""]));
    const docd = documented(doc);
    expect(differences(real, docd)).toEqual([]);
    expect((docd.queues.get(`${place.prefix}outbox`) as any).arguments).toMatchObject({ "x-single-active-consumer": true, "x-dead-letter-exchange": `${place.prefix}rtb.dead`, "x-queue-type": place.topology.queueType });

    // A channel missing, one too many, or an argument documented otherwise: each is caught.
    const missing = structuredClone(doc);
    delete missing.channels.dead;
    expect(differences(real, documented(missing))).toEqual([`queues ${place.prefix}dead is declared but not documented`]);
    const extra = structuredClone(doc);
    extra.channels.more = { ...structuredClone(doc.channels.inbox), address: `${place.prefix}more` };
    extra.channels.more.bindings.amqp.queue.name = `${place.prefix}more`;
    expect(differences(real, documented(extra))).toEqual([`queues ${place.prefix}more is documented but not declared`]);
    const other = structuredClone(doc);
    other.channels.inbox.bindings.amqp["x-arguments"]["x-queue-type"] = "stream";
    expect(differences(real, documented(other))).toHaveLength(1);
  });

  it("documents operations for the api, the leader and the agents over those channels", () => {
    const ops = Object.entries(doc.operations as Record<string, any>).map(([id, o]) => `${id} ${o.action} ${o.channel.$ref.replace("#/channels/", "")}`);
    expect(ops).toEqual(
      expect.arrayContaining([
        "apiSendDispatch send outbox",
        "apiReceiveStatus receive inbox",
        "apiSendCancel send control",
        "leaderReceiveDispatch receive outbox",
        "leaderSendJobs send jobs",
        "leaderSendStatus send inbox",
        "agentReceiveJobs receive jobQueue",
        "agentReceiveControl receive controlQueue",
        "agentSendStatus send inbox",
        "agentSendHeartbeat send inbox",
      ]),
    );
    expect(doc.operations.leaderSendJobs.bindings.amqp).toMatchObject({ deliveryMode: 2, mandatory: true });
    expect(doc.operations.agentReceiveJobs.bindings.amqp).toMatchObject({ ack: true });
    expect(doc.operations.apiSendCancel.bindings.amqp).toMatchObject({ deliveryMode: 1 });
  });
});

describe("the messages are the protocol's", () => {
  it("every message schema @rtb/protocol exports is a message of the document, generated from it", () => {
    const schemas = Object.entries(protocol).filter(([name, v]) => name.endsWith("Message") && v instanceof z.ZodType) as [string, z.ZodType][];
    expect(schemas.map(([n]) => n).sort()).toEqual(["AnyJobMessage", "BatchJobMessage", "CancelMessage", "ControlMessage", "DispatchMessage", "HeartbeatMessage", "JobMessage", "StatusMessage"]);
    const payloads = Object.values(doc.components.messages as Record<string, any>).map((m) => JSON.stringify(m.payload));
    const json = (s: z.ZodType) => {
      const { $schema: _, ...rest } = z.toJSONSchema(s, { target: "draft-07", io: "input" }) as Record<string, unknown>;
      return JSON.stringify(rest);
    };
    for (const [name, schema] of schemas) {
      // A union (what arrives on jobs.<kind>) is documented as its members, one message each.
      const members = schema instanceof z.ZodUnion ? (schema.options as z.ZodType[]) : [schema];
      for (const m of members) expect(payloads, name).toContain(json(m));
    }
  });

  it("describes every property of every payload", () => {
    const undescribed: string[] = [];
    const walk = (s: any, at: string) => {
      if (!s || typeof s !== "object") return;
      for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, any>)) {
        if (!v.description) undescribed.push(`${at}.${k}`);
        walk(v, `${at}.${k}`);
      }
      for (const key of ["items", "additionalProperties"]) walk(s[key], `${at}[]`);
      for (const key of ["anyOf", "oneOf", "allOf"]) (s[key] ?? []).forEach((x: any, i: number) => walk(x, `${at}|${i}`));
    };
    for (const [name, m] of Object.entries(doc.components.messages as Record<string, any>)) walk(m.payload, name);
    expect(undescribed).toEqual([]);
  });

  it("its own examples are valid messages", async () => {
    const v = await validators(doc);
    for (const [name, m] of Object.entries(doc.components.messages as Record<string, any>)) {
      expect(m.examples.length, name).toBeGreaterThan(0);
      for (const e of m.examples) expect(v[name]!(e.payload) ? "valid" : JSON.stringify(v[name]!.errors), `${name} ${e.name}`).toBe("valid");
    }
  });
});

describe("real messages validate against the document", () => {
  it("a real agent's processing, success and error reports and its heartbeat; the leader's single and batch jobs", async () => {
    const v = await validators(doc);
    const valid = (name: string, body: unknown) => (v[name]!(body) ? "valid" : `${name}: ${JSON.stringify(v[name]!.errors)}`);

    // A real agent on the tap place: it consumes jobs.proto there and reports to the tap's inbox.
    const handler: Handler = async (job) => {
      const p = job.payload as { fail?: "retry" | "permanent" };
      if (p.fail === "permanent") throw new PermanentJobError("bad payload");
      if (p.fail === "retry") throw new Error("upstream down");
      return { done: true };
    };
    tap.own(await startAgent(loadAgentConfig({ ...tap.env, RTB_AGENT_ID: "proto-agent", RTB_HEARTBEAT_MS: "200" }), testLogger("agent"), new Map([[KIND, handler]])));
    const conn = place.own(await rawBroker());
    const ch = await conn.createChannel();
    const units = [
      { unitId: 1, attempt: 1, kind: KIND, payload: {} },
      { unitId: 2, attempt: 1, kind: KIND, payload: { fail: "retry" } },
      { unitId: 3, attempt: 2, kind: KIND, payload: { fail: "permanent" }, deps: { a: 1 } },
    ];
    // The leader's own encoder: one unit alone, then a batch of three.
    const single = encodeJob(KIND, [units[0]!]);
    const batch = encodeJob(KIND, units);
    expect(valid("job", JSON.parse(single.toString()))).toBe("valid");
    expect(valid("batchJob", JSON.parse(batch.toString()))).toBe("valid");
    await waitFor("the agent's job queue", async () => (await ch.checkQueue(tap.topology.jobQueue(KIND)).catch(() => null))?.consumerCount);
    const pub = await conn.createConfirmChannel();
    pub.publish(tap.topology.jobsExchange, KIND, single, { persistent: true });
    pub.publish(tap.topology.jobsExchange, KIND, batch, { persistent: true });
    await pub.waitForConfirms();

    const seen: any[] = [];
    const byStatus = (s: string) => seen.find((m) => m.updates.some((u: any) => u.status === s));
    await waitFor("the agent's reports and a heartbeat with its kinds", async () => {
      for (let m = await ch.get(tap.topology.inbox, { noAck: true }); m; m = await ch.get(tap.topology.inbox, { noAck: true })) seen.push(JSON.parse(m.content.toString()));
      const errors = seen.flatMap((m) => m.updates).filter((u: any) => u.status === "error");
      return seen.some((m) => m.updates.length === 0 && m.kinds) && seen.flatMap((m) => m.updates).filter((u: any) => u.status === "success").length === 2 && errors.length === 2 ? true : null;
    });
    const heartbeat = seen.find((m) => m.updates.length === 0 && m.kinds);
    expect(heartbeat).toMatchObject({ source: { service: "agent", id: "proto-agent" }, kinds: [KIND], counters: { deadLettered: 0 } });
    expect(valid("heartbeat", heartbeat)).toBe("valid");
    expect(valid("status", heartbeat)).toBe("valid");
    for (const s of ["processing", "success", "error"]) expect(valid("status", byStatus(s))).toBe("valid");
    const errors = seen.flatMap((m) => m.updates).filter((u: any) => u.status === "error");
    expect(errors.map((u: any) => u.error).sort((a: any, b: any) => a.message.localeCompare(b.message))).toEqual([
      { message: "bad payload", retryable: false },
      { message: "upstream down", retryable: true },
    ]);

    // Wrong ones fail.
    const report = byStatus("error");
    const withError = (error: unknown) => ({ ...report, updates: [{ ...report.updates.find((u: any) => u.status === "error"), error }] });
    expect(valid("status", withError({ message: "x".repeat(4_000), retryable: true }))).toBe("valid");
    expect(valid("status", withError({ message: "x".repeat(4_001), retryable: true }))).not.toBe("valid");
    expect(valid("status", withError({ message: "no retryable" }))).not.toBe("valid");
    expect(valid("status", { ...report, updates: [{ ...report.updates[0], status: "done" }] })).not.toBe("valid");
    expect(valid("heartbeat", byStatus("processing"))).not.toBe("valid");
    expect(valid("heartbeat", { ...heartbeat, kinds: Array.from({ length: protocol.MAX_AGENT_KINDS + 1 }, (_, i) => `k${i}`) })).not.toBe("valid");
    expect(valid("heartbeat", { ...heartbeat, kinds: Array.from({ length: protocol.MAX_AGENT_KINDS }, (_, i) => `k${i}`) })).toBe("valid");
    const many = (n: number) => ({ v: 1, type: "job", kind: KIND, units: Array.from({ length: n }, (_, i) => ({ unitId: i + 1, attempt: 1, payload: null })) });
    expect(valid("batchJob", many(protocol.MAX_JOB_UNITS))).toBe("valid");
    expect(valid("batchJob", many(protocol.MAX_JOB_UNITS + 1))).not.toBe("valid");
    expect(valid("job", { ...JSON.parse(single.toString()), unitId: 0 })).not.toBe("valid");
    expect(valid("job", { ...JSON.parse(single.toString()), kind: "has space" })).not.toBe("valid");
    expect(valid("cancel", { v: 1, type: "cancel", units: [] })).not.toBe("valid");
  });

  it("the api's own dispatch and cancel messages, taken from the outbox and the control exchange", async () => {
    const v = await validators(doc);
    const valid = (name: string, body: unknown) => (v[name]!(body) ? "valid" : `${name}: ${JSON.stringify(v[name]!.errors)}`);
    const conn = place.own(await rawBroker());
    const ch = await conn.createChannel();
    // An agent's control queue of our own: the api's cancels reach it.
    const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false, arguments: { "x-queue-type": "classic" } });
    await ch.bindQueue(queue, place.topology.controlExchange, "");
    // Consumed, not fetched: a quorum queue with a single active consumer (the outbox) refuses basic.get.
    const next = async (q: string): Promise<any> => {
      let tag = "";
      const body = await new Promise<any>((resolve) => {
        void ch.consume(q, (m) => m && resolve(JSON.parse(m.content.toString())), { noAck: true }).then((ok) => (tag = ok.consumerTag));
      });
      await waitFor("the consumer to be subscribed", () => tag || null);
      await ch.cancel(tag);
      return body;
    };
    const ids: number[] = (await call(api, "/units", "POST", [{ kind: KIND, payload: { page: 1 } }, { kind: KIND }])).body.units.map((u: any) => u.id);
    const dispatched = next(place.topology.box);
    await call(api, "/go");
    // No leader runs here: the test takes the api's dispatch message from the outbox itself.
    const dispatch = await dispatched;
    await call(api, "/pause", "POST");
    expect(dispatch.units.map((u: any) => u.unitId)).toEqual(ids);
    expect(valid("dispatch", dispatch)).toBe("valid");
    const cancelled = next(queue);
    expect((await call(api, `/units/${ids[0]}/cancel`, "POST")).status).toBe(200);
    const cancel = await cancelled;
    expect(cancel).toMatchObject({ v: 1, type: "cancel", units: [{ unitId: ids[0], attempt: 1 }] });
    expect(valid("cancel", cancel)).toBe("valid");
    expect(valid("dispatch", { ...dispatch, units: [] })).not.toBe("valid");
    expect(valid("dispatch", { ...dispatch, units: [{ ...dispatch.units[0], kind: undefined }] })).not.toBe("valid");
  });
});
