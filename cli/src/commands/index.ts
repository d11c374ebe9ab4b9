import type { Command } from "../command.ts";
import { cancel, retry } from "./retry.ts";
import { enqueue } from "./enqueue.ts";
import { go } from "./go.ts";
import { migrate, seed } from "./database.ts";
import { next } from "./next.ts";
import { pause } from "./pause.ts";
import { schedule, schedules } from "./schedules.ts";
import { status } from "./status.ts";
import { unit } from "./unit.ts";
import { units } from "./units.ts";
import { workflow, workflows } from "./workflows.ts";

/** In the order `rtb --help` lists them: the operator flow first. */
export const commands: Command[] = [status, next, go, pause, enqueue, units, unit, retry, cancel, workflows, workflow, schedules, schedule, migrate, seed];
