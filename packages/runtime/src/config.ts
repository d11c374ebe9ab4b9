import { z } from "zod";
import { KIND_PATTERN, KIND_RULE, MAX_AGENT_KINDS } from "@rtb/protocol";

/**
 * Config parsing shared by every service. Each service declares one zod object schema whose
 * keys are the RTB_* variable names; `loadConfig` validates the whole environment at once
 * and throws a ConfigError that names every bad variable, its value and what was expected,
 * except the value of a secret (`secret()`, or a name ending in PASSWORD, TOKEN, SECRET or
 * _KEY): only its length is shown (`RTB_API_TOKEN=<5 characters, hidden>`), so a message on
 * stderr, in a log or a CI transcript never holds a credential.
 */
export interface ConfigProblem {
  variable: string;
  /** The value as given; for a secret, `<n characters, hidden>` instead. */
  value: string | undefined;
  expected: string;
}

export class ConfigError extends Error {
  override name = "ConfigError";
  readonly problems: ConfigProblem[];
  constructor(problems: (ConfigProblem & { secret?: boolean })[]) {
    const shown = problems.map(({ secret, ...p }) =>
      p.value !== undefined && (secret || isSecretName(p.variable)) ? { ...p, value: hiddenValue(p.value), hidden: true } : { ...p, hidden: false },
    );
    super(
      "invalid configuration:\n" +
        shown.map((p) => `  ${p.variable}=${p.value === undefined ? "(unset)" : p.hidden ? p.value : JSON.stringify(p.value)}: ${p.expected}`).join("\n"),
    );
    this.problems = shown.map(({ hidden: _, ...p }) => p);
  }
}

const secrets = new WeakSet<z.ZodType>();

/** Mark a setting as a secret: its value never appears in a ConfigError (nor, so, in a log). */
export function secret<T extends z.ZodType>(schema: T): T {
  secrets.add(schema);
  return schema;
}

/** Names that are secrets whether marked or not: a new credential setting is hidden by default. */
export const isSecretName = (variable: string) => /(PASSWORD|TOKEN|SECRET|_KEY)$/.test(variable);

/** How a secret's value is shown: its length, never its characters. */
export const hiddenValue = (value: string) => `<${[...value].length} characters, hidden>`;

export type Env = Record<string, string | undefined>;

export function loadConfig<S extends z.ZodObject>(schema: S, env: Env): z.infer<S> {
  // Empty strings count as unset, as they do in most shells' `VAR= cmd` and in compose files.
  const input: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== "") input[key] = value;
  }
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const variable = String(issue.path[0] ?? "(environment)");
    const field = (schema.shape as Record<string, z.ZodType | undefined>)[variable];
    return { variable, value: env[variable], expected: issue.message, secret: field !== undefined && secrets.has(field) };
  });
  throw new ConfigError(problems);
}

export interface HostPort {
  host: string;
  port: number;
}

/**
 * `host:port` (or `[v6]:port`, or a bare host that takes the default port). With `anyPort`,
 * port 0 is allowed: a listener takes any free port (tests, benchmarks).
 */
export function hostPort(defaultValue: string, defaultPort: number, { anyPort = false } = {}) {
  return z
    .string()
    .default(defaultValue)
    .transform((value, ctx): HostPort => parseHostPort(value, defaultPort, anyPort) ?? hostPortIssue(ctx, defaultPort, anyPort));
}

/** Like `hostPort`, without a default: unset stays undefined. */
export function optionalHostPortOf(defaultPort: number, { anyPort = false } = {}) {
  return z
    .string()
    .optional()
    .transform((value, ctx): HostPort | undefined => (value === undefined ? undefined : (parseHostPort(value, defaultPort, anyPort) ?? hostPortIssue(ctx, defaultPort, anyPort))));
}

/**
 * A comma-separated list of `host:port` entries, each as `hostPort` takes it (the nodes of a
 * cluster, tried in turn). One entry is the single host of old. An entry that is not
 * host:port, an empty one (`a,,b`) or one listed twice is refused, naming it, so a typo stops
 * the process at start instead of leaving a node out of every failover.
 */
export function hostPortList(defaultValue: string, defaultPort: number) {
  return z
    .string()
    .default(defaultValue)
    .transform((value, ctx): HostPort[] => {
      const entries = value.split(",").map((s) => s.trim());
      const hosts: HostPort[] = [];
      for (const [i, entry] of entries.entries()) {
        const parsed = parseHostPort(entry, defaultPort, false);
        const problem = !parsed
          ? "is not host:port"
          : hosts.some((h) => h.host === parsed.host && h.port === parsed.port)
            ? "is listed twice"
            : null;
        if (problem) {
          const at = entries.length > 1 ? `entry ${i + 1} of ${entries.length}, ` : "";
          ctx.addIssue({
            code: "custom",
            message: `${at}${JSON.stringify(entry)}, ${problem}: expected host:port, or several separated by commas (for example rabbit-1:${defaultPort},rabbit-2:${defaultPort})`,
          });
          return z.NEVER;
        }
        hosts.push(parsed!);
      }
      return hosts;
    });
}

