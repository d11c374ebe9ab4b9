import { getConnInfo } from "@hono/node-server/conninfo";
import type { Context, MiddlewareHandler } from "hono";
import type { Logger } from "@rtb/runtime";

/**
 * The operator's actions, one info line each, after the answer: who did what, and how it
 * went. The action and what it was about (`unitId`, `group`), the method and path, the
 * status answered, and the caller: the socket's remote address (@hono/node-server's
 * getConnInfo; none for requests made in-process), X-Forwarded-For as sent (a proxy's
 * claim, logged as such), the User-Agent, and whether an Authorization header was presented
 * (never the header). Refused attempts (401, 403, 409) are logged too: they are who tried.
 */
export function auditLog(logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    const action = actionOf(c.req.method, c.req.path);
    await next();
    if (!action || c.req.method === "HEAD") return;
    logger.info(
      {
        action: action.name,
        ...action.about,
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        caller: callerOf(c),
      },
      `audit: ${action.name} (${c.req.method} ${c.req.path}) answered ${c.res.status}`,
    );
  };
}

type Action = { name: string; about: Record<string, string | number> };

function actionOf(method: string, path: string): Action | undefined {
  const p = path.length > 1 ? path.replace(/\/$/, "") : path;
  if (p === "/go" && (method === "GET" || method === "POST")) return { name: "go", about: {} };
  if (p === "/pause" && method === "POST") return { name: "pause", about: {} };
  if (method === "POST" && p === "/units/redrive") return { name: "redrive", about: {} };
  if (method === "POST" && p === "/units/cancel") return { name: "cancel_matching", about: {} };
  const unit = /^\/units\/(\d+)\/(retry|cancel)$/.exec(p);
  if (method === "POST" && unit) return { name: unit[2]!, about: { unitId: Number(unit[1]) } };
  if (method === "POST" && p === "/schedules") return { name: "create_schedule", about: {} };
  const schedule = /^\/schedules\/([^/]+)(?:\/(pause|resume))?$/.exec(p);
  if (schedule && (method === "PUT" || method === "DELETE" || (method === "POST" && schedule[2]))) {
    const name = schedule[2] ? `${schedule[2]}_schedule` : method === "PUT" ? "update_schedule" : "delete_schedule";
    return { name, about: { schedule: safeDecode(schedule[1]!) } };
  }
  const group = /^\/groups\/([^/]+)$/.exec(p);
  if (method === "PUT" && group) return { name: "set_group_share", about: { group: safeDecode(group[1]!) } };
  return undefined;
}

/** The caller, as the audit log names it; also who a cancel was made by, in the unit's timeline. */
export function callerOf(c: Context): Record<string, string | boolean> {
  let address: string | undefined;
  try {
    address = getConnInfo(c).remote.address;
  } catch {
    // Not served by @hono/node-server (app.request in-process): no socket.
  }
  const forwardedFor = c.req.header("x-forwarded-for");
  const userAgent = c.req.header("user-agent");
  return {
    ...(address ? { address } : {}),
    ...(forwardedFor ? { forwardedFor } : {}),
    ...(userAgent ? { userAgent } : {}),
    tokenPresented: c.req.header("authorization") !== undefined,
  };
}

const safeDecode = (s: string) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};
