import type { MiddlewareHandler } from "hono";
import { changesState } from "./auth.ts";

/**
 * Cross-origin state changes are refused in every mode, token or not: without RTB_API_TOKEN
 * any web page an operator opens could otherwise POST /units, pause, or GET /go (an <img>
 * is enough). A browser says where a request comes from: `Origin` (on every POST, and on
 * cross-origin fetches) and `Sec-Fetch-Site`. A state change is refused (403, field
 * `origin`) when either says another site: Origin's host differs from Host (or from
 * X-Forwarded-Host, which a page cannot set without a CORS preflight this api never grants),
 * or Sec-Fetch-Site is anything but same-origin or none (none: the operator typed the URL).
 * A request with neither header (curl, the CLI, scripts) is not from a web page and passes.
 *
 * Hono's csrf middleware does not fit: it skips GET (so GET /go), checks only form and
 * text/plain bodies, and answers in plain text.
 */
export function sameOrigin(): MiddlewareHandler {
  return async (c, next) => {
    if (!changesState(c.req.method, c.req.path)) return next();
    const origin = c.req.header("origin");
    const site = c.req.header("sec-fetch-site");
    const hosts = [c.req.header("host"), c.req.header("x-forwarded-host")?.split(",")[0]].filter((h): h is string => !!h).map(normalHost);
    const originOk = origin === undefined || (origin !== "null" && hosts.includes(originHost(origin) ?? ""));
    const siteOk = site === undefined || site === "same-origin" || site === "none";
    if (originOk && siteOk) return next();
    return c.json(
      {
        error: "cross_origin",
        field: "origin",
        message: `refused: a state change from another site (Origin ${origin ?? "none"}, Sec-Fetch-Site ${site ?? "none"}); call the api from its own dashboard, curl or the CLI`,
      },
      403,
    );
  };
}

/** "http://Example.com:80" -> "example.com"; null when it is not a URL. */
function originHost(origin: string): string | null {
  try {
    return new URL(origin).host;
  } catch {
    return null;
  }
}

/** A Host header the way URL writes hosts: lower case, without the default port. */
function normalHost(host: string): string {
  try {
    return new URL(`http://${host.trim()}`).host;
  } catch {
    return host;
  }
}
