import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { ApiError } from "../api-client.ts";
import { FAILURE_POLICIES, KIND_PATTERN, KIND_RULE, MAX_DELAY_MS, type EnqueuedBatch, type FailurePolicy, type EnqueuedOne, type NewUnitInput as NewUnit } from "@rtb/protocol";
import { intArg, optionalInt, str, UsageError, type Command, type Context, type Values } from "../command.ts";
import { count } from "../format.ts";
import { chunked, InputError, readUnits, type InputRecord } from "../unit-input.ts";

/** The most any api takes per request (its RTB_API_MAX_BATCH: 10 000 by default, at most 100 000). */
const MAX_CHUNK = 100_000;

export const enqueue: Command = {
  name: "enqueue",
  summary: "add units: one from flags, or many from a JSON or NDJSON file",
  usage: "rtb enqueue --kind K [--group G] [--priority P] [--payload JSON] [--ref R] [--max-attempts N] [--run-at TIME | --delay-ms N] [--callback-url URL] [--depends-on ID|REF,... [--on-failure cancel|fail|ignore]] [--json]\n       rtb enqueue --file PATH|- [--format json|ndjson] [--chunk-size N] [unit flags as defaults] [--json]",
  help: [
    "  --kind K           the unit's kind (letters, digits, _ . -); agents consume jobs.<kind>",
    "  --group G          its group (dispatch is round-robin across groups; api default: default)",
    "  --priority P       higher goes first (api default 0)",
    "  --payload JSON     what the agent gets, as JSON (api default {})",
    "  --ref R            an idempotency key: a ref that exists already creates nothing",
    "  --max-attempts N   attempts before the unit ends as error (api default RTB_MAX_ATTEMPTS)",
    "  --run-at TIME      not before this ISO time with its offset (2027-01-31T09:00:00Z); at most 366 days ahead",
    "  --delay-ms N       not before N milliseconds from now; at most 366 days",
    "  --callback-url URL where rtb POSTs the unit's final state, signed (a host in the api's",
    "                     RTB_WEBHOOK_ALLOWED_HOSTS); default: the group's callbackUrl",
    "  --depends-on LIST  units it waits for, by id or ref, comma-separated (7,order-1): it is",
    "                     blocked until each succeeded, and gets their results (as dependsOn;",
    "                     digits are an id: a ref of digits only needs a --file record)",
    "  --on-failure P     with --depends-on: what a dependency ending in error or cancelled does",
    "                     to it: cancel (the api's default), fail, or ignore",
    "  -f, --file PATH    units from a file, `-` for stdin: a JSON array (or one object), or",
    "                     NDJSON (one object per line). The unit flags above fill in what a",
    "                     record leaves out.",
    "  --format F         json or ndjson (default: by the file name, else `[` means JSON)",
    "  --chunk-size N     units per request (default 5000; the api takes up to its",
    "                     RTB_API_MAX_BATCH, 10000 by default). A chunk over the api's body",
    "                     limit (RTB_API_MAX_BODY_BYTES) is split in two and sent again.",
    "  --json             one unit: POST /units exactly as the api answers it; a file:",
    '                     {"units": [{id, ref, status, created}, ...], "created": n, "existing": m,',
    '                      "requests": r} (and "error" when the api refused a chunk)',
    "",
    "Chunks are sent one after another; if the api refuses one, the chunks before it stay",
    "enqueued and the command stops (exit 1). Give units a ref to make a re-run safe.",
    "Needs RTB_API_TOKEN when the api has one.",
  ].join("\n"),
  options: {
    kind: { type: "string" },
    group: { type: "string" },
    priority: { type: "string" },
    payload: { type: "string" },
    ref: { type: "string" },
    "max-attempts": { type: "string" },
    "run-at": { type: "string" },
    "delay-ms": { type: "string" },
    "callback-url": { type: "string" },
    "depends-on": { type: "string" },
    "on-failure": { type: "string" },
    file: { type: "string", short: "f" },
    format: { type: "string", default: "auto" },
    "chunk-size": { type: "string", default: "5000" },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx, values) {
    const defaults = unitFromFlags(values);
    const file = str(values.file);
    if (file === undefined) {
      if (defaults.kind === undefined) throw new UsageError("give --kind (one unit) or --file (many)");
      return enqueueOne(ctx, defaults as NewUnit);
    }
    const format = str(values.format);
    if (format !== "auto" && format !== "json" && format !== "ndjson") throw new UsageError(`--format: expected json or ndjson, got ${JSON.stringify(format)}`);
    const chunkSize = intArg(values["chunk-size"], "--chunk-size", { min: 1, max: MAX_CHUNK });
    // A file that cannot be opened is a usage error, reported before anything is sent.
    const stream: Readable =
      file === "-"
        ? ctx.stdin
        : (
            await open(file).catch((err: Error) => {
              throw new UsageError(`--file ${file}: ${err.message}`);
            })
          ).createReadStream();
    return enqueueFile(ctx, readUnits(stream, format, file === "-" ? "" : file), defaults, chunkSize);
  },
};

