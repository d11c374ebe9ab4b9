import { KIND_PATTERN, KIND_RULE, MISSED_PATTERN, SCHEDULE_NAME_PATTERN, SCHEDULE_NAME_RULE, type NewScheduleInput, type SchedulePage, type ScheduleView } from "@rtb/protocol";
import { intArg, optionalInt, str, UsageError, type Command, type Context, type Values } from "../command.ts";
import { count, oneLine, timestamp } from "../format.ts";
import { fields, table } from "../output.ts";

export const schedules: Command = {
  name: "schedules",
  summary: "list the schedules: when each fires next, paused or not, what it fired last",
  usage: "rtb schedules [--limit N] [--after NAME] [--json]",
  help: [
    "  -n, --limit N    schedules per page (1 to 1000, default 100)",
    "  --after NAME     the page after this name (printed under a page that has more)",
    "  --json           GET /schedules exactly as the api answers it",
  ].join("\n"),
  options: { limit: { type: "string", short: "n", default: "100" }, after: { type: "string" } },
  positionals: { min: 0, max: 0 },
  async run(ctx, values) {
    const page = await ctx.api().get<SchedulePage>("/schedules", { limit: intArg(values.limit, "--limit", { min: 1, max: 1000 }), after: str(values.after) });
    if (ctx.json) return ctx.out.json(page);
    const { out } = ctx;
    if (page.schedules.length === 0) return out.line("no schedules (rtb schedule add NAME --cron ... --kind K)");
    table(
      out,
      [{ header: "name" }, { header: "cron" }, { header: "time zone" }, { header: "kind" }, { header: "missed" }, { header: "next fire" }, { header: "last fired" }, { header: "fired", align: "right" }],
      page.schedules.map((s) => [
        s.name,
        s.cron,
        s.timeZone,
        s.unit.kind,
        s.missed,
        s.paused ? out.paint("paused", "yellow") : timestamp(s.nextFireAt),
        s.lastFired ? `${timestamp(s.lastFired.occurrence)} (unit ${s.lastFired.unitId})` : "-",
        count(s.fired),
      ]),
    );
    if (page.nextCursor) out.line(out.paint(`more: add --after ${page.nextCursor}`, "dim"));
  },
};

const ACTIONS = ["add", "set", "show", "pause", "resume", "rm"] as const;
type Action = (typeof ACTIONS)[number];
/** The flags that say what a schedule is; only `add` and `set` take them. */
const DEFINITION_FLAGS = ["cron", "tz", "kind", "group", "priority", "payload", "max-attempts", "missed", "paused"] as const;

export const schedule: Command = {
  name: "schedule",
  summary: "add, change, show, pause, resume or remove a schedule (a unit enqueued at each occurrence of a cron expression)",
  usage: [
    "rtb schedule add NAME --cron EXPR --kind K [--tz ZONE] [--group G] [--priority P] [--payload JSON] [--max-attempts N] [--missed skip|once|each:N] [--paused] [--json]",
    "       rtb schedule set NAME --cron EXPR --kind K [the same flags as add]",
    "       rtb schedule show|pause|resume|rm NAME [--json]",
  ].join("\n"),
  help: [
    "  add NAME           a new schedule (NAME: 1 to 100 letters, digits, _ . -)",
    "  --cron EXPR        when: 5 fields (minute hour day-of-month month day-of-week) or 6",
    "                     with seconds first, e.g. '0 9 * * 1-5', '*/10 * * * * *'",
    "  --tz ZONE          the IANA time zone EXPR is read in (default UTC), e.g. Europe/Paris",
    "  --kind K           the kind of the unit each occurrence enqueues",
    "  --group G, --priority P, --payload JSON, --max-attempts N",
    "                     the rest of that unit, as for rtb enqueue",
    "  --missed POLICY    occurrences missed while no api ran or the schedule was paused:",
    "                     skip (default: none of them runs), once (one unit, for the latest),",
    "                     each:N (one for each of the latest N)",
    "  --paused           create it paused (with set: pause it too)",
    "  set NAME           replace its definition, whole: what set leaves out takes its default,",
    "                     but its paused state stays unless --paused; a changed --cron or --tz",
    "                     fires from the first occurrence after now",
    "  show NAME          the schedule and its next occurrences",
    "  pause NAME         it fires nothing until resumed",
    "  resume NAME        it fires again; what the pause covered goes by its missed policy",
    "  rm NAME            delete it; the units it made stay",
    "  --json             the api's answer exactly",
    "",
    "Each occurrence enqueues exactly one unit (ref schedule:NAME@TIME), whatever the number of",
    "apis. Needs RTB_API_TOKEN when the api has one (show does only with RTB_API_TOKEN_READS).",
  ].join("\n"),
  options: {
    cron: { type: "string" },
    tz: { type: "string" },
    kind: { type: "string" },
    group: { type: "string" },
    priority: { type: "string" },
    payload: { type: "string" },
    "max-attempts": { type: "string" },
    missed: { type: "string" },
    paused: { type: "boolean", default: false },
  },
  positionals: { min: 2, max: 2 },
  async run(ctx, values, [actionArg, name]) {
    const action = actionArg as Action;
    if (!ACTIONS.includes(action)) throw new UsageError(`expected one of ${ACTIONS.join(", ")}, got ${JSON.stringify(actionArg)}`);
    if (!SCHEDULE_NAME_PATTERN.test(name!)) throw new UsageError(`NAME: expected ${SCHEDULE_NAME_RULE}, got ${JSON.stringify(name)}`);
    const path = `/schedules/${encodeURIComponent(name!)}`;
    if (action !== "add" && action !== "set") {
      const given = DEFINITION_FLAGS.filter((f) => values[f] !== undefined && values[f] !== false);
      if (given.length > 0) throw new UsageError(`--${given[0]} goes with rtb schedule add or set`);
    }
    let answer: ScheduleView;
    if (action === "add") answer = await ctx.api().post<ScheduleView>("/schedules", definition(name!, values));
    else if (action === "set") {
      const { name: _name, ...replacement } = definition(name!, values);
      answer = await ctx.api().put<ScheduleView>(path, replacement);
    } else if (action === "show") answer = await ctx.api().get<ScheduleView>(path);
    else if (action === "rm") answer = await ctx.api().delete<ScheduleView>(path);
    else answer = await ctx.api().post<ScheduleView>(`${path}/${action}`);
    if (ctx.json) return ctx.out.json(answer);
    if (action === "rm") return ctx.out.line(`schedule ${answer.name} deleted; the ${count(answer.fired)} unit${answer.fired === 1 ? "" : "s"} it made stay`);
    if (action === "show") return show(ctx, answer);
    const verb = action === "add" ? "created" : action === "set" ? "changed" : `${action}d`;
    ctx.out.line(`schedule ${answer.name} ${verb}: ${answer.paused ? "paused" : `next fire ${timestamp(answer.nextFireAt)}`}`);
  },
};

