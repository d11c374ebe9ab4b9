import type { Context, MiddlewareHandler } from "hono";
import type { z } from "zod";
import { fieldName } from "@rtb/protocol";
import { findUnstorable } from "./storable-json.ts";

/** A request that does not match its schema: 400, naming the field and the reason. */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

/** A body that is not JSON by its Content-Type: 415, naming `content-type`. */
export class UnsupportedMediaTypeError extends Error {
  override name = "UnsupportedMediaTypeError";
  readonly field = "content-type";
}

/** application/json, or a structured suffix such as application/merge-patch+json. */
const JSON_MEDIA_TYPE = /^application\/(?:[\w.-]+\+)?json$/;

/**
 * The request's body parsed as JSON, exactly as sent or refused. Hono's c.req.json() is
 * JSON.parse(await c.req.text()), and text() decodes with replacement: invalid UTF-8 and
 * lone surrogates became U+FFFD, so different refs collided. Here:
 * - a body (of any method) must say it is JSON (Content-Type application/json or +json,
 *   UTF-8): a browser page can send text/plain or a form to any site without asking, but not
 *   JSON. Otherwise UnsupportedMediaTypeError (415);
 * - the bytes are decoded with a fatal UTF-8 decoder: invalid bytes are a 400 naming `body`;
 * - malformed JSON or a missing body is a 400 naming `body`;
 * - a value PostgreSQL or JSON.parse would change (storable-json.ts) is a 400 naming its path.
 * The size limit is enforced before this, by bodyLimit in app.ts. Validate the value with `parsed`.
 */
export async function readJson(c: Context, opts: { whenEmpty?: unknown } = {}): Promise<unknown> {
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (isBlank(bytes)) {
    if (opts.whenEmpty === undefined) throw new InvalidRequestError("body", "expected a JSON body");
    return opts.whenEmpty;
  }
  const contentType = c.req.header("content-type") ?? "";
  const [mediaType = "", ...params] = contentType.split(";").map((s) => s.trim().toLowerCase());
  const charset = params.find((p) => p.startsWith("charset="))?.slice("charset=".length).replace(/"/g, "");
  if (!JSON_MEDIA_TYPE.test(mediaType) || (charset !== undefined && charset !== "utf-8" && charset !== "utf8")) {
    throw new UnsupportedMediaTypeError(
      `expected Content-Type: application/json (UTF-8), got ${contentType ? JSON.stringify(contentType) : "none"}`,
    );
  }
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    throw new InvalidRequestError("body", "the body is not valid UTF-8");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidRequestError("body", `malformed JSON: ${(err as Error).message}`);
  }
  const unstorable = findUnstorable(text);
  if (unstorable) throw new InvalidRequestError(fieldName(unstorable.path) || "body", unstorable.message);
  return value;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const isBlank = (bytes: Uint8Array) => bytes.every((b) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d);

/** `value` checked against `schema`; the first issue is an InvalidRequestError naming its field (`[3].kind`). */
export function parsed<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  // The api's words where the schema has none of its own (a schema's message wins over this).
  const result = schema.safeParse(value, { error: (issue) => apiWords(issue) });
  if (result.success) return result.data;
  throw invalidRequest(result.error, "body");
}

/**
 * A zod failure as the api reports it: its first issue, naming the field (`[3].kind`,
 * `limit`), or `whole` (`body`, `query`, `param`) when the issue is about all of it.
 */
export function invalidRequest(error: z.ZodError, whole: string): InvalidRequestError {
  const issue = error.issues[0];
  if (!issue) return new InvalidRequestError(whole, "invalid");
  const path = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]!] : issue.path;
  // Query and path parameters are validated by zod-openapi's validator, which cannot be given
  // `apiWords`: zod's own words (English, "Invalid input: ...", "Too small: ...") are replaced
  // here. The schemas' own messages ("expected an integer between 1 and 1000") stay.
  const message = ZOD_WORDS.test(issue.message) ? apiWords(issue) : issue.message;
  return new InvalidRequestError(fieldName(path) || whole, message);
}

