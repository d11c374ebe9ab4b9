import { afterEach, describe, expect, it } from "vitest";
import { freePort, getJson, killAll, processAlive, processTree, run, runCommand, useTestPlace, waitFor, type Proc } from "@rtb/testing";

/** The services as an operator runs them: real processes, real signals, real exit codes. */
const place = useTestPlace();

afterEach(async () => {
  await killAll();
});

describe("npm start", () => {
  it("runs api, leader and two agents as processes, completes the backlog, and stops cleanly on Ctrl-C", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const p = run("scripts/start.ts", {
      ...place.env,
      RTB_API_HOST: `127.0.0.1:${port}`,
      RTB_SEED_UNITS: "30",
      RTB_AGENT_WORK_MIN_MS: "1",
      RTB_AGENT_WORK_MAX_MS: "10",
      RTB_RETRY_BACKOFF_MS: "10",
      RTB_LOG_LEVEL: "info",
    });
    await waitFor("the api to answer", async () => (await fetch(`${url}/healthz`)).ok, 30_000, 200);
    const go = await getJson(`${url}/go/`);
    expect(go).toMatchObject({ dispatching: true });
    const state = await waitFor("the backlog to drain", async () => {
      const s = await getJson(`${url}/`);
      return s.done ? s : null;
    }, 60_000, 200);
    expect(state.counts.success + state.counts.error).toBe(30);
    expect(state.leader.id).toBe("leader-1");
    await waitFor("both agents to report", () => p.output().includes('"agentId":"agent-2"') && p.output().includes('"agentId":"agent-1"'));

    p.child.kill("SIGINT");
    expect(await p.exited).toBe(0);
    expect(p.output()).toContain("all services stopped");
    expect(p.output().match(/"msg":"stopped"/g)?.length).toBe(4);
  });

  it("leaves no orphan: services stop by themselves when the launcher is killed with SIGKILL", async () => {
    const port = await freePort();
    const metrics = await freePort();
    const p = run("scripts/start.ts", {
      ...place.env,
      RTB_API_HOST: `127.0.0.1:${port}`,
      RTB_SEED_UNITS: "0",
      RTB_LOG_LEVEL: "info",
      RTB_METRICS_PORT: `127.0.0.1:${metrics}`,
    });
    await waitFor("the api to answer", async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, 30_000, 200);
    await waitFor("all four services to be ready", () => (p.output().match(/"msg":"(agent ready|leader ready|api listening)/g)?.length ?? 0) >= 4, 30_000, 100);
    // One fixed RTB_METRICS_PORT: the leader takes it, each agent the next one up.
    const scraped = await Promise.all([0, 1, 2].map(async (i) => (await fetch(`http://127.0.0.1:${metrics + i}/metrics`)).text()));
    expect(scraped.map((text) => /service="(\w+)"/.exec(text)?.[1])).toEqual(["leader", "agent", "agent"]);
    p.child.kill("SIGKILL");
    await waitFor("all four services to stop", () => p.output().match(/"reason":"launcher exited"/g)?.length === 4, 30_000, 100);
    await waitFor("the api's port to close", async () => !(await fetch(`http://127.0.0.1:${port}/healthz`).then(() => true, () => false)), 15_000, 100);
  });

  it("stops everything with code 2 when a service's configuration is invalid", async () => {
    const p = run("scripts/start.ts", { ...place.env, RTB_API_HOST: "127.0.0.1:1", RTB_BROADCAST_MAX_QUEUE: "lots" });
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain('RTB_BROADCAST_MAX_QUEUE="lots": expected an integer');
  });
});

/** Wait until no process of `pids` runs (and fail naming those that still do). */
/** Every process of the run exited, and what they wrote has all been read. */
async function allGone(pids: number[], what: string, p?: Proc) {
  await waitFor(`${what}: every process of the run to exit (${pids.join(", ")})`, () => pids.every((pid) => !processAlive(pid)), 30_000, 100);
  // The last lines may still be in the pipe (at most 5 s; the assertions after say what is missing).
  if (p) await Promise.race([p.closed, new Promise((r) => setTimeout(r, 5_000))]);
}

describe("stopping npm as a supervisor does", () => {
  const readyLines = (p: Proc) => p.output().match(/"msg":"(agent ready|leader ready|api listening)/g)?.length ?? 0;

  async function npmStart(): Promise<{ p: Proc; pids: number[] }> {
    const port = await freePort();
    const p = runCommand("npm", ["start"], { ...place.env, RTB_API_HOST: `127.0.0.1:${port}`, RTB_SEED_UNITS: "0", RTB_LOG_LEVEL: "info" });
    await waitFor("all four services to be ready", () => readyLines(p) >= 4, 40_000, 100);
    const pids = processTree(p.pid);
    // npm, the launcher and four services at least (tsx's esbuild helpers come on top).
    expect(pids.length).toBeGreaterThanOrEqual(6);
    return { p, pids };
  }

  it("kill -TERM of `npm start` (npm's pid) stops the launcher and every service gracefully; nothing is left running", async () => {
    const { p, pids } = await npmStart();
    p.child.kill("SIGTERM");
    await allGone(pids, "npm start, SIGTERM", p);
    expect(p.output()).toContain("all services stopped");
    expect(p.output().match(/"msg":"stopped"/g)?.length).toBe(4);
    expect(p.output()).not.toMatch(/second stop request|did not finish in time/);
  });

  it("kill -KILL of `npm start` (npm's pid): the launcher sees npm gone and stops every service gracefully", async () => {
    const { p, pids } = await npmStart();
    p.child.kill("SIGKILL");
    await allGone(pids, "npm start, SIGKILL", p);
    expect(p.output()).toContain("npm exited: stopping all services gracefully");
    expect(p.output()).toContain("all services stopped");
    expect(p.output().match(/"msg":"stopped"/g)?.length).toBe(4);
  });

  it("kill -TERM of `npm run api` stops the api gracefully; nothing is left running", async () => {
    const port = await freePort();
    const p = runCommand("npm", ["run", "api"], { ...place.env, RTB_API_HOST: `127.0.0.1:${port}`, RTB_SEED_UNITS: "0", RTB_LOG_LEVEL: "info" });
    await waitFor("the api to listen", () => readyLines(p) >= 1, 40_000, 100);
    const pids = processTree(p.pid);
    p.child.kill("SIGTERM");
    await allGone(pids, "npm run api, SIGTERM", p);
    expect(p.output()).toMatch(/"reason":"SIGTERM","msg":"stopping"/);
    expect(p.output().match(/"code":0,"msg":"stopped"/g)?.length).toBe(1);
  });

  it("kill -HUP of `npm run api` (npm does not relay it and dies): the api sees npm gone and stops gracefully", async () => {
    const port = await freePort();
    const p = runCommand("npm", ["run", "api"], { ...place.env, RTB_API_HOST: `127.0.0.1:${port}`, RTB_SEED_UNITS: "0", RTB_LOG_LEVEL: "info" });
    await waitFor("the api to listen", () => readyLines(p) >= 1, 40_000, 100);
    const pids = processTree(p.pid);
    p.child.kill("SIGHUP");
    await allGone(pids, "npm run api, SIGHUP", p);
    expect(p.output()).toMatch(/"reason":"parent exited","msg":"stopping"/);
    expect(p.output().match(/"code":0,"msg":"stopped"/g)?.length).toBe(1);
  });
});

describe("service start-up", () => {
  it("refuses a bad variable at start, naming it, the value and what is expected", async () => {
    const p = run("services/agent/src/main.ts", { ...place.env, RTB_AGENT_ERROR_RATE: "1.5" });
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain('RTB_AGENT_ERROR_RATE="1.5": expected a number between 0 and 1');
  });

  it("never prints a secret it rejects: a short RTB_API_TOKEN is named with its length only", async () => {
    const token = "short-secret-x";
    const p = run("services/api/src/main.ts", { ...place.env, RTB_API_TOKEN: token });
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain(`RTB_API_TOKEN=<${token.length} characters, hidden>: expected a token of at least 16 characters`);
    expect(p.output()).not.toContain(token);
  });

  it("never logs a broker password the broker refuses", async () => {
    const password = "wrong-password-6f1e";
    const p = run("services/leader/src/main.ts", { ...place.env, RTB_BROKER_PASSWORD: password, RTB_CONNECT_TIMEOUT_MS: "1500", RTB_LOG_LEVEL: "debug" });
    expect(await p.exited).toBe(1);
    expect(p.output()).toMatch(/cannot reach the broker; retrying with backoff/);
    expect(p.output()).not.toContain(password);
    expect(p.output()).not.toContain(encodeURIComponent(password));
  });

  it("retries an unreachable database with backoff, then exits non-zero naming the host and the variable", async () => {
    const p = run("services/api/src/main.ts", { ...place.env, RTB_DB_HOST: "127.0.0.1:1", RTB_CONNECT_TIMEOUT_MS: "1500" });
    expect(await p.exited).toBe(1);
    expect(p.output()).toMatch(/cannot reach PostgreSQL; retrying/);
    expect(p.output()).toContain("cannot reach PostgreSQL at 127.0.0.1:1");
    expect(p.output()).toContain("RTB_DB_HOST");
  });

  it("retries an unreachable broker with backoff, then exits non-zero naming the host and the variable", async () => {
    const p = run("services/leader/src/main.ts", { ...place.env, RTB_BROKER_HOST: "127.0.0.1:1", RTB_CONNECT_TIMEOUT_MS: "1500" });
    expect(await p.exited).toBe(1);
    expect(p.output()).toMatch(/cannot reach the broker; retrying with backoff/);
    expect(p.output()).toContain("cannot reach RabbitMQ at 127.0.0.1:1 (RTB_BROKER_HOST)");
  });
});
