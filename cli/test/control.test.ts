import { describe, expect, it } from "vitest";
import { freePort, startSystem, startWebhookReceiver, testWebhookSecret, useTestPlace, waitFor } from "@rtb/testing";
import { NEVER, rtb, rtbJson, startListeningApi } from "./support.ts";

/** The operator flow through the bin: status, next, go, pause, unit; usage, reachability, auth. */
const place = useTestPlace({ perTest: true });

async function api(env: Record<string, string> = {}): Promise<{ url: string; env: Record<string, string> }> {
  const l = place.own(await startListeningApi(place, env));
  return { url: l.url, env: { RTB_API_URL: l.url } };
}

describe("rtb status", () => {
  it("prints the counts and the state of things as a table, and GET / as is with --json", async () => {
    const { env } = await api();
    const table = await rtb(["status"], env);
    expect(table.code).toBe(0);
    expect(table.stderr).toBe("");
    expect(table.stdout).toMatch(/^status +units\n/);
    expect(table.stdout).toMatch(/^pending +10$/m);
    expect(table.stdout).toMatch(/^success +0$/m);
    expect(table.stdout).toMatch(/^total +10$/m);
    expect(table.stdout).toMatch(/^dispatching +paused$/m);
    expect(table.stdout).toMatch(/^outstanding +0 \/ 50 /m);
    expect(table.stdout).toMatch(/^backlog +10 ready, 0 on a clock, 0 waiting for an agent$/m);
    expect(table.stdout).toMatch(/^leader +none has reported yet$/m);
    // The one api holds every duty (its id: api-<host>-<pid>).
    expect(table.stdout).toMatch(/^duties +reconciler, schedules, retention, tallies: api-\S+$/m);
    expect(table.stdout).toMatch(/^dead letters +0 waiting$/m);
    expect(table.stdout).toMatch(new RegExp(`^broker +connected to ${place.env.RTB_BROKER_HOST!.replace(/[.[\]]/g, "\\$&")} \\(0 reconnects\\)$`, "m"));
    // No colors into a pipe.
    expect(table.stdout).not.toContain("\x1b[");

    const json = await rtbJson(["status"], env);
    expect(json).toMatchObject({ counts: { pending: 10, success: 0 }, total: 10, outstanding: 0, maxQueue: 50, dispatching: false, done: false });
    expect(Object.keys(json)).toEqual(expect.arrayContaining(["leader", "services", "deadLetters", "reports", "publishes", "broker"]));
  });
});

describe("rtb status, a kind with no agent", () => {
  it("lists the kinds whose units wait for an agent, and since when", async () => {
    // A leader and no agent: the job of kind "nobody" comes back, and its unit waits.
    const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0", RTB_RECONCILE_CRON: NEVER }, { agents: 0, listen: true }));
    const env = { RTB_API_URL: system.url! };
    expect((await rtb(["status"], env)).stdout).not.toContain("kind without an agent");
    await rtbJson(["enqueue", "--kind", "nobody"], env);
    await rtbJson(["go"], env);
    const since = await waitFor("the kind to wait for an agent", async () => (await system.get<{ waitingForAgents: { kind: string; since: string }[] }>("/")).waitingForAgents[0]?.since ?? null);
    const table = await rtb(["status"], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^kind without an agent +units waiting since\n/m);
    expect(table.stdout).toMatch(new RegExp(`^nobody +${since.replace("T", " ").replace(/\./g, "\\.")} \\(\\d`, "m"));
    expect((await rtbJson(["status"], env)).waitingForAgents).toEqual([{ kind: "nobody", since }]);
  });
});

