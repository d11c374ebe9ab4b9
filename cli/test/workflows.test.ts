import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { applyStatusUpdates, type DbHandle, type ReportedUpdate } from "@rtb/db";
import type { Spawn } from "@rtb/protocol";
import { openTestDb, useTestPlace } from "@rtb/testing";
import { run } from "../src/run.ts";
import { rtb, rtbJson, start, startListeningApi, type Listening } from "./support.ts";

/**
 * Workflows through the bin: rtb workflow enqueue (a file, stdin, --step), rtb workflow <id>
 * (the tree, --watch, --all, --json), rtb workflows, rtb workflow cancel. No leader and no
 * agents: the test moves the steps itself, dispatching a step as the api's claim would and
 * reporting its outcome through the same code an agent's report goes through, so every status
 * the trees show is the one asserted.
 */
const place = useTestPlace({ perTest: true });
let h: DbHandle;
let api: Listening;
let env: Record<string, string>;
let dir: string;

beforeEach(async () => {
  h = place.own(openTestDb(place));
  api = place.own(await startListeningApi(place, { RTB_SEED_UNITS: "0" }));
  env = { RTB_API_URL: api.url };
  dir = await mkdtemp(join(tmpdir(), "rtb-cli-wf-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The order example: validate, then charge and reserve side by side, then ship (reserve's edge ignore), then notify. */
const ORDER = {
  name: "order",
  ref: "order-1001",
  steps: [
    { step: "validate", kind: "validate", payload: { order: 1001 } },
    { step: "charge", kind: "charge", dependsOn: ["validate"] },
    { step: "reserve", kind: "reserve", dependsOn: ["validate"] },
    { step: "ship", kind: "ship", dependsOn: ["charge", { step: "reserve", onFailure: "ignore" }] },
    { step: "notify", kind: "notify", dependsOn: ["ship"] },
  ],
};

const opts = { retryBaseMs: 1_000, retryMaxMs: 60_000, maxAttempts: 3 };

/** A step's unit, dispatched as a claim would: pending to dispatched, its attempt counted. */
async function dispatch(workflowId: number, step: string): Promise<{ unitId: number; attempt: number }> {
  const { rows } = await sql<{ id: number; attempt: number }>`
    UPDATE units SET status = 'dispatched', attempt = attempt + 1, dispatched_at = now(), not_before = NULL, updated_at = now()
    WHERE workflow_id = ${workflowId} AND step = ${step} AND status = 'pending' RETURNING id, attempt`.execute(h.db);
  if (!rows[0]) throw new Error(`step ${step} of workflow ${workflowId} is not pending`);
  return { unitId: rows[0].id, attempt: rows[0].attempt };
}

const update = (u: { unitId: number; attempt: number }, status: ReportedUpdate["status"], extra: Partial<ReportedUpdate> = {}): ReportedUpdate => ({
  ...u,
  status,
  at: new Date(),
  source: "agent:test",
  ...extra,
});

/** Dispatch a step and report it as an agent would: processing, then success or a final error. */
async function runStep(workflowId: number, step: string, outcome: "processing" | "success" | "error", extra: { error?: string; spawn?: Spawn } = {}) {
  const u = await dispatch(workflowId, step);
  const reports = [update(u, "processing")];
  if (outcome === "success") reports.push(update(u, "success", { result: { step }, ...(extra.spawn ? { spawn: extra.spawn } : {}) }));
  if (outcome === "error") reports.push(update(u, "error", { error: { message: extra.error ?? "boom", retryable: false } }));
  await applyStatusUpdates(h.db, reports, opts);
}

const TIME = String.raw`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z`;

describe("rtb workflow enqueue and rtb workflow <id>", () => {
  it("enqueues the order example from a file and draws its tree: roots first, dependents indented, a back-reference, the ignore edge marked", async () => {
    const file = join(dir, "order.json");
    await writeFile(file, JSON.stringify(ORDER, null, 2));
    const r = await rtb(["workflow", "enqueue", "--file", file], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        "created workflow 1 (ref order-1001): order, 5 steps",
        "",
        "validate         pending  unit 1  attempt 0",
        "├─ charge        blocked  unit 2  attempt 0  waiting for validate",
        "│  └─ ship       blocked  unit 4  attempt 0  waiting for charge, reserve",
        "│     └─ notify  blocked  unit 5  attempt 0  waiting for ship",
        "└─ reserve       blocked  unit 3  attempt 0  waiting for validate",
        "   └─ ~ ship (see above)",
        "",
        "~ ignore edge: runs whatever the step above ends as",
        "",
      ].join("\n"),
    );
    // The same ref again: nothing created, the existing workflow answered.
    const again = await rtb(["workflow", "enqueue", "-f", "-"], env, JSON.stringify(ORDER));
    expect(again.code).toBe(0);
    expect(again.stdout.split("\n")[0]).toBe("workflow 1 (ref order-1001) already exists: running; nothing created");
    expect((await rtbJson(["workflows"], env)).workflows).toHaveLength(1);

    // The steps run: validate succeeded, charge is processing, reserve failed (ship's edge on it is ignore).
    await runStep(1, "validate", "success");
    await runStep(1, "charge", "processing");
    await runStep(1, "reserve", "error", { error: "out of stock" });
    const shown = await rtb(["workflow", "1"], env);
    expect(shown.code).toBe(0);
    const lines = shown.stdout.split("\n");
    expect(lines[0]).toMatch(new RegExp(`^workflow 1 order \\(ref order-1001\\): running, since ${TIME}$`));
    expect(lines.slice(1).join("\n")).toBe(
      [
        "5 steps: 2 blocked, 1 processing, 1 success, 1 error",
        "",
        "validate         success     unit 1  attempt 1",
        "├─ charge        processing  unit 2  attempt 1",
        "│  └─ ship       blocked     unit 4  attempt 0  waiting for charge",
        "│     └─ notify  blocked     unit 5  attempt 0  waiting for ship",
        "└─ reserve       error       unit 3  attempt 1  out of stock",
        "   └─ ~ ship (see above)",
        "",
        "~ ignore edge: runs whatever the step above ends as",
        "",
      ].join("\n"),
    );
    // No colors into a pipe; --json is the api's answer as is.
    expect(shown.stdout).not.toContain("\x1b[");
    const json = await rtbJson(["workflow", "1"], env);
    expect(json).toEqual((await fetch(`${api.url}/workflows/1`).then((res) => res.json())) as unknown);
    expect(json.steps.find((s: { step: string }) => s.step === "ship")).toMatchObject({ status: "blocked", waitingOn: 1 });

    // blocked wherever the CLI lists statuses.
    const status = (await rtb(["status"], env)).stdout;
    expect(status).toMatch(/^blocked +2$/m);
    expect(status).toMatch(/^workflows +1 running \(rtb workflows --status running\)$/m);
    expect((await rtbJson(["units", "--status", "blocked"], env)).units.map((u: { id: number }) => u.id)).toEqual([5, 4]);
    const unit = (await rtb(["unit", "4"], env)).stdout;
    expect(unit).toMatch(/^status +blocked \(attempt 0 of \d+\)$/m);
    expect(unit).toMatch(/^workflow +1, step ship \(rtb workflow 1 draws it\)$/m);
    expect(unit).toMatch(/^waiting on +1 dependency$/m);

    // charge fails: ship and notify are cancelled (the default policy), each saying why; the workflow ends in error.
    await applyStatusUpdates(h.db, [update({ unitId: 2, attempt: 1 }, "error", { error: { message: "card declined", retryable: false } })], opts);
    const ended = await rtb(["workflow", "1"], env);
    expect(ended.stdout.split("\n")[0]).toMatch(new RegExp(`^workflow 1 order \\(ref order-1001\\): error, finished ${TIME}, after \\S+$`));
    expect(ended.stdout.split("\n").slice(1).join("\n")).toBe(
      [
        "5 steps: 1 success, 2 error, 2 cancelled",
        "",
        "validate         success    unit 1  attempt 1",
        "├─ charge        error      unit 2  attempt 1  card declined",
        "│  └─ ship       cancelled  unit 4  attempt 0  dependency charge (unit 2) ended in error",
        "│     └─ notify  cancelled  unit 5  attempt 0  dependency charge (unit 2) ended in error",
        "└─ reserve       error      unit 3  attempt 1  out of stock",
        "   └─ ~ ship (see above)",
        "",
        "~ ignore edge: runs whatever the step above ends as",
        "",
      ].join("\n"),
    );
    // Watching a workflow that has ended: drawn once, exit 3 as it ended in error.
    const watched = await rtb(["workflow", "1", "--watch", "--interval", "100"], env);
    expect(watched.code).toBe(3);
    expect(watched.stdout).toBe(ended.stdout);
    expect(watched.stderr).toContain("rtb workflow: workflow 1 ended in error (exit 3;");
  });

  it("enqueues from --step flags (~ an ignore edge, ! a fail edge), and --watch draws it again each time it changed until it ends (exit 0)", async () => {
    const r = await rtb(
      ["workflow", "enqueue", "--name", "order", "--ref", "o-2", "--step", "validate", "--step", "charge@validate", "--step", "reserve=stock@validate", "--step", "ship@charge,~reserve", "--step", "notify@!ship"],
      env,
    );
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(
      [
        "created workflow 1 (ref o-2): order, 5 steps",
        "",
        "validate           pending  unit 1  attempt 0",
        "├─ charge          blocked  unit 2  attempt 0  waiting for validate",
        "│  └─ ship         blocked  unit 4  attempt 0  waiting for charge, reserve",
        "│     └─ ! notify  blocked  unit 5  attempt 0  waiting for ship",
        "└─ reserve         blocked  unit 3  attempt 0  waiting for validate",
        "   └─ ~ ship (see above)",
        "",
        "! fail edge: ends in error if the step above fails",
        "~ ignore edge: runs whatever the step above ends as",
        "",
      ].join("\n"),
    );
    const wf = await rtbJson(["workflow", "1"], env);
    expect(wf.steps.map((s: { step: string; kind: string }) => `${s.step}:${s.kind}`)).toEqual(["validate:validate", "charge:charge", "reserve:stock", "ship:ship", "notify:notify"]);
    expect(wf.steps[4].dependsOn).toEqual([{ step: "ship", unitId: 4, onFailure: "fail", satisfied: false }]);

    // Into a pipe: a frame when something changed, a blank line between frames, the last one finished.
    const watching = start(["workflow", "1", "--watch", "--interval", "100"], env);
    const frames = () => watching.stdout().match(/^workflow 1 /gm)?.length ?? 0;
    const waitFrames = async (n: number) => {
      for (let i = 0; i < 300 && frames() < n; i++) await new Promise((r) => setTimeout(r, 50));
    };
    await waitFrames(1);
    for (const step of ["validate", "charge", "reserve", "ship", "notify"]) {
      const before = frames();
      await runStep(1, step, "success");
      await waitFrames(before + 1);
    }
    const done = await watching.done;
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    const drawn = done.stdout.split(/\n\n(?=workflow 1 )/);
    expect(drawn.length).toBeGreaterThanOrEqual(2);
    expect(drawn[0]).toContain("5 steps: 4 blocked, 1 pending");
    expect(drawn.at(-1)).toMatch(new RegExp(`^workflow 1 order \\(ref o-2\\): success, finished ${TIME}, after \\S+\n5 steps: 5 success\n\nvalidate  +success  unit 1  attempt 1\n`));
    // No frame twice in a row: only changes are drawn.
    for (let i = 1; i < drawn.length; i++) expect(drawn[i]).not.toBe(drawn[i - 1]);

    // --watch --json: once ended, the workflow as the api answers it.
    expect(await rtbJson(["workflow", "1", "--watch"], env)).toMatchObject({ id: 1, status: "success", counts: { success: 5 } });
  });

  it("--watch on a terminal redraws the tree in place when it changed, else only its footer; Ctrl-C stops watching (130); --timeout gives up (1)", async () => {
    await rtbJson(["workflow", "enqueue", "--name", "order", "--step", "validate", "--step", "charge@validate", "--step", "ship@charge"], env);
    // The command in-process, its stdout a terminal of 100 x 40: what it writes is what the terminal gets.
    const written: string[] = [];
    const notes: string[] = [];
    const terminal = { isTTY: true, columns: 100, rows: 40, write: (chunk: string) => void written.push(chunk) };
    const interrupt = new AbortController();
    const watching = run(["workflow", "1", "--watch", "--interval", "50"], {
      env: { RTB_API_URL: api.url },
      stdin: Readable.from([]),
      stdout: terminal,
      stderr: { write: (chunk: string) => void notes.push(chunk) },
      signal: interrupt.signal,
      version: "test",
    });
    const until = async (what: string, ok: () => boolean) => {
      for (let i = 0; i < 400 && !ok(); i++) await new Promise((r) => setTimeout(r, 25));
      if (!ok()) throw new Error(`never: ${what}; written: ${JSON.stringify(written.slice(-3))}`);
    };
    const FOOTER_ONLY = "\r\x1b[1A\x1b[2K";
    await until("a footer redrawn alone", () => written.some((w) => w.startsWith(FOOTER_ONLY)));
    const first = written[0]!;
    const plain = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, "");
    // The first frame: the tree in color, then its footer (dim); 2 + 1 + 3 lines of tree + 1 + footer.
    expect(first).toContain("\x1b[36mblocked\x1b[0m");
    expect(plain(first).split("\n").slice(1, 7)).toEqual([
      "3 steps: 2 blocked, 1 pending",
      "",
      "validate    pending  unit 1  attempt 0",
      "└─ charge   blocked  unit 2  attempt 0  waiting for validate",
      "   └─ ship  blocked  unit 3  attempt 0  waiting for charge",
      "",
    ]);
    expect(plain(first)).toMatch(new RegExp(`\nwatching every 50 ms, ${TIME}; Ctrl-C stops\n$`));
    expect(first.split("\n")).toHaveLength(8 + 1);
    // Nothing changed: only the footer line is written again, in place.
    const footers = written.filter((w) => w.startsWith(FOOTER_ONLY));
    expect(footers.every((w) => w.split("\n").length === 2 && plain(w).includes("watching every"))).toBe(true);

    // A step finished: back over the 8 rows of the last frame, cleared, the new frame drawn.
    const before = written.length;
    await runStep(1, "validate", "success");
    const redrawn = () => written.slice(before).filter((w) => w.startsWith("\r\x1b[8A\x1b[J")).map(plain);
    await until("the frame redrawn with charge ready", () => redrawn().some((w) => w.includes("\n└─ charge   pending  unit 2  attempt 0\n")));
    expect(redrawn().at(-1)).toContain("\nvalidate    success  unit 1  attempt 1\n");

    interrupt.abort();
    expect(await watching).toBe(130);
    expect(notes.join("")).toBe("stopped watching (Ctrl-C); the workflow goes on (rtb workflow cancel <id> stops it)\n");

    const gaveUp = await rtb(["workflow", "1", "--watch", "--interval", "100", "--timeout", "1"], env);
    expect(gaveUp.code).toBe(1);
    expect(gaveUp.stderr).toBe("rtb workflow: gave up after --timeout 1 s; workflow 1 is still running\n");
    expect(gaveUp.stdout).toMatch(/^workflow 1 order: running, since /);
  });

  it("collapses a fan-out of 100 children into one line with their counts per status; --all draws each", async () => {
    const steps = [
      { step: "split", kind: "split" },
      ...Array.from({ length: 100 }, (_, i) => ({ step: `line-${i}`, kind: "line", payload: { i }, dependsOn: ["split"] })),
      { step: "pack", kind: "pack", dependsOn: Array.from({ length: 100 }, (_, i) => ({ step: `line-${i}`, onFailure: "ignore" })) },
    ];
    expect((await rtbJson(["workflow", "enqueue", "--file", "-"], env, JSON.stringify({ name: "render", steps }))).created).toBe(true);
    await runStep(1, "split", "success");
    for (let i = 0; i < 30; i++) await runStep(1, `line-${i}`, "success");
    for (let i = 30; i < 33; i++) await runStep(1, `line-${i}`, "error");
    await runStep(1, "line-33", "processing");
    const r = await rtb(["workflow", "1"], env);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n").slice(1).join("\n")).toBe(
      [
        "102 steps: 1 blocked, 66 pending, 1 processing, 31 success, 3 error",
        "",
        "split         success  unit 1    attempt 1",
        "└─ 100 steps: 66 pending, 1 processing, 30 success, 3 error (line-0 … line-99; --all lists each)",
        "   └─ ~ pack  blocked  unit 102  attempt 0  waiting for line-33, line-34, line-35 and 64 more",
        "",
        "~ ignore edge: runs whatever the step above ends as",
        "",
      ].join("\n"),
    );

    const all = (await rtb(["workflow", "1", "--all"], env)).stdout.split("\n");
    const tree = all.slice(3, all.indexOf("", 3));
    expect(tree).toHaveLength(1 + 100 + 100);
    expect(tree[0]).toMatch(/^split +success +unit 1 +attempt 1$/);
    expect(tree[1]).toMatch(/^├─ line-0 +success +unit 2 +attempt 1$/);
    expect(tree[2]).toMatch(/^│  └─ ~ pack +blocked +unit 102 +attempt 0 +waiting for line-33, line-34, line-35 and 64 more$/);
    expect(tree[3]).toMatch(/^├─ line-1 +success +unit 3 +attempt 1$/);
    expect(tree[4]).toBe("│  └─ ~ pack (see above)");
    expect(tree.at(-2)).toMatch(/^└─ line-99 +pending +unit 101 +attempt 0$/);
    expect(tree.at(-1)).toBe("   └─ ~ pack (see above)");
    expect(tree.filter((l) => l.includes("(see above)"))).toHaveLength(99);
  });

  it("hangs the steps a handler spawned under their spawner, and their join under the summary", async () => {
    await rtbJson(["workflow", "enqueue", "--name", "render", "--step", "lines", "--step", "ship@lines"], env);
    const spawn: Spawn = {
      steps: Array.from({ length: 25 }, (_, i) => ({ step: `line-${i}`, kind: "line", payload: { i }, dependsOn: [] })),
      join: { step: "packed", kind: "pack", payload: {} },
    };
    await runStep(1, "lines", "success", { spawn });
    const r = await rtb(["workflow", "1"], env);
    expect(r.stdout.split("\n").slice(1).join("\n")).toBe(
      [
        "28 steps: 2 blocked, 25 pending, 1 success",
        "",
        "lines               success  unit 1   attempt 1",
        "├─ ship             blocked  unit 2   attempt 0  waiting for lines/packed",
        "└─ 25 steps: 25 pending (lines/line-0 … lines/line-24; --all lists each)",
        "   └─ lines/packed  blocked  unit 28  attempt 0  waiting for lines/line-0, lines/line-1, lines/line-2 and 22 more",
        "      └─ ship (see above)",
        "",
      ].join("\n"),
    );
  });
});

describe("rtb workflows and rtb workflow cancel", () => {
  it("lists workflows with their counts per status, filtered by status and name, a page at a time; cancels one", async () => {
    await rtbJson(["workflow", "enqueue", "--name", "order", "--ref", "a", "--step", "validate", "--step", "charge@validate"], env);
    await rtbJson(["workflow", "enqueue", "--name", "render", "--step", "only"], env);
    await rtbJson(["workflow", "enqueue", "--name", "order", "--ref", "c", "--step", "validate", "--step", "charge@validate", "--step", "ship@charge"], env);
    await runStep(2, "only", "success");
    await runStep(3, "validate", "processing");

    const list = await rtb(["workflows"], env);
    expect(list.code).toBe(0);
    const rows = list.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^id +name +ref +status +steps +blocked +pending +processing +success +created +finished$/);
    expect(rows.slice(1).map((l) => l.replace(new RegExp(TIME, "g"), "T"))).toEqual([
      " 3  order   c    running      3        2        0           1        0  T  -",
      " 2  render  -    success      1        0        0           0        1  T  T",
      " 1  order   a    running      2        1        1           0        0  T  -",
    ]);

    const cancelled = await rtb(["workflow", "cancel", "3"], env);
    expect(cancelled).toMatchObject({ code: 0, stdout: "workflow 3: 3 steps cancelled (1 in flight: their agents were told); the workflow is cancelled\n", stderr: "" });
    expect(await rtb(["workflow", "cancel", "3"], env)).toMatchObject({ code: 0, stdout: "workflow 3 is cancelled: no step was left to cancel\n" });
    expect(await rtbJson(["workflow", "cancel", "1"], env)).toMatchObject({ cancelled: 2, inFlight: 0, workflow: { id: 1, status: "cancelled", counts: { cancelled: 2 } } });

    const byStatus = (await rtb(["workflows", "--status", "cancelled"], env)).stdout.trimEnd().split("\n");
    expect(byStatus[0]).toMatch(/^id +name +ref +status +steps +cancelled +created +finished$/);
    expect(byStatus.slice(1).map((l) => l.trim().split(/ +/).slice(0, 6).join(" "))).toEqual(["3 order c cancelled 3 3", "1 order a cancelled 2 2"]);
    expect((await rtbJson(["workflows", "--status", "success,running"], env)).workflows.map((w: { id: number }) => w.id)).toEqual([2]);
    expect((await rtbJson(["workflows", "--name", "order"], env)).workflows.map((w: { id: number }) => w.id)).toEqual([3, 1]);
    expect((await rtbJson(["workflows", "--ref", "a"], env)).workflows.map((w: { id: number }) => w.id)).toEqual([1]);
    const page = await rtb(["workflows", "--name", "order", "--limit", "1"], env);
    expect(page.stdout).toMatch(/^ *3 +order .*\nmore: add --after 3\n$/m);
    expect((await rtbJson(["workflows", "--name", "order", "--after", "3"], env)).workflows.map((w: { id: number }) => w.id)).toEqual([1]);
    expect(await rtb(["workflows", "--name", "nothing"], env)).toMatchObject({ code: 0, stdout: "no workflows match\n" });
  });
});

