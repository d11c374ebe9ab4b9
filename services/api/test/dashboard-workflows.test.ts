import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import type { Handler } from "@rtb/agent";
import { startSystem, useTestPlace } from "@rtb/testing";
import { NEVER } from "./support.ts";
import { launchChromium, waitForText, type PageGlobals } from "./browser.ts";

// The dashboard's Workflows panel in a real headless Chromium, on a real api, leader and agent:
// the list, a workflow's DAG drawn from GET /workflows/:id (boxes in columns by dependency
// depth, arrows from dependency to dependent, dashed for an ignore edge), the drawing following
// the run without a reload, a link to it (#workflow=ID), and a fan-out of 500 steps drawn as
// one box with its counts per status.
//
// Every step is of kind "hold": its handler waits until the test releases (or fails) the gate
// its payload names, so the test decides when each step moves.
const place = useTestPlace({ kinds: ["hold"] });
let browser: Browser;
let base: string;

type Gate = { release: (result: unknown) => void; fail: (err: Error) => void; promise: Promise<unknown> };
const gates = new Map<string, Gate>();
function gate(name: string): Gate {
  let g = gates.get(name);
  if (!g) {
    let release!: Gate["release"], fail!: Gate["fail"];
    const promise = new Promise<unknown>((res, rej) => ((release = res), (fail = rej)));
    promise.catch(() => {}); // failed before a handler waits on it
    g = { release, fail, promise };
    gates.set(name, g);
  }
  return g;
}
const hold: Handler = ({ payload, signal }) =>
  new Promise((resolve, reject) => {
    gate((payload as { gate: string }).gate).promise.then(resolve, reject);
    signal.addEventListener("abort", () => reject(signal.reason));
  });

beforeAll(async () => {
  const env = {
    RTB_SEED_UNITS: "0",
    // No reconciler tick: the steps a success makes ready are dispatched by the report's own top-up.
    RTB_RECONCILE_CRON: NEVER,
    RTB_LEADER_ID: "leader-w",
    RTB_AGENT_CONCURRENCY: "4",
    RTB_HEARTBEAT_MS: "300",
  };
  const system = place.own(await startSystem(place, env, { agents: ["agent-w1"], listen: true, handlers: new Map([["hold", hold]]) }));
  base = system.url!;
  browser = place.own(await launchChromium());
});

const post = async (path: string, body?: unknown) => {
  const res = await fetch(`${base}${path}`, { method: "POST", ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }) });
  return { status: res.status, body: (await res.json()) as any };
};

type StepBox = { status: string | null; layer: number; left: number; right: number; top: number; bottom: number };
/** Each box of the drawing that is one step, by name: its status, column and where it is on the page. */
const stepBoxes = async (page: Page): Promise<Record<string, StepBox>> =>
  Object.fromEntries(
    await page.locator("#dag g.node[data-step]").evaluateAll((gs) =>
      gs.map((g) => {
        const r = g.querySelector("rect.node-box")!.getBoundingClientRect();
        return [g.getAttribute("data-step")!, { status: g.getAttribute("data-status"), layer: Number(g.getAttribute("data-layer")), left: r.left, right: r.right, top: r.top, bottom: r.bottom }] as const;
      }),
    ),
  );

/** Each arrow: from, to, policy, satisfied, and its two ends on the page. */
const arrows = (page: Page) =>
  page.locator("#dag path.edge").evaluateAll((paths) =>
    paths.map((p) => {
      const path = p as unknown as { getTotalLength(): number; getPointAtLength(n: number): { matrixTransform(m: unknown): { x: number; y: number } }; getScreenCTM(): unknown };
      const ctm = path.getScreenCTM();
      const start = path.getPointAtLength(0).matrixTransform(ctm);
      const end = path.getPointAtLength(path.getTotalLength()).matrixTransform(ctm);
      const { document } = globalThis as unknown as PageGlobals;
      return {
        from: p.getAttribute("data-from"),
        to: p.getAttribute("data-to"),
        policy: p.getAttribute("data-policy"),
        satisfied: p.getAttribute("data-satisfied"),
        count: Number(p.getAttribute("data-count")),
        dashed: document.defaultView.getComputedStyle(p).strokeDasharray !== "none",
        start: { x: start.x, y: start.y },
        end: { x: end.x, y: end.y },
      };
    }),
  );

const statusOf = (page: Page, step: string) => page.locator(`#dag g.node[data-step="${step}"]`).getAttribute("data-status");
const waitForStep = (page: Page, step: string, status: string, timeout = 30_000) => page.locator(`#dag g.node[data-step="${step}"][data-status="${status}"]`).waitFor({ timeout });

