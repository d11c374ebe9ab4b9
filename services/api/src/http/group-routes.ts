import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { listGroups, setGroupShare } from "@rtb/db";
import { errorBody, groupBody, groupPage, groupParam, groupView, listGroupsQuery } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { CHANGE, json, routes, serve } from "./routes.ts";
import { committed } from "./committed.ts";

const tags = ["groups"];

/** /groups: each group's fair share (weight, in-flight limit) and where its units are. */
export function groupRoutes({ db, dispatcher, settings }: AppDeps): OpenAPIHono {
  const app = routes();

  const list = createRoute({
    method: "get",
    path: "/",
    tags,
    summary: "Groups by name: weight, in-flight limit, ready and in-flight units",
    request: { query: listGroupsQuery },
    responses: { 200: { description: "A page of groups.", content: json(groupPage) }, 400: { description: "A bad parameter.", content: json(errorBody) } },
  });
  serve(app, list, async (c) => {
    const q = c.req.valid("query");
    const page = await listGroups(db, { limit: q.limit, ...(q.after !== undefined ? { after: q.after } : {}) });
    return c.json({ groups: page.groups, nextCursor: page.nextAfter }, 200);
  });

  const put = createRoute({
    method: "put",
    path: "/{name}",
    tags,
    security: CHANGE,
    summary: "Set a group's weight, in-flight limit and/or callback URL (null removes a limit or a URL); takes effect at the next top-up",
    request: { params: groupParam, body: { required: true, content: json(groupBody(settings)) } },
    responses: { 200: { description: "The group as it is now.", content: json(groupView) }, 400: { description: "A bad field.", content: json(errorBody) } },
  });
  serve(app, put, async (c) => {
    const { name } = c.req.valid("param");
    const change = c.req.valid("json");
    const res = await committed(db, async (tx) => c.json(await setGroupShare(tx, name, change), 200));
    // A raised limit or weight may make room at once.
    dispatcher.trigger("group share changed");
    return res;
  });
  return app;
}