/** The unit flags, parsed; absent flags stay absent so the api applies its defaults. */
function unitFromFlags(values: Values): Partial<NewUnit> {
  const unit: Partial<NewUnit> = {};
  const kind = str(values.kind);
  if (kind !== undefined) {
    if (!KIND_PATTERN.test(kind)) throw new UsageError(`--kind: expected ${KIND_RULE}, got ${JSON.stringify(kind)}`);
    unit.kind = kind;
  }
  if (values.group !== undefined) unit.group = str(values.group);
  const priority = optionalInt(values.priority, "--priority", { min: -2_147_483_648, max: 2_147_483_647 });
  if (priority !== undefined) unit.priority = priority;
  const maxAttempts = optionalInt(values["max-attempts"], "--max-attempts", { min: 1 });
  if (maxAttempts !== undefined) unit.maxAttempts = maxAttempts;
  if (values.ref !== undefined) unit.ref = str(values.ref);
  // The api checks the time (and that only one of the two is given), naming the field.
  if (values["run-at"] !== undefined) unit.runAt = str(values["run-at"]);
  const delayMs = optionalInt(values["delay-ms"], "--delay-ms", { min: 0, max: MAX_DELAY_MS });
  if (delayMs !== undefined) unit.delayMs = delayMs;
  // The api checks the URL against its allowed hosts, naming callbackUrl.
  if (values["callback-url"] !== undefined) unit.callbackUrl = str(values["callback-url"]);
  if (values["depends-on"] !== undefined) {
    const items = str(values["depends-on"])!.split(",").map((s) => s.trim());
    if (items.some((s) => s === "")) throw new UsageError(`--depends-on: expected unit ids or refs separated by commas, got ${JSON.stringify(values["depends-on"])}`);
    // A number is an id, anything else a ref (the api says which do not exist, naming dependsOn).
    unit.dependsOn = items.map((s) => (/^[1-9]\d{0,15}$/.test(s) ? Number(s) : s));
  }
  if (values["on-failure"] !== undefined) {
    const policy = str(values["on-failure"])!;
    if (!(FAILURE_POLICIES as readonly string[]).includes(policy)) throw new UsageError(`--on-failure: expected ${FAILURE_POLICIES.join(", ")}, got ${JSON.stringify(policy)}`);
    if (unit.dependsOn === undefined) throw new UsageError("--on-failure applies to --depends-on: give both");
    unit.onFailure = policy as FailurePolicy;
  }
  if (values.payload !== undefined) {
    try {
      unit.payload = JSON.parse(str(values.payload)!);
    } catch (err) {
      throw new UsageError(`--payload: not valid JSON (${(err as Error).message})`);
    }
  }
  return unit;
}

async function enqueueOne(ctx: Context, unit: NewUnit): Promise<void> {
  const answer = await ctx.api().post<EnqueuedOne>("/units", unit);
  if (ctx.json) return ctx.out.json(answer);
  const u = answer.unit;
  const ref = u.ref === null ? "" : ` (ref ${u.ref})`;
  ctx.out.line(answer.created ? `created unit ${u.id}${ref}: ${u.kind}, group ${u.group}, ${u.status}` : `unit ${u.id}${ref} already exists: ${u.status}; nothing created`);
}

