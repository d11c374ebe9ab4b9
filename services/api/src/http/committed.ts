import type { Db } from "@rtb/db";

/**
 * A request's writes and its answer, as one unit: the writes run in one transaction, and
 * the answer is built inside it (Hono's c.json serialises at once), so whatever fails on the
 * way (a statement after the insert, the reads that make the answer, the answer itself)
 * rolls the writes back, and the request answers 5xx having written nothing. After COMMIT
 * nothing is left that can fail. (A COMMIT whose acknowledgement is lost with the connection
 * is the one case left that cannot be known; producers retry with the same `ref`.) The
 * answer keeps its type, so the route's declared responses still check it.
 */
export function committed<R extends Response>(db: Db, answer: (tx: Db) => Promise<R>): Promise<R> {
  return db.transaction().execute(answer);
}