/** `host:port` as written in a setting (IPv6 in brackets), for messages and logs. */
export const formatHostPort = (h: HostPort) => `${h.host.includes(":") ? `[${h.host}]` : h.host}:${h.port}`;

function parseHostPort(value: string, defaultPort: number, anyPort: boolean): HostPort | null {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(value.trim());
  const port = match?.[2] === undefined ? defaultPort : Number(match[2]);
  if (!match?.[1] || !Number.isInteger(port) || port < (anyPort ? 0 : 1) || port > 65535) return null;
  return { host: match[1].replace(/^\[|\]$/g, ""), port };
}

function hostPortIssue(ctx: z.RefinementCtx, defaultPort: number, anyPort: boolean): never {
  ctx.addIssue({ code: "custom", message: `expected host:port (for example localhost:${defaultPort}${anyPort ? "; port 0 for any free port" : ""})` });
  return z.NEVER;
}

/** A listening address whose host may be left to a default decided later (`host` undefined). */
export interface ListenAt {
  host: string | undefined;
  port: number;
}

/**
 * An optional listening address: unset means "do not listen". `host:port`, `[v6]:port`, or a
 * bare port, whose host is then undefined (the user of the setting decides). With `anyPort`,
 * port 0 takes any free port.
 */
export function optionalHostPort({ anyPort = false } = {}) {
  return z
    .string()
    .optional()
    .transform((value, ctx): ListenAt | undefined => {
      if (value === undefined) return undefined;
      const match = /^(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(value.trim());
      const port = Number(match?.[2]);
      if (!match || !Number.isInteger(port) || port < (anyPort ? 0 : 1) || port > 65535) {
        ctx.addIssue({ code: "custom", message: `expected a port or host:port (for example 9464 or 127.0.0.1:9464${anyPort ? "; port 0 for any free port" : ""})` });
        return z.NEVER;
      }
      return { host: match[1]?.replace(/^\[|\]$/g, ""), port };
    });
}

export function int(defaultValue: number, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  return z.coerce
    .number({ message: "expected an integer" })
    .int({ message: "expected an integer" })
    .min(min, { message: `expected an integer >= ${min}` })
    .max(max, { message: `expected an integer <= ${max}` })
    .default(defaultValue);
}

export function ratio(defaultValue: number) {
  return z.coerce
    .number({ message: "expected a number between 0 and 1" })
    .min(0, { message: "expected a number between 0 and 1" })
    .max(1, { message: "expected a number between 0 and 1" })
    .default(defaultValue);
}

export function bool(defaultValue: boolean) {
  return z
    .enum(["true", "false", "1", "0", "yes", "no"], { message: "expected true or false" })
    .default(defaultValue ? "true" : "false")
    .transform((v) => v === "true" || v === "1" || v === "yes");
}

export function oneOf<const T extends readonly [string, ...string[]]>(values: T, defaultValue: T[number]) {
  return z.enum(values, { message: `expected one of ${values.join(", ")}` }).default(defaultValue as never);
}

/** A comma-separated list of unit kinds (the kind rule of @rtb/protocol), without repeats. */
export function kindList(defaultValue: string) {
  return z
    .string()
    .default(defaultValue)
    .transform((value, ctx) => {
      const names = value.split(",").map((s) => s.trim()).filter(Boolean);
      if (names.length === 0 || names.some((n) => !KIND_PATTERN.test(n))) {
        ctx.addIssue({ code: "custom", message: `expected a comma-separated list of kinds, each ${KIND_RULE}` });
        return z.NEVER;
      }
      const kinds = [...new Set(names)];
      if (kinds.length > MAX_AGENT_KINDS) {
        ctx.addIssue({ code: "custom", message: `expected at most ${MAX_AGENT_KINDS} kinds, got ${kinds.length}: run several agents` });
        return z.NEVER;
      }
      return kinds;
    });
}

export const text = (defaultValue: string) => z.string().default(defaultValue);

/** A duration as written in a setting, and in milliseconds. */
export interface Duration {
  text: string;
  ms: number;
}

const DURATION_UNITS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * A duration: a whole number and one unit, `90s`, `30m`, `12h`, `7d`, or `0` (which the
 * setting gives its own meaning, e.g. "keep everything"). At most `maxDays` days.
 */
export function duration(defaultValue: string, { maxDays = 3650 } = {}) {
  const expected = `expected a duration: a whole number and a unit, s, m, h or d (90s, 30m, 12h, 7d), or 0; at most ${maxDays}d`;
  return z
    .string()
    .default(defaultValue)
    .transform((value, ctx): Duration => {
      const text = value.trim();
      const match = /^(\d{1,12})([smhd])$/.exec(text);
      const ms = text === "0" ? 0 : match ? Number(match[1]) * DURATION_UNITS[match[2] as keyof typeof DURATION_UNITS] : NaN;
      if (!Number.isSafeInteger(ms) || ms > maxDays * DURATION_UNITS.d) {
        ctx.addIssue({ code: "custom", message: expected });
        return z.NEVER;
      }
      return { text, ms };
    });
}
