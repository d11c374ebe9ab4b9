/**
 * The rules the schemas cannot say, for the document's info.description (CommonMark). The
 * guide with examples is docs/protocol.md; this is its summary, with this installation's figures.
 */
export function protocolRules(o: { maxMessageBytes: number; heartbeat: { defaultMs: number; maxMs: number; seenRecentlyMs: number }; processingTimeoutMs: number; maxAgentKinds: number }): string {
  return [
    "rtb's agents talk to it only through these RabbitMQ messages (AMQP 0-9-1), so they can be written in any language. Bodies are JSON (UTF-8), `v: 1`; every consumer validates what it receives, ignores fields it does not know, and dead-letters what fails.",
    "",
    "**An agent, in short.** Declare (or passively check) `jobs.<kind>` with exactly the arguments below and bind it to the jobs exchange by the kind; declare a server-named exclusive auto-delete queue bound to the control exchange; set a prefetch (your concurrency); for each unit of a job report `processing`, run it, report `success` or `error` to the inbox through the default exchange (persistent, publisher confirms), and ack the job only once every report of its units is confirmed.",
    "",
    "**Job forms.** A job carries one unit (`unitId`, `attempt`, `kind`, `payload`, `deps?`, `traceparent?`) or a batch (`kind`, `units: [{unitId, attempt, payload, deps?, traceparent?}]`); a body with `units` is a batch. Run each unit of a batch as if it came alone and report each.",
    "",
    "**Traces.** `traceparent` (W3C trace context, version 00) travels per unit: copy a job unit's into each report of that unit (or send your own span's, its child); a job of one unit also has it as the AMQP header `traceparent`. A malformed one is read as absent, never refused.",
    "",
    "**Errors.** `error: {message, retryable, noAgent?}`: `message` at most 4,000 UTF-16 code units (a character outside the Basic Multilingual Plane counts 2; never cut between the two); `retryable: true` lets the api retry with backoff while attempts remain, `false` ends the unit in error; `noAgent` is the leader's only (an agent must not send it).",
    "",
    `**Heartbeats.** A status message with \`updates: []\` every RTB_HEARTBEAT_MS (default ${o.heartbeat.defaultMs} ms, at most ${o.heartbeat.maxMs}), with \`source.startedAt\` fixed for the process lifetime, \`counters.deadLettered\` (a running total) and, from an agent, \`kinds\` (at most ${o.maxAgentKinds}). The api lists an instance for ${o.heartbeat.seenRecentlyMs / 1000} s after its last heartbeat; \`kinds\` releases units waiting for an agent of those kinds. When heartbeats stop nothing is taken from the agent: RabbitMQ redelivers its unacked jobs when its connection closes, and the api ends (as a retryable error) an attempt still \`processing\` after RTB_PROCESSING_TIMEOUT_MS (${o.processingTimeoutMs} ms here).`,
    "",
    "**Acks.** Manual acks on job queues. Ack after the reports are confirmed. A report that cannot be confirmed: requeue the job (after a pause), so a unit may run twice (at-least-once; the api ignores a repeated or stale report). An invalid job: reject without requeue (it goes to the dead-letter exchange) and count it in your heartbeat's `counters.deadLettered`.",
    "",
    "**Cancels.** A `cancel` message on the control exchange names attempts: abort a running one and report nothing more for it; drop a job of one when it arrives (ack it, no report).",
    "",
    "**Shutdown (SIGTERM).** Stop consuming (basic.cancel), let jobs in hand finish within your deadline, then stop the handlers and hand back what is left: requeue a job none of whose units was reported; of a batch partly reported, publish the unreported units as a new job to the jobs exchange (routing key = kind, persistent, confirmed), then ack the original. Never report an error for a unit your own shutdown interrupted.",
    "",
    `**Sizes.** No message may exceed RTB_BROKER_MAX_MESSAGE_BYTES (${o.maxMessageBytes} bytes here; RabbitMQ closes the channel on a larger one). A success whose result cannot fit must be reported as a permanent error instead. Batches: dispatch 1..10,000 units, batch jobs 1..1,000, status updates 0..10,000, cancels 1..10,000.`,
    "",
    "Queue arguments are in each channel's `bindings.amqp.x-arguments` (the AMQP binding has no field for them), bindings in `x-bindings`. The guide: docs/protocol.md in the rtb repository.",
  ].join("\n");
}
