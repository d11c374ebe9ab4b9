import { z } from "zod";
import { kindSchema, NAME_MAX_LENGTH } from "./names.ts";
import { REPORTED_STATUSES } from "./statuses.ts";
import { SpawnSchema } from "./workflows.ts";

/**
 * Message contracts, one schema per message type, each with a version field. Every consumer
 * validates what it receives; a message that fails is dead-lettered and counted, never fatal.
 * Messages carry batches where that costs no correctness (several units per outbox message,
 * several status updates per inbox message, several units of one kind per job when the job
 * queue is deep).
 */
const unitId = z.number().int().positive().describe("The unit's id (a bigint serial in PostgreSQL, always below 2^53).");
const attempt = z.number().int().positive().describe("Which attempt of the unit this is, from 1; reports of another attempt than the current one are ignored.");
const v = z.literal(1).describe("The message format's version; a consumer dead-letters a version it does not know.");
const kind = kindSchema.describe("The unit's kind: the routing key on rtb.jobs, and the job queue jobs.<kind>.");
/**
 * The most kinds one agent serves (RTB_AGENT_KINDS, or its handler map): all of them travel
 * in each heartbeat, which must fit the smallest message limit (64 KiB) at 100 characters each.
 */
export const MAX_AGENT_KINDS = 500;

/**
 * A workflow step's (or a unit enqueued with dependsOn) dependencies' results, by step name (a
 * dependency outside workflows by its ref, else its id): only those that succeeded. Absent for
 * a unit without dependencies.
 */
const deps = z.record(z.string(), z.unknown()).optional().describe("The results of the dependencies that succeeded, by step name (or ref, else id); absent without dependencies.");

const payload = z.unknown().describe("The unit's payload, any JSON, as the producer enqueued it.");

/** The longest error message a report may carry, in UTF-16 code units (zod's and JavaScript's string length). */
export const ERROR_MESSAGE_MAX_LENGTH = 4_000;

/**
 * `message` cut to at most `max` UTF-16 code units, never between the two halves of a surrogate
 * pair (a character outside the Basic Multilingual Plane, an emoji say): half of one would be
 * sent as a lone surrogate, which JSON carries as `\ud83d` and no reader can show.
 */
export function cutMessage(message: string, max = ERROR_MESSAGE_MAX_LENGTH): string {
  if (message.length <= max) return message;
  const last = message.charCodeAt(max - 1);
  return message.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/** A W3C trace context `traceparent`, version 00: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`. */
export const TRACEPARENT_PATTERN = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
/** Its length: every traceparent rtb sends is version 00, exactly this long. */
export const TRACEPARENT_LENGTH = 55;

/**
 * The unit's trace (OpenTelemetry), per unit: each hop continues the span of the hop before it
 * and sends its own on. Optional: absent when the unit has no trace (tracing off, and no
 * traceparent from its producer); a receiver without tracing ignores it. One that is not a
 * version-00 traceparent (null, another version, upper-case hex, all zeros) reads as absent, as
 * W3C Trace Context says of a malformed header: an optional tracing field must never get a
 * report, and every other update of its message, refused.
 */
const traceparent = (hop: string) =>
  z
    .string()
    .regex(TRACEPARENT_PATTERN)
    .refine((v) => !ALL_ZEROS.test(v))
    .optional()
    .catch(undefined)
    .describe(`W3C trace context (version 00: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>) of ${hop}: the parent of the receiver's span for this unit. Absent when the unit has no trace; a receiver that does not trace ignores it, and one that is malformed is read as absent.`);
/** A trace id or span id of zeros is invalid (W3C Trace Context). */
const ALL_ZEROS = /^00-(?:0{32}-|[0-9a-f]{32}-0{16}-)/;

export const DispatchedUnit = z.object({ unitId, attempt, kind, payload, deps, traceparent: traceparent("the api's dispatch span") }).describe("One unit to route: one attempt of it.");
export type DispatchedUnit = z.infer<typeof DispatchedUnit>;

/** api -> outbox -> leader */
export const DispatchMessage = z.object({
  v,
  type: z.literal("dispatch").describe("Tells a dispatch message."),
  units: z.array(DispatchedUnit).min(1).max(10_000).describe("The units to route (rtb sends up to 100 per message, within the byte limit)."),
}).describe("api -> outbox -> leader: units to route to their job queues.");
export type DispatchMessage = z.infer<typeof DispatchMessage>;

/** leader -> rtb.jobs -> jobs.<kind> -> agent: one unit (what the leader sends while the queue is shallow). */
export const JobMessage = z.object({
  v,
  type: z.literal("job").describe("Tells a job (of one unit here; a batch has `units`)."),
  unitId,
  attempt,
  kind,
  payload,
  deps,
  traceparent: traceparent("the leader's route span"),
}).describe("leader -> rtb.jobs -> jobs.<kind> -> agent: a job of one unit.");
export type JobMessage = z.infer<typeof JobMessage>;

/** The most units one batch job may carry (the leader sends up to RTB_JOB_MAX_UNITS). */
export const MAX_JOB_UNITS = 1_000;

export const JobUnit = z.object({ unitId, attempt, payload, deps, traceparent: traceparent("the leader's route span") }).describe("One unit of a batch job (its kind is the batch's).");
export type JobUnit = z.infer<typeof JobUnit>;

/**
 * leader -> rtb.jobs -> jobs.<kind> -> agent: several units of one kind, sent while
 * `jobs.<kind>` is deep (the units would wait anyway). The agent runs each unit as if it had
 * come alone, reports each, and acks the message once every unit in it is reported.
 */
export const BatchJobMessage = z.object({
  v,
  type: z.literal("job").describe("Tells a job; `units` tells the batch form."),
  kind,
  units: z.array(JobUnit).min(1).max(MAX_JOB_UNITS).describe("The units, each run and reported as if it had come alone; the job is acked once all are reported."),
}).describe("leader -> rtb.jobs -> jobs.<kind> -> agent: several units of one kind, sent while the queue is deep.");
export type BatchJobMessage = z.infer<typeof BatchJobMessage>;

/** What arrives on `jobs.<kind>`: a job of one unit or a batch. */
export const AnyJobMessage = z.union([JobMessage, BatchJobMessage]).describe("What arrives on jobs.<kind>: a job of one unit, or a batch (it has `units`).");
export type AnyJobMessage = z.infer<typeof AnyJobMessage>;

/**
 * Decode a job message of either form. The form is told by its `units` field, so only the one
 * schema that applies runs (a union would try the single form on every batch first, and name
 * the wrong form's fields when one is invalid).
 */
export function parseJob(body: Buffer): ParseResult<AnyJobMessage> {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    return { ok: false, reason: "body is not valid JSON" };
  }
  const batch = typeof json === "object" && json !== null && "units" in json;
  return batch ? validate<AnyJobMessage>(BatchJobMessage, json) : validate<AnyJobMessage>(JobMessage, json);
}

