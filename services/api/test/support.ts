import type { ChannelModel } from "amqplib";
import { loadApiConfig, startApiService, type ApiService } from "@rtb/api";
import { testLogger, type TestPlace } from "@rtb/testing";

/** The api's own helpers for its integration tests (not a test file: vitest runs *.test.ts only). */

/** A cron expression that does not fire during a test run: the tests call `reconciler.tick()`. */
export const NEVER = "0 0 1 1 *";

/** An api in-process on the place's database and broker names (no HTTP listener). */
export function startApi(place: TestPlace, env: Record<string, string> = {}): Promise<ApiService> {
  const config = loadApiConfig({ ...place.env, RTB_SEED_UNITS: "10", RTB_RECONCILE_CRON: NEVER, ...env });
  return startApiService(config, testLogger("api"));
}

/**
 * GET (or another method) through the Hono app; the status and the parsed JSON body. A
 * `body` that is not a string is sent as JSON.
 */
export async function call(api: ApiService, path: string, method = "GET", body?: unknown): Promise<{ status: number; body: any }> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers = { "content-type": "application/json" };
  }
  const res = await api.app.request(path, init);
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    throw new Error(`${method} ${path} answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
}

export interface UnitView {
  id: number;
  status: string;
  attempt: number;
  maxAttempts: number;
  notBefore: string | null;
  waitingForAgentSince: string | null;
  result: unknown;
  lastError: string | null;
  republishes: number;
  events: { attempt: number; status: string; at: string; source: string; detail: any }[];
}

export async function getUnit(api: ApiService, id: number): Promise<UnitView> {
  const { status, body } = await call(api, `/units/${id}`);
  if (status !== 200) throw new Error(`GET /units/${id} answered ${status}`);
  return body as UnitView;
}

export const eventStatuses = (u: UnitView) => u.events.map((e) => e.status);

type Update = { unitId: number; attempt: number; status: string; result?: unknown; error?: { message: string; retryable: boolean; noAgent?: true } };

/** A StatusMessage (packages/protocol/src/messages.ts) as an agent or the leader sends it. */
export function statusMessage(updates: Update[], source: { service: string; id: string } = { service: "agent", id: "t" }, extra: object = {}) {
  const at = new Date().toISOString();
  return { v: 1, type: "status", source, updates: updates.map((u) => ({ at, ...u })), ...extra };
}

/** Publish raw bodies (objects are sent as JSON) to a queue, persistent, and wait for the confirms. */
export async function publishRaw(conn: ChannelModel, queue: string, ...bodies: (object | string)[]): Promise<void> {
  const ch = await conn.createConfirmChannel();
  try {
    for (const b of bodies) {
      ch.sendToQueue(queue, Buffer.from(typeof b === "string" ? b : JSON.stringify(b)), { persistent: true, contentType: "application/json" });
    }
    await ch.waitForConfirms();
  } finally {
    await ch.close();
  }
}
