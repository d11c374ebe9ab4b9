import { ApiError, describeApiError } from "../api-client.ts";
import { CANCELLABLE, type CancelResult, type UnitView as Unit } from "@rtb/protocol";
import { intArg, str, UsageError, type Command, type Context } from "../command.ts";
import { count } from "../format.ts";

export const retry: Command = {
  name: "retry",
  summary: "put errored or cancelled units back in the backlog",
  usage: "rtb retry <id>... [--json]\n       rtb retry --all-errors [--kind K] [--group G] [--json]",
  help: [
    "  --all-errors   every unit whose status is error (POST /units/redrive)",
    "  --kind K       with --all-errors: only this kind",
    "  --group G      with --all-errors: only this group",
    "  --json         with ids: one entry per id, in order:",
    '                 [{"id": 5, "unit": {...}}, {"id": 6, "error": {"status": 409, "error": "conflict", "message": ...}}]',
    '                 with --all-errors: POST /units/redrive exactly as the api answers it ({"retried": n})',
    "",
    "A unit that is neither error nor cancelled is refused (409) and named on stderr; the other",
    "ids are still retried, and the exit code is 1. Needs RTB_API_TOKEN when the api has one.",
  ].join("\n"),
  options: {
    "all-errors": { type: "boolean", default: false },
    kind: { type: "string" },
    group: { type: "string" },
  },
  positionals: { min: 0, max: Infinity },
  async run(ctx, values, ids) {
    if (values["all-errors"]) {
      if (ids.length > 0) throw new UsageError("give unit ids or --all-errors, not both");
      const answer = await ctx.api().post<{ retried: number }>("/units/redrive", { kind: str(values.kind), group: str(values.group) });
      if (ctx.json) return ctx.out.json(answer);
      return ctx.out.line(`${count(answer.retried)} errored unit${answer.retried === 1 ? "" : "s"} back in the backlog (pending)`);
    }
    if (values.kind !== undefined || values.group !== undefined) throw new UsageError("--kind and --group go with --all-errors");
    if (ids.length === 0) throw new UsageError("give at least one unit id, or --all-errors");
    return eachUnit(ctx, "retry", ids, (u) => `unit ${u.id}: back in the backlog (${u.status}, attempt ${u.attempt} of ${u.maxAttempts})`);
  },
};

export const cancel: Command = {
  name: "cancel",
  summary: "cancel units that are not finished: pending ones are never dispatched, running ones are aborted",
  usage: "rtb cancel <id>... [--json]\n       rtb cancel [--kind K] [--group G] [--status S[,S...]] [--json]",
  help: [
    "  --kind K       every unit of this kind (POST /units/cancel)",
    "  --group G      every unit of this group: stop everything of this customer",
    `  --status S     only units in these statuses (comma-separated): ${CANCELLABLE.join(", ")}`,
    "                 (the filters given all apply; at least one of them)",
    "  --json         with ids: one entry per id, in order:",
    '                 [{"id": 5, "unit": {...}}, {"id": 6, "error": {"status": 409, "error": "conflict", "message": ...}}]',
    '                 with filters: POST /units/cancel exactly as the api answers it ({"cancelled": n, "inFlight": m})',
    "",
    "A unit in flight (dispatched, queued, processing) is cancelled too: its handler's abort signal",
    "fires, or its job is dropped before it runs, and its late reports are ignored. A finished unit",
    "(success, error, cancelled) is refused (409) and named on stderr; the other ids are still",
    "cancelled, and the exit code is 1. Needs RTB_API_TOKEN when the api has one.",
  ].join("\n"),
  options: {
    kind: { type: "string" },
    group: { type: "string" },
    status: { type: "string" },
  },
  positionals: { min: 0, max: Infinity },
  async run(ctx, values, ids) {
    const filtered = values.kind !== undefined || values.group !== undefined || values.status !== undefined;
    if (filtered) {
      if (ids.length > 0) throw new UsageError("give unit ids or --kind/--group/--status, not both");
      const status = str(values.status)?.split(",").map((s) => s.trim()).filter(Boolean);
      const body = { kind: str(values.kind), group: str(values.group), status: status?.length === 1 ? status[0] : status };
      const answer = await ctx.api().post<CancelResult>("/units/cancel", body);
      if (ctx.json) return ctx.out.json(answer);
      return ctx.out.line(`${count(answer.cancelled)} unit${answer.cancelled === 1 ? "" : "s"} cancelled (${count(answer.inFlight)} in flight: their agents were told)`);
    }
    if (ids.length === 0) throw new UsageError("give at least one unit id, or --kind, --group and/or --status");
    return eachUnit(ctx, "cancel", ids, (u) => `unit ${u.id}: ${u.status}`);
  },
};

type Outcome = { id: number; unit: Unit } | { id: number; error: { status: number } & ApiError["body"] };

/** POST /units/<id>/<action> for each id; refusals are reported and the others carry on. */
async function eachUnit(ctx: Context, action: "retry" | "cancel", idArgs: string[], describe: (u: Unit) => string): Promise<number> {
  const ids = idArgs.map((a) => intArg(a, "<id>", { min: 1 }));
  const outcomes: Outcome[] = [];
  for (const id of ids) {
    try {
      const { unit } = await ctx.api().post<{ unit: Unit }>(`/units/${id}/${action}`);
      outcomes.push({ id, unit });
      if (!ctx.json) ctx.out.line(describe(unit));
    } catch (err) {
      // Unreachable, or a refusal that concerns the whole request (a bad token): stop.
      if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 409)) throw err;
      outcomes.push({ id, error: { status: err.status, ...err.body } });
      // The api's messages name the unit already ("unit 6 is success; ...").
      const said = describeApiError(err);
      ctx.out.note(`rtb ${action}: ${said.includes(String(id)) ? said : `unit ${id}: ${said}`}`);
    }
  }
  if (ctx.json) ctx.out.json(outcomes);
  return outcomes.some((o) => "error" in o) ? 1 : 0;
}
