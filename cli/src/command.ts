import type { Readable } from "node:stream";
import type { ParseArgsConfig } from "node:util";
import type { ApiClient } from "./api-client.ts";
import type { Output } from "./output.ts";

/** A bad command line: the message and the command's usage go to stderr, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A bad RTB_* variable: the message names it, exit code 2 (as for the services). */
export class ConfigurationError extends Error {
  override name = "ConfigurationError";
}

export type Values = Record<string, string | boolean | string[] | undefined>;

export interface Context {
  out: Output;
  /** For `rtb enqueue --file -`. */
  stdin: Readable;
  /** The api, built on first use (migrate and seed never touch it). */
  api(): ApiClient;
  env: Record<string, string | undefined>;
  /** Aborted by Ctrl-C. */
  signal: AbortSignal;
  json: boolean;
}

export interface Command {
  name: string;
  /** One line for `rtb --help`. */
  summary: string;
  /** `rtb next [--limit N]` */
  usage: string;
  /** Option lines and notes for `rtb <cmd> --help`. */
  help: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  /** How many positionals the command takes. */
  positionals: { min: number; max: number };
  run(ctx: Context, values: Values, positionals: string[]): Promise<number | void>;
}

/** An integer flag or argument within bounds, or a UsageError naming it. */
export function intArg(value: unknown, name: string, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}): number {
  const s = String(value);
  const n = /^-?\d+$/.test(s) ? Number(s) : NaN;
  const range = max === Number.MAX_SAFE_INTEGER ? `of ${min} or more` : `from ${min} to ${max}`;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${name}: expected an integer ${range}, got ${JSON.stringify(s)}`);
  return n;
}

export const optionalInt = (value: unknown, name: string, bounds?: { min?: number; max?: number }) =>
  value === undefined ? undefined : intArg(value, name, bounds);

export const str = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);
