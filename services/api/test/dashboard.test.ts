import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import type { ApiService } from "@rtb/api";
import { startSystem, startWebhookReceiver, testWebhookSecret, useTestPlace, waitFor, type WebhookReceiver } from "@rtb/testing";
import { NEVER } from "./support.ts";
import { launchChromium, readEvents, waitForText, type PageGlobals, type SseEvent } from "./browser.ts";

// A real api on a port, a real leader and two agents, a backlog of 40 units with dispatching
// off, and a real headless Chromium on the dashboard. The agents take 300-600 ms a unit, 4 at
// a time, so the run lasts seconds: the page must follow it live, without a reload.
const UNITS = 40;
const BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

// "fail" fails every attempt (its units are enqueued with one attempt, so they end in error);
// no agent serves "nobody", whose units wait for one.
const place = useTestPlace({ kinds: ["fail"] });
let api: ApiService;
let browser: Browser;
let base: string;
// Where the callbacks of the timeline's test go (a real receiver that verifies each signature).
const secret = testWebhookSecret();
let receiver: WebhookReceiver;

beforeAll(async () => {
  receiver = place.own(await startWebhookReceiver(secret));
  const env = {
    RTB_WEBHOOK_ALLOWED_HOSTS: "127.0.0.1",
    RTB_WEBHOOK_SECRET: secret,
    RTB_WEBHOOK_BACKOFF_MS: "50",
    RTB_WEBHOOK_BACKOFF_MAX_MS: "100",
    RTB_SEED_UNITS: String(UNITS),
    RTB_RECONCILE_CRON: NEVER,
    RTB_BROADCAST_MAX_QUEUE: "10",
    RTB_LEADER_ID: "leader-d",
    RTB_AGENT_ERROR_RATE: "0",
    RTB_AGENT_CONCURRENCY: "2",
    RTB_AGENT_WORK_MIN_MS: "300",
    RTB_AGENT_WORK_MAX_MS: "600",
    RTB_HEARTBEAT_MS: "300",
  };
  const handlers = new Map([["fail", async () => Promise.reject(new Error("made to fail"))]]);
  const system = place.own(await startSystem(place, env, { agents: ["agent-d1", "agent-d2"], listen: true, handlers }));
  api = system.api;
  base = system.url!;
  browser = place.own(await launchChromium());
});

