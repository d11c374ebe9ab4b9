import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, lstat, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exitWithin, repoRoot, runCommand, startOtlpReceiver, startSystem, useTestPlace, waitFor, type Proc, type System } from "@rtb/testing";

/**
 * README "Writing your own agent", literally: the three packages an agent needs, packed
 * (`npm pack` builds their dist/), installed from the tarballs into a copy of
 * examples/render-agent in an empty folder outside the repository, and the example run with
 * plain `node` (the one on PATH; also Node 24 when RTB_TEST_NODE24 names its binary) against
 * an api and a leader on this file's place.
 */
const exec = promisify(execFile);
const place = useTestPlace({ kinds: ["render"] });

// Not the test run's npm_* variables (npm test sets npm_config_local_prefix, ...: an npm
// started with them would work on the repository), nor its NODE_OPTIONS.
const cleanEnv = (extra: Record<string, string> = {}): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^npm_/i.test(k) && k !== "NODE_OPTIONS") env[k] = v;
  return { ...env, ...extra };
};

let dir: string;
let app: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "rtb-agent-package-"));
  const packages = join(dir, "packages");
  await mkdir(packages);
  await exec("npm", ["pack", "-w", "@rtb/protocol", "-w", "@rtb/runtime", "-w", "@rtb/agent", "--pack-destination", packages], { cwd: repoRoot, env: cleanEnv() });
  const tarballs = (await readdir(packages)).filter((f) => f.endsWith(".tgz"));
  expect(tarballs.sort()).toEqual(["rtb-agent-0.1.0.tgz", "rtb-protocol-0.1.0.tgz", "rtb-runtime-0.1.0.tgz"]);
  app = join(dir, "render-agent");
  await cp(join(repoRoot, "examples/render-agent"), app, { recursive: true, filter: (src) => !src.includes("node_modules") });
  // Third-party dependencies from the npm cache when it has them (the repository's npm ci filled it).
  await exec("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", ...tarballs.map((t) => join(packages, t))], { cwd: app, env: cleanEnv() });
}, 180_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * A Node 24 binary: RTB_TEST_NODE24 when it names one, else the registry's
 * node-<platform>-<arch>@24 package, fetched once into the OS temp folder (a few seconds) and
 * kept there for later runs. Node 20 runs the suite; users run the current LTS too.
 */
async function node24(): Promise<string> {
  if (process.env.RTB_TEST_NODE24) return process.env.RTB_TEST_NODE24;
  const cache = join(tmpdir(), "rtb-test-node24");
  const bin = join(cache, "package", "bin", process.platform === "win32" ? "node.exe" : "node");
  try {
    if ((await exec(bin, ["-v"])).stdout.startsWith("v24.")) return bin;
  } catch {
    // Not fetched yet (or broken): fetch it.
  }
  await rm(cache, { recursive: true, force: true });
  await mkdir(cache, { recursive: true });
  const pkg = `node-${process.platform === "win32" ? "win" : process.platform}-${process.arch}@24`;
  const { stdout } = await exec("npm", ["pack", pkg, "--pack-destination", cache, "--silent"], { cwd: cache, env: cleanEnv() });
  await exec("tar", ["-xzf", join(cache, stdout.trim().split("\n").at(-1)!)], { cwd: cache });
  return bin;
}

/** `node agent.js` in the installed copy, with only the place's settings on top of a clean environment. */
function runExample(node: string, env: Record<string, string>): Proc {
  return runCommand(node, ["agent.js"], cleanEnv({ ...place.env, ...env }), { cwd: app, ownEnv: true });
}

