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

/** One structured logger per process; pass children (`logger.child({ unitId })`) downwards. */
export function createLogger({ service, level, format, destination }: LoggerOptions): Logger {
  const pretty = !destination && (format === "pretty" || (format === "auto" && process.stdout.isTTY === true));
  const options: PinoOptions = {
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
  };
  return destination ? pino(options, destination) : pino(options);
}
