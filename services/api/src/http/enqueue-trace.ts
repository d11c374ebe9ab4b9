import type { Context } from "hono";
import { noTracing, producerTraceparent, type HopSpan, type Tracing } from "@rtb/runtime";

/**
 * The span of one enqueue request (POST /units, POST /workflows): the start of its units'
 * trace, or the next span of the producer's, when its request carries a W3C `traceparent`
 * header. A malformed one is ignored (a new trace starts), as W3C Trace Context says: never a
 * 400. Every unit of the request is stored with the span's traceparent (units.traceparent).
 */
export function enqueueSpan(tracing: Tracing | undefined, c: Context, route: string): HopSpan {
  return (tracing ?? noTracing).span("enqueue", producerTraceparent(c.req.header("traceparent")), {
    kind: "server",
    attributes: { "http.request.method": "POST", "http.route": route },
  });
}

/** Run the request's work in its enqueue span: ended when it is done, failed when it threw. */
export async function inEnqueueSpan<T>(span: HopSpan, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    span.fail(err);
    throw err;
  } finally {
    span.end();
  }
}
