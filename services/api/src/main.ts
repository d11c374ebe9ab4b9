import { runService } from "@rtb/runtime";
import { loadApiConfig } from "./config.ts";
import { startApiService } from "./api-service.ts";

// The composition root: the only place that reads process.env.
await runService("api", process.env, loadApiConfig, (config, logger, lifecycle, tracing) =>
  startApiService(config, logger, { listen: true, signal: lifecycle.signal, tracing }),
);
