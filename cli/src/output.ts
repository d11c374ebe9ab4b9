import { isInFlight, type UnitStatus, type WorkflowStatusName } from "@rtb/protocol";

/**
 * What the commands print. Machine output (`--json`) goes to stdout untouched; people get
 * aligned tables and lines, with colors only on a terminal and only without NO_COLOR.
 */
export interface Writer {
  write(chunk: string): unknown;
  isTTY?: boolean;
  /** A terminal's width. */
  columns?: number;
  /** A terminal's height. */
  rows?: number;
}

const CODES = { bold: 1, dim: 2, red: 31, green: 32, yellow: 33, blue: 34, cyan: 36 } as const;
export type Style = keyof typeof CODES;

export interface Output {
  readonly color: boolean;
  /** A line on stdout. */
  line(text?: string): void;
  /** A value as JSON on stdout (one document, pretty-printed). */
  json(value: unknown): void;
  /** A line on stderr. */
  note(text: string): void;
  paint(text: string, style: Style): string;
  stdout: Writer;
  stderr: Writer;
}

export function createOutput(stdout: Writer, stderr: Writer, env: Record<string, string | undefined>): Output {
  // https://no-color.org: any non-empty NO_COLOR turns colors off.
  const color = stdout.isTTY === true && !env.NO_COLOR;
  return {
    color,
    stdout,
    stderr,
    line: (text = "") => void stdout.write(`${text}\n`),
    json: (value) => void stdout.write(`${JSON.stringify(value, null, 2)}\n`),
    note: (text) => void stderr.write(`${text}\n`),
    paint: (text, style) => (color ? `\x1b[${CODES[style]}m${text}\x1b[0m` : text),
  };
}

const ANSI = /\x1b\[[0-9;]*m/g;
/** The width a string takes on screen (colors take none). */
export const visibleLength = (s: string) => s.replace(ANSI, "").length;

export interface Column {
  header: string;
  /** Numbers read better right-aligned. */
  align?: "left" | "right";
}

/** Rows under a header, each column as wide as its widest cell, two spaces apart. */
export function table(out: Output, columns: Column[], rows: string[][]): void {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => visibleLength(r[i] ?? ""))));
  const pad = (cell: string, i: number) => {
    const gap = " ".repeat(widths[i]! - visibleLength(cell));
    return columns[i]!.align === "right" ? gap + cell : cell + gap;
  };
  const render = (cells: string[]) => cells.map(pad).join("  ").trimEnd();
  out.line(out.paint(render(columns.map((c) => c.header)), "bold"));
  for (const row of rows) out.line(render(row));
}

/** `key  value` lines, the keys aligned. */
export function fields(out: Output, pairs: [string, string][]): void {
  const width = Math.max(...pairs.map(([k]) => k.length));
  for (const [k, v] of pairs) out.line(`${out.paint(k.padEnd(width), "dim")}  ${v}`);
}

/**
 * A unit (or workflow) status in its color: done is green, failed red, in flight (the
 * protocol's IN_FLIGHT) and a running workflow yellow, blocked (waiting for its dependencies) cyan.
 */
export function paintStatus(out: Output, status: string): string {
  const style = STATUS_STYLES[status as UnitStatus | WorkflowStatusName] ?? (isInFlight(status) ? "yellow" : undefined);
  return style ? out.paint(status, style) : status;
}
const STATUS_STYLES: Partial<Record<UnitStatus | WorkflowStatusName, Style>> = { success: "green", error: "red", cancelled: "dim", blocked: "cyan", running: "yellow" };
