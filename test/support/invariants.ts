import { sql } from "kysely";
import type { Db } from "@rtb/db";

/**
 * Invariants that must hold after any run, read from the database:
 * - every attempt of every unit has exactly one `dispatched` event and at most one terminal
 *   (success/error) event; every attempt before the current one has exactly one;
 * - a unit in `success`/`error` has a terminal event for its current attempt;
 * - a unit in `error` with attempts left failed permanently (non-retryable).
 * Returns a list of violations (empty when all hold).
 */
export async function checkInvariants(db: Db): Promise<string[]> {
  const { rows } = await sql<{ id: number; status: string; attempt: number; max_attempts: number; attempts: { attempt: number; dispatched: number; terminal: number; retryable: boolean | null }[] }>`
    SELECT u.id, u.status, u.attempt, u.max_attempts,
      COALESCE((
        SELECT json_agg(a ORDER BY a.attempt) FROM (
          SELECT e.attempt,
                 count(*) FILTER (WHERE e.status = 'dispatched')::int AS dispatched,
                 count(*) FILTER (WHERE e.status IN ('success','error'))::int AS terminal,
                 bool_or((e.detail->>'retryable')::boolean) FILTER (WHERE e.status = 'error') AS retryable
          FROM unit_events e WHERE e.unit_id = u.id GROUP BY e.attempt
        ) a
      ), '[]') AS attempts
    FROM units u ORDER BY u.id`.execute(db);
  const problems: string[] = [];
  for (const u of rows) {
    for (const a of u.attempts) {
      if (a.dispatched !== 1) problems.push(`unit ${u.id} attempt ${a.attempt}: ${a.dispatched} dispatched events`);
      if (a.terminal > 1) problems.push(`unit ${u.id} attempt ${a.attempt}: ${a.terminal} terminal events`);
      if (a.attempt < u.attempt && a.terminal !== 1) problems.push(`unit ${u.id} attempt ${a.attempt}: finished attempts need exactly one terminal event`);
    }
    if (u.attempts.length !== u.attempt) problems.push(`unit ${u.id}: ${u.attempts.length} attempts in its timeline, attempt counter ${u.attempt}`);
    const last = u.attempts.at(-1);
    if ((u.status === "success" || u.status === "error") && last?.terminal !== 1) problems.push(`unit ${u.id}: ${u.status} without a terminal event`);
    if (u.status === "error" && u.attempt < u.max_attempts && last?.retryable !== false) problems.push(`unit ${u.id}: error with attempts left`);
  }
  return problems;
}
