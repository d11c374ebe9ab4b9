import type { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { ApiError, createApiClient, describeApiError, UnreachableError, type ApiClient } from "./api-client.ts";
import { ConfigurationError, UsageError, type Command, type Context, type Values } from "./command.ts";
import { commands } from "./commands/index.ts";
import { createOutput, type Output, type Writer } from "./output.ts";

export interface RunDeps {
  env: Record<string, string | undefined>;
  stdin: Readable;
  stdout: Writer;
  stderr: Writer;
  /** Aborted by Ctrl-C. */
  signal: AbortSignal;
  version: string;
}

const DEFAULT_API_URL = "http://localhost:8080";
const REQUEST_TIMEOUT_MS = 30_000;

/** Parse the command line, run the command, and map the outcome to an exit code. */
export async function run(argv: string[], deps: RunDeps): Promise<number> {
  const out = createOutput(deps.stdout, deps.stderr, deps.env);
  const [name, ...rest] = argv;
  if (name === "--help" || name === "-h" || (name === "help" && rest.length === 0)) {
    out.line(mainUsage());
    return 0;
  }
  if (name === "--version" || name === "-V") {
    out.line(deps.version);
    return 0;
  }
  if (name === "help") return run([rest[0]!, "--help"], deps);
  const command = commands.find((c) => c.name === name);
  if (!command) {
    out.note(name === undefined ? mainUsage() : `rtb: unknown command ${JSON.stringify(name)}\n\n${mainUsage()}`);
    return 2;
  }
  try {
    const parsed = parseArgs({
      args: rest,
      options: { ...command.options, json: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false } },
      allowPositionals: true,
      strict: true,
    });
    const values = parsed.values as Values;
    const positionals = parsed.positionals;
    if (values.help) {
      out.line(commandHelp(command));
      return 0;
    }
    const { min, max } = command.positionals;
    if (positionals.length < min || positionals.length > max) {
      throw new UsageError(max === 0 ? `takes no arguments, got ${JSON.stringify(positionals.join(" "))}` : `expected ${min === max ? min : `${min} or more`} argument${max === 1 ? "" : "s"}, got ${positionals.length}`);
    }
    const ctx: Context = { out, stdin: deps.stdin, env: deps.env, signal: deps.signal, json: values.json === true, api: lazyApi(deps) };
    return (await command.run(ctx, values, positionals)) ?? 0;
  } catch (err) {
    return fail(out, command, err, deps.signal);
  }
}

function fail(out: Output, command: Command, err: unknown, signal: AbortSignal): number {
  const prefix = `rtb ${command.name}:`;
  // parseArgs' own errors (unknown option, missing value) are usage errors too, in our words.
  const parseError = (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
  if (err instanceof UsageError || parseError) {
    const message = parseError ? parseArgsWords(err as Error & { code: string }, command) : (err as Error).message;
    out.note(`${prefix} ${message}\nusage: ${command.usage}\n(rtb ${command.name} --help for more)`);
    return 2;
  }
  if (err instanceof ConfigurationError) {
    out.note(`${prefix} ${err.message}`);
    return 2;
  }
  if (signal.aborted) {
    out.note(`${prefix} interrupted`);
    return 130;
  }
  if (err instanceof ApiError) out.note(`${prefix} ${describeApiError(err)}`);
  else if (err instanceof UnreachableError) out.note(`${prefix} ${err.message}`);
  else out.note(`${prefix} ${causes(err)}`);
  return 1;
}

/**
 * node:util parseArgs' errors in the CLI's words: `Unknown option '--colour'; rtb go takes --wait, ...` instead of
 * "Unknown option '--colour'. To specify a positional argument starting with a '-', ...".
 */
function parseArgsWords(err: Error & { code: string }, command: Command): string {
  // "Option '-n, --limit <value>' argument missing": the long name, else the short one.
  const option = /--[\w-]+/.exec(err.message)?.[0] ?? /'(-\w)/.exec(err.message)?.[1];
  const known = Object.keys(command.options).map((o) => `--${o}`).concat("--json", "--help");
  switch (err.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `Unknown option '${option ?? "?"}'; rtb ${command.name} takes ${known.join(", ")}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (!option) return "an option's value is wrong";
      return /argument missing/.test(err.message) ? `${option} <value> needs a value` : `${option} takes no value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return "takes no arguments";
    default:
      return "cannot read the command line";
  }
}

/** `migration 0002 failed: relation "x" already exists`: the whole chain of causes. */
function causes(err: unknown): string {
  const parts: string[] = [];
  for (let e = err as { message?: string; cause?: unknown } | undefined; e && parts.length < 5; e = e.cause as typeof e) {
    parts.push(e.message ?? String(e));
  }
  return parts.join(": ");
}

function lazyApi({ env, signal }: RunDeps): () => ApiClient {
  let client: ApiClient | undefined;
  return () => {
    if (client) return client;
    const baseUrl = env.RTB_API_URL || DEFAULT_API_URL;
    let url: URL | undefined;
    try {
      url = new URL(baseUrl);
    } catch {}
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      throw new ConfigurationError(`RTB_API_URL=${JSON.stringify(baseUrl)}: expected an http(s) URL, such as ${DEFAULT_API_URL}`);
    }
    return (client = createApiClient({ baseUrl, token: env.RTB_API_TOKEN || undefined, timeoutMs: REQUEST_TIMEOUT_MS, signal }));
  };
}

function mainUsage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "usage: rtb <command> [options]",
    "",
    "Operate an rtb installation: the api at RTB_API_URL (default http://localhost:8080), or,",
    "for migrate and seed, the database itself.",
    "",
    "commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "every command:  --json (machine output on stdout), -h/--help (its options)",
    "environment:    RTB_API_URL; RTB_API_TOKEN (sent as Authorization: Bearer <token>);",
    "                NO_COLOR; migrate and seed: RTB_DB_HOST, RTB_DB_USER, RTB_DB_PASSWORD, RTB_DB_NAME",
    "exit codes:     0 ok, 1 failed (the api refused, or cannot be reached), 2 bad usage or",
    "                configuration, 3 rtb go --wait drained with units in error (or",
    "                rtb workflow --watch: the workflow ended in error or cancelled),",
    "                130 interrupted (Ctrl-C)",
  ].join("\n");
}

function commandHelp(c: Command): string {
  return [`usage: ${c.usage}`, "", `${c.summary[0]!.toUpperCase()}${c.summary.slice(1)}.`, "", c.help, "  -h, --help    this help"].join("\n");
}
