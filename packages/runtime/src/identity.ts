import { hostname } from "node:os";

/** A default instance id: host and pid, unique enough to tell processes apart in reports. */
export const defaultInstanceId = (service: string) => `${service}-${hostname()}-${process.pid}`;