describe("rtb next, go, pause", () => {
  it("lists the backlog in dispatch order, then starts and pauses dispatching", async () => {
    const { env } = await api({ RTB_BROADCAST_MAX_QUEUE: "4" });
    const next = await rtbJson(["next", "--limit", "3"], env);
    expect(next.limit).toBe(3);
    expect(next.units.map((u: { id: number }) => u.id)).toEqual([1, 2, 3]);
    const table = await rtb(["next", "-n", "2"], env);
    expect(table.code).toBe(0);
    expect(table.stdout.trimEnd().split("\n")).toEqual([
      expect.stringMatching(/^# +id +kind +group +priority +attempt +created$/),
      expect.stringMatching(/^1 +1 +simulate +customer-1 +0 +0 +\d{4}-\d\d-\d\d /),
      expect.stringMatching(/^2 +2 +simulate +customer-2 +0 +0 +\d{4}-\d\d-\d\d /),
    ]);

    const go = await rtb(["go"], env);
    expect(go).toMatchObject({ code: 0, stdout: "dispatching is on (4 dispatched now)\n" });
    expect(await rtbJson(["go"], env)).toMatchObject({ dispatching: true, changed: false, dispatchedNow: 0, message: "dispatching was already on" });
    expect(await rtbJson(["status"], env)).toMatchObject({ dispatching: true, outstanding: 4, counts: { pending: 6, dispatched: 4 } });

    const pause = await rtb(["pause"], env);
    expect(pause).toMatchObject({ code: 0, stdout: "dispatching is paused; units in flight will finish (4 in flight)\n" });
    expect(await rtbJson(["pause"], env)).toMatchObject({ dispatching: false, changed: false, inFlight: 4 });
    expect((await rtb(["status"], env)).stdout).toMatch(/^dispatching +paused/m);
  });
});

describe("rtb unit", () => {
  it("shows a unit and its timeline, and GET /units/:id as is with --json", async () => {
    const { env } = await api({ RTB_BROADCAST_MAX_QUEUE: "1" });
    await rtb(["go"], env);
    const json = await rtbJson(["unit", "1"], env);
    expect(json).toMatchObject({ id: 1, kind: "simulate", group: "customer-1", status: "dispatched", attempt: 1, maxAttempts: 3, payload: { n: 1 } });
    expect(json.events).toEqual([expect.objectContaining({ attempt: 1, status: "dispatched", source: "api" })]);

    const shown = await rtb(["unit", "1"], env);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^unit 1\n/);
    expect(shown.stdout).toMatch(/^status +dispatched \(attempt 1 of 3\)$/m);
    expect(shown.stdout).toMatch(/^payload +\{"n":1\}$/m);
    expect(shown.stdout).toMatch(/^attempt +status +at +source +detail$/m);
    expect(shown.stdout).toMatch(/^ +1 +dispatched +\d{4}-\d\d-\d\d \S+ +api$/m);

    // A unit never dispatched has no timeline yet.
    expect((await rtb(["unit", "2"], env)).stdout).toContain("no events yet");
  });

  it("shows the unit's trace id, its callback URL and each delivery of its end with every attempt", async () => {
    const secret = testWebhookSecret();
    const receiver = await startWebhookReceiver(secret);
    try {
      const { url, env } = await api({ RTB_SEED_UNITS: "0", RTB_WEBHOOK_ALLOWED_HOSTS: "127.0.0.1", RTB_WEBHOOK_SECRET: secret, RTB_WEBHOOK_BACKOFF_MS: "50", RTB_WEBHOOK_BACKOFF_MAX_MS: "100" });
      // The producer's trace: its trace id is what the unit shows (tracing off in this api: the context is kept anyway).
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const res = await fetch(`${url}/units`, {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
        body: JSON.stringify({ kind: "hook", callbackUrl: `${receiver.url}/done` }),
      });
      expect(res.status).toBe(201);
      const id = ((await res.json()) as { unit: { id: number } }).unit.id;
      // The receiver fails the first attempt, then takes the second.
      let answers = 0;
      receiver.answer = () => (answers++ === 0 ? 503 : 200);
      expect((await rtb(["cancel", String(id)], env)).code).toBe(0);
      await waitFor("the callback to be delivered", async () => (await rtbJson(["unit", String(id)], env)).callbacks[0]?.state === "delivered");

      const json = await rtbJson(["unit", String(id)], env);
      expect(json).toMatchObject({ traceId, callbackUrl: `${receiver.url}/done`, status: "cancelled" });
      const shown = await rtb(["unit", String(id)], env);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(new RegExp(`^trace +${traceId}$`, "m"));
      expect(shown.stdout).toMatch(new RegExp(`^callback +${receiver.url.replace(/[.]/g, "\\.")}/done$`, "m"));
      expect(shown.stdout).toMatch(/^callback +state +at +answer$/m);
      expect(shown.stdout).toMatch(new RegExp(`^${json.callbacks[0].webhookId} +delivered +\\d{4}-`, "m"));
      expect(shown.stdout).toMatch(/^ +attempt +failed +\d{4}-\S+ \S+ +HTTP 503/m);
      expect(shown.stdout).toMatch(/^ +attempt +delivered +\d{4}-\S+ \S+ +HTTP 200$/m);
      expect(receiver.rejected).toEqual([]);
      expect(receiver.received.map((r) => r.id)).toEqual([json.callbacks[0].webhookId, json.callbacks[0].webhookId]);
    } finally {
      await receiver.close();
    }
  });

  it("prints the api's message for an unknown unit, exit 1", async () => {
    const { env } = await api();
    const r = await rtb(["unit", "999"], env);
    expect(r).toMatchObject({ code: 1, stdout: "", stderr: expect.stringMatching(/^rtb unit: no unit with id 999( \(field: id\))?\n$/) });
  });
});

