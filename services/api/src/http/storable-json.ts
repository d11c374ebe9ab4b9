import { isSafeNumber } from "lossless-json";

/**
 * What JSON.parse would quietly change, or PostgreSQL and the wire could not carry, in a
 * body that is already valid JSON: the first such value, with its path (`[3].ref`,
 * `payload.a.b`), or null. One pass over the text, because JSON.parse has already lost what
 * must be checked (9007199254740993 parses as ...992, 1e400 as Infinity, 1e-400 as 0).
 *
 * - A string or key with U+0000: PostgreSQL stores no NUL in text, and jsonb refuses `\u0000`.
 * - A string or key with a lone UTF-16 surrogate (`"\ud800"`): not Unicode text. pg would
 *   encode it as U+FFFD, so two different refs would become the same one.
 * - A number that does not survive JSON.parse exactly: integral beyond 2^53 - 1, not
 *   finite, or whose significant digits change (lossless-json's isSafeNumber).
 * - Nesting deeper than MAX_DEPTH: JSON.stringify recurses, and would overflow the stack
 *   here or in the leader and agents long before PostgreSQL's own limit.
 *
 * The text comes from a fatal UTF-8 decoder, so raw (unescaped) lone surrogates cannot occur:
 * only `\u` escapes can make one, and only strings containing one are decoded again here.
 */
export const MAX_DEPTH = 100;

export type JsonPath = (string | number)[];
export interface Unstorable {
  path: JsonPath;
  message: string;
}

type Frame = { array: true; index: number } | { array: false; keyStart: number; keyEnd: number; expectKey: boolean };

const NOT_TEXT = /\u0000|\p{Cs}/u;

export function findUnstorable(text: string): Unstorable | null {
  const stack: Frame[] = [];
  const path = (): JsonPath =>
    stack.map((f) => (f.array ? f.index : f.keyStart < 0 ? "" : (JSON.parse(text.slice(f.keyStart, f.keyEnd + 1)) as string)));
  let nextEscape = text.indexOf("\\u");
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= MAX_DEPTH) return { path: path(), message: `nested deeper than ${MAX_DEPTH} levels of arrays and objects` };
      stack.push(c === 0x5b ? { array: true, index: 0 } : { array: false, keyStart: -1, keyEnd: -1, expectKey: true });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1]!;
      if (top.array) top.index++;
      else top.expectKey = true;
      i++;
    } else if (c === 0x22 /* " */) {
      const end = closingQuote(text, i);
      const top = stack[stack.length - 1];
      const isKey = top !== undefined && !top.array && top.expectKey;
      if (isKey) {
        top.keyStart = i;
        top.keyEnd = end;
        top.expectKey = false;
      }
      if (nextEscape !== -1 && nextEscape < i) nextEscape = text.indexOf("\\u", i);
      if (nextEscape !== -1 && nextEscape < end) {
        const value = JSON.parse(text.slice(i, end + 1)) as string;
        const bad = NOT_TEXT.exec(value);
        if (bad) {
          const what = bad[0] === "\u0000" ? "a NUL character (\\u0000), which PostgreSQL cannot store" : "a lone UTF-16 surrogate, which is not Unicode text";
          return { path: path(), message: `${isKey ? "this key" : "the string"} contains ${what}` };
        }
      }
      i = end + 1;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < n && isNumberChar(text.charCodeAt(j))) j++;
      const token = text.slice(i, j);
      // Up to 15 digits and no fraction or exponent is always exact; the rest is checked.
      if ((token.length > 15 || /[.eE]/.test(token)) && !isSafeNumber(token)) {
        return {
          path: path(),
          message: `the number ${token.length > 40 ? `${token.slice(0, 40)}...` : token} would not arrive as sent (JSON numbers are read as doubles: integers up to 9007199254740991, about 15 significant digits); send it as a string`,
        };
      }
      i = j;
    } else {
      // Whitespace, ':' and the literals true, false, null.
      i++;
    }
  }
  return null;
}

/** The index of the quote that closes the string opening at `start` (the text is valid JSON). */
function closingQuote(text: string, start: number): number {
  let q = start;
  for (;;) {
    q = text.indexOf('"', q + 1);
    let backslashes = 0;
    while (text.charCodeAt(q - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return q;
  }
}

const isNumberChar = (c: number) => (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2b || c === 0x2d;
