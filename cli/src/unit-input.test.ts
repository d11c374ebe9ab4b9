import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { chunked, readUnits, type InputFormat } from "./unit-input.ts";

const read = async (chunks: string[], format: InputFormat = "auto", name = "") => {
  const out = [];
  for await (const r of readUnits(Readable.from(chunks.map((c) => Buffer.from(c))), format, name)) out.push(r);
  return out;
};

describe("readUnits", () => {
  it("reads NDJSON across chunk boundaries, skipping blank lines, with CRLF too", async () => {
    const records = await read(['{"kind":"a"}\r\n\n{"ki', 'nd":"b"}\n  \n{"kind":"c"}']);
    expect(records).toEqual([
      { value: { kind: "a" }, where: "line 1" },
      { value: { kind: "b" }, where: "line 3" },
      { value: { kind: "c" }, where: "line 5" },
    ]);
  });

  it("reads a JSON array, or one pretty-printed object from a .json file", async () => {
    expect(await read(['  [{"kind":"a"},', '{"kind":"b"}]'])).toEqual([
      { value: { kind: "a" }, where: "item 1" },
      { value: { kind: "b" }, where: "item 2" },
    ]);
    expect(await read(['{\n  "kind": "a"\n}\n'], "auto", "one.json")).toEqual([{ value: { kind: "a" }, where: "item 1" }]);
    expect(await read([])).toEqual([]);
  });

  it("names the line that is not JSON, or not an object", async () => {
    await expect(read(['{"kind":"a"}\n{"kind"\n'])).rejects.toThrow(/^line 2: not valid JSON/);
    await expect(read(['{"kind":"a"}\n[1]\n'], "ndjson")).rejects.toThrow('line 2: expected a unit object ({"kind": ...}), got [1]');
    await expect(read(["[1, 2]"])).rejects.toThrow("item 1: expected a unit object");
  });
});

describe("chunked", () => {
  it("groups items, the last group holding the rest", async () => {
    const groups = [];
    for await (const g of chunked(Readable.from([1, 2, 3, 4, 5]), 2)) groups.push(g);
    expect(groups).toEqual([[1, 2], [3, 4], [5]]);
  });
});
