import { runService } from "@rtb/runtime";
import { loadLeaderConfig } from "./config.ts";
import { startLeaderService } from "./leader-service.ts";

// The composition root: the only place that reads process.env.
await runService("leader", process.env, loadLeaderConfig, (config, logger, _lifecycle, tracing) => startLeaderService(config, logger, { tracing }));