async function enqueueFile(ctx: Context, records: AsyncIterable<InputRecord>, defaults: Partial<NewUnit>, chunkSize: number): Promise<number | void> {
  const { out } = ctx;
  const totals = { created: 0, existing: 0, requests: 0 };
  const progress = !ctx.json && out.stderr.isTTY === true;
  let first = true;
  // --json streams the units as the answers come, so a million of them never sit in memory;
  // the document is closed whatever happens, with an "error" member when something failed.
  if (ctx.json) out.stdout.write('{"units": [');
  const closeJson = (error?: object) => {
    if (!ctx.json) return;
    out.stdout.write(`${first ? "" : "\n"}], "created": ${totals.created}, "existing": ${totals.existing}, "requests": ${totals.requests}`);
    out.stdout.write(error ? `, "error": ${JSON.stringify(error)}}\n` : "}\n");
  };
  const send = async (chunk: InputRecord[]): Promise<void> => {
    let answer: EnqueuedBatch;
    try {
      answer = await ctx.api().post<EnqueuedBatch>("/units", chunk.map((r) => r.value));
    } catch (err) {
      // Over the api's body limit (RTB_API_MAX_BODY_BYTES: large payloads): halve and go on.
      if (err instanceof ApiError && err.status === 413 && chunk.length > 1) {
        const half = Math.ceil(chunk.length / 2);
        await send(chunk.slice(0, half));
        return send(chunk.slice(half));
      }
      if (err instanceof ApiError) throw new RefusedChunk(err, chunk);
      throw err;
    }
    totals.requests++;
    totals.created += answer.created;
    totals.existing += answer.existing;
    if (ctx.json) {
      for (const u of answer.units) {
        out.stdout.write(`${first ? "\n" : ",\n"}${JSON.stringify({ id: u.id, ref: u.ref, status: u.status, created: u.created })}`);
        first = false;
      }
    }
    if (progress) out.stderr.write(`\renqueued ${count(totals.created + totals.existing)} units…\x1b[K`);
  };
  try {
    for await (const chunk of chunked(withDefaults(records, defaults), chunkSize)) await send(chunk);
  } catch (err) {
    if (progress) out.stderr.write("\r\x1b[K");
    const n = totals.created + totals.existing;
    const before = `before it, ${count(n)} unit${n === 1 ? " was" : "s were"} enqueued (${count(totals.created)} created, ${count(totals.existing)} already existed)`;
    if (err instanceof RefusedChunk) {
      closeJson({ ...err.apiError.body, status: err.apiError.status, where: err.where });
      out.note(`rtb enqueue: the api refused ${err.where}: ${err.message}; ${err.request} wrote nothing; ${before}`);
      return 1;
    }
    closeJson(err instanceof InputError ? { error: "invalid_input", message: err.message } : { error: "failed", message: (err as Error).message });
    if (!(err instanceof InputError)) throw err;
    out.note(`rtb enqueue: ${err.message}; ${before}`);
    return 1;
  }
  if (progress) out.stderr.write("\r\x1b[K");
  closeJson();
  if (!ctx.json) {
    const n = totals.created + totals.existing;
    out.line(`enqueued ${count(n)} unit${n === 1 ? "" : "s"} in ${totals.requests} request${totals.requests === 1 ? "" : "s"}: ${count(totals.created)} created, ${count(totals.existing)} already existed`);
  }
}

/**
 * A chunk the api refused. Its `[i].field` names a unit by its index in the request; this
 * names it by its place in the file (`line 12`), or the whole chunk when no unit is named.
 */
class RefusedChunk extends Error {
  override name = "RefusedChunk";
  readonly apiError: ApiError;
  readonly where: string;
  /** `its request (line 1 to line 5000)` */
  readonly request: string;
  constructor(apiError: ApiError, chunk: InputRecord[]) {
    const m = /^\[(\d+)\](?:\.(.+))?$/.exec(apiError.body.field ?? "");
    const record = m ? chunk[Number(m[1])] : undefined;
    const field = record ? m![2] : apiError.body.field;
    super(`${apiError.message}${field ? ` (field: ${field})` : ""}`);
    this.apiError = apiError;
    const range = `${chunk[0]!.where} to ${chunk.at(-1)!.where}`;
    this.where = record ? record.where : `the units from ${range}`;
    this.request = record ? `its request (${range})` : "that request";
  }
}

async function* withDefaults(records: AsyncIterable<InputRecord>, defaults: Partial<NewUnit>): AsyncGenerator<InputRecord> {
  for await (const r of records) {
    const value = { ...defaults, ...r.value };
    if (value.kind === undefined) throw new InputError(`${r.where}: no kind (give one in the record, or --kind for all of them)`);
    yield { value, where: r.where };
  }
}