describe("the dashboard's workflows", () => {
  let page: Page;
  const pageErrors: string[] = [];
  let wfId: number;
  const ids: Record<string, number> = {};

  it("lists a workflow with its status, name and counts; picked, draws its steps in columns by depth with their statuses and its edges", async () => {
    // Dispatching is off: a is pending, the others blocked.
    const res = await post("/workflows", {
      name: "dash-order",
      ref: "dash-wf-1",
      steps: [
        { step: "a", kind: "hold", payload: { gate: "a" } },
        { step: "b", kind: "hold", payload: { gate: "b" }, dependsOn: ["a"] },
        { step: "c", kind: "hold", payload: { gate: "c" }, dependsOn: ["a"], maxAttempts: 1 },
        { step: "d", kind: "hold", payload: { gate: "d" }, dependsOn: ["b", { step: "c", onFailure: "ignore" }] },
      ],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    wfId = res.body.workflow.id;
    for (const s of res.body.workflow.steps) ids[s.step] = s.id;

    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("pageerror", (err) => pageErrors.push(err.message));
    page.on("console", (m) => m.type() === "error" && pageErrors.push(m.text()));
    await page.goto(`${base}/`);
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 30_000 });

    // The Units card counts the blocked steps: blocked is one of the statuses listed.
    await waitForText(page, '#counts [data-count="blocked"]', "3");
    await waitForText(page, '#counts [data-count="pending"]', "1");
    expect(await page.locator("#counts li").evaluateAll((lis) => lis.map((li) => li.querySelector(".badge")!.textContent))).toEqual([
      "blocked", "pending", "dispatched", "queued", "processing", "success", "error", "cancelled",
    ]);

    const row = page.locator(`#workflows-body tr[data-workflow="${wfId}"]`);
    await row.waitFor({ timeout: 30_000 });
    await waitForText(page, "#wf-running", "1");
    expect(await row.locator('[data-field="status"]').textContent()).toBe("running");
    expect(await row.locator('[data-field="name"]').textContent()).toBe("dash-order · dash-wf-1");
    expect(await row.locator('[data-field="counts"] [data-status]').evaluateAll((els) => els.map((e) => [e.getAttribute("data-status"), e.textContent]))).toEqual([
      ["blocked", "3 blocked"],
      ["pending", "1 pending"],
    ]);
    expect(await page.locator("#wf-view").isHidden()).toBe(true);

    await row.locator('[data-field="name"]').click();
    await page.locator('#dag g.node[data-step="a"]').waitFor();
    expect(new URL(page.url()).hash).toBe(`#workflow=${wfId}`);
    expect(await row.getAttribute("data-selected")).toBe("true");
    await waitForText(page, "#wf-title", `Workflow #${wfId} · dash-order`);
    expect(await page.locator("#wf-status").textContent()).toBe("running");
    expect(await page.locator("#wf-legend").textContent()).toContain("blocked");

    const boxes = await stepBoxes(page);
    expect(Object.keys(boxes).sort()).toEqual(["a", "b", "c", "d"]);
    expect(Object.fromEntries(Object.entries(boxes).map(([k, v]) => [k, [v.status, v.layer]]))).toEqual({ a: ["pending", 0], b: ["blocked", 1], c: ["blocked", 1], d: ["blocked", 2] });
    // Columns left to right by depth; b and c one above the other.
    expect(boxes.a!.right).toBeLessThan(boxes.b!.left);
    expect(boxes.b!.left).toBe(boxes.c!.left);
    expect(boxes.b!.bottom <= boxes.c!.top || boxes.c!.bottom <= boxes.b!.top).toBe(true);
    expect(boxes.b!.right).toBeLessThan(boxes.d!.left);
    expect(await page.locator('#dag g.node[data-step="d"] .node-line').textContent()).toBe("blocked · waits for 2");

    const edges = await arrows(page);
    expect(edges.map((e) => [e.from, e.to, e.policy, e.satisfied, e.dashed]).sort()).toEqual([
      ["a", "b", "cancel", "false", false],
      ["a", "c", "cancel", "false", false],
      ["b", "d", "cancel", "false", false],
      ["c", "d", "ignore", "false", true],
    ]);
    // Each arrow leaves its dependency's right side and ends at its dependent's left side.
    for (const e of edges) {
      const from = boxes[e.from!]!, to = boxes[e.to!]!;
      expect(Math.abs(e.start.x - from.right), `${e.from}->${e.to} start`).toBeLessThan(2);
      expect(e.start.y > from.top && e.start.y < from.bottom).toBe(true);
      expect(Math.abs(e.end.x - to.left), `${e.from}->${e.to} end`).toBeLessThan(6);
      expect(e.end.y > to.top && e.end.y < to.bottom).toBe(true);
    }
    expect(pageErrors).toEqual([]);
  });

  it("follows the run live, without a reload: running, succeeded, failed (the ignore edge lets its dependent wait on), cancelled", async () => {
    const loads: string[] = [];
    page.on("framenavigated", (f) => f === page.mainFrame() && loads.push(f.url()));

    expect((await post("/go")).status).toBe(200);
    await waitForStep(page, "a", "processing");
    expect(await statusOf(page, "b")).toBe("blocked");

    gate("a").release({ ok: true });
    await waitForStep(page, "a", "success");
    await waitForStep(page, "b", "processing");
    await waitForStep(page, "c", "processing");
    expect(await statusOf(page, "d")).toBe("blocked");
    await expect.poll(async () => (await arrows(page)).filter((e) => e.from === "a").map((e) => e.satisfied)).toEqual(["true", "true"]);

    // c fails (one attempt): d's edge to it is ignore, so it is satisfied and d waits for b alone.
    gate("c").fail(new Error("c broke"));
    await waitForStep(page, "c", "error");
    await waitForText(page, '#dag g.node[data-step="d"] .node-line', "blocked · waits for 1");
    expect((await arrows(page)).find((e) => e.from === "c")!.satisfied).toBe("true");
    expect(await page.locator('#dag g.node[data-step="c"] title').textContent()).toContain("last error: c broke");
    expect(await page.locator("#wf-status").textContent()).toBe("running");
    const shot = join(tmpdir(), `rtb-dashboard-workflow-${process.pid}-${Date.now()}.png`);
    await page.locator("#workflows-card").screenshot({ path: shot });
    console.log(`dashboard screenshot (a workflow's DAG mid-run): ${shot}`);

    const cancelled = await post(`/workflows/${wfId}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ cancelled: 2, inFlight: 1 });
    await waitForStep(page, "b", "cancelled");
    await waitForStep(page, "d", "cancelled");
    await waitForText(page, "#wf-status", cancelled.body.workflow.status);
    await waitForText(page, "#wf-running", "0");
    // Its row in the list follows too.
    await waitForText(page, `#workflows-body tr[data-workflow="${wfId}"] [data-field="status"]`, cancelled.body.workflow.status);
    expect(Object.fromEntries(Object.entries(await stepBoxes(page)).map(([k, v]) => [k, v.status]))).toEqual({ a: "success", b: "cancelled", c: "error", d: "cancelled" });
    expect(await page.locator("#dag path.edge").count()).toBe(4);
    expect(await page.locator("#wf-note").textContent()).toMatch(/^4 steps in 3 layers · finished$/);
    expect(loads, "the page reloaded").toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it("opens a workflow from a link (#workflow=ID); a step opens its timeline, which links back; closing takes it out of the URL", async () => {
    // A fresh load of the link, from another page (the same URL again would only scroll to it),
    // in the same tab: the browser may run as one process, which closing a tab would end.
    await page.goto("about:blank");
    await page.goto(`${base}/#workflow=${wfId}`);
    await waitForStep(page, "c", "error");
    expect(Object.fromEntries(Object.entries(await stepBoxes(page)).map(([k, v]) => [k, v.status]))).toEqual({ a: "success", b: "cancelled", c: "error", d: "cancelled" });

    await page.locator('#dag g.node[data-step="c"]').click();
    await waitForText(page, "#tl-title", `Unit #${ids.c}`);
    await waitForText(page, "#tl-workflow", `#${wfId}`);
    await page.locator('#tl-events li[data-status="error"]').waitFor();
    await page.keyboard.press("Escape");
    await page.locator("#timeline").waitFor({ state: "hidden" });

    await page.locator("#wf-close").click();
    await page.locator("#wf-view").waitFor({ state: "hidden" });
    expect(new URL(page.url()).hash).toBe("");
    expect(await page.locator("#dag *").count()).toBe(0);
    // Back brings it back.
    await page.goBack();
    await waitForStep(page, "a", "success");
    expect(pageErrors).toEqual([]);
  });

  it("draws a fan-out of 500 steps in one layer as one box with its counts per status, which follows the run", async () => {
    expect((await post("/pause")).status).toBe(200);
    const n = 500;
    const res = await post("/workflows", {
      name: "dash-fan",
      steps: [
        { step: "root", kind: "hold", payload: { gate: "root" } },
        ...Array.from({ length: n }, (_, i) => ({ step: `part-${i}`, kind: "hold", payload: { gate: `part-${i}` }, dependsOn: ["root"] })),
        { step: "join", kind: "hold", payload: { gate: "join" }, dependsOn: Array.from({ length: n }, (_, i) => `part-${i}`) },
      ],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const fan = res.body.workflow.id as number;

    const row = page.locator(`#workflows-body tr[data-workflow="${fan}"]`);
    await row.waitFor({ timeout: 30_000 });
    await row.locator("button").click();
    await waitForText(page, "#wf-title", `Workflow #${fan} · dash-fan`);
    const agg = page.locator("#dag g.aggregate");
    await agg.waitFor();
    expect(await agg.count()).toBe(1);
    expect(await agg.getAttribute("data-steps")).toBe(String(n));
    expect(await agg.getAttribute("data-layer")).toBe("1");
    expect(await agg.locator(".agg-count").evaluateAll((gs) => gs.map((g) => [g.getAttribute("data-status"), g.getAttribute("data-count"), g.textContent]))).toEqual([["blocked", String(n), `${n} blocked`]]);
    // Three boxes, two arrows (each standing for 500 edges): not thousands of elements.
    expect(Object.fromEntries(Object.entries(await stepBoxes(page)).map(([k, v]) => [k, [v.status, v.layer]]))).toEqual({ root: ["pending", 0], join: ["blocked", 2] });
    expect((await arrows(page)).map((e) => [e.from, e.to, e.count])).toEqual([
      ["root", "layer 2", n],
      ["layer 2", "join", n],
    ]);
    expect(await page.locator("#dag *").count()).toBeLessThan(60);
    expect(await page.locator("#wf-note").textContent()).toBe(`${n + 2} steps in 3 layers · layer 2 (${n} steps) drawn as one box · live`);

    // The root runs and succeeds: the 500 are ready, then dispatched.
    expect((await post("/go")).status).toBe(200);
    await waitForStep(page, "root", "processing");
    gate("root").release("go");
    await waitForStep(page, "root", "success");
    await expect.poll(() => agg.locator('.agg-count[data-status="blocked"]').count(), { timeout: 30_000 }).toBe(0);
    // Cancelled, every one of them is counted so.
    expect((await post(`/workflows/${fan}/cancel`)).status).toBe(200);
    await page.locator(`#dag g.aggregate .agg-count[data-status="cancelled"][data-count="${n}"]`).waitFor({ timeout: 30_000 });
    await waitForStep(page, "join", "cancelled");
    expect(await page.locator("#dag g.aggregate").count()).toBe(1);

    const shot = join(tmpdir(), `rtb-dashboard-workflows-${process.pid}-${Date.now()}.png`);
    await page.locator("#workflows-card").screenshot({ path: shot });
    console.log(`dashboard screenshot (a fan-out's DAG): ${shot}`);
    expect(pageErrors).toEqual([]);
  });

  it("folds the layers past the 100th column of a long chain into one box", async () => {
    expect((await post("/pause")).status).toBe(200);
    const n = 150;
    const res = await post("/workflows", {
      name: "dash-chain",
      steps: Array.from({ length: n }, (_, i) => ({ step: `s-${i}`, kind: "hold", payload: { gate: `s-${i}` }, dependsOn: i ? [`s-${i - 1}`] : [] })),
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const chain = res.body.workflow.id as number;
    await page.evaluate((id) => ((globalThis as unknown as PageGlobals).window.location.hash = `#workflow=${id}`), chain);
    await waitForText(page, "#wf-title", `Workflow #${chain} · dash-chain`);
    const fold = page.locator('#dag g.aggregate[data-aggregate="layers 100-150"]');
    await fold.waitFor();
    expect(await fold.getAttribute("data-steps")).toBe("51");
    expect(await page.locator("#dag g.node[data-step]").count()).toBe(99);
    expect(await page.locator('#dag path.edge[data-from="s-98"][data-to="layers 100-150"]').count()).toBe(1);
    expect(await page.locator("#wf-note").textContent()).toBe(`${n} steps in ${n} layers · layers 100-150 (51 steps) drawn as one box · live`);
    expect((await post(`/workflows/${chain}/cancel`)).status).toBe(200);
    await page.locator('#dag g.aggregate .agg-count[data-status="cancelled"][data-count="51"]').waitFor({ timeout: 30_000 });
    expect(pageErrors).toEqual([]);
  });
});
