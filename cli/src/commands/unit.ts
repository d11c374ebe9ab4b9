import type { UnitWithTimeline } from "@rtb/protocol";
import { intArg, type Command } from "../command.ts";
import { oneLine, timestamp } from "../format.ts";
import { fields, paintStatus, table } from "../output.ts";

export const unit: Command = {
  name: "unit",
  summary: "one unit and its timeline",
  usage: "rtb unit <id> [--json]",
  help: "  --json   GET /units/<id> exactly as the api answers it",
  options: {},
  positionals: { min: 1, max: 1 },
  async run(ctx, _values, [idArg]) {
    const id = intArg(idArg, "<id>", { min: 1 });
    const u = await ctx.api().get<UnitWithTimeline>(`/units/${id}`);
    if (ctx.json) return ctx.out.json(u);
    const { out } = ctx;
    out.line(out.paint(`unit ${u.id}`, "bold"));
    fields(out, [
      ["status", `${paintStatus(out, u.status)} (attempt ${u.attempt} of ${u.maxAttempts})`],
      ["kind", u.kind],
      ["group", u.group],
      ["priority", String(u.priority)],
      ["ref", u.ref ?? "-"],
      ["schedule", u.schedule ? `${u.schedule.name}, occurrence ${timestamp(u.schedule.occurrence)}` : "-"],
      ["workflow", u.workflow ? `${u.workflow.id}, step ${u.workflow.step} (rtb workflow ${u.workflow.id} draws it)` : "-"],
      ...(u.status === "blocked" && u.waitingOn !== null ? [["waiting on", `${u.waitingOn} dependenc${u.waitingOn === 1 ? "y" : "ies"}`] as [string, string]] : []),
      ["callback", u.callbackUrl ?? "-"],
      ["trace", u.traceId ?? "-"],
      ["payload", oneLine(u.payload, 200)],
      ["result", oneLine(u.result, 200)],
      ["last error", u.lastError ?? "-"],
      ["not before", timestamp(u.notBefore)],
      ["dispatched", timestamp(u.dispatchedAt)],
      ["created", timestamp(u.createdAt)],
      ["updated", timestamp(u.updatedAt)],
    ]);
    out.line();
    if (u.events.length === 0) out.line("no events yet: the unit has never been dispatched");
    else {
      table(
        out,
        [{ header: "attempt", align: "right" }, { header: "status" }, { header: "at" }, { header: "source" }, { header: "detail" }],
        u.events.map((e) => [String(e.attempt), paintStatus(out, e.status), timestamp(e.at), e.source, e.detail == null ? "" : oneLine(e.detail, 80)]),
      );
    }
    if (u.callbacks.length === 0) return;
    out.line();
    // Each delivery of its end (one per time it ended), then each attempt at it.
    table(
      out,
      [{ header: "callback" }, { header: "state" }, { header: "at" }, { header: "answer" }],
      u.callbacks.flatMap((d) => [
        [d.webhookId, d.state, timestamp(d.createdAt), d.state === "pending" && d.nextAttemptAt ? `next attempt ${timestamp(d.nextAttemptAt)}` : oneLine(d.url, 60)],
        ...d.history.map((h) => [`  attempt`, h.outcome, timestamp(h.at), [h.statusCode === undefined ? "" : `HTTP ${h.statusCode}`, h.error ?? ""].filter(Boolean).join(": ")]),
      ]),
    );
  },
};
