import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { errorBody } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { createEventHub } from "./events.ts";
import { json, routes, serve } from "./routes.ts";

/**
 * The live dashboard (GET / from a browser) and its server-sent events stream (GET /events).
 * The page is three static files (dashboard/), read once at start and served as they are:
 * plain browser JavaScript, nothing to build.
 */
export function dashboardRoutes(deps: AppDeps): OpenAPIHono {
  const app = routes();
  const hub = createEventHub(deps);

  for (const asset of [ASSETS.js, ASSETS.css]) {
    app.get(asset.path, (c) => {
      if (c.req.header("if-none-match") === asset.etag) return c.body(null, 304, { ETag: asset.etag });
      // Revalidated on every load (a 304 when unchanged), so a new api version is never
      // served with an old script.
      return c.body(asset.body, 200, { "Content-Type": asset.type, ETag: asset.etag, "Cache-Control": "no-cache" });
    });
  }

  const events = createRoute({
    method: "get",
    path: "/events",
    tags: ["dashboard"],
    summary: "Server-sent events: the state of things, throughput and recently active units, live",
    description: "Events `state` (the body of GET /), `throughput` and `units`, about once a second while anything changes. See docs/dashboard.md.",
    responses: {
      200: { description: "An event stream.", content: { "text/event-stream": { schema: z.string() } } },
      503: { description: "The api is stopping; retry (Retry-After).", content: json(errorBody) },
    },
  });
  serve(app, events, (c) => {
    if (deps.closing.aborted) {
      c.header("Retry-After", "5");
      return c.json({ error: "unavailable", message: "the api is stopping" }, 503);
    }
    // Proxies (nginx) must pass events through as they come, not buffer them.
    c.header("X-Accel-Buffering", "no");
    const res = streamSSE(c, async (stream) => {
      const sub = hub.subscribe();
      const gone = new AbortController();
      stream.onAbort(() => gone.abort());
      // The api is stopping: end the stream, or server.close() would wait for it forever.
      const onClosing = () => {
        gone.abort();
        stream.abort();
      };
      deps.closing.addEventListener("abort", onClosing, { once: true });
      try {
        // EventSource reconnects by itself; ask it to wait 2 s (an api restart, a proxy timeout).
        await stream.write("retry: 2000\n\n");
        while (!gone.signal.aborted) {
          const events = await sub.next(PING_MS, gone.signal);
          if (gone.signal.aborted) break;
          if (events.length === 0) await stream.write(": ping\n\n");
          for (const e of events) await stream.writeSSE(e);
        }
      } catch (err) {
        if (!gone.signal.aborted) deps.logger.warn({ err: (err as Error).message }, "event stream failed");
      } finally {
        deps.closing.removeEventListener("abort", onClosing);
        sub.close();
      }
    });
    // The socket closes with the stream (EventSource reconnects on a new one anyway): kept
    // alive, it would hold server.close() until the keep-alive timeout when the api stops.
    res.headers.set("Connection", "close");
    return res;
  });

  return app;
}

/** A comment line this often keeps proxies and load balancers from closing a quiet stream. */
const PING_MS = 15_000;

/**
 * Whether the client prefers HTML to JSON. A browser lists text/html first; curl sends
 * `* / *` and scripts ask for application/json: they get JSON. Weights (q) are honoured, and
 * a tie goes to JSON. Since GET / answers by Accept, it says so (Vary) for caches.
 */
export function prefersHtml(c: Context): boolean {
  c.header("Vary", "Accept");
  const accept = c.req.header("accept");
  if (!accept) return false;
  let html = 0;
  let json = 0;
  for (const part of accept.split(",")) {
    const [type = "", ...params] = part.split(";").map((s) => s.trim().toLowerCase());
    const qParam = params.find((p) => p.startsWith("q="));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    if (!Number.isFinite(q)) continue;
    if (type === "text/html") html = Math.max(html, q);
    else if (type === "application/json" || type === "application/*" || type === "*/*") json = Math.max(json, q);
  }
  return html > 0 && html > json;
}

export function dashboardPage(c: Context): Response {
  c.header("Content-Security-Policy", CSP);
  c.header("X-Content-Type-Options", "nosniff");
  c.header("Referrer-Policy", "no-referrer");
  c.header("Cache-Control", "no-cache");
  return c.html(ASSETS.html.body);
}

// Everything the page loads comes from this api; no inline script or style to allow.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  path: string;
  type: string;
  body: string;
  etag: string;
}

/** Read once when the module loads: from the repository and from the image alike (Dockerfile copies services/). */
const ASSETS = (() => {
  const read = (file: string, path: string, type: string): Asset => {
    const body = readFileSync(new URL(`./dashboard/${file}`, import.meta.url), "utf8");
    const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 16)}"`;
    return { path, type, body, etag };
  };
  return {
    html: read("index.html", "/", "text/html; charset=utf-8"),
    js: read("dashboard.js", "/dashboard/dashboard.js", "text/javascript; charset=utf-8"),
    css: read("dashboard.css", "/dashboard/dashboard.css", "text/css; charset=utf-8"),
  };
})();
