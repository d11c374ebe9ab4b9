import type { Readable } from "node:stream";

/**
 * Units to enqueue, read from a JSON file (an array of units, or one unit) or an NDJSON file
 * (one unit per line; blank lines are skipped). NDJSON is streamed, so a file of millions
 * of units never sits in memory whole.
 */
export type InputFormat = "json" | "ndjson" | "auto";

export interface InputRecord {
  value: Record<string, unknown>;
  /** Where it came from, for messages: `line 12` or `item 12`. */
  where: string;
}

export class InputError extends Error {
  override name = "InputError";
}

/** `auto`: by the file name (.json, .ndjson, .jsonl), else by the first character (`[` is JSON). */
export async function* readUnits(stream: Readable, format: InputFormat, fileName = ""): AsyncGenerator<InputRecord> {
  stream.setEncoding("utf8");
  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<string>;
  let first = await chunks.next();
  while (!first.done && first.value.trim() === "") first = await chunks.next();
  if (first.done) return;
  const head: string = first.value;
  const all = async function* () {
    yield head;
    for (let c = await chunks.next(); !c.done; c = await chunks.next()) yield c.value as string;
  };
  if (format === "auto") {
    if (/\.json$/i.test(fileName)) format = "json";
    else if (/\.(ndjson|jsonl)$/i.test(fileName)) format = "ndjson";
    else format = head.trimStart().startsWith("[") ? "json" : "ndjson";
  }
  if (format === "json") {
    let text = "";
    for await (const c of all()) text += c;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new InputError(`not valid JSON: ${(err as Error).message}`);
    }
    const items = Array.isArray(parsed) ? parsed : [parsed];
    for (const [i, value] of items.entries()) yield { value: asObject(value, `item ${i + 1}`), where: `item ${i + 1}` };
    return;
  }
  let line = 0;
  for await (const text of lines(all())) {
    line++;
    if (text.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new InputError(`line ${line}: not valid JSON: ${(err as Error).message}`);
    }
    yield { value: asObject(value, `line ${line}`), where: `line ${line}` };
  }
}

function asObject(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new InputError(`${where}: expected a unit object ({"kind": ...}), got ${JSON.stringify(value)?.slice(0, 60)}`);
  return value as Record<string, unknown>;
}

async function* lines(chunks: AsyncIterable<string>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of chunks) {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    yield* parts;
  }
  if (rest !== "") yield rest;
}

/** Records in arrays of at most `size`. */
export async function* chunked<T>(items: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let chunk: T[] = [];
  for await (const item of items) {
    chunk.push(item);
    if (chunk.length >= size) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}
