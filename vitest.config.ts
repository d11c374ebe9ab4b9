import { defineConfig } from "vitest/config";

// One project per workspace; unit tests sit beside the code (src/**/*.test.ts), integration
// tests in each workspace's test/. The global setup finds PostgreSQL and RabbitMQ once per run.
const project = (name: string, dir: string) => ({
  extends: true as const,
  test: { name, include: [`${dir}/src/**/*.test.ts`, `${dir}/test/**/*.test.ts`] },
});

export default defineConfig({
  test: {
    globalSetup: ["./test/support/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      project("db", "db"),
      project("runtime", "services/runtime"),
      project("api", "services/api"),
      project("leader", "services/leader"),
      project("agent", "services/agent"),
      { extends: true as const, test: { name: "system", include: ["test/system/**/*.test.ts"] } },
    ],
  },
});
