import type { Migration } from "kysely";
import * as m0001 from "./0001_initial.ts";
import * as m0002 from "./0002_service_instances.ts";
import * as m0003 from "./0003_operator_surface.ts";
import * as m0004 from "./0004_fair_share.ts";
import * as m0005 from "./0005_folded_tallies.ts";
import * as m0006 from "./0006_bounded_inputs.ts";
import * as m0007 from "./0007_waiting_for_agents.ts";
import * as m0008 from "./0008_schedules.ts";
import * as m0009 from "./0009_retention.ts";
import * as m0010 from "./0010_workflows.ts";
import * as m0011 from "./0011_duty_leases.ts";
import * as m0012 from "./0012_trace_context.ts";
import * as m0013 from "./0013_callbacks.ts";
import * as m0014 from "./0014_callback_times.ts";
import * as m0015 from "./0015_callback_hosts.ts";

/** Every migration, in order. Never edit one that has landed: add the next number. */
export const migrations: Record<string, Migration> = {
  "0001_initial": m0001,
  "0002_service_instances": m0002,
  "0003_operator_surface": m0003,
  "0004_fair_share": m0004,
  "0005_folded_tallies": m0005,
  "0006_bounded_inputs": m0006,
  "0007_waiting_for_agents": m0007,
  "0008_schedules": m0008,
  "0009_retention": m0009,
  "0010_workflows": m0010,
  "0011_duty_leases": m0011,
  "0012_trace_context": m0012,
  "0013_callbacks": m0013,
  "0014_callback_times": m0014,
  "0015_callback_hosts": m0015,
};
