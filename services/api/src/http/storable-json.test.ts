import { describe, expect, it } from "vitest";
import { findUnstorable, MAX_DEPTH } from "./storable-json.ts";

const at = (text: string) => findUnstorable(text)?.path;

describe("findUnstorable", () => {
  it("passes what JSON.parse and PostgreSQL keep as sent", () => {
    for (const text of ['{"a":[1,-2,0.5,1e-5,9007199254740991,"x\\\\u0000","\\ud83d\\ude00","\\"q\\\\"],"b":{"":null,"c":true}}', "[]", '"s"', "12"]) {
      expect(findUnstorable(text), text).toBeNull();
    }
  });
  it("names the path of a NUL, a lone surrogate, an inexact number, in values and keys", () => {
    expect(at('{"a":{"b":"x\\u0000"}}')).toEqual(["a", "b"]);
    expect(at('[0,{"k":1},{"x":"\\ud800"}]')).toEqual([2, "x"]);
    expect(at('{"a":1,"b\\udc00":2}')).toEqual(["b\udc00"]);
    expect(at('{"a\\"b":{"n":9007199254740993}}')).toEqual(['a"b', "n"]);
    expect(at('{"n":[1, 1e400]}')).toEqual(["n", 1]);
    expect(at("1.00000000000000001")).toEqual([]);
  });
  it("refuses nesting deeper than MAX_DEPTH", () => {
    expect(findUnstorable("[".repeat(MAX_DEPTH) + "]".repeat(MAX_DEPTH))).toBeNull();
    expect(at("[".repeat(MAX_DEPTH + 1) + "]".repeat(MAX_DEPTH + 1))).toHaveLength(MAX_DEPTH);
  });
});
