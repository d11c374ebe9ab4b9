/**
 * `npm run check`: the invariant checker against a live system (services/api/src/check.ts).
 * It reads the same RTB_* variables as the api (database, broker, RTB_BROADCAST_MAX_QUEUE,
 * the timeouts), samples outstanding units for a few seconds, and exits 0 when every rule
 * holds, 1 when one is broken, 2 on a bad variable or flag.
 *
 *   npm run check                      # human summary
 *   npm run check -- --json            # the whole report, for scripts
 *   npm run check -- --sample 30       # sample the MAX_QUEUE bound for 30 s (default 5)
 *   npm run check -- --expect-done     # also require every unit to be terminal
 */
import { parseArgs } from "node:util";
import { checkSystem, loadApiConfig, type CheckReport } from "@rtb/api";
import { createDb, waitForDatabase } from "@rtb/db";
import { connectBrokerFromConfig, createLogger } from "@rtb/runtime";

let args;
let config;
try {
  args = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      sample: { type: "string", default: "5" },
      grace: { type: "string", default: "10000" },
      "expect-done": { type: "boolean", default: false },
    },
  }).values;
  for (const flag of ["sample", "grace"] as const) {
    if (!/^\d+(\.\d+)?$/.test(args[flag])) throw new Error(`--${flag}="${args[flag]}": expected a non-negative number`);
  }
  config = loadApiConfig(process.env);
} catch (err) {
  console.error(`rtb check: ${(err as Error).message}`);
  process.exit(2);
}

const logger = createLogger({ service: "check", level: "error", format: "auto" });
const database = createDb(config, logger);
let report: CheckReport;
try {
  await waitForDatabase(database, config, logger, { deadlineMs: 10_000 });
  const broker = await connectBrokerFromConfig({ ...config, RTB_CONNECT_TIMEOUT_MS: Math.min(config.RTB_CONNECT_TIMEOUT_MS, 10_000) }, logger);
  try {
    report = await checkSystem({
      db: database.db,
      broker,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
      processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
      graceMs: Number(args.grace),
      sampleMs: Number(args.sample) * 1000,
      expectDone: args["expect-done"],
    });
  } finally {
    await broker.close();
  }
} catch (err) {
  const undefinedTable = (err as { code?: string }).code === "42P01";
  console.error(
    `rtb check: ${undefinedTable ? `database ${database.label} has no rtb tables: start the api once (it migrates), then check` : (err as Error).message}`,
  );
  await database.close();
  process.exit(1);
}
await database.close();

if (args.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const c = report.counts;
  console.log(`units      ${report.total}: ${Object.entries(c).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(", ") || "none"}`);
  console.log(`outstanding peak ${report.peakOutstanding} of ${report.maxQueue} (RTB_BROADCAST_MAX_QUEUE) over ${report.samples} sample(s)`);
  const q = report.queues;
  const show = (s: typeof q.outbox) => (s ? `${s.messages} ready, ${s.consumers} consumer(s)` : "unknown");
  console.log(`outbox     ${show(q.outbox)}; inbox ${show(q.inbox)}; dead ${show(q.dead)}`);
  for (const note of report.notes) console.log(`note       ${note}`);
  for (const v of report.violations) console.log(`VIOLATION  ${v.rule}: ${v.message} (${v.count}${v.units.length ? `; e.g. units ${v.units.join(", ")}` : ""})`);
  console.log(report.ok ? "ok: every invariant holds" : `FAILED: ${report.violations.length} rule(s) broken`);
}
process.exit(report.ok ? 0 : 1);