/** The add (and set) flags as the api's body; the api checks the expression and the zone, naming the field. */
function definition(name: string, values: Values): NewScheduleInput {
  const cron = str(values.cron);
  const kind = str(values.kind);
  if (cron === undefined) throw new UsageError("give --cron EXPR (e.g. '0 9 * * *')");
  if (kind === undefined) throw new UsageError("give --kind K: the kind of the unit each occurrence enqueues");
  if (!KIND_PATTERN.test(kind)) throw new UsageError(`--kind: expected ${KIND_RULE}, got ${JSON.stringify(kind)}`);
  const missed = str(values.missed);
  if (missed !== undefined && !MISSED_PATTERN.test(missed)) throw new UsageError(`--missed: expected skip, once or each:N, got ${JSON.stringify(missed)}`);
  const unit: NewScheduleInput["unit"] = { kind };
  if (values.group !== undefined) unit.group = str(values.group);
  const priority = optionalInt(values.priority, "--priority", { min: -2_147_483_648, max: 2_147_483_647 });
  if (priority !== undefined) unit.priority = priority;
  const maxAttempts = optionalInt(values["max-attempts"], "--max-attempts", { min: 1 });
  if (maxAttempts !== undefined) unit.maxAttempts = maxAttempts;
  if (values.payload !== undefined) {
    try {
      unit.payload = JSON.parse(str(values.payload)!);
    } catch (err) {
      throw new UsageError(`--payload: not valid JSON (${(err as Error).message})`);
    }
  }
  return { name, cron, unit, ...(values.tz !== undefined ? { timeZone: str(values.tz) } : {}), ...(missed !== undefined ? { missed } : {}), ...(values.paused ? { paused: true } : {}) };
}

function show({ out }: Context, s: ScheduleView): void {
  out.line(out.paint(`schedule ${s.name}`, "bold"));
  fields(out, [
    ["cron", `${s.cron} (${s.timeZone})`],
    ["unit", `${s.unit.kind}, group ${s.unit.group}, priority ${s.unit.priority}, ${s.unit.maxAttempts} attempts`],
    ["payload", oneLine(s.unit.payload, 200)],
    ["missed", s.missed],
    ["state", s.paused ? `paused since ${timestamp(s.pausedAt)}` : "active"],
    ["next fires", s.nextFireTimes.length ? s.nextFireTimes.map(timestamp).join(", ") : "-"],
    ["last fired", s.lastFired ? `${timestamp(s.lastFired.occurrence)}: unit ${s.lastFired.unitId}` : "-"],
    ["fired", `${count(s.fired)} units; ${count(s.skipped)} missed occurrences skipped`],
    ["created", timestamp(s.createdAt)],
    ["updated", timestamp(s.updatedAt)],
  ]);
}