/** The units of a job, whichever form it came in. */
export function jobUnits(job: AnyJobMessage): JobUnit[] {
  if ("units" in job) return job.units;
  const unit: JobUnit = { unitId: job.unitId, attempt: job.attempt, payload: job.payload };
  if (job.deps !== undefined) unit.deps = job.deps;
  if (job.traceparent !== undefined) unit.traceparent = job.traceparent;
  return [unit];
}

/** The statuses other services report; `dispatched` is the api's own. */
export const ReportedStatus = z.enum(REPORTED_STATUSES).describe("queued: the leader routed it; processing: an agent started it; success, error: the attempt ended.");
export type ReportedStatus = z.infer<typeof ReportedStatus>;

export const StatusUpdate = z.object({
  unitId,
  attempt,
  status: ReportedStatus,
  at: z.iso.datetime({ offset: true }).describe("When it happened, by the sender's clock (ISO 8601 with an offset; a time ahead of the api's clock is recorded as the api's now)."),
  /** success: the handler's result. */
  result: z.unknown().optional().describe("success: the handler's result, any JSON (null when it returned nothing)."),
  /**
   * error: what went wrong, and whether another attempt may help. `noAgent` (the leader's
   * only): no agent consumes the unit's kind yet; the unit waits for one, and this dispatch
   * does not count as an attempt.
   */
  error: z
    .object({
      message: z.string().max(ERROR_MESSAGE_MAX_LENGTH).describe(`What went wrong, for people: at most ${ERROR_MESSAGE_MAX_LENGTH.toLocaleString("en")} UTF-16 code units (JavaScript's string length; a character outside the Basic Multilingual Plane counts 2).`),
      retryable: z.boolean().describe("true: another attempt may succeed (retried with backoff while attempts remain); false: the unit ends in error now."),
      noAgent: z.literal(true).optional().describe("The leader's only: no agent consumes this kind; the unit waits for one and the attempt is not used up."),
    })
    .optional()
    .describe("error: what went wrong, and whether another attempt may help."),
  /** success: new steps (and a join) the handler fanned out, enqueued with the success, once. */
  spawn: SpawnSchema.optional().describe("success: new steps (and a join) the handler fanned out, enqueued with the success, once."),
  /** The sender's span for this attempt (an agent's handler span; the leader's route span). */
  traceparent: traceparent("the sender's span for this attempt (an agent's handler span, or the job's traceparent as it came when the agent does not trace; the leader's route span)"),
}).describe("One report: a unit's attempt reached a status.");
export type StatusUpdate = z.infer<typeof StatusUpdate>;

/** How busy the job tracker (the jobs.<kind> queues) was when the leader last looked. */
export const Utilization = z.object({
  at: z.iso.datetime({ offset: true }).describe("When the leader read the job queues."),
  kinds: z
    .record(
      z.string(),
      z.object({
        ready: z.number().int().min(0).describe("Jobs waiting in jobs.<kind>."),
        consumers: z.number().int().min(0).describe("Agents consuming jobs.<kind>."),
      }),
    )
    .describe("Per kind: its job queue."),
});
export type Utilization = z.infer<typeof Utilization>;