async function waitReady(agent: Proc) {
  const deadline = Date.now() + 30_000;
  while (!agent.output().includes('"msg":"agent ready"')) {
    if (!agent.running()) throw new Error(`the example agent exited before it was ready; its output:\n${agent.output()}`);
    if (Date.now() > deadline) throw new Error(`the example agent was not ready within 30 s; its output:\n${agent.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("the packed @rtb/agent", () => {
  it("installs self-contained: real folders with dist/ and declarations, resolved inside the folder", async () => {
    for (const name of ["agent", "runtime", "protocol"]) {
      const installed = join(app, "node_modules/@rtb", name);
      expect((await lstat(installed)).isSymbolicLink()).toBe(false);
      const files = await readdir(join(installed, "dist"));
      expect(files).toEqual(expect.arrayContaining(["index.js", "index.d.ts"]));
      expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
    }
    const { stdout } = await exec("node", ["--input-type=module", "-e", 'console.log(import.meta.resolve("@rtb/agent"))'], { cwd: app, env: cleanEnv() });
    expect(stdout.trim()).toBe(`file://${join(app, "node_modules/@rtb/agent/dist/index.js")}`);
  });

  it("types a handler's payload from its schema, for a TypeScript consumer", async () => {
    await writeFile(
      join(app, "check.ts"),
      [
        'import { z } from "zod";',
        'import { defineHandler, runAgent, type Handler } from "@rtb/agent";',
        "const h = defineHandler({",
        "  payload: z.object({ scene: z.string() }),",
        "  run: async ({ payload, unitId, attempt, kind }) => {",
        "    const s: string = payload.scene;",
        "    // @ts-expect-error: scene is a string (were the declarations not found, this would be any, and the line no error)",
        "    const n: number = payload.scene;",
        "    return { s, n, unitId, attempt, kind };",
        "  },",
        "});",
        "const plain: Handler = async ({ payload, signal }) => ({ payload, aborted: signal.aborted });",
        "await runAgent({ render: h, plain });",
        "",
      ].join("\n"),
    );
    await writeFile(
      join(app, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { module: "nodenext", target: "es2023", lib: ["es2023", "dom"], strict: true, noEmit: true, skipLibCheck: true, types: [] }, files: ["check.ts"] }),
    );
    // The repository's compiler, as a tool; it resolves everything from the folder.
    await exec(process.execPath, [join(repoRoot, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"], { cwd: app, env: cleanEnv() }).catch((err) => {
      throw new Error(`tsc on a consumer of the packed declarations failed:\n${err.stdout}${err.stderr}`);
    });
  });

  it("refuses to start, naming RTB_AGENT_KINDS, when it lists a kind the agent has no handler for", async () => {
    const p = runExample("node", { RTB_AGENT_KINDS: "render,paint" });
    expect((await exitWithin(p, 20_000, "the example agent")).code).toBe(2);
    expect(p.output()).toMatch(/RTB_AGENT_KINDS="render,paint": kinds with a handler \(render\); no handler for paint/);
  });

  const nodes: [string, () => Promise<string>][] = [
    ["node on PATH", async () => "node"],
    ["Node 24", node24],
  ];
  describe.each(nodes)("examples/render-agent on %s", (_, which) => {
    let system: System;
    let node: string;
    beforeAll(async () => {
      node = await which();
      system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0" }, { agents: 0 }));
    }, 180_000);
    afterAll(async () => {
      await system?.stop();
    });

    it("runs units of its kind to success with the handler's result, and a bad payload to a permanent error naming the field", async () => {
      const { stdout: version } = await exec(node, ["-v"]);
      const agent = runExample(node, { RTB_AGENT_ID: "render-1", RTB_LOG_LEVEL: "info" });
      try {
        await waitReady(agent);
        const res = await system.api.app.request("/units", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify([
            { kind: "render", payload: { scene: "hall", frames: 3 } },
            { kind: "render", payload: { scene: "yard" } },
            { kind: "render", payload: { frames: 2 } },
            { kind: "render", payload: { scene: "missing" } },
          ]),
        });
        expect(res.status).toBe(201);
        const ids = ((await res.json()) as { units: { id: number }[] }).units.map((u) => u.id);
        await system.get("/go");
        const units = await waitFor(
          "the units to finish",
          async () => {
            const all = await Promise.all(ids.map((id) => system.get(`/units/${id}`)));
            return all.every((u) => u.status === "success" || u.status === "error") ? all : null;
          },
          30_000,
        );
        const frames = (scene: string, n: number) => Array.from({ length: n }, (_, i) => createHash("sha256").update(`${scene}#${i + 1}`).digest("hex").slice(0, 12));
        expect(units.map((u) => [u.status, u.attempt])).toEqual([["success", 1], ["success", 1], ["error", 1], ["error", 1]]);
        expect(units[0].result).toEqual({ scene: "hall", frames: frames("hall", 3), unitId: ids[0], attempt: 1 });
        expect(units[1].result).toEqual({ scene: "yard", frames: frames("yard", 1), unitId: ids[1], attempt: 1 });
        // Permanent: one attempt, though three were allowed.
        expect(units[2].maxAttempts).toBeGreaterThan(1);
        expect(units[2].lastError).toBe("payload.scene: Invalid input: expected string, received undefined");
        expect(units[3].lastError).toBe('no scene called "missing"');
        expect(units[0].events.at(-1)).toMatchObject({ status: "success", source: "agent:render-1" });
        // The handler's logger carries the unit.
        expect(agent.output()).toMatch(new RegExp(`"unitId":${ids[0]},"attempt":1,"kind":"render".*"msg":"rendered"`));
        expect(version.trim()).toMatch(node === "node" ? /^v\d+\./ : /^v24\./);
      } finally {
        if (agent.running()) agent.child.kill("SIGTERM");
      }
      expect(await exitWithin(agent, 20_000, "the example agent (SIGTERM)")).toEqual({ code: 0, signal: null });
    });

    it("exports its spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, in the producer's trace that the untraced api and leader passed on", async () => {
      const otlp = await startOtlpReceiver();
      const agent = runExample(node, { RTB_AGENT_ID: "render-traced", RTB_LOG_LEVEL: "info", OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: "50" });
      try {
        await waitReady(agent);
        const res = await system.api.app.request("/units", {
          method: "POST",
          headers: { "content-type": "application/json", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
          body: JSON.stringify({ kind: "render", payload: { scene: "traced" } }),
        });
        expect(res.status).toBe(201);
        const id = ((await res.json()) as { unit: { id: number } }).unit.id;
        await system.get("/go");
        const spans = await waitFor("the agent's spans of the unit", () => {
          const mine = otlp.spans.filter((s) => s.attributes["rtb.unit.id"] === id);
          return mine.length >= 2 ? mine : null;
        });
        const receive = spans.find((s) => s.name === "receive")!;
        const handle = spans.find((s) => s.name === "handle")!;
        expect(receive).toMatchObject({ service: "rtb-agent", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", parentSpanId: "00f067aa0ba902b7" });
        expect(handle).toMatchObject({ service: "rtb-agent", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", parentSpanId: receive.spanId });
        expect(handle.attributes).toMatchObject({ "rtb.outcome": "success", "rtb.unit.kind": "render" });
      } finally {
        if (agent.running()) agent.child.kill("SIGTERM");
        await otlp.close();
      }
      expect(await exitWithin(agent, 20_000, "the example agent (SIGTERM)")).toEqual({ code: 0, signal: null });
    });
  });
});
