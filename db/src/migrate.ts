import {
  CompiledQuery,
  Kysely,
  Migrator,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseConnection,
  type Driver,
  type MigrationResult,
} from "kysely";
import { migrations } from "./migrations/index.ts";

/** In the key space of the top-up's, the seed's and the duties' locks (0x727462_xx). */
const MIGRATION_LOCK = 0x727462_20;

/**
 * Bring the schema up to date, in one transaction holding a transaction-scoped advisory lock,
 * so replicas may race safely: the one that gets the lock migrates, the others then find the
 * schema up to date. Not kysely's own lock: its PostgreSQL adapter takes a session-level
 * `pg_advisory_lock` in a statement of its own before its transaction and unlocks after it,
 * and behind PgBouncer in transaction mode those three may run on three server connections:
 * the unlock misses, and the lock stays on a server connection PgBouncer keeps, where every
 * later migration waits for it (an hour: kysely's lock_timeout). A migration that fails rolls
 * everything back, as kysely's transaction did.
 */
export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResult[]> {
  return db.getExecutor().provideConnection(async (connection) => {
    // No parameters: sent as one simple query.
    await connection.executeQuery(CompiledQuery.raw(`BEGIN; SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`));
    try {
      const migrator = new Migrator({
        db: onConnection(connection),
        provider: { getMigrations: async () => migrations },
        migrationTableName: "rtb_migrations",
        migrationLockTableName: "rtb_migrations_lock",
        // Ours is the transaction.
        disableTransactions: true,
      });
      const { error, results = [] } = await migrator.migrateToLatest();
      if (error) {
        const failed = results.find((r) => r.status === "Error");
        throw new Error(`migration ${failed?.migrationName ?? "(unknown)"} failed`, { cause: error });
      }
      await connection.executeQuery(CompiledQuery.raw("COMMIT"));
      return results;
    } catch (err) {
      await connection.executeQuery(CompiledQuery.raw("ROLLBACK")).catch(() => {});
      throw err;
    }
  });
}

/** The migrations' lock is the caller's transaction's: kysely's is not taken. */
class LockedByCaller extends PostgresAdapter {
  override async acquireMigrationLock(): Promise<void> {}
  override async releaseMigrationLock(): Promise<void> {}
}

/** A Kysely for the migrator that runs everything on `connection`, inside the caller's transaction. */
function onConnection(connection: DatabaseConnection): Kysely<any> {
  const noTransactions = async () => {
    throw new Error("migrateToLatest runs the migrations in its own transaction");
  };
  const driver: Driver = {
    init: async () => {},
    acquireConnection: async () => connection,
    beginTransaction: noTransactions,
    commitTransaction: noTransactions,
    rollbackTransaction: noTransactions,
    releaseConnection: async () => {},
    destroy: async () => {},
  };
  return new Kysely<any>({
    dialect: {
      createAdapter: () => new LockedByCaller(),
      createDriver: () => driver,
      createIntrospector: (k) => new PostgresIntrospector(k),
      createQueryCompiler: () => new PostgresQueryCompiler(),
    },
  });
}
