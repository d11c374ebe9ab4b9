import { Hono } from "hono";
import { z } from "zod";
import { listGroups, setGroupShare } from "@rtb/db";
import type { AppDeps } from "./app.ts";
import type { ApiDocs } from "./openapi.ts";
import { errorBody, groupBody, groupName, groupPage, groupView, listGroupsQuery } from "./schemas.ts";
import { parsed, readJson, valid } from "./validation.ts";
import { committed } from "./committed.ts";

const tags = ["groups"];

/** /groups: each group's fair share (weight, in-flight limit) and where its units are. */
export function groupRoutes({ db, dispatcher }: AppDeps, docs: ApiDocs): Hono {
  const app = new Hono();
  const params = z.object({ name: groupName });

  docs.add({
    method: "get",
    path: "/groups",
    tags,
    auth: "read",
    summary: "Groups by name: weight, in-flight limit, ready and in-flight units",
    query: listGroupsQuery,
    responses: { 200: { description: "A page of groups.", schema: groupPage }, 400: { description: "A bad parameter.", schema: errorBody } },
  });
  app.get("/", valid("query", listGroupsQuery), async (c) => {
    const q = c.req.valid("query");
    const page = await listGroups(db, { limit: q.limit, ...(q.after !== undefined ? { after: q.after } : {}) });
    return c.json({ groups: page.groups, nextCursor: page.nextAfter });
  });

  docs.add({
    method: "put",
    path: "/groups/:name",
    tags,
    auth: "change",
    summary: "Set a group's weight and/or in-flight limit (maxInFlight: null removes it); takes effect at the next top-up",
    params,
    body: { schema: groupBody, required: true },
    responses: { 200: { description: "The group as it is now.", schema: groupView }, 400: { description: "A bad field.", schema: errorBody } },
  });
  app.put("/:name", valid("param", params), async (c) => {
    const { name } = c.req.valid("param");
    const change = parsed(groupBody, await readJson(c));
    const res = await committed(db, async (tx) => c.json(await setGroupShare(tx, name, change)));
    // A raised limit or weight may make room at once.
    dispatcher.trigger("group share changed");
    return res;
  });
  return app;
}
