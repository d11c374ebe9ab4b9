/**
 * `npm run bench:inbox`: how fast api replicas apply status reports, the work that grows with
 * throughput and that only the apis do (docs/scaling.md). For each count of apis it:
 *
 * 1. starts one api (no leader, no agent) in a database and broker names of its own, enqueues
 *    `--units` units (kind `noop`) and calls GET /go with RTB_BROADCAST_MAX_QUEUE at least as
 *    large, so every unit is `dispatched` and waits in the outbox, which nobody consumes;
 * 2. stops the api, and publishes into the inbox what a leader and agents would report for
 *    those units: `queued` (per 100 units, as the leader reports a dispatch message), then
 *    `processing` and `success` (per `--per-message` units, as the agents' reports share a
 *    message), persistent, with confirms;
 * 3. starts the apis, all at once, and polls PostgreSQL every 50 ms until every unit is
 *    `success`: the reports applied per second are 3 x units over the time from the first
 *    unit seen past `dispatched` to the last one's success.
 *
 *   npm run bench:inbox                                # 50,000 units, 1 then 2 apis
 *   npm run bench:inbox -- --units 100000 --apis 1,2,3 --per-message 2
 *
 * `--callbacks` says what the completion callbacks' trigger (migration 0013) does meanwhile:
 * `unused` (the default: no unit or group has a URL, the trigger's fast path), `every` (every
 * unit has one, so every success writes a delivery row; the apis run with callbacks off, so
 * what is measured is the trigger's write, not the delivery loop), `off` (the trigger disabled,
 * as before the migration).
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { connect } from "amqplib";
import pg from "pg";
import { connectionOptions } from "@rtb/db";
import { encodeMessage, type StatusMessage } from "@rtb/protocol";
import { brokerUrl, topologyFromConfig } from "@rtb/runtime";
import { benchServiceEnv, readyWithin, startService, stopAll, type ServiceProc } from "./bench-services.ts";
import { scratchPlace } from "./scratch-place.ts";

const repo = fileURLToPath(new URL("..", import.meta.url));

function int(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}=${v}: expected a whole number from ${min} to ${max}`);
  return n;
}

let units: number;
let apiCounts: number[];
let perMessage: number;
let callbacks: "unused" | "every" | "off";
try {
  const { values: v } = parseArgs({
    options: { units: { type: "string", default: "50000" }, apis: { type: "string", default: "1,2" }, "per-message": { type: "string", default: "2" }, callbacks: { type: "string", default: "unused" }, help: { type: "boolean", default: false } },
    strict: true,
  });
  if (v.help) {
    console.log("usage: npm run bench:inbox -- [--units N (50000; at most 100000)] [--apis 1,2 (api replicas, one run each)] [--per-message N (2: units per processing/success message)] [--callbacks unused|every|off]");
    process.exit(0);
  }
  units = int("units", v.units, 100, 100_000);
  apiCounts = v.apis.split(",").map((a) => int("apis", a, 1, 8));
  perMessage = int("per-message", v["per-message"], 1, 10_000);
  if (!["unused", "every", "off"].includes(v.callbacks)) throw new Error(`--callbacks=${v.callbacks}: expected unused, every or off`);
  callbacks = v.callbacks as typeof callbacks;
} catch (err) {
  console.error(`rtb bench:inbox: ${(err as Error).message}`);
  process.exit(2);
}

const say = (msg: string) => console.error(`[bench:inbox] ${msg}`);

interface InboxRun {
  apis: number;
  seconds: number;
  reportsPerSec: number;
  unitsPerSec: number;
  messages: number;
}

async function runOnce(apis: number): Promise<InboxRun> {
  const place = scratchPlace("inbox");
  const env = benchServiceEnv({ dbName: place.dbName, prefix: place.prefix, maxQueue: units });
  const services: ServiceProc[] = [];
  const db = new pg.Client(connectionOptions({ ...place.servers, RTB_DB_POOL_SIZE: 1 }, place.dbName));
  try {
    // 1. every unit dispatched, waiting in the outbox
    const first = startService(repo, "api", "api", { ...env, RTB_API_ID: "api" });
    services.push(first);
    const base = String((await readyWithin(first, 120_000)).url).replace(/\/$/, "");
    for (let from = 0; from < units; from += 10_000) {
      const n = Math.min(10_000, units - from);
      const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(Array.from({ length: n }, (_, i) => ({ kind: "noop", group: `g-${(from + i) % 4}` }))) });
      if (res.status !== 201) throw new Error(`POST /units answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
      await res.arrayBuffer();
    }
    await (await fetch(`${base}/go`)).arrayBuffer();
    await db.connect();
    for (;;) {
      const { rows } = await db.query<{ n: string }>("SELECT count(*) AS n FROM units WHERE status = 'dispatched'");
      if (Number(rows[0]!.n) === units) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await stopAll(services.splice(0));
    const { rows: ids } = await db.query<{ id: string }>("SELECT id FROM units ORDER BY id");
    if (callbacks === "every") await db.query("UPDATE units SET callback_url = 'http://127.0.0.1:9/bench'");
    if (callbacks === "off") await db.query("ALTER TABLE units DISABLE TRIGGER units_callback_update");

    // 2. the reports a leader and agents would send, waiting in the inbox
    const conn = await connect(brokerUrl(place.servers));
    const ch = await conn.createConfirmChannel();
    const inbox = topologyFromConfig({ ...place.servers, RTB_BROKER_PREFIX: place.prefix }).inbox;
    const at = new Date().toISOString();
    const message = (service: "leader" | "agent", status: "queued" | "processing" | "success", chunk: { id: string }[]): StatusMessage => ({
      v: 1,
      type: "status",
      source: { service, id: `${service}-bench`, startedAt: at },
      updates: chunk.map((u) => ({ unitId: Number(u.id), attempt: 1, status, at, ...(status === "success" ? { result: null } : {}) })),
    });
    let messages = 0;
    const publish = (m: StatusMessage) => {
      messages++;
      ch.publish("", inbox, encodeMessage(m), { persistent: true, contentType: "application/json" });
    };
    for (let i = 0; i < ids.length; i += 100) publish(message("leader", "queued", ids.slice(i, i + 100)));
    for (let i = 0; i < ids.length; i += perMessage) {
      const chunk = ids.slice(i, i + perMessage);
      publish(message("agent", "processing", chunk));
      publish(message("agent", "success", chunk));
      if (i % (perMessage * 500) === 0) await ch.waitForConfirms();
    }
    await ch.waitForConfirms();
    await conn.close();
    say(`${apis} api(s): ${units.toLocaleString("en")} units dispatched, ${messages.toLocaleString("en")} report messages (${(3 * units).toLocaleString("en")} reports) in the inbox (database ${place.dbName})`);

    // 3. the apis apply them
    for (let i = 0; i < apis; i++) services.push(startService(repo, i === 0 ? "api" : `api-${i + 1}`, "api", { ...env, RTB_API_ID: i === 0 ? "api" : `api-${i + 1}` }));
    let startedAt: number | null = null;
    for (;;) {
      const { rows } = await db.query<{ dispatched: string; success: string }>(
        "SELECT count(*) FILTER (WHERE status = 'dispatched') AS dispatched, count(*) FILTER (WHERE status = 'success') AS success FROM units",
      );
      if (startedAt === null && Number(rows[0]!.dispatched) < units) startedAt = performance.now();
      if (Number(rows[0]!.success) === units) break;
      const gone = services.find((p) => !p.running());
      if (gone) throw new Error(`${gone.name} exited; its last lines:\n${gone.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const seconds = (performance.now() - startedAt!) / 1000;
    const result = { apis, seconds, reportsPerSec: (3 * units) / seconds, unitsPerSec: units / seconds, messages };
    if (callbacks === "every") {
      const { rows } = await db.query<{ n: string }>("SELECT count(*) AS n FROM callbacks");
      if (Number(rows[0]!.n) !== units) throw new Error(`${rows[0]!.n} callback deliveries written for ${units} units`);
    }
    say(`${apis} api(s): applied in ${seconds.toFixed(2)} s: ${Math.round(result.reportsPerSec).toLocaleString("en")} reports/s`);
    return result;
  } finally {
    await stopAll(services);
    await db.end().catch(() => {});
    await place.drop(["noop"]);
  }
}

const results: InboxRun[] = [];
for (const apis of apiCounts) results.push(await runOnce(apis));
console.log(`\ninbox application: ${units.toLocaleString("en")} units, 3 reports each (queued per 100 units, processing and success per ${perMessage}), callbacks ${callbacks}`);
for (const r of results) {
  console.log(
    `  ${r.apis} api(s)  ${Math.round(r.reportsPerSec).toLocaleString("en").padStart(7)} reports/s  (${Math.round(r.unitsPerSec).toLocaleString("en")} units/s, ${r.messages.toLocaleString("en")} messages in ${r.seconds.toFixed(2)} s)` +
      (r === results[0] ? "" : `  x${(r.reportsPerSec / results[0]!.reportsPerSec).toFixed(2)} of ${results[0]!.apis}`),
  );
}
