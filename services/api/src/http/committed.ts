import type { Db } from "@rtb/db";

/** Attempts of a request's transaction that lost a race (deadlock, serialization failure). */
const RACE_ATTEMPTS = 3;

/**
 * A request's writes and its answer, as one unit: the writes run in one transaction, and
 * the answer is built inside it (Hono's c.json serialises at once), so whatever fails on the
 * way (a statement after the insert, the reads that make the answer, the answer itself)
 * rolls the writes back, and the request answers 5xx having written nothing. After COMMIT
 * nothing is left that can fail. (A COMMIT whose acknowledgement is lost with the connection
 * is the one case left that cannot be known; producers retry with the same `ref`.) The
 * answer keeps its type, so the route's declared responses still check it.
 *
 * A transaction PostgreSQL aborted for a deadlock or a serialization failure (40P01, 40001:
 * an enqueue with dependencies locks them, as the inbox does) wrote nothing: it runs again,
 * up to 3 times in all.
 */
export async function committed<R extends Response>(db: Db, answer: (tx: Db) => Promise<R>): Promise<R> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction().execute(answer);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (attempt >= RACE_ATTEMPTS || (code !== "40P01" && code !== "40001")) throw err;
      await new Promise((r) => setTimeout(r, 10 * attempt));
    }
  }
}
