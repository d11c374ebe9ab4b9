import { existsSync, readFileSync, statSync } from "node:fs";
import { relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { Deployment } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Secret, Service } from "kubernetes-models/v1";
import { agentConfigSchema } from "@rtb/agent";
import { apiConfigSchema } from "@rtb/api";
import { dbConfig } from "@rtb/db";
import { leaderConfigSchema } from "@rtb/leader";
import { int, loadConfig } from "@rtb/runtime";
import { z } from "zod";

/**
 * deploy/kubernetes, checked offline (no cluster runs here or in CI): every object of the base
 * and of the example overlay, rendered as kustomize would for the fields the kustomizations use,
 * passes its API schema (kubernetes-models, @kubernetes-models/keda), and the objects agree with
 * one another and with the services: selectors select the pods, probes and Services hit ports
 * the containers open, which are the ports the services listen on; every ConfigMap key is a
 * setting, and every setting is there or set by the Deployment; the environment each container
 * gets is one its service accepts; the Secret keys used exist; each agent Deployment has the
 * ScaledObject that scales it, on the kinds it serves, against the database the api uses.
 * Each check is shown to fail on a manifest broken on purpose.
 */
const root = resolve(import.meta.dirname, "..");
const k8s = resolve(root, "deploy/kubernetes");

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: any };

// --- rendering: the subset of kustomize these kustomizations use --------------------------

const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "namespace", "resources", "images", "replicas"]);

function readYamlObjects(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  const out: Obj[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${relative(root, file)}: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value = doc.toJS() as Obj | null;
    if (value === null) continue;
    if (typeof value !== "object" || !value.apiVersion || !value.kind || !value.metadata?.name)
      throw new Error(`${relative(root, file)}: a document without apiVersion, kind and metadata.name`);
    out.push(value);
  }
  return out;
}

