// @ts-check
// The rtb dashboard: plain browser JavaScript, no build step. Everything it shows comes from
// the api's server-sent events (GET /events); the status list from GET /meta; Go and Pause
// POST to /go and /pause; a unit's timeline is GET /units/:id, the failed units GET
// /units?status=error, a unit by its ref GET /units?ref=, the groups GET /groups, the
// workflows GET /workflows and the one drawn GET /workflows/:id (all from the page's own
// origin). Data is put on the page as text nodes only, never as HTML. Type-checked (tsconfig.json beside it) against the shapes
// the api defines:
/** @typedef {import("../events.ts").DashboardEvents} DashboardEvents */
/** @typedef {DashboardEvents["state"]} State */
/** @typedef {DashboardEvents["throughput"]} Throughput */
/** @typedef {DashboardEvents["units"]["units"][number]} ActiveUnit */
/** @typedef {DashboardEvents["problem"]} Problem */
/** @typedef {import("@rtb/protocol").MetaView} Meta */
/** @typedef {import("@rtb/protocol").UnitStatus} UnitStatus */
/** @typedef {import("@rtb/protocol").UnitWithTimeline} UnitWithTimeline */
/** @typedef {import("@rtb/protocol").UnitPage} UnitPage */
/** @typedef {import("@rtb/protocol").GroupPage} GroupPage */
/** @typedef {import("@rtb/protocol").SchedulePage} SchedulePage */
/** @typedef {import("@rtb/protocol").WorkflowPage} WorkflowPage */
/** @typedef {import("@rtb/protocol").WorkflowView} WorkflowView */
/** @typedef {import("@rtb/protocol").WorkflowWithSteps} WorkflowWithSteps */
/** @typedef {import("@rtb/protocol").ErrorBody} ErrorBody */
/** @typedef {import("@rtb/protocol").GoResult | import("@rtb/protocol").PauseResult} ControlResult */

// From GET /meta, before the stream starts: every status in order, and the finished ones.
/** @type {readonly UnitStatus[]} */
let statuses = [];
/** @type {readonly UnitStatus[]} */
let terminal = [];
/** The page's element with this id: index.html has every id this script asks for. */
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const button = (/** @type {string} */ id) => /** @type {HTMLButtonElement} */ ($(id));
const timeline = () => /** @type {HTMLDialogElement} */ ($("timeline"));
const tokenInput = () => /** @type {HTMLInputElement} */ ($("token"));
const SVG = "http://www.w3.org/2000/svg";

/** @typedef {Node | string | null | undefined | false | Child[]} Child */

/**
 * An element with attributes (class, data-*, aria-*, on* handlers) and children (strings
 * become text). `svg:rect` makes an SVG element; only what Element has is used on those.
 * @param {string} tag
 * @param {Record<string, unknown>} [attrs]
 * @param {...Child} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const el = /** @type {HTMLElement} */ (tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag));
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), /** @type {EventListener} */ (v));
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(/** @type {Node | string} */ (c));
  return el;
}

const nf = new Intl.NumberFormat();
const num = (/** @type {number | null | undefined} */ n) => (n === null || n === undefined ? "–" : nf.format(n));
const badge = (/** @type {string} */ status) => h("span", { class: `badge s-${status}` }, status);

// The server's clock, as seen through its snapshots: "5 s ago" is judged by it, not by a
// browser whose clock may be off.
let clockSkewMs = 0;
const serverNow = () => Date.now() + clockSkewMs;

