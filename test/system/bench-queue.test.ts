import { expect, it } from "vitest";
import { rawBroker, runScript } from "@rtb/testing";

/** `npm run bench:queue`, tiny: its figures printed, its queue gone; a bad flag refused. Speed is not asserted. */
const benchQueue = (args: string[]) => runScript("scripts/bench-queue.ts", args);

it("carries every message through one queue, prints messages/s and MiB/s, and deletes its queue", async () => {
  const { code, stdout, stderr } = await benchQueue(["--messages", "2000", "--bytes", "100", "--window", "50"]);
  expect(code, stderr).toBe(0);
  expect(stdout).toMatch(/^one (quorum|classic) queue: 2,000 persistent messages of 100 bytes, published with confirms \(window 50\) and consumed \(prefetch 500\) at once$/m);
  expect(stdout).toMatch(/^ {2}[\d,]+ messages\/s, [\d.]+ MiB\/s, in [\d.]+ s$/m);
  const conn = await rawBroker();
  try {
    const name = stderr.match(/queue (bench-queue\.\w+)/)?.[1];
    expect(name).toBeDefined();
    const ch = await conn.createChannel();
    ch.on("error", () => {});
    // checkQueue of a missing queue fails (404, closing the channel).
    expect(await ch.checkQueue(name!).then(() => "exists", () => "gone")).toBe("gone");
  } finally {
    await conn.close().catch(() => {});
  }
});

it("refuses a bad flag, naming it (exit 2)", async () => {
  const { code, stderr } = await benchQueue(["--bytes", "0"]);
  expect(code).toBe(2);
  expect(stderr).toContain("--bytes=0: expected a whole number from 1 to 16777216");
});
