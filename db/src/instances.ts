import { sql } from "kysely";
import type { Db } from "./database.ts";
import type { ServiceInstancesTable } from "./schema.ts";

export interface ServiceInstance {
  service: ServiceInstancesTable["service"];
  id: string;
  startedAt: Date;
  lastSeen: Date;
  deadLettered: number;
}

/** Instances (leaders, agents, api replicas) seen in the last `withinMs`, newest first. */
export async function recentInstances(db: Db, withinMs: number): Promise<ServiceInstance[]> {
  const rows = await db
    .selectFrom("service_instances")
    .selectAll()
    .where("last_seen", ">", sql<Date>`now() - make_interval(secs => ${withinMs / 1000})`)
    .orderBy("service")
    .orderBy("id")
    .orderBy("started_at", "desc")
    .execute();
  return rows.map((r) => ({ service: r.service, id: r.id, startedAt: r.started_at, lastSeen: r.last_seen, deadLettered: r.dead_lettered }));
}

/** Messages dead-lettered per service, over every instance that ever reported. */
export async function deadLetteredByService(db: Db): Promise<Record<ServiceInstancesTable["service"], number>> {
  const rows = await db
    .selectFrom("service_instances")
    .select(["service", (eb) => eb.fn.sum<number>("dead_lettered").as("n")])
    .groupBy("service")
    .execute();
  const totals = { api: 0, leader: 0, agent: 0 };
  for (const r of rows) totals[r.service] = Number(r.n);
  return totals;
}
