import { pino, type Logger } from "pino";

export type { Logger };

export interface LoggerOptions {
  service: string;
  level: string;
  /** `pretty` for people, `json` for machines; `auto` picks pretty when stdout is a terminal. */
  format: "auto" | "json" | "pretty";
}

/** One structured logger per process; pass children (`logger.child({ unitId })`) downwards. */
export function createLogger({ service, level, format }: LoggerOptions): Logger {
  const pretty = format === "pretty" || (format === "auto" && process.stdout.isTTY === true);
  return pino({
    level,
    base: { service, pid: process.pid },
    ...(pretty
      ? {
          transport: {
            target: "pino-pretty",
            options: { colorize: true, singleLine: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname,service", messageFormat: "[{service}] {msg}" },
          },
        }
      : {}),
  });
}
