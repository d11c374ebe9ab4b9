import { defineConfig } from "vitest/config";

// One project per workspace; unit tests sit beside the code (src/**/*.test.ts), integration
// tests in each workspace's test/. The global setup finds PostgreSQL and RabbitMQ (it runs
// once per project: each project gets its own template database and run id).
const project = (name: string, dir: string) => ({
  extends: true as const,
  test: { name, include: [`${dir}/src/**/*.test.ts`, `${dir}/test/**/*.test.ts`] },
});

export default defineConfig({
  // @rtb/protocol, @rtb/runtime and @rtb/agent export their built dist/ (what a packed tarball
  // holds); the repository runs their sources, through tsconfig.base.json's `paths` (as tsc and tsx do).
  resolve: { tsconfigPaths: true },
  test: {
    globalSetup: ["./test/support/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      // Phase 1 (sequence.groupOrder 0, the default): these run together, files in parallel.
      project("protocol", "packages/protocol"),
      project("runtime", "packages/runtime"),
      project("db", "db"),
      project("api", "services/api"),
      project("leader", "services/leader"),
      project("agent", "services/agent"),
      project("cli", "cli"),
      { extends: true as const, test: { name: "system", include: ["test/system/**/*.test.ts"] } },
      { extends: true as const, test: { name: "layout", include: ["test/*.test.ts"] } },
      // Phase 2: tests that stop and restart PostgreSQL and RabbitMQ: servers this project owns
      // (global-setup.ts starts a throwaway cluster and node for it), never the shared ones. vitest runs
      // the groups one after another (lowest groupOrder first, each waiting for the one before
      // to finish), so these start only when every other file is done, and one file at a time.
      // `vitest run --project disruptive` runs only these; `--project '!disruptive'` all but these.
      {
        extends: true as const,
        test: {
          name: "disruptive",
          include: ["test/disruptive/**/*.test.ts"],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