/** @param {string | null | undefined} iso */
function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((serverNow() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
const clock = (/** @type {string | null | undefined} */ iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "–");
const clockMs = (/** @type {string | null | undefined} */ iso) => {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
};

// ---- live connection ------------------------------------------------------------------

/** @param {"connecting" | "live" | "down"} state @param {string} text */
function setConn(state, text) {
  $("conn").dataset.state = state;
  $("conn-text").textContent = text;
}

/** @type {EventSource | null} */
let source = null;
function connect() {
  setConn("connecting", source ? "reconnecting…" : "connecting…");
  const events = new EventSource("/events");
  source = events;
  events.addEventListener("open", () => setConn("live", "live"));
  events.addEventListener("error", () => {
    if (events.readyState === EventSource.CLOSED) {
      // Refused (a 401, a 503 while the api restarts): EventSource gives up; we do not.
      setConn("down", "disconnected · retrying");
      events.close();
      setTimeout(connect, 5_000);
    } else {
      setConn("connecting", "reconnecting…");
    }
  });
  on(events, "state", renderState);
  on(events, "throughput", renderThroughput);
  on(events, "units", (d) => renderUnits(d.units));
  on(events, "problem", renderProblem);
}

/**
 * Render each event of this kind with its data, the JSON the api sends for it (DashboardEvents).
 * @template {keyof DashboardEvents} K
 * @param {EventSource} events
 * @param {K} kind
 * @param {(data: DashboardEvents[K]) => void} render
 */
function on(events, kind, render) {
  events.addEventListener(kind, (e) => render(JSON.parse(/** @type {MessageEvent<string>} */ (e).data)));
}

/** The status list, from GET /meta; then the stream. Retried every 5 s while the api does not answer. */
async function start() {
  try {
    const res = await fetch("/meta", { headers: { Accept: "application/json", ...authHeader() } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const meta = /** @type {Meta} */ (await res.json());
    statuses = meta.statuses;
    terminal = meta.sets.terminal;
  } catch {
    setConn("down", "disconnected · retrying");
    setTimeout(start, 5_000);
    return;
  }
  connect();
  // A link to a workflow (#workflow=ID) opens it; so does Back or Forward to one.
  followHash(true);
  window.addEventListener("hashchange", () => followHash());
}

// ---- state ------------------------------------------------------------------------------

/** @type {State | null} */
let lastState = null;

/** @param {State} s */
function renderState(s) {
  lastState = s;
  $("updated").textContent = clock(new Date().toISOString());
  /** @type {HTMLTimeElement} */ ($("updated")).dateTime = new Date().toISOString();

  // Counts per status, and a bar of the whole backlog split by status.
  const counts = $("counts");
  if (!counts.children.length) {
    for (const st of statuses) {
      counts.append(h("li", { class: `count-card c-${st}` }, badge(st), h("strong", { class: "count-value", "data-count": st }, "–")));
    }
  }
  for (const st of statuses) /** @type {Element} */ (counts.querySelector(`[data-count="${st}"]`)).textContent = num(s.counts[st]);
  $("total").textContent = num(s.total);
  const finished = terminal.reduce((n, st) => n + s.counts[st], 0);
  $("done-pct").textContent = s.total ? `${Math.floor((finished / s.total) * 100)}%` : "–";
  $("done-note").textContent = s.done && s.total ? " · all done" : "";
  const bar = $("progress");
  bar.replaceChildren(
    ...statuses.filter((st) => s.counts[st] > 0).map((st) => {
      const seg = h("span", { class: `seg s-${st}`, title: `${st}: ${num(s.counts[st])}` });
      seg.style.flexGrow = String(s.counts[st]);
      return seg;
    }),
  );
  bar.setAttribute("aria-label", statuses.map((st) => `${st} ${s.counts[st]}`).join(", "));

  // What the pending units wait for: nothing, a clock (delayed, retry backoffs), an agent.
  const b = s.backlog;
  const due = b.nextDueAt ? ` (next due ${Date.parse(b.nextDueAt) <= serverNow() ? "now" : `${new Date(b.nextDueAt).toLocaleString([], { hour12: false })}`})` : "";
  $("backlog").textContent = `pending: ${num(b.ready)} ready · ${num(b.onClock)} on a clock${due} · ${num(b.forAgents)} waiting for an agent`;

  // Retention: what was pruned (in all, by every replica), when, and what is due.
  const r = s.retention;
  $("retention").textContent =
    r.retentionMs === 0
      ? "retention: RTB_RETENTION=0, every finished unit is kept"
      : `retention ${r.setting}: ${num(r.pruned.units)} finished units pruned (${num(r.pruned.events)} events)` +
        `${r.lastRunAt ? `, last pass ${clock(r.lastRunAt)}` : ""}` +
        `${r.due === null ? "" : ` · ${r.due >= PRUNE_DUE_CAP ? `${num(r.due)}+` : num(r.due)} due`}`;

  // The gauge: outstanding (dispatched + queued) against the maximum the api keeps out.
  const frac = s.maxQueue ? Math.min(1, s.outstanding / s.maxQueue) : 0;
  // The gap (200) is longer than the arc, so the dash is drawn once; a round cap would still
  // draw a dot for an empty dash, hence hidden at zero.
  $("gauge-value").setAttribute("stroke-dasharray", `${(frac * 100).toFixed(2)} 200`);
  $("gauge-value").setAttribute("visibility", frac > 0 ? "visible" : "hidden");
  $("gauge-value").dataset.level = frac >= 1 ? "full" : frac >= 0.75 ? "high" : "ok";
  $("gauge-number").textContent = num(s.outstanding);
  $("gauge-caption").textContent = `of ${num(s.maxQueue)}`;
  $("processing-now").textContent = num(s.counts.processing);

  // Dispatching switch.
  const pill = $("dispatching");
  pill.dataset.on = String(s.dispatching);
  pill.textContent = `${s.dispatching ? "dispatching" : "paused"}${s.dispatchingSince ? ` since ${clock(s.dispatchingSince)}` : ""}`;
  button("go").disabled = busy || s.dispatching;
  button("pause").disabled = busy || !s.dispatching;

  renderServices(s);
  renderDead(s);
  renderReports(s);
  // The failed units when their count moves; the groups when any count does (at most every 2 s).
  if (s.counts.error !== failedList.shownFor) failedList.refresh(s.counts.error);
  const counted = JSON.stringify(s.counts);
  if (counted !== groupsList.shownFor) groupsList.refresh(counted);
  // The workflows too (a step moved, or one was enqueued); the one drawn is polled while it
  // runs, and asked again here once finished (a retried step re-opens it).
  $("wf-running").textContent = num(s.workflows.running);
  if (counted !== workflowsList.shownFor) {
    workflowsList.refresh(counted);
    wfNudge();
  }
  // The schedules when one is added, paused or fires (its next fire time moves).
  const scheduled = JSON.stringify(s.schedules);
  if (scheduled !== schedulesList.shownFor) schedulesList.refresh(scheduled);
}

/** @param {State} s */
function renderServices(s) {
  const l = s.leader;
  const leader = $("leader");
  if (!l) {
    leader.replaceChildren(h("p", { class: "muted" }, "No leader has routed anything yet."));
  } else {
    const kinds = Object.entries(l.utilization?.kinds ?? {});
    leader.replaceChildren(
      h(
        "p",
        { class: "leader" },
        h("span", { class: "muted" }, "active leader "),
        h("strong", { "data-leader": l.id }, l.id),
        h("span", { class: "muted" }, ` · since ${clock(l.activeSince)} · reported ${ago(l.reportedAt)}`),
      ),
      // No table without kinds (replaceChildren would write a null as the text "null").
      ...(kinds.length
        ? [
            h(
              "table",
              { class: "mini" },
              h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "kind"), h("th", { scope: "col" }, "jobs waiting"), h("th", { scope: "col" }, "agents"))),
              h("tbody", {}, kinds.map(([k, u]) => h("tr", {}, h("td", {}, k), h("td", {}, num(u.ready)), h("td", {}, num(u.consumers))))),
            ),
          ]
        : []),
    );
  }
  /** @param {string} id @param {State["services"]["agents"]} list */
  const chips = (id, list) => {
    $(`${id}-count`).textContent = String(list.length);
    $(id).replaceChildren(
      ...(list.length
        ? list.map((i) => h("li", { class: "chip", title: `seen in the last 30 s · dead-lettered ${i.deadLettered}` }, h("span", { class: "dot ok" }), i.id, h("span", { class: "muted" }, ` since ${clock(i.startedAt)}`)))
        : [h("li", { class: "muted" }, "none seen in the last 30 s")]),
    );
  };
  // Kinds whose units wait because no agent consumes them (README: "A kind with no agent yet").
  const waiting = s.waitingForAgents;
  $("no-agent").hidden = waiting.length === 0;
  $("no-agent-count").textContent = String(waiting.length);
  $("no-agent-kinds").replaceChildren(
    ...waiting.map((w) => h("li", { "data-kind": w.kind, title: `since ${clockMs(w.since)}` }, h("strong", {}, w.kind), `: waiting for an agent since ${clock(w.since)}`, h("span", { class: "muted" }, ` (${ago(w.since)})`))),
  );
  chips("agents", s.services.agents);
  chips("leaders", s.services.leaders);
  chips("apis", s.services.apis);
  $("broker").textContent = `broker ${s.broker.connected ? "connected" : "DISCONNECTED"} · ${s.broker.reconnects} reconnects`;
}

/** @param {State} s */
function renderDead(s) {
  const d = s.deadLetters;
  $("dead-waiting").textContent = d.waiting === null ? "?" : num(d.waiting);
  $("dead-waiting").dataset.alert = String((d.waiting ?? 0) > 0);
  $("dead-by").replaceChildren(...Object.entries(d.byService).flatMap(([k, v]) => [h("dt", {}, `by ${k}s`), h("dd", { "data-alert": String(v > 0) }, num(v))]));
  const rejected = Object.entries(d.rejectedByThisApi);
  $("dead-rejected").textContent = rejected.length ? `rejected by this api: ${rejected.map(([k, v]) => `${k} ${v}`).join(", ")}` : "";
}

/** @param {State} s */
function renderReports(s) {
  const ignored = Object.values(s.reports.ignored).reduce((a, b) => a + b, 0);
  /** @type {[string, string][]} */
  const rows = [
    ["reports applied", num(s.reports.applied)],
    ["reports ignored", `${num(ignored)}${ignored ? ` (${Object.entries(s.reports.ignored).map(([k, v]) => `${k} ${v}`).join(", ")})` : ""}`],
    ["units dispatched", num(s.publishes.dispatched)],
    ["re-published", num(s.publishes.republished)],
    ["unconfirmed", num(s.publishes.unconfirmed)],
  ];
  $("reports").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** @param {Problem} p */
function renderProblem(p) {
  $("problem").hidden = !p;
  $("problem").textContent = p ? p.message : "";
}

// ---- throughput -------------------------------------------------------------------------

/** @param {Throughput} t */
function renderThroughput(t) {
  clockSkewMs = Date.parse(t.now) - Date.now();
  const W = 600, H = 170, top = 14, bottom = 20, left = 34;
  const n = t.buckets.length;
  const max = Math.max(1, ...t.buckets.map((b) => b.success + b.error));
  const scale = niceCeil(max);
  const bw = (W - left) / n;
  const y = (/** @type {number} */ v) => H - bottom - (v / scale) * (H - top - bottom);
  const covered = Date.parse(t.coveredFrom);
  const svg = $("tp-chart");
  const parts = [];
  // An empty chart has no scale to label: only its baseline.
  const empty = t.buckets.every((b) => b.success + b.error === 0);
  for (const frac of empty ? [0] : [0, 0.5, 1]) {
    const v = scale * frac;
    parts.push(h("svg:line", { class: "grid-line", x1: left, x2: W, y1: y(v), y2: y(v) }));
    if (!empty) parts.push(h("svg:text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, num(Math.round(v))));
  }
  t.buckets.forEach((b, i) => {
    const x = left + i * bw + 1;
    const g = h("svg:g", { class: Date.parse(b.at) + t.bucketMs <= covered ? "bucket partial" : "bucket" });
    g.append(h("svg:title", {}, `${clock(b.at)}: ${b.success} success, ${b.error} error`));
    if (b.success) g.append(h("svg:rect", { class: "bar s-success", x, width: Math.max(1, bw - 2), y: y(b.success), height: y(0) - y(b.success) }));
    if (b.error) g.append(h("svg:rect", { class: "bar s-error", x, width: Math.max(1, bw - 2), y: y(b.success + b.error), height: y(0) - y(b.error) }));
    parts.push(g);
  });
  const minutes = Math.round((n * t.bucketMs) / 60_000);
  for (const [frac, label] of /** @type {[number, string][]} */ (empty ? [] : [[0, `−${minutes} min`], [0.5, `−${minutes / 2} min`], [1, "now"]])) {
    parts.push(h("svg:text", { class: "axis", x: left + frac * (W - left), y: H - 4, "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle" }, label));
  }
  svg.replaceChildren(...parts);

  const perMinute = Math.round(60_000 / t.bucketMs);
  const lastMinute = t.buckets.slice(-perMinute).reduce((a, b) => a + b.success + b.error, 0);
  const total = t.buckets.reduce((a, b) => ({ s: a.s + b.success, e: a.e + b.error }), { s: 0, e: 0 });
  $("tp-rate").textContent = num(lastMinute);
  $("tp-summary").textContent = empty
    ? `no attempt finished in the last ${minutes} minutes`
    : `attempts finished per ${t.bucketMs / 1000} s over the last ${minutes} minutes: ${num(total.s)} succeeded, ${num(total.e)} failed (a failed attempt may be retried; the error count above is units)`;
}

/** 1, 2, 5, 10, 20, 50, ... at or above v (10 × p is always). @param {number} v */
function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((c) => c >= v) ?? 10 * p;
}

// ---- failed units and groups ------------------------------------------------------------

/**
 * GET a JSON answer of the api (same origin, with the token when one was given).
 * @template T @param {string} path @returns {Promise<T>}
 */
async function getJson(path) {
  const res = await fetch(path, { headers: { Accept: "application/json", ...authHeader() } });
  const body = /** @type {T | Partial<ErrorBody>} */ (await res.json().catch(() => ({})));
  if (!res.ok) throw new Error(/** @type {Partial<ErrorBody>} */ (body).message ?? `HTTP ${res.status}`);
  return /** @type {T} */ (body);
}

/**
 * `run`, at most one at a time and at most once every `minMs`: called again meanwhile, it runs
 * once more when that is over, so a burst of changes makes two requests, never one each.
 * @param {() => Promise<void>} run @param {number} minMs
 */
function throttled(run, minMs) {
  let scheduled = false, again = false, last = -Infinity;
  const go = () => {
    if (scheduled) return void (again = true);
    scheduled = true;
    setTimeout(async () => {
      last = Date.now();
      try {
        await run();
      } finally {
        scheduled = false;
        if (again) {
          again = false;
          go();
        }
      }
    }, Math.max(0, last + minMs - Date.now()));
  };
  return go;
}

/**
 * A list the page asks the api for (`path`) and draws (`render`), at most every 2 s:
 * `refresh(key)` when what it follows in the state changed, `key` being that value (the caller
 * compares it with `shownFor`); a failed load forgets it, so the next state asks again.
 * @template T @param {string} path @param {(page: T) => void} render
 */
function listPanel(path, render) {
  const panel = {
    /** What the list was last asked for (undefined: not yet, or the load failed). @type {unknown} */
    shownFor: undefined,
    /** @param {unknown} key */
    refresh(key) {
      panel.shownFor = key;
      load();
    },
  };
  const load = throttled(async () => {
    try {
      render(/** @type {T} */ (await getJson(path)));
    } catch {
      panel.shownFor = undefined;
    }
  }, 2_000);
  return panel;
}

const FAILED_SHOWN = 20;
const GROUPS_SHOWN = 50;
const SCHEDULES_SHOWN = 50;
/** The failed units, asked again when the error count moves. */
const failedList = listPanel(`/units?status=error&limit=${FAILED_SHOWN}`, renderFailed);
/** The groups, asked again when any count moves. */
const groupsList = listPanel(`/groups?limit=${GROUPS_SHOWN}`, renderGroups);
/** The schedules, asked again when GET /'s schedules summary moves. */
const schedulesList = listPanel(`/schedules?limit=${SCHEDULES_SHOWN}`, renderSchedules);

/** @param {UnitPage} page */
function renderFailed(page) {
  $("failed-empty").hidden = page.units.length > 0;
  $("failed-more").hidden = page.nextCursor === null;
  $("failed-more").textContent = `the ${FAILED_SHOWN} most recent; all of them: rtb units --status error, or GET /units?status=error`;
  $("failed-body").replaceChildren(
    ...page.units.map((u) =>
      h(
        "tr",
        { "data-unit": u.id, onclick: () => openTimeline(u.id) },
        h("td", {}, h("button", { type: "button", class: "link", "aria-label": `Timeline of failed unit ${u.id}`, onclick: (/** @type {Event} */ e) => (e.stopPropagation(), openTimeline(u.id)) }, `#${u.id}`)),
        h("td", { class: "num" }, `${u.attempt} / ${u.maxAttempts}`),
        h("td", {}, u.kind),
        h("td", {}, u.group),
        h("td", { class: "err clip", title: u.lastError ?? "" }, u.lastError ?? "–"),
        h("td", { class: "muted nowrap" }, h("time", { datetime: u.updatedAt, title: clockMs(u.updatedAt) }, ago(u.updatedAt))),
      ),
    ),
  );
}

/** @param {GroupPage} page */
function renderGroups(page) {
  $("groups-empty").hidden = page.groups.length > 0;
  $("groups-more").hidden = page.nextCursor === null;
  $("groups-more").textContent = `the first ${GROUPS_SHOWN} by name; all of them: GET /groups?after=${page.nextCursor ?? ""}`;
  $("groups-body").replaceChildren(
    ...page.groups.map((g) =>
      h(
        "tr",
        { "data-group": g.name },
        h("td", {}, g.name),
        h("td", { class: "num", "data-field": "weight" }, String(g.weight)),
        h("td", { class: "num", "data-field": "maxInFlight" }, g.maxInFlight === null ? "none" : num(g.maxInFlight)),
        h("td", { class: "num", "data-field": "ready" }, num(g.ready)),
        h("td", { class: "num", "data-field": "inFlight" }, num(g.inFlight)),
      ),
    ),
  );
}

/** GET /'s retention.due counts up to this (packages/protocol PRUNE_DUE_CAP). */
const PRUNE_DUE_CAP = 10_000;

/** @param {SchedulePage} page */
function renderSchedules(page) {
  $("schedules-empty").hidden = page.schedules.length > 0;
  $("schedules-more").hidden = page.nextCursor === null;
  $("schedules-more").textContent = `the first ${SCHEDULES_SHOWN} by name; all of them: rtb schedules, or GET /schedules`;
  $("schedules-body").replaceChildren(
    ...page.schedules.map((sc) => {
      const last = sc.lastFired;
      const verb = sc.paused ? "resume" : "pause";
      return h(
        "tr",
        { "data-schedule": sc.name, "data-paused": String(sc.paused) },
        h("td", {}, sc.name),
        h("td", { class: "nowrap" }, h("code", {}, sc.cron), h("span", { class: "muted" }, ` ${sc.timeZone}`)),
        h("td", {}, `${sc.unit.kind} · ${sc.unit.group}`),
        h(
          "td",
          { class: "nowrap", "data-field": "next", title: sc.nextFireTimes.map((t) => new Date(t).toLocaleString([], { hour12: false })).join("\n") },
          sc.paused ? h("span", { class: "badge s-cancelled" }, "paused") : sc.nextFireAt ? new Date(sc.nextFireAt).toLocaleString([], { hour12: false }) : "–",
        ),
        h(
          "td",
          { class: "nowrap", "data-field": "last" },
          last
            ? h("button", { type: "button", class: "link", "aria-label": `Timeline of unit ${last.unitId}, made by ${sc.name}`, onclick: () => openTimeline(last.unitId) }, `#${last.unitId}`)
            : "–",
          last ? h("span", { class: "muted" }, ` for ${new Date(last.occurrence).toLocaleString([], { hour12: false })}`) : "",
        ),
        h("td", { class: "num", "data-field": "fired" }, num(sc.fired)),
        h(
          "td",
          {},
          h("button", { type: "button", class: "btn btn-quiet", "data-action": verb, onclick: () => scheduleAction(sc.name, verb) }, sc.paused ? "Resume" : "Pause"),
        ),
      );
    }),
  );
}

/**
 * Pause or resume a schedule (POST /schedules/:name/pause or /resume), then show the list as it is.
 * @param {string} name @param {"pause" | "resume"} verb
 */
async function scheduleAction(name, verb) {
  if (await postAction(`/schedules/${encodeURIComponent(name)}/${verb}`, `schedule ${name}: ${verb === "pause" ? "paused" : "resumed"}`)) schedulesList.refresh(schedulesList.shownFor);
}

// A weight or limit changed by PUT /groups moves no count: the groups are asked again every 10 s
// too, and so are the failed units (one failing as another is retried keeps the count).
setInterval(() => {
  if (!lastState || document.hidden) return;
  for (const list of [groupsList, failedList, schedulesList, workflowsList]) list.refresh(list.shownFor);
}, 10_000);

// ---- workflows ----------------------------------------------------------------------------

// The newest workflows (GET /workflows), asked again as the other lists are; one of them, picked
// (or named by the URL's #workflow=ID), is drawn as its DAG from GET /workflows/:id: every step
// a box coloured by its status, in columns by dependency depth (the longest path from a step
// without dependencies), an arrow from each dependency to its dependent (dashed: an edge whose
// onFailure is ignore). It is asked again every second while it runs, so the drawing follows it.

const WORKFLOWS_SHOWN = 20;
/** A layer with more steps than this is drawn as one box counting its steps per status. */
const AGGREGATE_OVER = 50;
/** At most this many boxes and columns: the layers past them are folded into one box more (a long chain). */
const MAX_BOXES = 1_000;
const MAX_COLUMNS = 100;
/** How often the open workflow is asked for while it runs (more slowly if its answer is slow). */
const WF_POLL_MS = 1_000;
/** ... and once it is finished (a retried step re-opens it; a moving count asks sooner). */
const WF_IDLE_MS = 10_000;
// Geometry of the drawing, in SVG units (= CSS pixels: the drawing scrolls, it is not scaled).
const BOX_W = 172, BOX_H = 48, AGG_W = 216, AGG_H = 116, COL_GAP = 76, ROW_GAP = 14, PAD = 12;

/** The newest workflows, asked again when any count moves (at most every 2 s) and every 10 s. */
const workflowsList = listPanel(`/workflows?limit=${WORKFLOWS_SHOWN}`, renderWorkflows);

/** @template T @param {readonly T[]} list @param {number} i @returns {T} the element, which the caller knows is there */
const at = (list, i) => /** @type {T} */ (list[i]);

/**
 * A swatch and a number for each status with steps, in the order of GET /meta's list.
 * @param {WorkflowView["counts"]} counts
 */
const countChips = (counts) =>
  statuses.filter((st) => (counts[st] ?? 0) > 0).map((st) => h("span", { class: `wf-count s-${st}`, "data-status": st, "data-count": counts[st], title: st }, h("i", { class: "swatch", "aria-hidden": "true" }), `${num(counts[st])} ${st}`));

/** @param {WorkflowPage} page */
function renderWorkflows(page) {
  $("workflows-empty").hidden = page.workflows.length > 0;
  $("workflows-more").hidden = page.nextCursor === null;
  $("workflows-more").textContent = `the ${WORKFLOWS_SHOWN} newest; the next page: GET /workflows?after=${page.nextCursor ?? ""}`;
  $("workflows-body").replaceChildren(...page.workflows.map(workflowRow));
}

/** @param {WorkflowView} w */
function workflowRow(w) {
  const total = Object.values(w.counts).reduce((a, b) => a + (b ?? 0), 0);
  return h(
    "tr",
    { "data-workflow": w.id, "data-status": w.status, "data-selected": String(w.id === wf.id), "data-sig": rowSig(w), onclick: () => pickWorkflow(w.id) },
    h("td", {}, h("button", { type: "button", class: "link", "aria-label": `Steps of workflow ${w.id}`, onclick: (/** @type {Event} */ e) => (e.stopPropagation(), pickWorkflow(w.id)) }, `#${w.id}`)),
    h("td", { "data-field": "status" }, badge(w.status)),
    h("td", { "data-field": "name" }, w.name, w.ref ? h("span", { class: "muted" }, ` · ${w.ref}`) : null),
    h("td", { class: "wf-counts", "data-field": "counts" }, h("span", { class: "muted", "data-field": "total" }, `${num(total)} steps:`), countChips(w.counts)),
    h("td", { class: "muted nowrap" }, h("time", { datetime: w.updatedAt, title: clockMs(w.updatedAt) }, ago(w.updatedAt))),
  );
}

/** What a workflow's row shows: it is replaced only when this changes. @param {WorkflowView} w */
const rowSig = (w) => JSON.stringify([w.status, w.counts, w.updatedAt]);

/** Set an element's text only when it changes (a live region would announce it again). @param {string} id @param {string} text */
function setText(id, text) {
  if ($(id).textContent !== text) $(id).textContent = text;
}

/** The workflow drawn (null: none), and its polling: `gen` changes with it, ending an older loop. */
const wf = {
  /** @type {number | null} */ id: null,
  gen: 0,
  /** @type {ReturnType<typeof setTimeout> | undefined} */ timer: undefined,
  /** The generation whose request is in flight (-1: none). */ busy: -1,
  /** Asked for again while a request was in flight. */ soon: false,
  /** Finished (or gone): asked for every 10 s, and when a count moves. */ idle: false,
  lastAt: 0,
};

/** A click on a workflow: through the URL (#workflow=ID), so the view can be linked and Back works. */
function pickWorkflow(/** @type {number} */ id) {
  const want = `#workflow=${id}`;
  if (location.hash === want) showWorkflow(id);
  else location.hash = want;
}

/** The workflow the URL names, if it names one. */
function workflowInHash() {
  const m = /^#workflow=([0-9]{1,16})$/.exec(location.hash);
  const id = m ? Number(m[1]) : 0;
  return id > 0 && Number.isSafeInteger(id) ? id : null;
}

/** Show what the URL says: its workflow, or none. `reveal`: scroll to it (a link was opened). */
function followHash(reveal = false) {
  const id = workflowInHash();
  if (id === null) return void closeWorkflow();
  showWorkflow(id);
  if (reveal) $("workflows-card").scrollIntoView({ block: "start" });
}

/** @param {number} id */
function showWorkflow(id) {
  $("wf-view").hidden = false;
  if (id !== wf.id) {
    wf.id = id;
    wf.gen++;
    wf.idle = false;
    dagShown = null;
    $("wf-title").textContent = `Workflow #${id}`;
    $("wf-status").replaceChildren();
    $("wf-meta").textContent = "";
    $("wf-counts").replaceChildren();
    $("wf-note").textContent = "loading…";
    $("dag").replaceChildren();
    for (const tr of $("workflows-body").querySelectorAll("tr[data-workflow]")) tr.setAttribute("data-selected", String(Number(tr.getAttribute("data-workflow")) === id));
  }
  if (!$("wf-legend").childElementCount) renderLegend();
  wfSchedule(0);
}

function closeWorkflow() {
  wf.id = null;
  wf.gen++;
  clearTimeout(wf.timer);
  dagShown = null;
  $("wf-view").hidden = true;
  $("dag").replaceChildren();
  for (const tr of $("workflows-body").querySelectorAll('tr[data-selected="true"]')) tr.setAttribute("data-selected", "false");
}

/** @param {number} ms */
function wfSchedule(ms) {
  clearTimeout(wf.timer);
  const gen = wf.gen;
  wf.timer = setTimeout(() => void wfTick(gen), ms);
}

/** A count moved: a finished workflow may have been re-opened (a retry); ask for it, at most every 2 s. */
function wfNudge() {
  if (wf.id === null || !wf.idle) return;
  if (wf.busy === wf.gen) wf.soon = true;
  else wfSchedule(Math.max(0, wf.lastAt + 2_000 - Date.now()));
}

/** One GET /workflows/:id of the open workflow, drawn; then the next, while it is open. */
async function wfTick(/** @type {number} */ gen) {
  if (gen !== wf.gen || wf.id === null) return;
  // A hidden tab asks for nothing; it looks again a second later.
  if (document.hidden) return void wfSchedule(WF_POLL_MS);
  const id = wf.id;
  wf.busy = gen;
  wf.soon = false;
  wf.lastAt = Date.now();
  const t0 = performance.now();
  /** @type {number | null} */
  let next;
  try {
    const res = await fetch(`/workflows/${id}`, { headers: { Accept: "application/json", ...authHeader() } });
    const body = /** @type {WorkflowWithSteps | Partial<ErrorBody>} */ (await res.json().catch(() => ({})));
    if (gen !== wf.gen) return;
    if (res.status === 404) {
      wf.idle = true;
      $("wf-note").textContent = `No workflow #${id}: never enqueued, or pruned by retention.`;
      $("dag").replaceChildren();
      dagShown = null;
      next = null;
    } else if (!res.ok || !("steps" in body)) {
      throw new Error(/** @type {Partial<ErrorBody>} */ (body).message ?? `HTTP ${res.status}`);
    } else {
      renderWorkflow(body);
      // A big workflow's answer takes longer: never more than a quarter of the time asking.
      next = wf.idle ? WF_IDLE_MS : Math.max(WF_POLL_MS, 4 * (performance.now() - t0));
    }
  } catch (err) {
    if (gen !== wf.gen) return;
    $("wf-note").textContent = `Could not load workflow #${id}: ${/** @type {Error} */ (err).message} · retrying`;
    next = 5_000;
  } finally {
    if (wf.busy === gen) wf.busy = -1;
  }
  if (gen !== wf.gen) return;
  if (wf.soon) wfSchedule(0);
  else if (next !== null) wfSchedule(next);
}

/** @param {WorkflowWithSteps} w */
function renderWorkflow(w) {
  wf.idle = w.status !== "running";
  setText("wf-title", `Workflow #${w.id} · ${w.name}`);
  if ($("wf-status").dataset.status !== w.status) $("wf-status").replaceChildren(badge(w.status));
  $("wf-status").dataset.status = w.status;
  setText("wf-meta", [w.ref ? `ref ${w.ref}` : "", `on failure: ${w.onFailure}`, `enqueued ${clock(w.createdAt)}`, w.finishedAt ? `finished ${clock(w.finishedAt)}` : ""].filter(Boolean).join(" · "));
  $("wf-counts").replaceChildren(...countChips(w.counts));
  // Its row in the list follows too, between the list's own refreshes.
  const row = $("workflows-body").querySelector(`tr[data-workflow="${w.id}"]`);
  if (row && row.getAttribute("data-sig") !== rowSig(w)) row.replaceWith(workflowRow(w));
  const layout = drawDag(w.steps);
  const folded = layout.boxes.filter((b) => b.aggregate);
  setText(
    "wf-note",
    w.steps.length
      ? `${num(w.steps.length)} steps in ${num(layout.layers)} layers` +
          (folded.length ? ` · ${folded.map((b) => `${b.key} (${num(b.steps.length)} steps)`).join(", ")} drawn as one box` : "") +
          (wf.idle ? " · finished" : " · live")
      : "No steps left: retention pruned them.",
  );
}

function renderLegend() {
  $("wf-legend").replaceChildren(
    ...statuses.map((st) => h("span", { class: `s-${st}` }, h("i", { class: "swatch", "aria-hidden": "true" }), st)),
    h("span", { class: "muted" }, " · arrow: dependency → dependent; dashed: onFailure ignore; faint: not yet satisfied"),
  );
}

// ---- the drawing of a workflow's DAG -------------------------------------------------------

/** @typedef {WorkflowWithSteps["steps"][number]} WorkflowStep */
/**
 * A box of the drawing: one step, or a layer of many collapsed into one (`aggregate`); `key`
 * is the step's name, or `layer N` (no step name has a space).
 * @typedef {{ key: string, layer: number, steps: number[], aggregate: boolean, x: number, y: number, w: number, h: number }} DagBox
 */
/**
 * An arrow between two boxes: every edge of the workflow between their steps, as [step index,
 * index in its dependsOn]; `policy` their onFailure, or "mixed".
 * @typedef {{ from: DagBox, to: DagBox, edges: [number, number][], policy: string }} DagArrow
 */
/** @typedef {{ boxes: DagBox[], arrows: DagArrow[], layers: number, width: number, height: number }} DagLayout */
/**
 * What is drawn: redrawn whole only when the steps or edges change (`key`, a fan-out spawned
 * children); otherwise only the boxes and arrows whose status moved.
 * @typedef {{ key: string, layout: DagLayout, boxEls: Element[], sigs: string[], arrowEls: Element[] }} DagShown
 */

/** @type {DagShown | null} */
let dagShown = null;

/** Steps and edges, not statuses: whether the layout still holds. @param {readonly WorkflowStep[]} steps */
const structureKey = (steps) => steps.map((s) => `${s.id}:${s.dependsOn.map((d) => d.unitId).join(",")}`).join(" ");

/**
 * Columns by dependency depth, the longest path from a step without dependencies (Kahn's
 * order: a step is placed once all it waits for are); a column of more than AGGREGATE_OVER
 * steps is one box; each column ordered by where what it waits for is (fewer crossings).
 * @param {readonly WorkflowStep[]} steps @returns {DagLayout}
 */
function layoutDag(steps) {
  const n = steps.length;
  const index = new Map(steps.map((s, i) => [s.id, i]));
  /** @type {number[][]} */
  const parents = steps.map(() => []);
  /** @type {number[][]} */
  const children = steps.map(() => []);
  steps.forEach((s, i) => {
    for (const d of s.dependsOn) {
      const p = index.get(d.unitId);
      if (p === undefined || p === i) continue; // a unit outside this workflow: no box to draw from
      at(parents, i).push(p);
      at(children, p).push(i);
    }
  });
  /** @type {number[]} */
  const depth = new Array(n).fill(0);
  const open = parents.map((p) => p.length);
  /** @type {number[]} */
  const order = [];
  for (let i = 0; i < n; i++) if (open[i] === 0) order.push(i);
  for (let k = 0; k < order.length; k++) {
    const i = at(order, k);
    for (const c of at(children, i)) {
      depth[c] = Math.max(at(depth, c), at(depth, i) + 1);
      open[c] = at(open, c) - 1;
      if (open[c] === 0) order.push(c);
    }
  }
  let deepest = 0;
  for (const d of depth) deepest = Math.max(deepest, d);
  // The api refuses cycles; were there one, its steps would go in a last column.
  if (order.length < n) {
    deepest++;
    for (let i = 0; i < n; i++) if (at(open, i) > 0) depth[i] = deepest;
  }
  /** @type {number[][]} */
  const layers = n ? Array.from({ length: deepest + 1 }, () => []) : [];
  for (let i = 0; i < n; i++) at(layers, at(depth, i)).push(i);

  /** @type {DagBox[][]} */
  const columns = [];
  /** @type {DagBox[]} */
  const boxOf = new Array(n);
  /** @param {string} key @param {number} layer @param {number[]} members @param {boolean} aggregate */
  const box = (key, layer, members, aggregate) => {
    /** @type {DagBox} */
    const b = { key, layer, steps: members, aggregate, x: 0, y: 0, w: aggregate ? AGG_W : BOX_W, h: aggregate ? AGG_H : BOX_H };
    for (const i of members) boxOf[i] = b;
    return b;
  };
  let boxes = 0;
  for (const [l, layer] of layers.entries()) {
    const size = layer.length > AGGREGATE_OVER ? 1 : layer.length;
    if (boxes + size > MAX_BOXES || (l === MAX_COLUMNS - 1 && layers.length > MAX_COLUMNS)) {
      columns.push([box(`layers ${l + 1}-${layers.length}`, l, layers.slice(l).flat(), true)]);
      break;
    }
    boxes += size;
    columns.push(size === 1 && layer.length > 1 ? [box(`layer ${l + 1}`, l, layer, true)] : layer.map((i) => box(at(steps, i).step, l, [i], false)));
  }

  /** @type {Map<string, DagArrow>} */
  const arrows = new Map();
  /** @type {Map<DagBox, DagBox[]>} */
  const incoming = new Map();
  steps.forEach((s, i) => {
    s.dependsOn.forEach((d, j) => {
      const p = index.get(d.unitId);
      if (p === undefined || p === i) return;
      const from = at(boxOf, p), to = at(boxOf, i);
      if (from === to) return;
      const key = `${from.key}>${to.key}`;
      let a = arrows.get(key);
      if (!a) {
        arrows.set(key, (a = { from, to, edges: [], policy: d.onFailure }));
        incoming.set(to, [...(incoming.get(to) ?? []), from]);
      } else if (a.policy !== d.onFailure) a.policy = "mixed";
      a.edges.push([i, j]);
    });
  });

  const heights = columns.map((c) => c.reduce((sum, b) => sum + b.h, 0) + ROW_GAP * (c.length - 1));
  const inner = heights.reduce((a, b) => Math.max(a, b), 0);
  let x = PAD;
  for (const [l, col] of columns.entries()) {
    if (col.length > 1) {
      // By the mean height of the boxes each waits for, all placed already (to the left).
      const mid = new Map(col.map((b, k) => {
        const ins = incoming.get(b) ?? [];
        return [b, ins.length ? ins.reduce((sum, f) => sum + f.y + f.h / 2, 0) / ins.length : 1e9 + k];
      }));
      col.sort((a, b) => /** @type {number} */ (mid.get(a)) - /** @type {number} */ (mid.get(b)));
    }
    const colW = col.reduce((a, b) => Math.max(a, b.w), 0);
    let y = PAD + (inner - at(heights, l)) / 2;
    for (const b of col) {
      b.x = x + (colW - b.w) / 2;
      b.y = y;
      y += b.h + ROW_GAP;
    }
    x += colW + COL_GAP;
  }
  return { boxes: columns.flat(), arrows: [...arrows.values()], layers: layers.length, width: Math.max(x - COL_GAP + PAD, 2 * PAD), height: inner + 2 * PAD };
}

/** The text cut to `max` characters, with an ellipsis if it was longer. @param {string} text @param {number} max */
const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** What a step's box shows, as one string: its box is redrawn when it changes. @param {WorkflowStep} s */
const stepSig = (s) => `${s.status}|${s.attempt}|${s.waitingOn}|${s.lastError}`;

/** A collapsed layer's steps per status. @param {DagBox} b @param {readonly WorkflowStep[]} steps */
function countIn(b, steps) {
  /** @type {Partial<Record<UnitStatus, number>>} */
  const counts = {};
  for (const i of b.steps) {
    const st = at(steps, i).status;
    counts[st] = (counts[st] ?? 0) + 1;
  }
  return counts;
}

/** @param {DagBox} b @param {WorkflowStep} s */
function stepBox(b, s) {
  const line = s.status === "blocked" && s.waitingOn !== null ? `blocked · waits for ${s.waitingOn}` : s.attempt > 1 ? `${s.status} · attempt ${s.attempt}` : s.status;
  const tip = [`${s.step} (unit #${s.id}, kind ${s.kind})`, `${s.status}, attempt ${s.attempt}`, s.waitingOn ? `waiting for ${s.waitingOn} of ${s.dependsOn.length} dependencies` : "", s.lastError ? `last error: ${s.lastError}` : "", "select for its timeline"];
  const open = () => void openTimeline(s.id);
  return h(
    "svg:g",
    {
      class: `node s-${s.status}`,
      "data-step": s.step,
      "data-unit": s.id,
      "data-status": s.status,
      "data-layer": b.layer,
      transform: `translate(${b.x} ${b.y})`,
      tabindex: 0,
      role: "button",
      "aria-label": `step ${s.step}: ${line}`,
      onclick: open,
      onkeydown: (/** @type {KeyboardEvent} */ e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), open()),
    },
    h("svg:title", {}, tip.filter(Boolean).join("\n")),
    h("svg:rect", { class: "node-box", width: b.w, height: b.h, rx: 8 }),
    h("svg:text", { class: "node-name", x: 10, y: 20 }, clip(s.step, 22)),
    h("svg:text", { class: "node-line", x: 10, y: 37 }, clip(line, 26)),
  );
}

/** @param {DagBox} b @param {readonly WorkflowStep[]} steps */
function aggregateBox(b, steps) {
  const counts = countIn(b, steps);
  const shown = statuses.filter((st) => (counts[st] ?? 0) > 0);
  const total = b.steps.length;
  const first = at(steps, at(b.steps, 0)).step;
  const last = at(steps, at(b.steps, total - 1)).step;
  const barW = b.w - 20;
  let bx = 10;
  const bar = shown.map((st) => {
    const w = (barW * (counts[st] ?? 0)) / total;
    const seg = h("svg:rect", { class: `bar s-${st}`, x: bx.toFixed(2), y: 44, width: Math.max(w, 1).toFixed(2), height: 8 });
    bx += w;
    return seg;
  });
  return h(
    "svg:g",
    { class: "node aggregate", "data-aggregate": b.key, "data-layer": b.layer, "data-steps": total, transform: `translate(${b.x} ${b.y})`, tabindex: 0, "aria-label": `${b.key}: ${total} steps, ${shown.map((st) => `${counts[st]} ${st}`).join(", ")}` },
    h("svg:title", {}, `${b.key}: ${num(total)} steps (${first} … ${last}), drawn as one box (more than ${AGGREGATE_OVER})\n${shown.map((st) => `${st}: ${num(counts[st])}`).join("\n")}`),
    h("svg:rect", { class: "node-box behind", x: 6, y: 6, width: b.w, height: b.h, rx: 8 }),
    h("svg:rect", { class: "node-box behind", x: 3, y: 3, width: b.w, height: b.h, rx: 8 }),
    h("svg:rect", { class: "node-box", width: b.w, height: b.h, rx: 8 }),
    h("svg:text", { class: "node-name", x: 10, y: 19 }, `${num(total)} steps`),
    h("svg:text", { class: "node-line", x: 10, y: 35 }, clip(`${first} … ${last}`, 32)),
    bar,
    shown.map((st, k) =>
      h(
        "svg:g",
        { class: `agg-count s-${st}`, "data-status": st, "data-count": counts[st], transform: `translate(${10 + (k % 2) * (barW / 2)} ${70 + Math.floor(k / 2) * 15})` },
        h("svg:circle", { class: "dot", cx: 4, cy: -4, r: 4 }),
        h("svg:text", { x: 12, y: 0 }, `${num(counts[st])} ${st}`),
      ),
    ),
  );
}

/** Whether the arrow's edges let their dependents go: all, some or none. @param {DagArrow} a @param {readonly WorkflowStep[]} steps */
function satisfied(a, steps) {
  let yes = 0;
  for (const [i, j] of a.edges) if (at(at(steps, i).dependsOn, j).satisfied) yes++;
  return yes === a.edges.length ? "true" : yes === 0 ? "false" : "some";
}

/** @param {DagArrow} a @param {readonly WorkflowStep[]} steps */
function arrowPath(a, steps) {
  const x1 = a.from.x + a.from.w, y1 = a.from.y + a.from.h / 2;
  const x2 = a.to.x - 3, y2 = a.to.y + a.to.h / 2;
  const dx = Math.max(20, (x2 - x1) / 2);
  const count = a.edges.length;
  return h(
    "svg:path",
    {
      class: "edge",
      d: `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`,
      "marker-end": "url(#dag-arrow)",
      "data-from": a.from.key,
      "data-to": a.to.key,
      "data-policy": a.policy,
      "data-count": count,
      "data-satisfied": satisfied(a, steps),
    },
    h("svg:title", {}, `${a.from.key} → ${a.to.key}${count > 1 ? ` (${num(count)} edges)` : ""}, on failure: ${a.policy}`),
  );
}

/** Draw the steps, or bring the drawing up to date; the layout it drew. @param {readonly WorkflowStep[]} steps */
function drawDag(steps) {
  const svg = $("dag");
  const key = structureKey(steps);
  const box = (/** @type {DagBox} */ b) => (b.aggregate ? aggregateBox(b, steps) : stepBox(b, at(steps, at(b.steps, 0))));
  const sig = (/** @type {DagBox} */ b) => (b.aggregate ? JSON.stringify(countIn(b, steps)) : stepSig(at(steps, at(b.steps, 0))));
  if (dagShown?.key === key) {
    const shown = dagShown;
    shown.layout.boxes.forEach((b, k) => {
      const s = sig(b);
      if (s === shown.sigs[k]) return;
      shown.sigs[k] = s;
      const old = at(shown.boxEls, k);
      const el = box(b);
      const focused = document.activeElement === old;
      old.replaceWith(el);
      shown.boxEls[k] = el;
      if (focused) el.focus();
    });
    shown.layout.arrows.forEach((a, k) => at(shown.arrowEls, k).setAttribute("data-satisfied", satisfied(a, steps)));
    return shown.layout;
  }
  const layout = layoutDag(steps);
  const boxEls = layout.boxes.map(box);
  const arrowEls = layout.arrows.map((a) => arrowPath(a, steps));
  dagShown = { key, layout, boxEls, sigs: layout.boxes.map(sig), arrowEls };
  svg.setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
  svg.setAttribute("width", String(layout.width));
  svg.setAttribute("height", String(layout.height));
  svg.replaceChildren(
    h("svg:defs", {}, h("svg:marker", { id: "dag-arrow", class: "dag-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, h("svg:path", { d: "M 0 0 L 10 5 L 0 10 z" }))),
    h("svg:g", { class: "edges" }, arrowEls),
    h("svg:g", { class: "nodes" }, boxEls),
  );
  return layout;
}

// ---- recent units and the timeline -------------------------------------------------------

/** @type {ActiveUnit[]} */
let lastUnits = [];

/** @param {ActiveUnit[]} units */
function renderUnits(units) {
  const body = $("units-body");
  const openId = Number(timeline().dataset.unit);
  const before = lastUnits.find((u) => u.id === openId);
  lastUnits = units;
  $("units-empty").hidden = units.length > 0;
  body.replaceChildren(
    ...units.map((u) =>
      h(
        "tr",
        { "data-unit": u.id, onclick: () => openTimeline(u.id) },
        h("td", {}, h("button", { type: "button", class: "link", "aria-label": `Timeline of unit ${u.id}`, onclick: (/** @type {Event} */ e) => (e.stopPropagation(), openTimeline(u.id)) }, `#${u.id}`)),
        h("td", {}, badge(u.status)),
        h("td", { class: "num" }, `${u.attempt} / ${u.maxAttempts}`),
        h("td", {}, u.kind),
        h("td", {}, u.group),
        h("td", {}, h("span", { class: "muted" }, `${u.lastEvent.status} · ${u.lastEvent.source}`)),
        h("td", { class: "muted nowrap" }, h("time", { datetime: u.lastEvent.at, title: clockMs(u.lastEvent.at) }, ago(u.lastEvent.at))),
      ),
    ),
  );
  // The open timeline follows its unit.
  const now = units.find((u) => u.id === openId);
  if (timeline().open && now && (!before || before.lastEvent.at !== now.lastEvent.at || before.status !== now.status)) loadTimeline(openId);
}

/** @param {number} id */
async function openTimeline(id) {
  const dlg = timeline();
  dlg.dataset.unit = String(id);
  $("tl-title").textContent = `Unit #${id}`;
  $("tl-summary").replaceChildren(h("p", { class: "muted" }, "loading…"));
  $("tl-actions").replaceChildren();
  $("tl-events").replaceChildren();
  if (!dlg.open) dlg.showModal();
  await loadTimeline(id);
}

/** @param {number} id */
async function loadTimeline(id) {
  /** @type {UnitWithTimeline} */
  let unit;
  try {
    const res = await fetch(`/units/${id}`, { headers: { Accept: "application/json", ...authHeader() } });
    const body = /** @type {UnitWithTimeline | ErrorBody} */ (await res.json());
    if (!res.ok || !("id" in body)) throw new Error(("message" in body ? body.message : undefined) ?? `HTTP ${res.status}`);
    unit = body;
  } catch (err) {
    $("tl-summary").replaceChildren(h("p", { class: "banner" }, `Could not load unit ${id}: ${/** @type {Error} */ (err).message}`));
    return;
  }
  if (Number(timeline().dataset.unit) !== id) return; // another unit was opened meanwhile
  $("tl-title").textContent = `Unit #${unit.id}`;
  const step = unit.workflow;
  $("tl-summary").replaceChildren(
    h(
      "dl",
      { class: "kv" },
      h("dt", {}, "status"),
      h("dd", {}, badge(unit.status)),
      h("dt", {}, "attempt"),
      h("dd", {}, `${unit.attempt} of ${unit.maxAttempts}`),
      h("dt", {}, "kind · group"),
      h("dd", {}, `${unit.kind} · ${unit.group}`),
      h("dt", {}, "priority"),
      h("dd", {}, String(unit.priority)),
      h("dt", {}, "ref"),
      h("dd", { id: "tl-ref" }, unit.ref ?? "none"),
      step
        ? [
            h("dt", {}, "workflow"),
            h("dd", {}, h("button", { type: "button", class: "link", id: "tl-workflow", onclick: () => (timeline().close(), pickWorkflow(step.id)) }, `#${step.id}`), ` step ${step.step}`),
          ]
        : null,
      unit.waitingOn !== null ? [h("dt", {}, "waiting for"), h("dd", {}, `${unit.waitingOn} ${unit.waitingOn === 1 ? "dependency" : "dependencies"}`)] : null,
      unit.traceId ? [h("dt", {}, "trace"), h("dd", {}, h("code", { id: "tl-trace" }, unit.traceId))] : null,
      h("dt", {}, "payload"),
      h("dd", {}, h("pre", { class: "detail", id: "tl-payload" }, JSON.stringify(unit.payload, null, 2))),
      unit.notBefore ? [h("dt", {}, "not before"), h("dd", {}, clockMs(unit.notBefore))] : null,
      unit.lastError ? [h("dt", {}, "last error"), h("dd", { class: "err" }, unit.lastError)] : null,
      unit.result !== null && unit.result !== undefined ? [h("dt", {}, "result"), h("dd", {}, h("code", {}, JSON.stringify(unit.result)))] : null,
    ),
  );
  $("tl-actions").replaceChildren(
    ...(retryable.includes(unit.status) ? [h("button", { type: "button", class: "btn", id: "tl-retry", onclick: () => unitAction(unit.id, "retry") }, "Retry")] : []),
    ...(!terminal.includes(unit.status) ? [h("button", { type: "button", class: "btn btn-quiet", id: "tl-cancel", onclick: () => unitAction(unit.id, "cancel") }, "Cancel")] : []),
  );
  // The events, and each attempt at delivering the unit's end to its callback URL, in time order.
  const events = unit.events.map((e, i) => ({
    at: e.at,
    node: h(
      "li",
      { class: `tl-item s-${e.status}`, "data-status": e.status },
      h("span", { class: "tl-marker", "aria-hidden": "true" }),
      h(
        "div",
        { class: "tl-body" },
        h("div", { class: "tl-line" }, badge(e.status), h("span", { class: "muted" }, ` attempt ${e.attempt}`), h("time", { class: "tl-at", datetime: e.at }, clockMs(e.at))),
        h("div", { class: "muted small" }, e.source, i > 0 ? ` · +${fmtMs(Date.parse(e.at) - Date.parse(/** @type {UnitWithTimeline["events"][number]} */ (unit.events[i - 1]).at))}` : ""),
        e.detail ? h("pre", { class: "detail" }, JSON.stringify(e.detail, null, 2)) : null,
      ),
    ),
  }));
  const callbacks = unit.callbacks.flatMap((d) => [
    ...d.history.map((a) => ({
      at: a.at,
      node: h(
        "li",
        { class: `tl-item s-${a.outcome === "delivered" ? "success" : "error"}`, "data-callback": a.outcome },
        h("span", { class: "tl-marker", "aria-hidden": "true" }),
        h(
          "div",
          { class: "tl-body" },
          h("div", { class: "tl-line" }, h("span", {}, `callback ${a.outcome.replace("_", " ")}`), h("time", { class: "tl-at", datetime: a.at }, clockMs(a.at))),
          h("div", { class: "muted small" }, [a.statusCode === undefined ? "" : `HTTP ${a.statusCode}`, a.error ?? "", d.url].filter(Boolean).join(" · ")),
        ),
      ),
    })),
    ...(d.state === "pending"
      ? [
          {
            at: d.nextAttemptAt ?? d.createdAt,
            node: h(
              "li",
              { class: "tl-item", "data-callback": "pending" },
              h("span", { class: "tl-marker", "aria-hidden": "true" }),
              h("div", { class: "tl-body" }, h("div", { class: "tl-line" }, h("span", { class: "muted" }, `callback pending${d.nextAttemptAt ? `, next attempt ${clockMs(d.nextAttemptAt)}` : ""}`)), h("div", { class: "muted small" }, d.url)),
            ),
          },
        ]
      : []),
  ]);
  // Events keep their order (as recorded: the senders' clocks may disagree); each callback item
  // goes before the first event later than it.
  callbacks.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  /** @type {{ at: string, node: HTMLElement }[]} */
  const items = [];
  for (const e of events) {
    while (callbacks.length && Date.parse(/** @type {{ at: string }} */ (callbacks[0]).at) < Date.parse(e.at)) items.push(/** @type {{ at: string, node: HTMLElement }} */ (callbacks.shift()));
    items.push(e);
  }
  items.push(...callbacks);
  $("tl-events").replaceChildren(...(items.length ? items.map((x) => x.node) : [h("li", { class: "muted" }, "No events yet: the unit has not been dispatched.")]));
}

// What POST /units/:id/retry and /cancel accept (the api answers 409 otherwise): retry an
// error or cancelled unit; cancel any unit that is not finished (GET /meta's terminal set).
/** @type {readonly string[]} */
const retryable = ["error", "cancelled"];

/**
 * Retry or cancel the unit from its timeline: the api's POST route, same origin, with the
 * token when one was given; then the timeline shows the unit as the action left it.
 * @param {number} id @param {"retry" | "cancel"} verb
 */
async function unitAction(id, verb) {
  await postAction(`/units/${id}/${verb}`, `unit ${id}: ${verb === "retry" ? "back to the backlog" : "cancelled"}`);
  await loadTimeline(id);
}

/**
 * An operator's action: POST `path` (same origin, with the token when one was given), and a
 * toast saying `done` or why not; a 401 asks for the token. Returns whether it was done.
 * @param {string} path @param {string} done
 */
async function postAction(path, done) {
  try {
    const res = await fetch(path, { method: "POST", headers: { Accept: "application/json", ...authHeader() } });
    const body = /** @type {Partial<ErrorBody>} */ (await res.json().catch(() => ({})));
    if (res.status === 401) {
      $("token-form").hidden = false;
      tokenInput().focus();
      toast(body.message ?? "unauthorized");
      return false;
    }
    if (!res.ok) throw new Error(body.message ?? `HTTP ${res.status}`);
    toast(done);
    return true;
  } catch (err) {
    toast(`${path} failed: ${/** @type {Error} */ (err).message}`, true);
    return false;
  }
}

const fmtMs = (/** @type {number} */ ms) => (Math.abs(ms) < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);

// Any unit by its id or its ref, whether recently active or not: a number is an id, unless no
// unit has it; then, as any other text, it is looked up as a ref (GET /units?ref=, exact).
$("find-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const wanted = /** @type {HTMLInputElement} */ ($("find")).value.trim();
  if (!wanted) return;
  try {
    if (/^[0-9]{1,16}$/.test(wanted) && Number(wanted) > 0 && Number.isSafeInteger(Number(wanted))) {
      const res = await fetch(`/units/${Number(wanted)}`, { headers: { Accept: "application/json", ...authHeader() } });
      if (res.ok) return void openTimeline(Number(wanted));
      if (res.status !== 404) throw new Error(/** @type {Partial<ErrorBody>} */ (await res.json().catch(() => ({}))).message ?? `HTTP ${res.status}`);
    }
    const page = /** @type {UnitPage} */ (await getJson(`/units?ref=${encodeURIComponent(wanted)}&limit=1`));
    const unit = page.units[0];
    if (unit) openTimeline(unit.id);
    else toast(`no unit with ${/^[0-9]+$/.test(wanted) ? "id or " : ""}ref ${JSON.stringify(wanted)}`, true);
  } catch (err) {
    toast(`finding ${JSON.stringify(wanted)} failed: ${/** @type {Error} */ (err).message}`, true);
  }
});

$("tl-close").addEventListener("click", () => timeline().close());
$("wf-close").addEventListener("click", () => {
  // Out of the URL too; Back brings it back.
  history.pushState(null, "", location.pathname + location.search);
  closeWorkflow();
});
timeline().addEventListener("close", () => delete timeline().dataset.unit);
// A click on the backdrop (outside the panel) closes it too.
timeline().addEventListener("click", (e) => {
  if (e.target === timeline()) timeline().close();
});

// ---- Go / Pause -------------------------------------------------------------------------

let busy = false;
const TOKEN_KEY = "rtb.token";
/** @returns {Record<string, string>} */
const authHeader = () => {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
};
/** @type {"/go" | "/pause" | null} */
let retryAfterToken = null;

/** @param {"/go" | "/pause"} path */
async function control(path) {
  busy = true;
  button("go").disabled = button("pause").disabled = true;
  try {
    const res = await fetch(path, { method: "POST", headers: { Accept: "application/json", ...authHeader() } });
    const body = /** @type {ControlResult | Partial<ErrorBody>} */ (await res.json().catch(() => ({})));
    if (res.status === 401) {
      retryAfterToken = path;
      $("token-form").hidden = false;
      tokenInput().focus();
      toast(body.message ?? "unauthorized");
      return;
    }
    if (!res.ok) throw new Error(body.message ?? `HTTP ${res.status}`);
    const done = /** @type {ControlResult} */ (body);
    toast(done.message + ("dispatchedNow" in done && done.dispatchedNow ? ` · ${done.dispatchedNow} dispatched now` : ""));
    if (lastState) renderState({ ...lastState, dispatching: done.dispatching, dispatchingSince: done.since });
  } catch (err) {
    toast(`${path} failed: ${/** @type {Error} */ (err).message}`, true);
  } finally {
    busy = false;
    if (lastState) renderState(lastState);
    else button("go").disabled = button("pause").disabled = false;
  }
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;
/** @param {string} text */
function toast(text, bad = false) {
  const t = $("toast");
  t.textContent = text;
  t.dataset.bad = String(bad);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 4_000);
}

$("go").addEventListener("click", () => control("/go"));
$("pause").addEventListener("click", () => control("/pause"));
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput().value);
  tokenInput().value = "";
  $("token-form").hidden = true;
  if (retryAfterToken) control(retryAfterToken);
  retryAfterToken = null;
});
$("token-cancel").addEventListener("click", () => {
  $("token-form").hidden = true;
  retryAfterToken = null;
});

// "5 s ago" keeps counting between snapshots.
setInterval(() => {
  for (const t of document.querySelectorAll("#units-body time, #failed-body time, #workflows-body time")) t.textContent = ago(t.getAttribute("datetime"));
}, 1_000);

$("curl").textContent = `curl -s ${location.origin}/`;
start();
