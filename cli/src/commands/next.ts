import type { NextResult } from "@rtb/protocol";
import { intArg, type Command } from "../command.ts";
import { timestamp } from "../format.ts";
import { table } from "../output.ts";

export const next: Command = {
  name: "next",
  summary: "the units the next top-up would dispatch, in dispatch order",
  usage: "rtb next [--limit N] [--json]",
  help: ["  -n, --limit N   how many (1 to 1000, default 10)", "  --json          GET /next exactly as the api answers it"].join("\n"),
  options: { limit: { type: "string", short: "n", default: "10" } },
  positionals: { min: 0, max: 0 },
  async run(ctx, values) {
    const limit = intArg(values.limit, "--limit", { min: 1, max: 1000 });
    const answer = await ctx.api().get<NextResult>("/next", { limit });
    if (ctx.json) return ctx.out.json(answer);
    if (answer.units.length === 0) return ctx.out.line("nothing is eligible for dispatch (the backlog is empty, or every pending unit waits for a retry)");
    table(
      ctx.out,
      [{ header: "#", align: "right" }, { header: "id", align: "right" }, { header: "kind" }, { header: "group" }, { header: "priority", align: "right" }, { header: "attempt", align: "right" }, { header: "created" }],
      answer.units.map((u, i) => [String(i + 1), String(u.id), u.kind, u.group, String(u.priority), String(u.attempt), timestamp(u.createdAt)]),
    );
  },
};
