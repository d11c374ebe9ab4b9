import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { agentConfigSchema } from "@rtb/agent";
import { apiConfigSchema } from "@rtb/api";
import { leaderConfigSchema } from "@rtb/leader";

/**
 * What an operator deploys from, checked against the settings the services really read (their
 * config schemas): .env.example lists every setting, and compose.yaml passes each service every
 * setting of its own from `.env`, except the few it must set itself; it publishes ports on
 * 127.0.0.1 unless told otherwise, has no built-in credentials, runs a standby leader, lets the
 * api and the agents scale, and health-checks every rtb service on its readiness. (`npm run check:compose` validates the file
 * itself with a compose implementation.)
 */
const root = resolve(import.meta.dirname, "..");
const compose = readFileSync(resolve(root, "compose.yaml"), "utf8");
const envExample = readFileSync(resolve(root, ".env.example"), "utf8");

const keysOf = (schema: { shape: object }) => Object.keys(schema.shape);
const schemas = { api: keysOf(apiConfigSchema), leader: keysOf(leaderConfigSchema), agent: keysOf(agentConfigSchema) };
/** Set by compose itself: the hosts are the service names; metrics for Prometheus and the health checks. */
const SET_BY_COMPOSE = ["RTB_DB_HOST", "RTB_BROKER_HOST", "RTB_API_HOST", "RTB_METRICS_PORT"];
/** Per instance: replicas must not share one (each defaults to <service>-<hostname>-<pid>). */
const PER_INSTANCE = ["RTB_API_ID", "RTB_LEADER_ID", "RTB_AGENT_ID"];

/**
 * compose.yaml's environment per service, with its `<<: *anchor` merges resolved. A reader for
 * this file's shape (two-space indents, anchors at the top level), not for YAML at large.
 */
function composeEnvironments(text: string): Map<string, Map<string, string>> {
  const lines = text.split("\n");
  const anchors = new Map<string, { keys: Map<string, string>; merges: string[] }>();
  const services = new Map<string, { keys: Map<string, string>; merges: string[] }>();
  let current: { keys: Map<string, string>; merges: string[] } | undefined;
  let inServices = false;
  let entryIndent = -1;
  for (const line of lines) {
    if (/^\S/.test(line)) {
      inServices = line.startsWith("services:");
      const anchor = /^x-[\w-]+: &([\w-]+)$/.exec(line);
      current = anchor ? { keys: new Map(), merges: [] } : undefined;
      if (anchor) anchors.set(anchor[1]!, current!);
      entryIndent = 2;
      continue;
    }
    if (inServices) {
      const service = /^ {2}([\w-]+):$/.exec(line);
      if (service) {
        current = undefined;
        services.set(service[1]!, { keys: new Map(), merges: [] });
        continue;
      }
      if (/^ {4}environment:$/.test(line)) {
        current = [...services.values()].at(-1);
        entryIndent = 6;
        continue;
      }
      if (/^ {4}\S/.test(line)) current = undefined;
    }
    if (!current) continue;
    const indent = line.length - line.trimStart().length;
    if (indent !== entryIndent) continue;
    const merge = /^\s*<<: \*([\w-]+)/.exec(line);
    if (merge) current.merges.push(merge[1]!);
    const entry = /^\s*(RTB_\w+): (.*)$/.exec(line);
    if (entry) current.keys.set(entry[1]!, entry[2]!.trim());
  }
  const resolveEnv = (e: { keys: Map<string, string>; merges: string[] }): Map<string, string> => {
    const out = new Map<string, string>();
    for (const m of e.merges) for (const [k, v] of resolveEnv(anchors.get(m) ?? { keys: new Map(), merges: [] })) out.set(k, v);
    for (const [k, v] of e.keys) out.set(k, v);
    return out;
  };
  return new Map([...services].map(([name, e]) => [name, resolveEnv(e)]));
}

