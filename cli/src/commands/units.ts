import { UNIT_STATUSES, type UnitPage, type UnitView as Unit } from "@rtb/protocol";
import { intArg, str, UsageError, type Command, type Context, type Values } from "../command.ts";
import { oneLine, timestamp } from "../format.ts";
import { paintStatus, table } from "../output.ts";

export const units: Command = {
  name: "units",
  summary: "list units, newest first, filtered by status, kind, group, ref, schedule, what they wait for, or stuck",
  usage: "rtb units [--status S[,S...]] [--kind K] [--group G] [--ref R] [--schedule NAME] [--waiting nothing|clock|agent] [--stuck] [--limit N] [--after CURSOR | --all] [--json]",
  help: [
    `  -s, --status S   only these statuses, comma-separated (${UNIT_STATUSES.join(", ")})`,
    "  --kind K         only this kind",
    "  --group G        only this group",
    "  --ref R          the unit enqueued with this ref (exactly), if any",
    "  --schedule NAME  only the units this schedule made",
    "  --waiting W      pending units waiting for nothing (ready), a clock (delayed or in a",
    "                   retry backoff) or an agent of their kind",
    "  --stuck          only units in flight for longer than the api's timeouts",
    "  -n, --limit N    units per page (1 to 1000, default 50)",
    "  --after CURSOR   the page after this cursor (printed under a page that has more)",
    "  --all            follow the cursor to the last page",
    "  --json           GET /units exactly as the api answers it; with --all, every page's",
    '                   units in one document: {"units": [...], "nextCursor": null}',
  ].join("\n"),
  options: {
    status: { type: "string", short: "s", multiple: true },
    kind: { type: "string" },
    group: { type: "string" },
    ref: { type: "string" },
    schedule: { type: "string" },
    waiting: { type: "string" },
    stuck: { type: "boolean", default: false },
    limit: { type: "string", short: "n", default: "50" },
    after: { type: "string" },
    all: { type: "boolean", default: false },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx, values) {
    const query = unitQuery(values);
    if (values.all && values.after !== undefined) throw new UsageError("--all starts from the first page: give --after or --all, not both");
    if (!values.all) {
      const page = await ctx.api().get<UnitPage>("/units", query);
      if (ctx.json) return ctx.out.json(page);
      renderUnits(ctx, page.units);
      if (page.nextCursor) ctx.out.line(ctx.out.paint(`more: add --after ${page.nextCursor} (or --all)`, "dim"));
      return;
    }
    if (ctx.json) return streamAll(ctx, query);
    const all: Unit[] = [];
    for await (const page of pages(ctx, query)) all.push(...page.units);
    renderUnits(ctx, all);
  },
};

const WAITING = ["nothing", "clock", "agent"];

function unitQuery(values: Values) {
  const statuses = ((values.status as string[] | undefined) ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  for (const s of statuses) if (!(UNIT_STATUSES as readonly string[]).includes(s)) throw new UsageError(`--status: ${JSON.stringify(s)} is not a status (${UNIT_STATUSES.join(", ")})`);
  const waiting = str(values.waiting);
  if (waiting !== undefined && !WAITING.includes(waiting)) throw new UsageError(`--waiting: ${JSON.stringify(waiting)} is not one of ${WAITING.join(", ")}`);
  return {
    status: statuses.length ? statuses.join(",") : undefined,
    kind: str(values.kind),
    group: str(values.group),
    ref: str(values.ref),
    schedule: str(values.schedule),
    waiting,
    stuck: values.stuck ? "true" : undefined,
    limit: intArg(values.limit, "--limit", { min: 1, max: 1000 }),
    after: str(values.after),
  };
}

async function* pages(ctx: Context, query: ReturnType<typeof unitQuery>): AsyncGenerator<UnitPage> {
  let after: string | undefined;
  do {
    const page = await ctx.api().get<UnitPage>("/units", { ...query, after });
    yield page;
    after = page.nextCursor ?? undefined;
  } while (after !== undefined);
}

/** One JSON document written page by page, so --all never holds every unit. */
async function streamAll(ctx: Context, query: ReturnType<typeof unitQuery>): Promise<void> {
  const { stdout } = ctx.out;
  let first = true;
  stdout.write('{"units": [');
  for await (const page of pages(ctx, query)) {
    for (const u of page.units) {
      stdout.write(`${first ? "\n" : ",\n"}${JSON.stringify(u)}`);
      first = false;
    }
  }
  stdout.write(`${first ? "" : "\n"}], "nextCursor": null}\n`);
}

function renderUnits({ out }: Context, list: Unit[]): void {
  if (list.length === 0) return out.line("no units match");
  table(
    out,
    [
      { header: "id", align: "right" },
      { header: "kind" },
      { header: "group" },
      { header: "priority", align: "right" },
      { header: "status" },
      { header: "attempt", align: "right" },
      { header: "updated" },
      { header: "last error" },
    ],
    list.map((u) => [
      String(u.id),
      u.kind,
      u.group,
      String(u.priority),
      paintStatus(out, u.status),
      `${u.attempt}/${u.maxAttempts}`,
      timestamp(u.updatedAt),
      u.lastError === null ? "" : oneLine(u.lastError, 50),
    ]),
  );
}
