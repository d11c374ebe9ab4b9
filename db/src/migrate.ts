import { Migrator, type Kysely, type MigrationResult } from "kysely";
import { migrations } from "./migrations/index.ts";

/** Bring the schema up to date. Kysely's migrator takes a lock, so replicas may race safely. */
export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResult[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: "rtb_migrations",
    migrationLockTableName: "rtb_migrations_lock",
  });
  const { error, results = [] } = await migrator.migrateToLatest();
  if (error) {
    const failed = results.find((r) => r.status === "Error");
    throw new Error(`migration ${failed?.migrationName ?? "(unknown)"} failed`, { cause: error });
  }
  return results;
}
