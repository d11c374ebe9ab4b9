import { z } from "zod";
import { TERMINAL } from "../statuses.ts";

/**
 * Completion callbacks: what a producer names (`callbackUrl`, on a unit or a group) and what rtb
 * POSTs there when the unit ends, signed as Standard Webhooks sign (webhook-id,
 * webhook-timestamp, webhook-signature).
 */

/** The longest callback URL taken (in UTF-16 code units, as JavaScript counts a string). */
export const MAX_CALLBACK_URL_LENGTH = 2048;

/** Says what is wrong with a callback URL under the operator's rules, or null (the api's, from RTB_WEBHOOK_ALLOWED_HOSTS). */
export type CallbackUrlCheck = (url: string) => string | null;

/** `callbackUrl` of a request: a string within the length, then the api's rules. */
export function callbackUrlField(check: CallbackUrlCheck | undefined) {
  return z
    .string()
    .max(MAX_CALLBACK_URL_LENGTH, { message: `expected a URL of at most ${MAX_CALLBACK_URL_LENGTH} characters` })
    // Kept as the WHATWG URL parser writes it, which is what fetch calls (host lower-cased, a
    // default port dropped, %2E decoded, numeric IPv4 as dotted quads, non-ASCII and spaces
    // percent-encoded): the stored URL's authority is its host for the per-host cap
    // (migration 0015), and the rules below, checked again before each attempt, see that form.
    .transform((url) => {
      try {
        return new URL(url).href;
      } catch {
        return url;
      }
    })
    .superRefine((url, ctx) => {
      if (url.length > MAX_CALLBACK_URL_LENGTH) {
        ctx.addIssue({ code: "custom", message: `expected a URL of at most ${MAX_CALLBACK_URL_LENGTH} characters as the URL parser writes it (percent-encoded: ${url.length})` });
        return;
      }
      const problem = check ? check(url) : "callbacks are off: RTB_WEBHOOK_ALLOWED_HOSTS is empty";
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .describe(
      `Where rtb POSTs the unit's final state when it ends (success, error or cancelled), signed with Standard Webhooks headers: an http(s) URL, at most ${MAX_CALLBACK_URL_LENGTH} characters as the URL parser writes it (stored so), ` +
        "without user:password, whose host is in RTB_WEBHOOK_ALLOWED_HOSTS. Left out: the group's callbackUrl, if it has one.",
    );
}

const time = z.iso.datetime();

/** The body of a callback request (the `webhooks` of /openapi.json). */
export const callbackPayload = z
  .object({
    type: z.literal("unit.finished").describe("What happened: a unit reached a terminal status."),
    timestamp: time.describe("When the unit ended (the database's clock)."),
    data: z
      .object({
        id: z.number().int().min(1).describe("The unit's id."),
        ref: z.string().nullable().describe("The producer's ref; null when none was given."),
        kind: z.string().describe("Its kind."),
        group: z.string().describe("Its group."),
        status: z.enum(TERMINAL).describe(`Its final status: ${TERMINAL.join(", ")}.`),
        attempt: z.number().int().min(0).describe("The attempt it ended on (0: cancelled before any dispatch)."),
        result: z.unknown().describe("What the agent reported with success; null otherwise."),
        error: z.string().nullable().describe("The last error, for an error; null otherwise."),
        finishedAt: time.describe("When it ended."),
        workflow: z.object({ id: z.number().int().min(1).describe("The workflow's id."), step: z.string().describe("The step's name.") }).nullable().describe("The workflow and step it is; null outside workflows."),
      })
      .describe("The unit as it ended."),
  })
  .describe(
    "POSTed to the unit's callbackUrl (else its group's) once it ends, at least once: retried with exponential backoff until the receiver answers 2xx, " +
      "up to RTB_WEBHOOK_MAX_ATTEMPTS. Headers: webhook-id (the same on every retry of one delivery), webhook-timestamp (seconds), " +
      "webhook-signature (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with RTB_WEBHOOK_SECRET), as Standard Webhooks define them.",
  );
export type CallbackPayload = z.output<typeof callbackPayload>;

/** One delivery, as GET /units/:id shows it. */
export const callbackDelivery = z
  .object({
    webhookId: z.string().describe("The webhook-id header of every attempt of this delivery."),
    url: z.string().describe("Where it is POSTed: the unit's callbackUrl, else its group's when the unit ended."),
    state: z.enum(["pending", "delivered", "given_up"]).describe("pending (being sent or waiting for its next attempt), delivered (a 2xx answer), given_up (RTB_WEBHOOK_MAX_ATTEMPTS used)."),
    attempts: z.number().int().min(0).describe("Attempts made (or under way) so far."),
    nextAttemptAt: time.nullable().describe("Pending: the next attempt is not before then."),
    createdAt: time.describe("When the unit ended and the delivery was written."),
    finishedAt: time.nullable().describe("When it was delivered or given up."),
    history: z
      .array(
        z.object({
          at: time.describe("When the attempt ended."),
          outcome: z.enum(["delivered", "failed", "given_up"]).describe("delivered (a 2xx), failed (retried later) or given_up (the last attempt failed)."),
          statusCode: z.number().int().optional().describe("The receiver's HTTP status, when it answered."),
          error: z.string().optional().describe("Why the attempt failed (a non-2xx answer, a timeout, a refused connection)."),
        }),
      )
      .describe("Each attempt, oldest first."),
  })
  .describe("A completion callback's delivery.");
