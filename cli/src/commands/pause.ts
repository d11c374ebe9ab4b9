import type { PauseResult } from "@rtb/protocol";
import type { Command } from "../command.ts";
import { count } from "../format.ts";

export const pause: Command = {
  name: "pause",
  summary: "stop dispatching; units in flight finish",
  usage: "rtb pause [--json]",
  help: ["  --json   POST /pause exactly as the api answers it", "", "Needs RTB_API_TOKEN when the api has one."].join("\n"),
  options: {},
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const answer = await ctx.api().post<PauseResult>("/pause");
    if (ctx.json) return ctx.out.json(answer);
    ctx.out.line(`${answer.message} (${count(answer.inFlight)} in flight)`);
  },
};
