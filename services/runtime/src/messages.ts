import { z } from "zod";

/**
 * Message contracts, one schema per message type, each with a version field. Every consumer
 * validates what it receives; a message that fails is dead-lettered and counted, never fatal.
 * Messages carry batches where that costs no correctness (several units per outbox message,
 * several status updates per inbox message); jobs stay one per unit so agents share work fairly.
 */
const unitId = z.number().int().positive();
const attempt = z.number().int().positive();
const kind = z.string().min(1).max(100).regex(/^[A-Za-z0-9_.-]+$/, "letters, digits, '-', '_' or '.'");

export const DispatchedUnit = z.object({ unitId, attempt, kind, payload: z.unknown() });
export type DispatchedUnit = z.infer<typeof DispatchedUnit>;

/** api -> outbox -> leader */
export const DispatchMessage = z.object({
  v: z.literal(1),
  type: z.literal("dispatch"),
  units: z.array(DispatchedUnit).min(1).max(10_000),
});
export type DispatchMessage = z.infer<typeof DispatchMessage>;

/** leader -> rtb.jobs -> jobs.<kind> -> agent */
export const JobMessage = z.object({
  v: z.literal(1),
  type: z.literal("job"),
  unitId,
  attempt,
  kind,
  payload: z.unknown(),
});
export type JobMessage = z.infer<typeof JobMessage>;

/** The statuses other services report; `dispatched` is the api's own. */
export const ReportedStatus = z.enum(["queued", "processing", "success", "error"]);
export type ReportedStatus = z.infer<typeof ReportedStatus>;

export const StatusUpdate = z.object({
  unitId,
  attempt,
  status: ReportedStatus,
  at: z.iso.datetime({ offset: true }),
  /** success: the handler's result. */
  result: z.unknown().optional(),
  /** error: what went wrong, and whether another attempt may help. */
  error: z.object({ message: z.string().max(4_000), retryable: z.boolean() }).optional(),
});
export type StatusUpdate = z.infer<typeof StatusUpdate>;

/** How busy the job tracker (the jobs.<kind> queues) was when the leader last looked. */
export const Utilization = z.object({
  at: z.iso.datetime({ offset: true }),
  kinds: z.record(z.string(), z.object({ ready: z.number().int().min(0), consumers: z.number().int().min(0) })),
});
export type Utilization = z.infer<typeof Utilization>;

/** leader, agents -> inbox -> api */
export const StatusMessage = z.object({
  v: z.literal(1),
  type: z.literal("status"),
  source: z.object({ service: z.enum(["leader", "agent", "api"]), id: z.string().min(1).max(200) }),
  updates: z.array(StatusUpdate).min(1).max(10_000),
  utilization: Utilization.optional(),
});
export type StatusMessage = z.infer<typeof StatusMessage>;

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Decode a message body: JSON first, then the schema. Never throws. */
export function parseMessage<T>(schema: z.ZodType<T>, body: Buffer): ParseResult<T> {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    return { ok: false, reason: "body is not valid JSON" };
  }
  const result = schema.safeParse(json);
  if (result.success) return { ok: true, value: result.data };
  const issue = result.error.issues[0];
  return { ok: false, reason: `${issue?.path.join(".") || "(message)"}: ${issue?.message ?? "invalid"}` };
}

export function encodeMessage(message: DispatchMessage | JobMessage | StatusMessage): Buffer {
  return Buffer.from(JSON.stringify(message));
}
