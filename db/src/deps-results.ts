import { sql } from "kysely";

/**
 * The results a unit with dependencies is dispatched with: each succeeded dependency's result
 * under its step name (outside workflows: its ref, else its id). A SQL expression over the
 * units row `alias`; null for a unit that never had dependencies, so the dispatch of other
 * units reads nothing more.
 */
export const depsResults = (alias: string) => sql<Record<string, unknown> | null>`
  CASE WHEN ${sql.ref(`${alias}.waiting_on`)} IS NOT NULL THEN (
    -- The status as the aggregate's FILTER, not in WHERE: no statistics on how many units
    -- succeeded (stale ones said none) may turn this into a scan of a status index; it reads
    -- the unit's edges (unit_deps_pkey) and probes each dependency by its key, nothing else.
    SELECT coalesce(jsonb_object_agg(coalesce(p.step, p.ref, p.id::text), p.result) FILTER (WHERE p.status = 'success'), '{}'::jsonb)
    FROM unit_deps d JOIN units p ON p.id = d.depends_on
    WHERE d.unit_id = ${sql.ref(`${alias}.id`)}
  ) END`;