/** zod's default messages (its English locale); the api's and the schemas' begin otherwise. */
const ZOD_WORDS = /^(Invalid|Too (big|small)|Unrecognized key)/;

type Issue = z.core.$ZodRawIssue | z.core.$ZodIssue;

/**
 * An issue in the api's words: what is expected, and what came instead where that helps
 * (`required: expected a string`, `expected a number, got a string`, `expected at least 1`).
 * Used as the zod error customizer for bodies (where the issue still has its input) and on
 * the finished issues of query and path parameters (where it does not).
 */
export function apiWords(issue: Issue): string {
  switch (issue.code) {
    case "invalid_type": {
      const expected = TYPE_WORDS[issue.expected] ?? `a ${issue.expected}`;
      const hasInput = "input" in issue;
      const missing = hasInput ? issue.input === undefined : / received undefined$/.test(issue.message ?? "");
      if (missing) return `required: expected ${expected}`;
      return hasInput ? `expected ${expected}, got ${typeWord(issue.input)}` : `expected ${expected}`;
    }
    case "too_small":
    case "too_big": {
      const bound = issue.code === "too_small" ? issue.minimum : issue.maximum;
      const exact = issue.code === "too_small" ? (issue.inclusive ?? true) : (issue.inclusive ?? true);
      const word = issue.code === "too_small" ? (exact ? "at least" : "more than") : exact ? "at most" : "less than";
      const unit = issue.origin === "string" ? " characters" : issue.origin === "array" || issue.origin === "set" ? " items" : "";
      return `expected ${word} ${String(bound)}${unit}`;
    }
    case "invalid_value":
      return `expected ${issue.values.length === 1 ? JSON.stringify(issue.values[0]) : `one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`}`;
    case "unrecognized_keys":
      return "unknown field: leave it out";
    case "invalid_format":
      return issue.format === "regex" && "pattern" in issue && issue.pattern ? `expected text matching ${issue.pattern}` : `expected ${issue.format}`;
    case "not_multiple_of":
      return `expected a multiple of ${String(issue.divisor)}`;
    case "invalid_union":
      return "matches none of the accepted shapes";
    default:
      return "invalid value";
  }
}

const TYPE_WORDS: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "true or false",
  object: "an object",
  array: "an array",
  null: "null",
};

/** What a JSON value is, in words: `a string`, `null`, `an array`. */
function typeWord(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number") return Number.isInteger(v) ? "a number" : "a fractional number";
  return TYPE_WORDS[typeof v] ?? typeof v;
}

/**
 * The URL's percent-encoded path and query must decode to UTF-8. Hono decodes a parameter
 * that does not (`%FF`, `%ED%A0%80`) to its raw text, so `/groups/%FF` and `/groups/%25FF`
 * would name the same group. A 400 naming `path`, or the query parameter.
 */
export const utf8Url: MiddlewareHandler = async (c, next) => {
  const url = new URL(c.req.url);
  for (const segment of url.pathname.split("/")) {
    if (!decodes(segment)) throw new InvalidRequestError("path", "the path is not UTF-8 once percent-decoded");
  }
  for (const pair of url.search.slice(1).split("&")) {
    const eq = pair.indexOf("=");
    const [key, value] = eq < 0 ? [pair, ""] : [pair.slice(0, eq), pair.slice(eq + 1)];
    if (!decodes(key)) throw new InvalidRequestError("query", "a query parameter's name is not UTF-8 once percent-decoded");
    if (!decodes(value)) throw new InvalidRequestError(decodeURIComponent(key.replace(/\+/g, " ")), "not UTF-8 once percent-decoded");
  }
  return next();
};

const decodes = (s: string) => {
  if (!s.includes("%")) return true;
  try {
    decodeURIComponent(s);
    return true;
  } catch {
    return false;
  }
};
