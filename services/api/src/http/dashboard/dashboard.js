// @ts-check
// The rtb dashboard: plain browser JavaScript, no build step. Everything it shows comes from
// the api's server-sent events (GET /events); the status list from GET /meta; Go and Pause
// POST to /go and /pause; a unit's timeline is GET /units/:id, the failed units GET
// /units?status=error, a unit by its ref GET /units?ref=, the groups GET /groups (all from
// the page's own origin). Data is put on the page as
// text nodes only, never as HTML. Type-checked (tsconfig.json beside it) against the shapes
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
  for (const list of [groupsList, failedList, schedulesList]) list.refresh(list.shownFor);
}, 10_000);

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
  $("tl-events").replaceChildren(
    ...(unit.events.length
      ? unit.events.map((e, i) =>
          h(
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
        )
      : [h("li", { class: "muted" }, "No events yet: the unit has not been dispatched.")]),
  );
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
  for (const t of document.querySelectorAll("#units-body time, #failed-body time")) t.textContent = ago(t.getAttribute("datetime"));
}, 1_000);

$("curl").textContent = `curl -s ${location.origin}/`;
start();