/** kustomize build, for resources (files and directories), namespace, images and replicas. */
function render(dir: string): Obj[] {
  const file = resolve(dir, "kustomization.yaml");
  const k = parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  const unknown = Object.keys(k).filter((f) => !KUSTOMIZATION_FIELDS.has(f));
  if (unknown.length > 0) throw new Error(`${relative(root, file)}: ${unknown.join(", ")}: not understood by test/kubernetes.test.ts (extend its render())`);
  let objects: Obj[] = [];
  for (const r of (k.resources as string[] | undefined) ?? []) {
    const path = resolve(dir, r);
    if (!existsSync(path)) throw new Error(`${relative(root, file)}: resource ${r} does not exist`);
    objects.push(...(statSync(path).isDirectory() ? render(path) : readYamlObjects(path)));
  }
  if (typeof k.namespace === "string") objects = objects.map((o) => ({ ...o, metadata: { ...o.metadata, namespace: k.namespace as string } }));
  for (const image of (k.images as { name: string; newName?: string; newTag?: string }[] | undefined) ?? []) {
    for (const c of objects.flatMap(containersOf)) {
      const [name, tag] = splitImage(c.image);
      if (name === image.name) c.image = `${image.newName ?? name}${image.newTag ?? tag ? `:${image.newTag ?? tag}` : ""}`;
    }
  }
  for (const r of (k.replicas as { name: string; count: number }[] | undefined) ?? []) {
    const target = objects.find((o) => o.kind === "Deployment" && o.metadata.name === r.name);
    if (!target) throw new Error(`${relative(root, file)}: replicas names ${r.name}, which is no Deployment`);
    target.spec.replicas = r.count;
  }
  const ids = objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`);
  const twice = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (twice.length > 0) throw new Error(`${relative(root, file)}: ${twice.join(", ")} more than once`);
  return objects;
}

const splitImage = (image: string): [string, string | undefined] => {
  const at = image.lastIndexOf(":");
  return at > image.lastIndexOf("/") ? [image.slice(0, at), image.slice(at + 1)] : [image, undefined];
};
const podSpecOf = (o: Obj) => (o.kind === "Deployment" || o.kind === "Job" ? o.spec?.template?.spec : undefined);
const containersOf = (o: Obj): any[] => podSpecOf(o)?.containers ?? [];

// --- the checks ------------------------------------------------------------------------------

const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "batch/v1/Job": Job,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
};

const SCHEMAS = { api: apiConfigSchema, leader: leaderConfigSchema, agent: agentConfigSchema, migrate: z.object({ ...dbConfig, RTB_CONNECT_TIMEOUT_MS: int(60_000) }) };
type ServiceName = keyof typeof SCHEMAS;
const SETTINGS = new Set(Object.values(SCHEMAS).flatMap((s) => Object.keys(s.shape)));
/** Per instance: replicas must not share one (each defaults to <service>-<pod name>-<pid>). */
const PER_INSTANCE = ["RTB_API_ID", "RTB_LEADER_ID", "RTB_AGENT_ID"];
/** Set in the Deployments, beside what depends on them (ports, probes, the ScaledObject's kinds). */
const PER_DEPLOYMENT = ["RTB_API_HOST", "RTB_METRICS_PORT", "RTB_AGENT_KINDS"];
const SECRETS = ["RTB_DB_PASSWORD", "RTB_BROKER_PASSWORD", "RTB_API_TOKEN", "RTB_WEBHOOK_SECRET"];
/** A Service name in the namespace, or one's full name: never localhost or an address. */
const IN_CLUSTER_HOST = /^(?!localhost\b)[a-z]([-a-z0-9]*[a-z0-9])?(\.[a-z]([-a-z0-9]*[a-z0-9])?\.svc(\.cluster\.local)?)?:\d+$/;

/** Which rtb service a container runs: from its command, else (an agent image of one's own) its component label. */
function serviceOf(o: Obj, c: any): ServiceName | undefined {
  const command = (c.command ?? []).join(" ");
  for (const s of ["api", "leader", "agent"] as const) if (command.includes(`services/${s}/src/main.ts`)) return s;
  if (command.includes("db/src/cli.ts migrate")) return "migrate";
  const component = o.spec?.template?.metadata?.labels?.["app.kubernetes.io/component"];
  return component === "agent" ? "agent" : undefined;
}

const matches = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** The environment a container starts with: envFrom ConfigMaps, then env (which wins), secrets from the Secret. */
function environmentOf(c: any, objects: Obj[], secret: Obj, problems: string[], where: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const name = from.configMapRef?.name;
    const cm = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === name);
    if (!cm) problems.push(`${where}: envFrom names ConfigMap ${name}, which is not in the kustomization`);
    else Object.assign(env, cm.data);
    if (from.secretRef) problems.push(`${where}: envFrom a whole Secret: name the keys it needs (secretKeyRef) instead`);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    const ref = e.valueFrom?.secretKeyRef;
    if (ref) {
      const value = secret.stringData?.[ref.key];
      if (ref.name !== secret.metadata.name || value === undefined) problems.push(`${where}: ${e.name} from Secret ${ref.name} key ${ref.key}, which the Secret does not have`);
      else env[e.name] = value;
    }
    const cmRef = e.valueFrom?.configMapKeyRef;
    if (cmRef) {
      const value = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === cmRef.name)?.data?.[cmRef.key];
      if (value === undefined) problems.push(`${where}: ${e.name} from ConfigMap ${cmRef.name} key ${cmRef.key}, which does not exist`);
      else env[e.name] = value;
    }
  }
  return env;
}

/** The port a probe or Service names (by name or number), if the container opens it. */
const portOf = (containers: any[], port: string | number | undefined): number | undefined =>
  containers.flatMap((c) => c.ports ?? []).find((p: any) => p.name === port || p.containerPort === port)?.containerPort;

function check(objects: Obj[], secret: Obj): string[] {
  const problems: string[] = [];
  const all = [...objects, secret];
  for (const o of all) {
    const Model = MODELS[`${o.apiVersion}/${o.kind}`];
    if (!Model) {
      problems.push(`${o.kind}/${o.metadata.name}: ${o.apiVersion} ${o.kind} has no model here (add it to MODELS)`);
      continue;
    }
    try {
      new Model(structuredClone(o)).validate();
    } catch (err) {
      problems.push(`${o.kind}/${o.metadata.name}: ${(err as Error).message}`);
    }
  }
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  const deployments = byKind("Deployment");
  const config = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === "rtb-config");
  if (!config) return [...problems, "no ConfigMap rtb-config"];

  // The ConfigMap: settings only, no secrets, hosts in the cluster, every other setting there.
  const keys = Object.keys(config.data ?? {});
  for (const k of keys) if (!SETTINGS.has(k)) problems.push(`ConfigMap rtb-config: ${k} is no setting of any service`);
  for (const k of keys) if (SECRETS.includes(k) || PER_INSTANCE.includes(k) || PER_DEPLOYMENT.includes(k)) problems.push(`ConfigMap rtb-config: ${k} belongs in the Secret or the Deployments`);
  for (const k of SETTINGS) if (!keys.includes(k) && !SECRETS.includes(k) && !PER_INSTANCE.includes(k) && !PER_DEPLOYMENT.includes(k)) problems.push(`ConfigMap rtb-config: setting ${k} missing`);
  for (const k of ["RTB_DB_HOST", "RTB_BROKER_HOST"]) {
    // RTB_BROKER_HOST may name several brokers, comma-separated.
    for (const host of String(config.data?.[k] ?? "").split(",")) if (!IN_CLUSTER_HOST.test(host.trim())) problems.push(`ConfigMap rtb-config: ${k} entry "${host}" is not a Service in the cluster (name:port)`);
  }

  // Pods: labels, security, resources, probes and ports, environment, graceful stop.
  for (const o of [...deployments, ...byKind("Job")]) {
    const where = `${o.kind}/${o.metadata.name}`;
    const pod = podSpecOf(o);
    const podLabels = o.spec?.template?.metadata?.labels;
    if (o.kind === "Deployment" && !matches(o.spec?.selector?.matchLabels, podLabels)) problems.push(`${where}: selector does not match its pod labels`);
    if (pod?.securityContext?.runAsNonRoot !== true || !Number.isInteger(pod?.securityContext?.runAsUser) || pod.securityContext.runAsUser === 0)
      problems.push(`${where}: the pod must run as non-root, with a numeric runAsUser (the image's user is a name)`);
    for (const c of pod?.containers ?? []) {
      const at = `${where} container ${c.name}`;
      if (c.securityContext?.readOnlyRootFilesystem !== true || c.securityContext?.allowPrivilegeEscalation !== false) problems.push(`${at}: read-only root filesystem, no privilege escalation`);
      if (!(pod.volumes ?? []).some((v: any) => v.emptyDir) || !(c.volumeMounts ?? []).some((m: any) => m.mountPath === "/tmp")) problems.push(`${at}: a read-only root needs a writable /tmp (tsx's cache)`);
      for (const m of c.volumeMounts ?? []) if (!(pod.volumes ?? []).some((v: any) => v.name === m.name)) problems.push(`${at}: mounts volume ${m.name}, which the pod does not have`);
      for (const part of ["requests", "limits"]) for (const r of ["cpu", "memory"]) if (!c.resources?.[part]?.[r]) problems.push(`${at}: resources.${part}.${r} unset`);
      const probes = ["readinessProbe", "livenessProbe", "startupProbe"].filter((p) => c[p]);
      if (o.kind === "Deployment" && !(c.readinessProbe && c.livenessProbe)) problems.push(`${at}: readiness and liveness probes wanted`);
      for (const p of probes) {
        const get = c[p].httpGet;
        if (!get || portOf([c], get.port) === undefined) problems.push(`${at}: ${p} on port ${get?.port}, which the container does not open`);
      }

      const service = serviceOf(o, c);
      if (!service) {
        problems.push(`${at}: runs no rtb service this test knows`);
        continue;
      }
      const env = environmentOf(c, objects, secret, problems, at);
      const schema = SCHEMAS[service];
      const missing = Object.keys(schema.shape).filter((k) => !(k in env) && !PER_INSTANCE.includes(k) && !SECRETS.includes(k) && !(k === "RTB_API_HOST" && service !== "api"));
      if (service !== "migrate" && missing.length > 0) problems.push(`${at}: ${service} settings not given: ${missing.join(", ")}`);
      let settings: Record<string, any>;
      try {
        settings = loadConfig(schema, env);
      } catch (err) {
        problems.push(`${at}: ${service} refuses this environment: ${(err as Error).message}`);
        continue;
      }
      if (service === "api") {
        if (portOf([c], "http") !== settings.RTB_API_HOST.port || !["0.0.0.0", "::"].includes(settings.RTB_API_HOST.host)) problems.push(`${at}: port http is not where RTB_API_HOST listens (every interface)`);
        for (const k of ["RTB_DB_PASSWORD", "RTB_BROKER_PASSWORD"]) if (!settings[k]) problems.push(`${at}: ${k} not from the Secret`);
      }
      if (service === "leader" || service === "agent") {
        const m = settings.RTB_METRICS_PORT;
        if (!m || portOf([c], "metrics") !== m.port || !["0.0.0.0", "::"].includes(m.host)) problems.push(`${at}: port metrics is not where RTB_METRICS_PORT listens (every interface: the kubelet probes it)`);
        if (!settings.RTB_BROKER_PASSWORD || settings.RTB_BROKER_PASSWORD === "guest") problems.push(`${at}: RTB_BROKER_PASSWORD not from the Secret`);
      }
      if (o.kind === "Deployment") {
        const preStop = c.lifecycle?.preStop?.exec?.command;
        const pauseMs = preStop?.[0] === "sleep" ? Number(preStop[1]) * 1000 : 0;
        const graceMs = (pod.terminationGracePeriodSeconds ?? 30) * 1000;
        if (graceMs <= settings.RTB_SHUTDOWN_TIMEOUT_MS + pauseMs)
          problems.push(`${at}: terminationGracePeriodSeconds (${graceMs / 1000}) not above RTB_SHUTDOWN_TIMEOUT_MS (${settings.RTB_SHUTDOWN_TIMEOUT_MS} ms) + preStop (${pauseMs} ms)`);
      }
    }
  }

  // Services and PodDisruptionBudgets select pods of a Deployment, on ports they open.
  for (const s of byKind("Service")) {
    const targets = deployments.filter((d) => matches(s.spec?.selector, d.spec?.template?.metadata?.labels));
    if (targets.length === 0) problems.push(`Service/${s.metadata.name}: selects no Deployment's pods`);
    for (const p of s.spec?.ports ?? [])
      for (const d of targets) if (portOf(containersOf(d), p.targetPort ?? p.port) === undefined) problems.push(`Service/${s.metadata.name}: targetPort ${p.targetPort} not opened by ${d.metadata.name}`);
  }
  for (const b of byKind("PodDisruptionBudget")) {
    const targets = deployments.filter((d) => matches(b.spec?.selector?.matchLabels, d.spec?.template?.metadata?.labels));
    if (targets.length !== 1) problems.push(`PodDisruptionBudget/${b.metadata.name}: selects ${targets.length} Deployments, not 1`);
    for (const d of targets) if (!(b.spec.minAvailable < (d.spec.replicas ?? 1))) problems.push(`PodDisruptionBudget/${b.metadata.name}: minAvailable ${b.spec.minAvailable} leaves no pod of ${d.metadata.name} evictable`);
  }

  // Agents: each Deployment scaled by one ScaledObject, on its kinds, against the api's database.
  let api: z.infer<typeof apiConfigSchema>;
  try {
    api = loadConfig(apiConfigSchema, config.data);
  } catch (err) {
    return [...problems, `ConfigMap rtb-config: ${(err as Error).message}`];
  }
  const scaled = byKind("ScaledObject");
  for (const d of deployments.filter((d) => d.spec?.template?.metadata?.labels?.["app.kubernetes.io/component"] === "agent")) {
    const where = `Deployment/${d.metadata.name}`;
    const mine = scaled.filter((s) => (s.spec?.scaleTargetRef?.kind ?? "Deployment") === "Deployment" && s.spec?.scaleTargetRef?.name === d.metadata.name);
    if (mine.length !== 1) problems.push(`${where}: ${mine.length} ScaledObjects scale it, not 1`);
    if (d.spec?.replicas !== undefined) problems.push(`${where}: replicas set, which every kubectl apply would reset under KEDA`);
    const kinds = String(containersOf(d)[0]?.env?.find((e: any) => e.name === "RTB_AGENT_KINDS")?.value ?? "").split(",").map((k) => k.trim()).filter(Boolean);
    if (kinds.length === 0) problems.push(`${where}: RTB_AGENT_KINDS not set: each agent Deployment serves the kinds its ScaledObject counts`);
    for (const s of mine) {
      const at = `ScaledObject/${s.metadata.name}`;
      const triggers = s.spec?.triggers ?? [];
      if (triggers.length !== 1 || triggers[0].type !== "postgresql") {
        problems.push(`${at}: one postgresql trigger wanted`);
        continue;
      }
      const { metadata: m, authenticationRef } = triggers[0];
      const [dbHost] = String(config.data.RTB_DB_HOST).split(":");
      if (m.host !== `${dbHost}.${s.metadata.namespace}.svc.cluster.local`) problems.push(`${at}: host ${m.host} is not RTB_DB_HOST's Service by its full name (${dbHost}.${s.metadata.namespace}.svc.cluster.local)`);
      if (Number(m.port) !== api.RTB_DB_HOST.port || m.dbName !== api.RTB_DB_NAME || m.userName !== api.RTB_DB_USER) problems.push(`${at}: port, dbName, userName are not RTB_DB_HOST's port, RTB_DB_NAME, RTB_DB_USER`);
      const query = String(m.query ?? "");
      const queried = [.../ARRAY\[([^\]]*)\]::text\[\] AS kinds/.exec(query)?.[1]?.matchAll(/'([^']*)'/g) ?? []].map((x) => x[1]);
      if (queried.sort().join(",") !== [...kinds].sort().join(",")) problems.push(`${at}: the query counts kinds [${queried}], the agents serve [${kinds}]`);
      for (const part of ["'dispatched', 'queued', 'processing'", "not_before IS NULL", "not_before <= now()", "not_before = 'infinity'"]) if (!query.includes(part)) problems.push(`${at}: the query does not count ${part}`);
      const limit = Number(/LIMIT (\d+)\) AS demand$/.exec(query)?.[1]);
      if (limit !== s.spec.maxReplicaCount * Number(m.targetQueryValue)) problems.push(`${at}: LIMIT ${limit} is not maxReplicaCount x targetQueryValue`);
      const auth = objects.find((o) => o.kind === "TriggerAuthentication" && o.metadata.name === authenticationRef?.name);
      if (!auth) problems.push(`${at}: authenticationRef ${authenticationRef?.name} is no TriggerAuthentication here`);
      for (const ref of auth?.spec?.secretTargetRef ?? [])
        if (ref.name !== secret.metadata.name || secret.stringData?.[ref.key] === undefined) problems.push(`TriggerAuthentication/${auth!.metadata.name}: ${ref.parameter} from Secret ${ref.name} key ${ref.key}, which does not exist`);
      if (!(auth?.spec?.secretTargetRef ?? []).some((r: any) => r.parameter === "password" && r.key === "RTB_DB_PASSWORD")) problems.push(`${at}: KEDA gets no database password`);
    }
  }
  for (const s of scaled) if (!deployments.some((d) => d.metadata.name === s.spec?.scaleTargetRef?.name)) problems.push(`ScaledObject/${s.metadata.name}: scales ${s.spec?.scaleTargetRef?.name}, which is no Deployment here`);
  return problems;
}

