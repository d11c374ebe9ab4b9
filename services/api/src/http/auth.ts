import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";

export interface AuthOptions {
  /** RTB_API_TOKEN: when set, requests that change state need `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /** RTB_API_TOKEN_READS: reads need the token too. */
  reads: boolean;
}

/** Paths that stay open whatever the settings: health probes carry no token. */
const ALWAYS_OPEN = new Set(["/healthz", "/readyz"]);

/**
 * Whether a request may change state: every method but GET, HEAD and OPTIONS, and GET /go,
 * which changes state although it is a GET (operators call it from a browser or curl).
 * /pause is POST only. The token (auth.ts) and the same-origin rule (same-origin.ts) both
 * guard exactly these.
 */
export const changesState = (method: string, path: string) => !(method === "GET" || method === "HEAD" || method === "OPTIONS") || path === "/go" || path === "/go/";

/**
 * Bearer-token auth. Tokens are compared in constant time: both sides are hashed to the same
 * length first, so neither the length nor a common prefix shows in the response time.
 */
export function bearerAuth(opts: AuthOptions): MiddlewareHandler {
  const expected = opts.token === undefined ? null : digest(opts.token);
  return async (c, next) => {
    if (!expected || ALWAYS_OPEN.has(c.req.path)) return next();
    if (!opts.reads && !changesState(c.req.method, c.req.path)) return next();
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    const ok = match !== null && timingSafeEqual(digest(match[1]!), expected);
    if (ok) return next();
    c.header("WWW-Authenticate", 'Bearer realm="rtb"');
    return c.json(
      {
        error: "unauthorized",
        field: "Authorization",
        message: match ? "the bearer token does not match RTB_API_TOKEN" : "this request needs an Authorization: Bearer <token> header (RTB_API_TOKEN is set)",
      },
      401,
    );
  };
}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();
