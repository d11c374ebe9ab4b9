import { setTimeout as sleep } from "node:timers/promises";
import { ApiError, UnreachableError } from "../api-client.ts";
import type { GoResult, StateView } from "@rtb/protocol";
import { intArg, type Command, type Context } from "../command.ts";
import { count, duration } from "../format.ts";
import { createProgress, progressBar, progressText } from "../progress.ts";

export const go: Command = {
  name: "go",
  summary: "start dispatching; with --wait, wait until the backlog drains",
  usage: "rtb go [--wait [--interval MS] [--timeout S] [--quiet]] [--json]",
  help: [
    "  --wait          poll GET / until nothing is pending or in flight, drawing a progress",
    "                  bar on stderr (a plain line every 5 s when stderr is not a terminal)",
    "  --interval MS   how often to poll (default 500)",
    "  --timeout S     give up after S seconds (exit 1; default: wait as long as it takes)",
    "  -q, --quiet     no progress on stderr",
    "  --json          POST /go exactly as the api answers it; with --wait, once drained:",
    '                  {"go": <POST /go>, "status": <last GET />, "drained": true, "elapsedMs": n}',
    "",
    "Exit 0 when drained with no unit in error, 3 when drained with units in error (they are",
    "listed by rtb units --status error), 1 on --timeout, 130 on Ctrl-C. Ctrl-C only stops waiting: dispatching",
    "goes on (rtb pause stops it). An api that stops answering while waiting is retried.",
    "Needs RTB_API_TOKEN when the api has one.",
  ].join("\n"),
  options: {
    wait: { type: "boolean", short: "w", default: false },
    interval: { type: "string", default: "500" },
    timeout: { type: "string" },
    quiet: { type: "boolean", short: "q", default: false },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx, values) {
    const intervalMs = intArg(values.interval, "--interval", { min: 50, max: 60_000 });
    const timeoutS = values.timeout === undefined ? undefined : intArg(values.timeout, "--timeout", { min: 1 });
    const answer = await ctx.api().post<GoResult>("/go");
    if (!values.wait) {
      if (ctx.json) return ctx.out.json(answer);
      return ctx.out.line(`${answer.message} (${count(answer.dispatchedNow)} dispatched now)`);
    }
    if (!ctx.json) ctx.out.line(`${answer.message} (${count(answer.dispatchedNow)} dispatched now); waiting for the backlog to drain`);
    const waited = await waitUntilDrained(ctx, { intervalMs, timeoutMs: timeoutS && timeoutS * 1000, quiet: values.quiet === true });
    if (ctx.json) ctx.out.json({ go: answer, status: waited.state, drained: waited.outcome === "drained", elapsedMs: waited.elapsedMs });
    else if (waited.outcome === "drained") {
      const c = waited.state!.counts;
      ctx.out.line(`drained in ${duration(waited.elapsedMs)}: ${count(c.success)} success, ${count(c.error)} error, ${count(c.cancelled)} cancelled`);
    }
    if (waited.outcome === "drained" && waited.state!.counts.error > 0) {
      ctx.out.note(`rtb go: drained, but ${count(waited.state!.counts.error)} units ended in error (exit ${EXIT_FINISHED_WITH_ERRORS}; rtb units --status error lists them, rtb retry retries them)`);
      return EXIT_FINISHED_WITH_ERRORS;
    }
    if (waited.outcome === "interrupted") {
      ctx.out.note("stopped waiting (Ctrl-C); dispatching goes on: `rtb pause` stops it");
      return 130;
    }
    if (waited.outcome === "timeout") {
      ctx.out.note(`rtb go: gave up after --timeout ${timeoutS} s; the backlog has not drained`);
      return 1;
    }
  },
};

/** `rtb go --wait`: the backlog drained, and some units ended in error. */
export const EXIT_FINISHED_WITH_ERRORS = 3;

interface Waited {
  outcome: "drained" | "timeout" | "interrupted";
  state: StateView | null;
  elapsedMs: number;
}

const PLAIN_EVERY_MS = 5_000;

/** Poll GET / until `done`, showing progress on stderr. */
async function waitUntilDrained(ctx: Context, opts: { intervalMs: number; timeoutMs: number | undefined; quiet: boolean }): Promise<Waited> {
  const { stderr } = ctx.out;
  const tty = stderr.isTTY === true;
  const progress = createProgress();
  const started = Date.now();
  let state: StateView | null = null;
  let lastPlain = -Infinity;
  let drawn = false;
  const show = (note: string, final = false) => {
    if (opts.quiet) return;
    if (tty) {
      // Redraw in place: back to the line's start, draw, clear what the last draw left.
      stderr.write(`\r${progressBar(progress, stderr.columns || 80, note)}\x1b[K${final ? "\n" : ""}`);
      drawn = !final;
    } else if (final || Date.now() - lastPlain >= PLAIN_EVERY_MS) {
      stderr.write(`${progressText(progress, note)}\n`);
      lastPlain = Date.now();
    }
  };
  const finish = (outcome: Waited["outcome"]): Waited => {
    if (outcome !== "drained" && tty && drawn) stderr.write("\n");
    // Not a terminal: the plain lines come every 5 s; the last state gets a line of its own.
    if (outcome !== "drained" && !tty && !opts.quiet && progress.last()) stderr.write(`${progressText(progress, `(${outcome === "timeout" ? "timed out" : "stopped waiting"})`)}\n`);
    return { outcome, state, elapsedMs: Date.now() - started };
  };

  for (;;) {
    let note = "";
    try {
      state = await ctx.api().get<StateView>("/");
      const c = state.counts;
      progress.add({ at: Date.now(), done: c.success + c.error + c.cancelled, total: state.total });
      if (state.done) {
        show("", true);
        return finish("drained");
      }
      if (!state.dispatching) note = "(dispatching is paused: rtb go resumes it)";
    } catch (err) {
      if (ctx.signal.aborted) return finish("interrupted");
      // A restarting api or database is worth waiting for; a refusal (a bad token) is not.
      if (err instanceof UnreachableError || (err instanceof ApiError && err.status >= 500)) note = `(no answer: ${err.message}; retrying)`;
      else throw err;
    }
    show(note);
    if (opts.timeoutMs !== undefined && Date.now() - started >= opts.timeoutMs) return finish("timeout");
    try {
      await sleep(opts.intervalMs, undefined, { signal: ctx.signal });
    } catch {
      return finish("interrupted");
    }
  }
}