// --- the tests -------------------------------------------------------------------------------

const [secret] = readYamlObjects(resolve(k8s, "secret.example.yaml"));
const base = render(resolve(k8s, "base"));
const overlays = { base, "overlays/example": render(resolve(k8s, "overlays/example")) };

describe("deploy/kubernetes", () => {
  it.each(Object.entries(overlays))("%s: every object valid and consistent", (_name, objects) => {
    expect(check(objects, secret!)).toEqual([]);
  });

  it("has what the base promises: 2 apis behind a Service and a PDB, 2 leaders, a migration Job, an agent scaled by KEDA", () => {
    const get = (kind: string, name: string) => base.find((o) => o.kind === kind && o.metadata.name === name);
    expect(get("Deployment", "rtb-api")?.spec.replicas).toBe(2);
    expect(get("Service", "rtb-api")).toBeDefined();
    expect(get("PodDisruptionBudget", "rtb-api")?.spec.minAvailable).toBe(1);
    expect(get("Deployment", "rtb-leader")?.spec.replicas).toBe(2);
    expect(containersOf(get("Job", "rtb-migrate")!)[0].command).toEqual(["node", "--import", "tsx", "db/src/cli.ts", "migrate"]);
    expect(get("ScaledObject", "rtb-agent-simulate")?.spec.scaleTargetRef.name).toBe("rtb-agent-simulate");
    const api = containersOf(get("Deployment", "rtb-api")!)[0];
    expect([api.readinessProbe.httpGet.path, api.livenessProbe.httpGet.path]).toEqual(["/readyz", "/healthz"]);
    expect(containersOf(get("Deployment", "rtb-leader")!)[0].readinessProbe.httpGet.path).toBe("/readyz");
    // The image is the one the Dockerfile builds, pinned by the kustomization.
    for (const o of base) for (const c of containersOf(o)) expect(c.image).toMatch(/^rtb:\d/);
    expect(secret!.metadata.name).toBe("rtb-secrets");
    for (const v of Object.values(secret!.stringData as Record<string, string>)) expect(v).toMatch(/^PLACEHOLDER-/);
  });

  it("does not install the example Secret", () => {
    for (const objects of Object.values(overlays)) expect(objects.filter((o) => o.kind === "Secret")).toEqual([]);
  });

  describe("fails a broken manifest", () => {
    const broken = (edit: (objects: Obj[]) => void): string[] => {
      const objects = structuredClone(base);
      edit(objects);
      return check(objects, secret!);
    };
    const find = (objects: Obj[], kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name)!;
    const cases: [string, (objects: Obj[]) => void, RegExp][] = [
      ["a field of the wrong type", (o) => (find(o, "Deployment", "rtb-api").spec.replicas = "two"), /replicas must be integer/],
      ["a KEDA field of the wrong type", (o) => (find(o, "ScaledObject", "rtb-agent-simulate").spec.triggers[0].metadata.targetQueryValue = 8), /must be string/],
      ["a Service selecting nothing", (o) => (find(o, "Service", "rtb-api").spec.selector["app.kubernetes.io/component"] = "apii"), /selects no Deployment/],
      ["a probe on a port not opened", (o) => (containersOf(find(o, "Deployment", "rtb-leader"))[0].readinessProbe.httpGet.port = 9465), /readinessProbe on port 9465/],
      ["a ScaledObject aimed at nothing", (o) => (find(o, "ScaledObject", "rtb-agent-simulate").spec.scaleTargetRef.name = "rtb-agents"), /no Deployment here/],
      ["a ConfigMap key that is no setting", (o) => (find(o, "ConfigMap", "rtb-config").data.RTB_BROKER_HOSTS = "rabbitmq:5672"), /RTB_BROKER_HOSTS is no setting/],
      ["a setting missing from the ConfigMap", (o) => delete find(o, "ConfigMap", "rtb-config").data.RTB_RETENTION, /setting RTB_RETENTION missing/],
      ["a bad setting value", (o) => (find(o, "ConfigMap", "rtb-config").data.RTB_BROADCAST_MAX_QUEUE = "lots"), /RTB_BROADCAST_MAX_QUEUE/],
      ["a host outside the cluster", (o) => (find(o, "ConfigMap", "rtb-config").data.RTB_DB_HOST = "localhost:5432"), /not a Service in the cluster/],
      ["a Secret key that does not exist", (o) => (containersOf(find(o, "Deployment", "rtb-api"))[0].env.find((e: any) => e.name === "RTB_DB_PASSWORD").valueFrom.secretKeyRef.key = "db-password"), /key db-password/],
      ["a query for another kind", (o) => (containersOf(find(o, "Deployment", "rtb-agent-simulate"))[0].env.find((e: any) => e.name === "RTB_AGENT_KINDS").value = "noop"), /the query counts kinds \[simulate\], the agents serve \[noop\]/],
      ["a grace period too short", (o) => (find(o, "ConfigMap", "rtb-config").data.RTB_SHUTDOWN_TIMEOUT_MS = "28000"), /terminationGracePeriodSeconds/],
      ["metrics on loopback only", (o) => (containersOf(find(o, "Deployment", "rtb-leader"))[0].env.find((e: any) => e.name === "RTB_METRICS_PORT").value = "9464"), /RTB_METRICS_PORT/],
      ["an object of no known kind", (o) => o.push({ apiVersion: "v1", kind: "ConfigMapp", metadata: { name: "x" } }), /has no model/],
    ];
    it.each(cases)("%s", (_what, edit, problem) => {
      expect(broken(edit).join("\n")).toMatch(problem);
    });

    it("a kustomization field the renderer does not know, a missing resource, invalid YAML", async () => {
      const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
      const { tmpdir } = await import("node:os");
      const dir = mkdtempSync(resolve(tmpdir(), "rtb-k8s-"));
      try {
        writeFileSync(resolve(dir, "kustomization.yaml"), "resources: [a.yaml]\npatches: []\n");
        expect(() => render(dir)).toThrow(/patches: not understood/);
        writeFileSync(resolve(dir, "kustomization.yaml"), "resources: [a.yaml]\n");
        expect(() => render(dir)).toThrow(/a.yaml does not exist/);
        writeFileSync(resolve(dir, "a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n");
        expect(() => render(dir)).toThrow(/a.yaml/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
