import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { loadApiConfig, startApiService, type ApiService } from "@rtb/api";
import { testLogger, type TestPlace } from "@rtb/testing";

/** The CLI's test helpers: the real bin as a subprocess, against a real api on a random port. */

export const BIN = fileURLToPath(new URL("../bin/rtb.js", import.meta.url));

/** A cron expression that does not fire during a test run. */
export const NEVER = "0 0 1 1 *";

export interface Listening {
  api: ApiService;
  url: string;
  /** The api's stop: a Listening is a test place's to own (`place.own(...)`). */
  stop(): Promise<void>;
}

/** An api in-process, listening on 127.0.0.1 on a port of the system's choosing. */
export async function startListeningApi(place: TestPlace, env: Record<string, string> = {}): Promise<Listening> {
  const config = loadApiConfig({ ...place.env, RTB_API_HOST: "127.0.0.1:0", RTB_SEED_UNITS: "10", RTB_RECONCILE_CRON: NEVER, ...env });
  const api = await startApiService(config, testLogger("api"), { listen: true });
  return { api, url: `http://127.0.0.1:${api.address!.port}`, stop: () => api.stop() };
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  done: Promise<Ran>;
}

/**
 * `node cli/bin/rtb.js ...args` with `env` on top of this process's environment (without a
 * stray RTB_API_TOKEN or RTB_API_URL from the shell that runs the tests).
 */
export function start(args: string[], env: Record<string, string> = {}, input?: string): Running {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, RTB_API_TOKEN: "", RTB_API_URL: "", NO_COLOR: "", ...env },
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  if (input !== undefined) child.stdin!.end(input);
  const done = new Promise<Ran>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

/** Run the bin to its end. */
export const rtb = (args: string[], env: Record<string, string> = {}, input?: string): Promise<Ran> => start(args, env, input).done;

/** Run the bin with --json and parse stdout, failing with its stderr when it did not exit 0. */
export async function rtbJson<T = any>(args: string[], env: Record<string, string> = {}, input?: string): Promise<T> {
  const r = await rtb([...args, "--json"], env, input);
  if (r.code !== 0) throw new Error(`rtb ${args.join(" ")} --json exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
