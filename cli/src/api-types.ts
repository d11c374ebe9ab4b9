/** The api's JSON, as the CLI reads it (services/api/src/http/*; timestamps are ISO strings). */

export const STATUSES = ["pending", "dispatched", "queued", "processing", "success", "error", "cancelled"] as const;
export type UnitStatus = (typeof STATUSES)[number];

export interface ServiceInstance {
  id: string;
  startedAt: string;
  lastSeen: string;
  deadLettered: number;
}

/** GET / */
export interface SystemState {
  counts: Record<UnitStatus, number>;
  total: number;
  outstanding: number;
  maxQueue: number;
  dispatching: boolean;
  dispatchingSince: string | null;
  done: boolean;
  leader: { id: string; activeSince: string | null; reportedAt: string; utilization: { at?: string; kinds?: Record<string, { ready: number; consumers: number }> } | null } | null;
  services: { apis: ServiceInstance[]; leaders: ServiceInstance[]; agents: ServiceInstance[] };
  deadLetters: { waiting: number | null; byService: Record<string, number>; rejectedByThisApi: Record<string, number> };
  reports: { applied: number; ignored: Record<string, number> };
  publishes: { dispatched: number; republished: number; unconfirmed: number };
  broker: { connected: boolean; reconnects: number };
}

/** GET /next */
export interface NextUnits {
  limit: number;
  units: { id: number; kind: string; group: string; priority: number; attempt: number; createdAt: string }[];
}

/** GET|POST /go */
export interface GoAnswer {
  dispatching: true;
  changed: boolean;
  since: string | null;
  dispatchedNow: number;
  message: string;
}

/** POST /pause */
export interface PauseAnswer {
  dispatching: false;
  changed: boolean;
  since: string | null;
  inFlight: number;
  message: string;
}

export interface Unit {
  id: number;
  kind: string;
  group: string;
  priority: number;
  payload: unknown;
  ref: string | null;
  status: UnitStatus;
  attempt: number;
  maxAttempts: number;
  notBefore: string | null;
  dispatchedAt: string | null;
  result: unknown;
  lastError: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface UnitEvent {
  attempt: number;
  status: string;
  at: string;
  recordedAt: string;
  source: string;
  detail: unknown;
}

/** What POST /units takes for one unit. */
export interface NewUnit {
  kind: string;
  group?: string;
  priority?: number;
  payload?: unknown;
  ref?: string;
  maxAttempts?: number;
}

/** POST /units with an array. */
export interface EnqueueBatchAnswer {
  created: number;
  existing: number;
  units: { id: number; ref: string | null; status: UnitStatus; created: boolean }[];
}

/** POST /units with one object. */
export interface EnqueueOneAnswer {
  created: boolean;
  unit: Unit;
}

/** GET /units */
export interface UnitPage {
  units: Unit[];
  nextCursor: string | null;
}
