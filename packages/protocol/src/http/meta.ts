import { z } from "zod";
import { BROKER_NAME_MAX_LENGTH, KIND_MAX_LENGTH, KIND_PATTERN, KIND_RULE, NAME_MAX_LENGTH } from "../names.ts";
import { BACKLOG, IN_FLIGHT, OUTCOMES, OUTSTANDING, TERMINAL, UNIT_STATUSES } from "../statuses.ts";

/**
 * GET /meta: the vocabulary, served, so that a client written in anything (the dashboard's
 * browser script first) reads the statuses and rules from the api instead of copying them.
 */
const status = z.enum(UNIT_STATUSES);
const statuses = z.array(status);
export const metaView = z.object({
  statuses: statuses.describe("Every unit status, in the order of a unit's life."),
  sets: z.object({
    backlog: statuses.describe("Waiting to be dispatched."),
    outstanding: statuses.describe("Handed to the broker and not yet started: what RTB_BROADCAST_MAX_QUEUE bounds."),
    inFlight: statuses.describe("Dispatched and not finished: what a group's maxInFlight bounds."),
    terminal: statuses.describe("Finished: nothing happens to the unit again unless an operator retries it."),
    outcomes: statuses.describe("What an attempt can end as."),
  }).describe("The sets of statuses the code asks about."),
  names: z.object({
    kindPattern: z.string().describe("A kind: this regular expression (it is also a routing key)."),
    kindRule: z.string().describe("The same rule, in words."),
    kindMaxLength: z.number().int().min(1).describe("The longest kind, in characters."),
    nameMaxLength: z.number().int().describe("A group, a ref."),
    brokerNameMaxLength: z.number().int().min(1).describe("The longest RTB_BROKER_PREFIX and RTB_BROKER_BOX."),
  }).describe("What names may be."),
  limits: z.object({
    maxBatch: z.number().int().describe("RTB_API_MAX_BATCH: units in one POST /units."),
    maxBodyBytes: z.number().int().describe("RTB_API_MAX_BODY_BYTES"),
    maxPayloadBytes: z.number().int().describe("The most bytes a unit's payload JSON may take: one broker message (RTB_BROKER_MAX_MESSAGE_BYTES less the envelope)."),
    maxAttempts: z.number().int().describe("RTB_MAX_ATTEMPTS: a unit's attempts when it does not say."),
  }).describe("This api's request limits."),
});
export type MetaView = z.output<typeof metaView>;

/** The body of GET /meta, for an api running with these limits. */
export const meta = (limits: MetaView["limits"]): MetaView => ({
  statuses: [...UNIT_STATUSES],
  sets: { backlog: [...BACKLOG], outstanding: [...OUTSTANDING], inFlight: [...IN_FLIGHT], terminal: [...TERMINAL], outcomes: [...OUTCOMES] },
  names: { kindPattern: KIND_PATTERN.source, kindRule: KIND_RULE, kindMaxLength: KIND_MAX_LENGTH, nameMaxLength: NAME_MAX_LENGTH, brokerNameMaxLength: BROKER_NAME_MAX_LENGTH },
  limits,
});
