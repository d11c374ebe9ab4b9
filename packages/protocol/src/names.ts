import { z } from "zod";

/**
 * Name rules shared by the api, the database and the broker. A kind is also a routing key
 * and part of a queue name (`jobs.<prefix><kind>`, at most 255 bytes in RabbitMQ), so the
 * units table's CHECK (migration 0001) holds it to the same pattern.
 */
export const KIND_MAX_LENGTH = 100;
export const KIND_PATTERN = /^[A-Za-z0-9_.-]{1,100}$/;
export const KIND_RULE = "1 to 100 letters, digits, '_', '.' or '-'";
/** A group name, a unit's ref, a service instance's id. */
export const NAME_MAX_LENGTH = 200;
/** RTB_BROKER_PREFIX and RTB_BROKER_BOX. */
export const BROKER_NAME_MAX_LENGTH = 100;

export const kindSchema = z.string().regex(KIND_PATTERN, { message: `expected ${KIND_RULE}` });

/**
 * A schedule's name: the kind's rule, so it needs no escaping in a URL path or a command
 * line, and never contains the `@` that ends it in its units' refs (SCHEDULE_REF_PREFIX).
 */
export const SCHEDULE_NAME_MAX_LENGTH = KIND_MAX_LENGTH;
export const SCHEDULE_NAME_PATTERN = KIND_PATTERN;
export const SCHEDULE_NAME_RULE = KIND_RULE;
export const scheduleNameSchema = z.string().regex(SCHEDULE_NAME_PATTERN, { message: `expected ${SCHEDULE_NAME_RULE}` });

/**
 * A unit made by a schedule has the ref `schedule:<name>@<occurrence, ISO>`: the occurrence is
 * the unit's identity, so no pass can make a second unit for it. Producers' refs may not
 * start with this prefix (POST /units refuses them), so theirs never collide with these.
 */
export const SCHEDULE_REF_PREFIX = "schedule:";
export const scheduleRef = (name: string, occurrence: Date) => `${SCHEDULE_REF_PREFIX}${name}@${occurrence.toISOString()}`;

/**
 * A field's name in an error message, by its path (the api's 400s, a handler's payload errors):
 * ["units", 3, "kind"] -> "units[3].kind"; [3, "kind"] -> "[3].kind". A key that would make
 * the name ambiguous or unreadable (empty, with `.`, `[`, `]`, quotes, backslashes, control
 * characters or lone surrogates) is written as a JSON string in brackets: `payload["a.b"]`.
 */
export function fieldName(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => {
      if (typeof p === "number") return `[${p}]`;
      const key = String(p);
      if (!PLAIN_KEY.test(key)) return `[${JSON.stringify(key)}]`;
      return i === 0 ? key : `.${key}`;
    })
    .join("");
}
const PLAIN_KEY = /^[^\u0000-\u001f.[\]"\\\p{Cs}]+$/u;
