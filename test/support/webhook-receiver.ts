import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterEach, expect } from "vitest";
import { callbackPayload } from "@rtb/protocol";

/**
 * A real HTTP receiver of rtb's completion callbacks for the tests: every request is verified
 * with the `standardwebhooks` package (Webhook.verify: the signature over id.timestamp.body and
 * the timestamp's freshness) and recorded; one that fails verification is answered 401 and kept
 * in `rejected`, which the tests expect empty. Every verified body is also checked against the
 * published schema (`callbackPayload`, what /openapi.json's webhooks.unitFinished describes): a
 * body that does not match is answered as the test says but kept in `rejected` too. What it
 * answers is up to the test: a status, "hang" (never answer: a slow receiver), or a promise of
 * a status (answered when the test resolves it). `down()` closes the port (connections
 * refused), `up()` opens the same port again.
 */
export interface ReceivedCallback {
  /** The webhook-id header. */
  id: string;
  timestamp: number;
  path: string;
  body: any;
  /** What was answered: a status, "hang", or "held" while a promised status is not yet answered. */
  answered: number | "hang" | "held";
}

export type Answer = number | "hang" | Promise<number>;

export interface WebhookReceiver {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  readonly received: ReceivedCallback[];
  /** Requests that failed Webhook.verify, or whose body does not match callbackPayload, and why. */
  readonly rejected: string[];
  /** Requests held open right now ("hang"). */
  hanging(): number;
  /** What to answer the next requests (default 200). */
  answer: (req: { id: string; path: string; body: any }) => Answer;
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(secret: string, opts: { port?: number } = {}): Promise<WebhookReceiver> {
  const verifier = new Webhook(secret);
  const received: ReceivedCallback[] = [];
  const rejected: string[] = [];
  const sockets = new Set<Socket>();
  const held = new Set<ServerResponse>();
  let server: Server | undefined;
  let port = opts.port ?? 0;

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
      let body: any;
      try {
        body = verifier.verify(raw, headers);
      } catch (err) {
        rejected.push(`${req.method} ${req.url}: ${(err as Error).message}`);
        res.writeHead(401).end();
        return;
      }
      const id = headers["webhook-id"]!;
      const path = req.url ?? "/";
      const schema = callbackPayload.safeParse(body);
      if (!schema.success) rejected.push(`${req.method} ${req.url} (${id}): not a callbackPayload: ${schema.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
      const answer = receiver.answer({ id, path, body });
      const entry: ReceivedCallback = { id, timestamp: Number(headers["webhook-timestamp"]), path, body, answered: typeof answer === "object" ? "held" : answer };
      received.push(entry);
      if (answer === "hang" || typeof answer === "object") {
        held.add(res);
        res.on("close", () => held.delete(res));
        if (typeof answer === "object")
          void answer.then((status) => {
            entry.answered = status;
            res.writeHead(status, { "content-type": "text/plain" }).end(`answered ${status}`);
          });
        return;
      }
      res.writeHead(answer, { "content-type": "text/plain" }).end(`answered ${answer}`);
    });
  };

  const up = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer(handle);
      s.on("connection", (socket) => {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
      });
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        port = (s.address() as { port: number }).port;
        server = s;
        resolve();
      });
    });
  const down = () =>
    new Promise<void>((resolve) => {
      const s = server;
      server = undefined;
      if (!s) return resolve();
      s.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });

  await up();
  const receiver: WebhookReceiver = {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    received,
    rejected,
    hanging: () => held.size,
    answer: () => 200,
    down,
    up,
    close: down,
  };
  return receiver;
}

/** A Standard Webhooks secret for a test: whsec_ and 32 random bytes in base64. */
export const testWebhookSecret = () => `whsec_${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64")}`;

/**
 * Receivers made per test with `secret`: after each test, every one made in it must have
 * rejected nothing (a bad signature or a body off the schema), and is closed.
 */
export function useWebhookReceivers(secret: string): () => Promise<WebhookReceiver> {
  const receivers: WebhookReceiver[] = [];
  afterEach(async () => {
    for (const r of receivers.splice(0)) {
      expect(r.rejected).toEqual([]);
      await r.close();
    }
  });
  return async () => {
    const r = await startWebhookReceiver(secret);
    receivers.push(r);
    return r;
  };
}
