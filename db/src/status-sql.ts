import { sql, type RawBuilder } from "kysely";
import type { UnitStatus } from "@rtb/protocol";

/**
 * A set of statuses from @rtb/protocol as SQL: `status IN ${statusList(IN_FLIGHT)}`. Literals,
 * not parameters, so the planner matches the partial indexes written with the same lists.
 */
export const statusList = (set: readonly UnitStatus[]): RawBuilder<unknown> => sql`(${sql.join(set.map((s) => sql.lit(s)))})`;