describe("GET / content negotiation", () => {
  it.each([
    ["curl's default", "*/*"],
    ["a script", "application/json"],
    ["no Accept header", null],
    ["JSON preferred over HTML", "application/json, text/html;q=0.5"],
  ])("answers JSON to %s", async (_what, accept) => {
    const res = await fetch(`${base}/`, { headers: accept === null ? {} : { Accept: accept } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("vary")).toMatch(/accept/i);
    expect(await res.json()).toMatchObject({ total: UNITS, dispatching: false, counts: { pending: UNITS } });
  });

  it("answers a browser with the dashboard page, whose script and style are served too", async () => {
    const res = await fetch(`${base}/`, { headers: { Accept: BROWSER_ACCEPT } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
    const html = await res.text();
    for (const asset of ["/dashboard/dashboard.js", "/dashboard/dashboard.css"]) {
      expect(html).toContain(asset);
      const a = await fetch(base + asset);
      expect(a.status, asset).toBe(200);
      const etag = a.headers.get("etag")!;
      expect((await fetch(base + asset, { headers: { "If-None-Match": etag } })).status).toBe(304);
    }
  });
});

describe("GET /events", () => {
  it("streams a state event at once (the same JSON as GET /), then throughput and recent units", async () => {
    const res = await fetch(`${base}/events`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const seen = new Set<string>();
    const { events, raw } = await readEvents(res, (e) => (seen.add(e.event), seen.has("state") && seen.has("throughput") && seen.has("units")));
    expect(raw.startsWith("retry: ")).toBe(true);
    const state = JSON.parse(events.find((e) => e.event === "state")!.data);
    const json = (await (await fetch(`${base}/`)).json()) as Record<string, unknown>;
    expect(Object.keys(state).sort()).toEqual(Object.keys(json).sort());
    expect(state).toMatchObject({ total: UNITS, counts: { pending: UNITS }, maxQueue: 10, dispatching: false });
    const throughput = JSON.parse(events.find((e) => e.event === "throughput")!.data);
    expect(throughput.buckets).toHaveLength(60);
    expect(throughput.bucketMs).toBe(10_000);
    expect(JSON.parse(events.find((e) => e.event === "units")!.data)).toEqual({ units: [] });
  });

  it("sends nothing more while nothing changes, though the leader and agents keep sending heartbeats", async () => {
    const seen: SseEvent[] = [];
    const res = await fetch(`${base}/events`, { signal: AbortSignal.timeout(3_000) });
    // Read until the timeout cuts the stream: heartbeats every 300 ms meanwhile.
    await readEvents(res, (e) => (seen.push(e), false)).catch(() => {});
    expect(seen.map((e) => e.event).sort()).toEqual(["state", "throughput", "units"]);
  });
});

describe("the dashboard in a real browser", () => {
  let page: Page;
  const pageErrors: string[] = [];
  // Chromium logs every 404 as a console error, also one the page asked for knowingly (does a
  // unit have this id?): those URLs only are not errors.
  const expected404 = new Set<string>();

  it("loads, shows the backlog, and follows a run live after Go, without a reload", async () => {
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("pageerror", (err) => pageErrors.push(err.message));
    page.on("console", (m) => m.type() === "error" && !(expected404.has(new URL(m.location().url || "x:").pathname) && m.text().includes("404")) && pageErrors.push(m.text()));
    await page.goto(`${base}/`);
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 30_000 });
    await waitForText(page, '[data-count="pending"]', String(UNITS));
    await waitForText(page, '[data-count="success"]', "0");
    await waitForText(page, "#dispatching", "paused");
    expect(await page.locator("#go").isEnabled()).toBe(true);

    // Every value the success count takes from now on, as the page shows it.
    await page.evaluate(() => {
      const { document, window, MutationObserver } = globalThis as unknown as PageGlobals;
      const el = document.querySelector('[data-count="success"]');
      window.seenSuccess = [];
      new MutationObserver(() => window.seenSuccess.push(el.textContent ?? "")).observe(el, { childList: true, characterData: true, subtree: true });
    });
    const loads: string[] = [];
    page.on("framenavigated", (f) => f === page.mainFrame() && loads.push(f.url()));

    await page.locator("#go").click();
    await waitForText(page, '[data-count="success"]', String(UNITS), 90_000);
    await waitForText(page, '[data-count="pending"]', "0");
    await page.locator("#done-note", { hasText: "all done" }).waitFor();

    expect(loads, "the page reloaded").toEqual([]);
    const seen: string[] = await page.evaluate(() => (globalThis as unknown as PageGlobals).window.seenSuccess);
    // The count moved through values between 0 and the total: pushed by the stream as the run went.
    expect(seen.some((v) => Number(v) > 0 && Number(v) < UNITS), `success counts shown: ${seen.join(", ")}`).toBe(true);
    expect(await page.locator("#dispatching").getAttribute("data-on")).toBe("true");
    await page.locator("#agents li.chip", { hasText: "agent-d1" }).waitFor();
    await page.locator('[data-leader="leader-d"]').waitFor();
    await page.locator("#units-body tr").first().waitFor();
    // The throughput chart has bars.
    await waitFor("throughput bars", () => page.locator("#tp-chart rect.s-success").count());
  });

  it("says what the pending units wait for: a delayed unit is on a clock until cancelled", async () => {
    const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ kind: "simulate", delayMs: 86_400_000 }) });
    const { unit } = (await res.json()) as { unit: { id: number } };
    await page.locator("#backlog", { hasText: "pending: 0 ready · 1 on a clock (next due " }).waitFor({ timeout: 30_000 });
    expect(await page.locator("#backlog").textContent()).toContain("· 0 waiting for an agent");
    await fetch(`${base}/units/${unit.id}/cancel`, { method: "POST" });
    await waitForText(page, "#backlog", "pending: 0 ready · 0 on a clock · 0 waiting for an agent");
  });

  it("lists the schedules with their next fire time, and pauses and resumes one from the page; says what retention pruned", async () => {
    const res = await fetch(`${base}/schedules`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "morning-report", cron: "0 9 * * *", timeZone: "Europe/Paris", unit: { kind: "report", group: "acme" } }),
    });
    expect(res.status).toBe(201);
    const created = (await res.json()) as { nextFireAt: string };
    const row = page.locator('#schedules-body tr[data-schedule="morning-report"]');
    await row.waitFor({ timeout: 30_000 });
    expect(await row.locator("td").nth(1).textContent()).toBe("0 9 * * * Europe/Paris");
    expect(await row.locator("td").nth(2).textContent()).toBe("report · acme");
    const shownNext = await row.locator('[data-field="next"]').textContent();
    expect(shownNext).toBe(await page.evaluate((iso) => new Date(iso).toLocaleString([], { hour12: false }), created.nextFireAt));
    expect(await page.locator("#schedules-empty").isHidden()).toBe(true);

    await row.locator('button[data-action="pause"]').click();
    await page.locator('#schedules-body tr[data-schedule="morning-report"][data-paused="true"]').waitFor({ timeout: 30_000 });
    expect(await row.locator('[data-field="next"]').textContent()).toBe("paused");
    expect(((await (await fetch(`${base}/schedules/morning-report`)).json()) as { paused: boolean }).paused).toBe(true);
    await row.locator('button[data-action="resume"]').click();
    await page.locator('#schedules-body tr[data-schedule="morning-report"][data-paused="false"]').waitFor({ timeout: 30_000 });
    expect(((await (await fetch(`${base}/schedules/morning-report`)).json()) as { paused: boolean }).paused).toBe(false);
    expect(await fetch(`${base}/schedules/morning-report`, { method: "DELETE" }).then((r) => r.status)).toBe(200);

    // RTB_RETENTION is left at its default here: nothing finished a week ago.
    expect(await page.locator("#retention").textContent()).toMatch(/^retention 7d: 0 finished units pruned \(0 events\)(, last pass \d\d:\d\d:\d\d)? · 0 due$/);
  });

  it("opens a unit's timeline from the recent units table", async () => {
    const rows = await page.locator("#units-body tr[data-unit]").evaluateAll((trs) => trs.map((tr) => Number(tr.getAttribute("data-unit"))));
    expect(rows.length).toBeGreaterThan(0);
    // A unit whose timeline has all four steps (an agent's `processing` may arrive before the
    // leader's `queued`, and then `queued` is ignored, by design).
    const timelines = await Promise.all(rows.map(async (id) => ({ id, body: (await (await fetch(`${base}/units/${id}`)).json()) as { events: { status: string }[] } })));
    const full = timelines.find((t) => ["dispatched", "queued", "processing", "success"].every((s) => t.body.events.some((e) => e.status === s)));
    const pick = full ?? timelines[0]!;
    await page.locator(`#units-body tr[data-unit="${pick.id}"] td`).nth(3).click();
    const dialog = page.locator("#timeline");
    await dialog.waitFor({ state: "visible" });
    await waitForText(page, "#tl-title", `Unit #${pick.id}`);
    await page.locator('#tl-events li[data-status="success"]').waitFor();
    const shown = await page.locator("#tl-events li[data-status]").evaluateAll((lis) => lis.map((li) => li.getAttribute("data-status")));
    expect(shown).toEqual(pick.body.events.map((e) => e.status));
    expect(shown).toEqual(expect.arrayContaining(["dispatched", "processing", "success"]));
    if (full) expect(shown).toContain("queued");

    const shot = join(tmpdir(), `rtb-dashboard-${process.pid}-${Date.now()}.png`);
    await page.screenshot({ path: shot });
    console.log(`dashboard screenshot (timeline open): ${shot}`);
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    const overview = join(tmpdir(), `rtb-dashboard-overview-${process.pid}-${Date.now()}.png`);
    await page.screenshot({ path: overview, fullPage: true });
    console.log(`dashboard screenshot: ${overview}`);
  });

  it("pauses from the page", async () => {
    await page.locator("#pause").click();
    await page.locator('#dispatching[data-on="false"]').waitFor();
    const state = (await (await fetch(`${base}/`)).json()) as { dispatching: boolean };
    expect(state.dispatching).toBe(false);
    expect(pageErrors).toEqual([]);
  });

  it("finds a unit by id, shows its ref and payload, and cancels and retries it from its timeline", async () => {
    // Dispatching is paused (above): a new unit stays pending.
    const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ kind: "simulate", ref: "dash-find-1", payload: { order: 42 } }) });
    const { unit } = (await res.json()) as { unit: { id: number } };
    await page.locator("#find").fill(String(unit.id));
    await page.locator("#find-form button[type=submit]").click();
    await waitForText(page, "#tl-title", `Unit #${unit.id}`);
    await waitForText(page, "#tl-ref", "dash-find-1");
    expect(JSON.parse((await page.locator("#tl-payload").textContent())!)).toEqual({ order: 42 });
    await page.locator("#tl-cancel").click();
    await page.locator('#tl-events li[data-status="cancelled"]').waitFor();
    expect(((await (await fetch(`${base}/units/${unit.id}`)).json()) as { status: string }).status).toBe("cancelled");
    await page.locator("#tl-retry").click();
    await page.locator("#tl-cancel").waitFor();
    expect(((await (await fetch(`${base}/units/${unit.id}`)).json()) as { status: string }).status).toBe("pending");
    await page.keyboard.press("Escape");
    expect(pageErrors).toEqual([]);
  });

  it("shows a unit's trace id, and each attempt at its callback in the timeline after its end", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await fetch(`${base}/units`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${traceId}-b7ad6b7169203331-01` },
      body: JSON.stringify({ kind: "simulate", callbackUrl: `${receiver.url}/dash` }),
    });
    const { unit } = (await res.json()) as { unit: { id: number } };
    let answers = 0;
    receiver.answer = () => (answers++ === 0 ? 500 : 204);
    // Dispatching is paused (above): cancelling the pending unit ends it, and its end is delivered.
    expect((await fetch(`${base}/units/${unit.id}/cancel`, { method: "POST" })).status).toBe(200);
    await waitFor("the callback to be delivered", async () => ((await (await fetch(`${base}/units/${unit.id}`)).json()) as { callbacks: { state: string }[] }).callbacks[0]?.state === "delivered");
    await page.locator("#find").fill(String(unit.id));
    await page.locator("#find-form button[type=submit]").click();
    await waitForText(page, "#tl-title", `Unit #${unit.id}`);
    await waitForText(page, "#tl-trace", traceId);
    await page.locator('#tl-events li[data-callback="delivered"]').waitFor();
    const items = await page.locator("#tl-events li").evaluateAll((lis) => lis.map((li) => li.getAttribute("data-status") ?? `callback ${li.getAttribute("data-callback")}: ${li.textContent}`));
    expect(items).toEqual(["cancelled", expect.stringMatching(/^callback failed: callback failed.*HTTP 500/), expect.stringMatching(/^callback delivered: callback delivered.*HTTP 204/)]);
    expect(receiver.rejected).toEqual([]);
    expect(receiver.received.filter((r) => r.path === "/dash")).toHaveLength(2);
    await page.keyboard.press("Escape");
    await page.locator("#timeline").waitFor({ state: "hidden" });
    expect(pageErrors).toEqual([]);
  });

  const enqueue = async (body: object) => {
    const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    expect(res.status).toBe(201);
    return ((await res.json()) as { unit: { id: number } }).unit.id;
  };

  it("finds a unit by its ref, also a ref that looks like an id no unit has, and says so when none has it", async () => {
    const id = await enqueue({ kind: "simulate", ref: "dash-ref-7", payload: { order: 7 } });
    await page.locator("#find").fill("dash-ref-7");
    await page.locator("#find-form button[type=submit]").click();
    await waitForText(page, "#tl-title", `Unit #${id}`);
    await waitForText(page, "#tl-ref", "dash-ref-7");
    await page.keyboard.press("Escape");
    await page.locator("#timeline").waitFor({ state: "hidden" });
    // A number is an id first; no unit has this one, so it is a ref.
    const numeric = await enqueue({ kind: "simulate", ref: "987654321" });
    expected404.add("/units/987654321");
    await page.locator("#find").fill("987654321");
    await page.locator("#find-form button[type=submit]").click();
    await waitForText(page, "#tl-title", `Unit #${numeric}`);
    await waitForText(page, "#tl-ref", "987654321");
    await page.keyboard.press("Escape");
    await page.locator("#timeline").waitFor({ state: "hidden" });
    await page.locator("#find").fill("no-such-ref");
    await page.locator("#find-form button[type=submit]").click();
    await page.locator("#toast", { hasText: 'no unit with ref "no-such-ref"' }).waitFor();
    expect(await page.locator("#timeline").isVisible()).toBe(false);
    expect(pageErrors).toEqual([]);
  });

  it("shows a group with its numbers", async () => {
    // Dispatching is paused: these stay ready.
    for (let i = 0; i < 3; i++) await enqueue({ kind: "simulate", group: "dash-group" });
    const put = await fetch(`${base}/groups/dash-group`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ weight: 3, maxInFlight: 2 }) });
    expect(put.status).toBe(200);
    const row = page.locator('#groups-body tr[data-group="dash-group"]');
    await row.waitFor({ timeout: 30_000 });
    // The weight and limit move no count: the page asks again within 10 s.
    await waitForText(page, '#groups-body tr[data-group="dash-group"] [data-field="weight"]', "3", 30_000);
    await waitForText(page, '#groups-body tr[data-group="dash-group"] [data-field="maxInFlight"]', "2");
    await waitForText(page, '#groups-body tr[data-group="dash-group"] [data-field="ready"]', "3");
    await waitForText(page, '#groups-body tr[data-group="dash-group"] [data-field="inFlight"]', "0");
    // The seeded groups are there too, with their units finished.
    await page.locator("#groups-body tr[data-group]").nth(1).waitFor();
    expect(pageErrors).toEqual([]);
  });

  it("lists a failed unit, which opens its timeline; shows a kind no agent serves as waiting for one", async () => {
    await page.locator('#no-agent').waitFor({ state: "hidden" });
    const failed = await enqueue({ kind: "fail", maxAttempts: 1 });
    const waiting = await enqueue({ kind: "nobody" });
    await page.locator("#go").click();
    const row = page.locator(`#failed-body tr[data-unit="${failed}"]`);
    await row.waitFor({ timeout: 30_000 });
    await expect.poll(() => row.textContent()).toContain("made to fail");
    await row.locator("button").click();
    await waitForText(page, "#tl-title", `Unit #${failed}`);
    await page.locator('#tl-events li[data-status="error"]').waitFor();
    await page.locator("#tl-retry").waitFor();
    await page.keyboard.press("Escape");
    await page.locator("#timeline").waitFor({ state: "hidden" });

    // The unit of kind "nobody" came back from the broker: no agent consumes its kind.
    const kind = page.locator('#no-agent-kinds li[data-kind="nobody"]');
    await kind.waitFor({ timeout: 30_000 });
    expect(await kind.textContent()).toMatch(/^nobody: waiting for an agent since \d\d:\d\d:\d\d/);
    expect(((await (await fetch(`${base}/units/${waiting}`)).json()) as { status: string }).status).toBe("pending");
    const shot = join(tmpdir(), `rtb-dashboard-panels-${process.pid}-${Date.now()}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`dashboard screenshot (failed units, groups, waiting kind): ${shot}`);
    expect(pageErrors).toEqual([]);
  });

  it("ends open event streams when the api stops, so the stop does not hang", async () => {
    const res = await fetch(`${base}/events`);
    // A kept-alive socket would hold server.close() until the keep-alive timeout.
    expect(res.headers.get("connection")).toBe("close");
    const reading = readEvents(res, () => false);
    await page.locator('#conn[data-state="live"]').waitFor();
    await api.stop();
    const { events } = await reading;
    expect(events.some((e) => e.event === "state")).toBe(true);
    // The page notices.
    await page.locator('#conn:not([data-state="live"])').waitFor({ timeout: 30_000 });
  });
});
