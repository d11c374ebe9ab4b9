import { afterEach, describe, expect, it } from "vitest";
import { clusterPerTest, faultTestTimeout, startAllAndGo, startWebhookReceiver, testWebhookSecret, waitFor, type Cluster, type WebhookReceiver } from "@rtb/testing";

/**
 * Completion callbacks through real processes (api, leader, agents: test/support/processes.ts),
 * to a real receiver that verifies every request with the standardwebhooks package.
 */
const run = clusterPerTest();
const secret = testWebhookSecret();
let receiver: WebhookReceiver | undefined;

afterEach(async () => {
  expect(receiver?.rejected ?? []).toEqual([]);
  await receiver?.close();
  receiver = undefined;
});

const env = {
  RTB_SEED_UNITS: "0",
  RTB_AGENT_ERROR_RATE: "0",
  RTB_WEBHOOK_ALLOWED_HOSTS: "127.0.0.1",
  RTB_WEBHOOK_SECRET: secret,
  RTB_WEBHOOK_TIMEOUT_MS: "3000",
  RTB_WEBHOOK_BACKOFF_MS: "100",
  RTB_WEBHOOK_BACKOFF_MAX_MS: "500",
};

const callbacksOf = async (c: Cluster, id: number) => (await c.get(`/units/${id}`)).callbacks as any[];
const delivered = (c: Cluster, id: number) =>
  waitFor(`unit ${id}'s callback to be delivered`, async () => {
    const cbs = await callbacksOf(c, id);
    return cbs.length === 1 && cbs[0].state === "delivered" ? cbs[0] : null;
  }, 40_000, 100);

describe("completion callbacks, end to end", () => {
  it(
    "units run by a real agent deliver their success once each, signed; an api killed mid-delivery delivers after its restart, with the same webhook-id",
    async () => {
      receiver = await startWebhookReceiver(secret);
      const r = receiver;
      const c = await run.start(env);
      expect(await startAllAndGo(c)).toMatchObject({ dispatching: true });

      const { units } = await c.enqueue(Array.from({ length: 5 }, (_, i) => ({ kind: "simulate", ref: `e2e-${i}`, payload: { i }, callbackUrl: `${r.url}/done` })));
      for (const u of units) await delivered(c, u.id);
      expect(r.received).toHaveLength(5);
      expect(r.received.map((x) => x.body.data.ref).sort()).toEqual(units.map((u: any) => u.ref).sort());
      for (const x of r.received) expect(x.body.data).toMatchObject({ kind: "simulate", status: "success", attempt: 1 });

      // The next request hangs; the api is killed while it waits for the answer.
      r.answer = () => "hang";
      const [hung] = (await c.enqueue([{ kind: "simulate", ref: "killed-mid-delivery", callbackUrl: `${r.url}/done` }])).units;
      await waitFor("the api to be waiting for the receiver", () => r.hanging() === 1, 30_000);
      expect(await c.kill("api", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
      r.answer = () => 200;
      await c.restart("api");
      const cb = await delivered(c, hung.id);

      const requests = r.received.filter((x) => x.body.data.id === hung.id);
      expect(requests.map((x) => x.answered)).toEqual(["hang", 200]);
      expect(new Set(requests.map((x) => x.id))).toEqual(new Set([cb.webhookId]));
      // The killed attempt was claimed (counted) but never settled: only the delivery is in its history.
      expect(cb.attempts).toBe(2);
      expect(cb.history.map((h: any) => h.outcome)).toEqual(["delivered"]);
      const metrics = await (await fetch(`${c.url}/metrics`)).text();
      expect(metrics).toMatch(/^rtb_callback_deliveries_total\{[^}]*outcome="delivered"[^}]*\} 1$/m);
      expect(metrics).toMatch(/^rtb_callbacks_pending(\{[^}]*\})? 0$/m);
    },
    faultTestTimeout,
  );
});