describe("what rtb workflow refuses", () => {
  it("relays the api's 400 for a cycle, naming the field and the step, and enqueues nothing (exit 1)", async () => {
    const file = join(dir, "cycle.json");
    await writeFile(
      file,
      JSON.stringify({ name: "order", steps: [{ step: "a", kind: "line", dependsOn: ["c"] }, { step: "b", kind: "line", dependsOn: ["a"] }, { step: "c", kind: "line", dependsOn: ["b"] }] }),
    );
    const r = await rtb(["workflow", "enqueue", "--file", file], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(`rtb workflow: cycle: a -> c -> b -> a (each step waits for the next) (field: steps[0].dependsOn, step "a" in ${file})\n`);
    // A step given with --step after the file's is named as such (the api finds the unknown step before the cycle).
    const mixed = await rtb(["workflow", "enqueue", "--file", file, "--name", "x", "--step", "d@nope"], env);
    expect(mixed).toMatchObject({ code: 1, stderr: 'rtb workflow: no step named "nope" in this workflow (field: steps[3].dependsOn[0], step "d" of --step 1)\n' });
    const flagsOnly = await rtb(["workflow", "enqueue", "--name", "x", "--step", "a", "--step", "b@nope"], env);
    expect(flagsOnly).toMatchObject({ code: 1, stderr: 'rtb workflow: no step named "nope" in this workflow (field: steps[1].dependsOn[0], step "b" of --step 2)\n' });
    expect(await rtb(["workflow", "enqueue", "--file", "-"], env, "{nope")).toMatchObject({ code: 1, stderr: expect.stringContaining("rtb workflow: stdin: not valid JSON") });
    expect((await rtbJson(["workflows"], env)).workflows).toEqual([]);
    expect(await rtb(["workflow", "99"], env)).toMatchObject({ code: 1, stderr: "rtb workflow: no workflow with id 99 (field: id)\n" });
    expect(await rtb(["workflow", "cancel", "99"], env)).toMatchObject({ code: 1, stderr: "rtb workflow: no workflow with id 99 (field: id)\n" });
  });

  it("refuses bad usage before sending anything (exit 2)", async () => {
    const cases: [string[], string][] = [
      [["workflow"], "expected 1 or more arguments"],
      [["workflow", "enqueue"], "give --file PATH"],
      [["workflow", "enqueue", "--step", "a"], "give --name N"],
      [["workflow", "enqueue", "--name", "x", "--step", "a b"], '--step "a b": NAME'],
      [["workflow", "enqueue", "--name", "x", "--step", "b@a/c"], "DEP"],
      [["workflow", "enqueue", "--name", "x", "--step", "a", "--on-failure", "maybe"], "--on-failure"],
      [["workflow", "enqueue", "--file", join(dir, "missing.json")], "missing.json"],
      [["workflow", "1", "--step", "a"], "--step goes with rtb workflow enqueue"],
      [["workflow", "cancel", "1", "--watch"], "--watch goes with rtb workflow <id>"],
      [["workflow", "1", "--interval", "100"], "--interval and --timeout go with --watch"],
      [["workflow", "x1"], "<id>"],
      [["workflows", "--status", "blocked"], "not a workflow status"],
    ];
    const ran = await Promise.all(cases.map(([args]) => rtb(args, env)));
    ran.forEach((r, i) => expect(r, cases[i]![0].join(" ")).toMatchObject({ code: 2, stderr: expect.stringContaining(cases[i]![1]) }));
    expect((await rtbJson(["workflows"], env)).workflows).toEqual([]);
  });
});