describe(".env.example", () => {
  it("lists every setting any service or npm start reads", () => {
    const listed = new Set([...envExample.matchAll(/^# (RTB_\w+)=/gm)].map((m) => m[1]));
    const all = new Set([...schemas.api, ...schemas.leader, ...schemas.agent, "RTB_AGENTS"]);
    expect([...all].filter((k) => !listed.has(k))).toEqual([]);
  });
});

describe("compose.yaml", () => {
  const envs = composeEnvironments(compose);

  it.each(Object.entries(schemas))("passes the %s every setting it reads, from .env (but the hosts, metrics and instance ids)", (service, keys) => {
    const env = envs.get(service);
    expect(env, `service ${service} in compose.yaml`).toBeDefined();
    const wanted = keys.filter((k) => !PER_INSTANCE.includes(k) && !(k === "RTB_API_HOST" && service !== "api"));
    expect(wanted.filter((k) => !env!.has(k)), `settings compose.yaml does not pass to ${service}`).toEqual([]);
    expect([...env!.keys()].filter((k) => !keys.includes(k)), `variables compose.yaml passes to ${service}, which it does not read`).toEqual([]);
    for (const [k, v] of env!) {
      if (SET_BY_COMPOSE.includes(k)) expect(v, k).not.toContain("${");
      else expect(v, `${k} in ${service}`).toMatch(new RegExp(`^\\$\\{${k}(:-|:\\?|\\})`));
    }
  });

  it("takes every variable it interpolates from .env.example's list", () => {
    const listed = new Set([...envExample.matchAll(/^# (RTB_\w+)=/gm)].map((m) => m[1]));
    // Not in comments; `$${X}` is the container shell's, not an interpolation.
    const code = compose.split("\n").filter((l) => !l.trimStart().startsWith("#")).join("\n");
    const used = new Set([...code.matchAll(/(?<!\$)\$\{(\w+)/g)].map((m) => m[1]!));
    expect(used.size).toBeGreaterThan(30);
    expect([...used].filter((v) => !listed.has(v))).toEqual([]);
  });

  it("has no built-in credentials: the passwords must be set", () => {
    for (const name of ["POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "RTB_DB_PASSWORD", "RTB_BROKER_PASSWORD"]) {
      const values = [...compose.matchAll(new RegExp(`^\\s+${name}: (.*)$`, "gm"))].map((m) => m[1]!);
      expect(values.length, name).toBeGreaterThan(0);
      for (const v of values) expect(v, name).toMatch(/^\$\{RTB_(DB|BROKER)_PASSWORD:\?[^}]+\}$/);
    }
    expect(compose).not.toMatch(/:-guest\b|guest\/guest/);
  });

  it("publishes every port on RTB_PUBLISH_HOST, 127.0.0.1 unless told otherwise", () => {
    const ports = [...compose.matchAll(/^ {6}- "([^"]+)"/gm)].map((m) => m[1]!).filter((p) => /\d+$/.test(p) && p.includes(":"));
    expect(ports.length).toBeGreaterThanOrEqual(4);
    for (const p of ports) expect(p).toMatch(/^\$\{RTB_PUBLISH_HOST:-127\.0\.0\.1\}:\$\{RTB_PUBLISH_\w+_PORT:-\d+(-\d+)?\}:\d+$/);
  });

  it("lets the api, the leaders and the agents scale (--scale api=2 --scale agent=4): no container_name, no single host port", () => {
    const block = (service: string) => compose.split(/^ {2}(?=[\w-]+:$)/m).find((b) => b.startsWith(`${service}:`)) ?? "";
    for (const s of ["api", "leader", "agent"]) {
      expect(block(s), s).not.toBeFalsy();
      expect(block(s), `${s}: a container_name allows one container`).not.toMatch(/^\s+container_name:/m);
      expect(block(s), `${s}: a hostname would be shared by every replica`).not.toMatch(/^\s+hostname:/m);
      // Each published port is a range of at least 4 host ports (one per replica), or none.
      for (const [, from, to] of block(s).matchAll(/^ {6}- "[^"]*:\$\{RTB_PUBLISH_\w+_PORT:-(\d+)(?:-(\d+))?\}:\d+"/gm)) {
        expect(to, `${s}: host port ${from} is a single port; two replicas would clash on it`).toBeDefined();
        expect(Number(to) - Number(from) + 1, `${s}: host ports ${from}-${to}`).toBeGreaterThanOrEqual(4);
      }
    }
    expect(block("api")).toMatch(/- "\$\{RTB_PUBLISH_HOST:-127\.0\.0\.1\}:\$\{RTB_PUBLISH_API_PORT:-8080-\d+\}:8080"/);
  });

  it("runs two leaders (one active, one standby) and health-checks the api, leaders and agents on readiness", () => {
    const block = (service: string) => compose.split(/^ {2}(?=[\w-]+:$)/m).find((b) => b.startsWith(`${service}:`)) ?? "";
    expect(block("leader")).toMatch(/replicas: 2/);
    expect(block("api")).toMatch(/healthcheck:[\s\S]*\/readyz/);
    for (const s of ["leader", "agent"]) expect(block(s)).toMatch(/healthcheck: \*worker-healthcheck/);
    expect(compose).toMatch(/x-worker-healthcheck: &worker-healthcheck\n\s+test: \[[^\]]*127\.0\.0\.1:9464\/readyz/);
  });
});
