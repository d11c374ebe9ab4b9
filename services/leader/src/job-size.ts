/**
 * How many units of a kind go into one job message, from the latest reading of its queue.
 *
 * While `jobs.<kind>` holds fewer waiting jobs than it has consumers, an agent may be free
 * right now: one unit per job, so the next free agent takes it at once (latency) and units
 * spread over the agents one by one (fair share). Deeper, every agent's prefetch is full and
 * a unit waits behind `ready` others anyway: each job then takes up to `ready / consumers`
 * units, at most RTB_JOB_MAX_UNITS. Counting jobs (not units) makes the size settle by
 * itself: bigger jobs make the queue shorter in jobs, which makes the next ones smaller, so
 * under a full load it levels off near sqrt(units waiting / consumers) instead of swinging
 * between 1 and the maximum. Each job costs three broker messages (the job, its
 * `processing` report, its terminal report) and one confirm wait on the agent, so k units
 * per job cost 3/k messages per unit.
 */
export function unitsPerJob(depth: { ready: number; consumers: number } | undefined, maxUnits: number): number {
  if (!depth || depth.consumers === 0) return 1;
  return Math.max(1, Math.min(maxUnits, Math.floor(depth.ready / depth.consumers)));
}
