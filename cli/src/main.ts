/**
 * The composition root of the `rtb` command: the only place that reads process.env and argv,
 * and installs the Ctrl-C handler. Everything else gets them as arguments.
 */
import { readFileSync } from "node:fs";
import { run } from "./run.ts";

// `rtb units --all | head` closes stdout early: that is the reader's choice, not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

// The first Ctrl-C stops the command where it stands (`rtb go --wait` stops waiting); the
// second exits at once.
const interrupt = new AbortController();
process.on("SIGINT", () => {
  if (interrupt.signal.aborted) process.exit(130);
  interrupt.abort();
});

const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };

// exitCode, not exit(): stdout may still be flushing into a pipe.
process.exitCode = await run(process.argv.slice(2), { env: process.env, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, signal: interrupt.signal, version });
