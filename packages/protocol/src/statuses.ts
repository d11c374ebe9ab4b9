/**
 * The one list of unit statuses, and the sets the rest of the code asks about. Everything
 * else (the database's types, the api's schemas and /meta, the dashboard, the CLI, the
 * metrics, the scripts and the tests) reads them from here; the CHECK on units.status lives
 * in the migrations, and what may follow what in db/src/status-transitions.ts.
 */
export const UNIT_STATUSES = ["blocked", "pending", "dispatched", "queued", "processing", "success", "error", "cancelled"] as const;
export type UnitStatus = (typeof UNIT_STATUSES)[number];

/** Waiting for its dependencies (a workflow step, or a unit enqueued with dependsOn): not ready, in no ready count. */
export const BLOCKED = ["blocked"] as const satisfies readonly UnitStatus[];
/** The backlog: waiting to be dispatched. */
export const BACKLOG = ["pending"] as const satisfies readonly UnitStatus[];
/** Handed to the broker and not yet started: what RTB_BROADCAST_MAX_QUEUE bounds. */
export const OUTSTANDING = ["dispatched", "queued"] as const satisfies readonly UnitStatus[];
/** Dispatched and not finished: what a group's max_in_flight bounds and the reconciler watches. */
export const IN_FLIGHT = ["dispatched", "queued", "processing"] as const satisfies readonly UnitStatus[];
/** Finished: nothing happens to the unit again unless an operator retries it. */
export const TERMINAL = ["success", "error", "cancelled"] as const satisfies readonly UnitStatus[];
/** What an operator may cancel: every status that is not terminal (POST /units/:id/cancel, POST /units/cancel). */
export const CANCELLABLE = ["blocked", "pending", "dispatched", "queued", "processing"] as const satisfies readonly UnitStatus[];
/** What an attempt can end as (a report's outcome); `cancelled` is the operator's, never reported. */
export const OUTCOMES = ["success", "error"] as const satisfies readonly UnitStatus[];
/** What the leader and agents report; `dispatched` is the api's own. */
export const REPORTED_STATUSES = ["queued", "processing", "success", "error"] as const satisfies readonly UnitStatus[];

export type InFlightStatus = (typeof IN_FLIGHT)[number];
export type TerminalStatus = (typeof TERMINAL)[number];
export type CancellableStatus = (typeof CANCELLABLE)[number];
export type ReportedStatusName = (typeof REPORTED_STATUSES)[number];

const member = <T extends UnitStatus>(set: readonly T[]) => (status: string): status is T => (set as readonly string[]).includes(status);
export const isUnitStatus = member(UNIT_STATUSES);
export const isInFlight = member(IN_FLIGHT);
export const isTerminal = member(TERMINAL);
export const isCancellable = member(CANCELLABLE);

/** A count per status, every status present: the shape of GET / `counts` and the tallies. */
export const zeroCounts = (): Record<UnitStatus, number> => Object.fromEntries(UNIT_STATUSES.map((s) => [s, 0])) as Record<UnitStatus, number>;
