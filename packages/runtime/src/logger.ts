import { pino, type DestinationStream, type Logger, type LoggerOptions as PinoOptions } from "pino";

export type { Logger };

export interface LoggerOptions {
  service: string;
  level: string;
  /** `pretty` for people, `json` for machines; `auto` picks pretty when stdout is a terminal. */
  format: "auto" | "json" | "pretty";
  /** Where JSON lines go instead of stdout (tests capture them); not with the pretty format. */
  destination?: DestinationStream;
}

const SECRET_FIELDS = ["RTB_API_TOKEN", "RTB_DB_PASSWORD", "RTB_BROKER_PASSWORD", "password", "token", "authorization"];
const SECRET_PATHS = [...SECRET_FIELDS, ...SECRET_FIELDS.map((f) => `*.${f}`), "*.headers.authorization"];

/** One structured logger per process; pass children (`logger.child({ unitId })`) downwards. */
export function createLogger({ service, level, format, destination }: LoggerOptions): Logger {
  const pretty = !destination && (format === "pretty" || (format === "auto" && process.stdout.isTTY === true));
  const options: PinoOptions = {
    level,
    base: { service, pid: process.pid },
    // A backstop: no code logs a setting or a credential, and ConfigError hides secrets itself;
    // should an object with one ever be logged, its value is not written.
    redact: { paths: SECRET_PATHS, censor: "<hidden>" },
    ...(pretty
      ? {
          transport: {
            target: "pino-pretty",
            options: { colorize: true, singleLine: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname,service", messageFormat: "[{service}] {msg}" },
          },
        }
      : {}),
  };
  return destination ? pino(options, destination) : pino(options);
}
