// An rtb agent of its own, in plain JavaScript (ESM: package.json says "type": "module"):
// `node agent.js`. It serves units of kind `render`, taking their jobs from the broker the
// environment names (RTB_BROKER_HOST, ...: the same variables as the built-in agent, see
// rtb's README, Configuration). Ctrl-C or SIGTERM: the jobs in hand finish, then it exits 0.
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { defineHandler, PermanentJobError, runAgent } from "@rtb/agent";

const render = defineHandler({
  // Checked before run: a unit whose payload does not fit ends as a permanent error naming
  // the field (`payload.scene: Invalid input: expected string, received undefined`).
  payload: z.object({
    scene: z.string().min(1),
    frames: z.number().int().min(1).max(100).default(1),
  }),
  // payload is what the schema parsed: { scene: string, frames: number }.
  async run({ payload, unitId, attempt, signal, logger }) {
    if (payload.scene === "missing") throw new PermanentJobError(`no scene called "missing"`); // another attempt cannot help
    const frames = [];
    for (let i = 1; i <= payload.frames; i++) {
      // The work, here a stand-in: it stops when the signal aborts (RTB_AGENT_TIMEOUT_MS, shutdown).
      await sleep(5, undefined, { signal });
      frames.push(createHash("sha256").update(`${payload.scene}#${i}`).digest("hex").slice(0, 12));
    }
    logger.info({ scene: payload.scene, frames: frames.length }, "rendered");
    // The unit's result: any JSON (GET /units/:id shows it).
    return { scene: payload.scene, frames, unitId, attempt };
  },
});

// Serves every kind in the map (RTB_AGENT_KINDS, when set, picks some of them).
await runAgent({ render });