describe("usage", () => {
  it("prints the commands for --help, and a command's options for <cmd> --help", async () => {
    const help = await rtb(["--help"]);
    expect(help.code).toBe(0);
    for (const cmd of ["status", "next", "go", "pause", "enqueue", "units", "unit", "retry", "cancel", "migrate", "seed"]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${cmd} +\\S`, "m"));
    }
    const goHelp = await rtb(["go", "--help"]);
    expect(goHelp.code).toBe(0);
    expect(goHelp.stdout).toMatch(/^usage: rtb go /);
    expect(goHelp.stdout).toContain("--wait");
    expect((await rtb(["help", "seed"])).stdout).toMatch(/^usage: rtb seed <N>/);
  });

  it("refuses an unknown command, an unknown flag, a bad value or a missing argument with exit 2", async () => {
    const unknown = await rtb(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stdout).toBe("");
    expect(unknown.stderr).toMatch(/^rtb: unknown command "frobnicate"\n\nusage: rtb <command>/);

    const flag = await rtb(["status", "--bogus"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("rtb status: Unknown option '--bogus'");
    expect(flag.stderr).toContain("usage: rtb status");
    // The CLI's own words: what the command takes, not node:util's advice about `--` separators.
    expect(flag.stderr).toContain("rtb status takes --json, --help");
    expect(flag.stderr).not.toContain("positional argument");
    expect(await rtb(["next", "--limit"])).toMatchObject({ code: 2, stderr: expect.stringContaining("rtb next: --limit <value> needs a value") });
    expect(await rtb(["go", "--wait=yes"])).toMatchObject({ code: 2, stderr: expect.stringContaining("rtb go: --wait takes no value") });

    expect(await rtb(["next", "--limit", "0"])).toMatchObject({ code: 2, stderr: expect.stringContaining("--limit: expected an integer from 1 to 1000") });
    expect(await rtb(["unit"])).toMatchObject({ code: 2, stderr: expect.stringContaining("usage: rtb unit <id>") });
    expect(await rtb(["status", "extra"])).toMatchObject({ code: 2, stderr: expect.stringContaining("takes no arguments") });
    expect(await rtb([])).toMatchObject({ code: 2, stderr: expect.stringMatching(/^usage: rtb <command>/) });
    // A bad RTB_API_URL is a configuration error, named.
    expect(await rtb(["status"], { RTB_API_URL: "localhost:8080" })).toMatchObject({ code: 2, stderr: expect.stringContaining('RTB_API_URL="localhost:8080": expected an http(s) URL') });
  });
});

describe("reaching the api", () => {
  it("says which url it could not reach, and which variable sets it", async () => {
    const port = await freePort();
    const r = await rtb(["status"], { RTB_API_URL: `http://127.0.0.1:${port}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`rtb status: cannot reach the api at http://127.0.0.1:${port} (RTB_API_URL): connect ECONNREFUSED 127.0.0.1:${port}\n`);
  });

  it("sends RTB_API_TOKEN as a bearer token; without it, prints the api's message and field", async () => {
    const token = "cli-test-token-0123456789abcdef";
    const { env } = await api({ RTB_API_TOKEN: token, RTB_API_TOKEN_READS: "true" });
    const refused = await rtb(["status"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe("rtb status: this request needs an Authorization: Bearer <token> header (RTB_API_TOKEN is set) (field: Authorization)\n");
    const wrong = await rtb(["go"], { ...env, RTB_API_TOKEN: `${token}x` });
    expect(wrong).toMatchObject({ code: 1, stderr: expect.stringContaining("does not match RTB_API_TOKEN (field: Authorization)") });

    expect(await rtbJson(["status"], { ...env, RTB_API_TOKEN: token })).toMatchObject({ dispatching: false });
    expect(await rtbJson(["go"], { ...env, RTB_API_TOKEN: token })).toMatchObject({ dispatching: true, changed: true });
    expect(await rtbJson(["pause"], { ...env, RTB_API_TOKEN: token })).toMatchObject({ dispatching: false, changed: true });
  });
});