/** Who sent a status message: `startedAt` tells one process lifetime from the next. */
export const Source = z.object({
  service: z.enum(["leader", "agent", "api"]).describe("Which kind of process sent it."),
  id: z.string().min(1).max(NAME_MAX_LENGTH).describe("The sender's id (RTB_AGENT_ID, RTB_LEADER_ID), stable across its restarts."),
  startedAt: z.iso.datetime({ offset: true }).optional().describe("When this process lifetime started: the same in every message of one lifetime."),
}).describe("Who sent a status message.");
export type Source = z.infer<typeof Source>;

/**
 * leader, agents -> inbox -> api. With no updates it is a heartbeat: the sender is alive,
 * and its running counters are current (they are stored per process lifetime).
 */
export const StatusMessage = z.object({
  v,
  type: z.literal("status").describe("Tells a status message."),
  source: Source,
  updates: z.array(StatusUpdate).max(10_000).describe("The reports, in order; none in a heartbeat."),
  /** Only on the active leader's routing reports, never on heartbeats. */
  utilization: Utilization.optional().describe("Only on the active leader's routing reports, never on heartbeats."),
  /** Heartbeats only: the sender's running totals. */
  counters: z.object({ deadLettered: z.number().int().min(0).describe("Messages this process lifetime dead-lettered, in all (a total, never a delta).") }).optional().describe("Heartbeats only: the sender's running totals."),
  /** Agents' heartbeats: the kinds this agent consumes (units waiting for an agent of these kinds go back to the backlog). */
  kinds: z.array(kindSchema).max(MAX_AGENT_KINDS).optional().describe("Agents' heartbeats: the kinds this agent consumes (units waiting for an agent of these kinds go back to the backlog)."),
}).describe("leader, agents -> inbox -> api: reports; with no updates, a heartbeat.");
export type StatusMessage = z.infer<typeof StatusMessage>;

/** One attempt of one unit, as a control message names it. */
export const UnitAttempt = z.object({ unitId, attempt }).describe("One attempt of one unit.");
export type UnitAttempt = z.infer<typeof UnitAttempt>;

/**
 * api -> rtb.control (fanout) -> every agent: these attempts are cancelled (recorded in
 * PostgreSQL first). An agent aborts the handler running one of them, and drops their jobs
 * when they arrive. Sent when an operator cancels units in flight, and again when a report
 * shows a job of a cancelled attempt about to run (an agent that missed the first one).
 */
export const CancelMessage = z.object({
  v,
  type: z.literal("cancel").describe("Tells a cancel message."),
  units: z.array(UnitAttempt).min(1).max(10_000).describe("The attempts cancelled."),
}).describe("api -> rtb.control (fanout) -> every agent: these attempts are cancelled.");
export type CancelMessage = z.infer<typeof CancelMessage>;

/** What travels on the control exchange: cancels, for now; a consumer ignores a type it does not know. */
export const ControlMessage = CancelMessage;
export type ControlMessage = CancelMessage;

/**
 * A dispatch message, unit by unit: one unit that fails its schema must not take the others
 * down with it. Invalid units that can still be identified are returned so the leader can
 * report them as permanent errors (otherwise they would sit in `dispatched` forever).
 */
const DispatchEnvelope = z.object({ v: z.literal(1), type: z.literal("dispatch"), units: z.array(z.unknown()).min(1).max(10_000) });
const UnitRef = UnitAttempt;

export type ParsedDispatch =
  | { ok: true; units: DispatchedUnit[]; invalid: { unitId: number; attempt: number; reason: string }[]; unidentified: number }
  | { ok: false; reason: string };

export function parseDispatch(body: Buffer): ParsedDispatch {
  const envelope = parseMessage(DispatchEnvelope, body);
  if (!envelope.ok) return envelope;
  const result = { ok: true as const, units: [] as DispatchedUnit[], invalid: [] as { unitId: number; attempt: number; reason: string }[], unidentified: 0 };
  for (const raw of envelope.value.units) {
    const unit = DispatchedUnit.safeParse(raw);
    if (unit.success) {
      result.units.push(unit.data);
      continue;
    }
    const ref = UnitRef.safeParse(raw);
    const issue = unit.error.issues[0];
    if (ref.success) result.invalid.push({ ...ref.data, reason: `${issue?.path.join(".") || "unit"}: ${issue?.message ?? "invalid"}` });
    else result.unidentified++;
  }
  return result;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Decode a message body: JSON first, then the schema. Never throws. */
export function parseMessage<T>(schema: z.ZodType<T>, body: Buffer): ParseResult<T> {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    return { ok: false, reason: "body is not valid JSON" };
  }
  return validate(schema, json);
}

function validate<T>(schema: z.ZodType<T>, json: unknown): ParseResult<T> {
  const result = schema.safeParse(json);
  if (result.success) return { ok: true, value: result.data };
  const issue = result.error.issues[0];
  return { ok: false, reason: `${issue?.path.join(".") || "(message)"}: ${issue?.message ?? "invalid"}` };
}

export function encodeMessage(message: DispatchMessage | JobMessage | BatchJobMessage | StatusMessage | CancelMessage): Buffer {
  return Buffer.from(JSON.stringify(message));
}
