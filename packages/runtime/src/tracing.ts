import { isSpanContextValid, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Context, type Span, type SpanContext, type Tracer } from "@opentelemetry/api";
import { parseTraceParent } from "@opentelemetry/core";
import type { TraceConfig } from "./trace-config.ts";

/**
 * Traces across every hop (OpenTelemetry). A unit's trace context travels as a W3C
 * `traceparent` string: stored with the unit, carried per unit in the message bodies, and
 * turned back into a parent span where a hop starts its own span. Contexts are passed by hand,
 * never through a context manager: every hop names its parent, so nothing depends on
 * AsyncLocalStorage and a batch of units can be in as many traces.
 *
 * Off (no OTLP endpoint), no SDK is loaded: a span is a constant object that does nothing and
 * hands its parent's traceparent on unchanged, so a producer's trace still reaches the agent.
 */
export interface HopSpan {
  /** What the next hop continues: this span's traceparent (tracing off: the parent's, as it came). */
  readonly traceparent: string | undefined;
  set(attributes: Attributes): void;
  /** Records `err` on the span and marks it failed. */
  fail(err: unknown): void;
  end(): void;
}

export type HopKind = "producer" | "consumer" | "internal" | "server";

export interface Tracing {
  readonly enabled: boolean;
  /** A span of this hop whose parent is `parent` (a traceparent; absent or invalid: a new trace). */
  span(name: string, parent: string | undefined, opts?: { kind?: HopKind; attributes?: Attributes }): HopSpan;
  /** Sends the spans ended so far. */
  flush(): Promise<void>;
  /** Sends what is left, then stops exporting. */
  shutdown(): Promise<void>;
}

const NOOP = () => {};

/** The span of a process that does not trace: its parent's traceparent, and nothing else. */
function offSpan(parent: string | undefined): HopSpan {
  if (parent === undefined) return OFF_ROOT;
  return { traceparent: parent, set: NOOP, fail: NOOP, end: NOOP };
}
const OFF_ROOT: HopSpan = { traceparent: undefined, set: NOOP, fail: NOOP, end: NOOP };

/** Tracing off: every span is a no-op that passes its parent's traceparent on. */
export const noTracing: Tracing = {
  enabled: false,
  span: (_name, parent) => offSpan(parent),
  flush: async () => {},
  shutdown: async () => {},
};

/**
 * A producer's `traceparent` header, as rtb keeps it: a valid one in version 00 form (a later
 * version's first four fields, as W3C Trace Context says to read it), or undefined for a
 * missing or malformed one, which W3C says to ignore (a new trace starts).
 */
export function producerTraceparent(header: string | undefined): string | undefined {
  if (header === undefined || header.length > 512) return undefined;
  const parsed = parseTraceParent(header);
  if (!parsed || !isSpanContextValid(parsed)) return undefined;
  return format(parsed);
}

const format = (sc: SpanContext) => `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TraceFlags.SAMPLED ? "01" : "00"}`;

function contextOf(traceparent: string | undefined): Context {
  if (traceparent === undefined) return ROOT_CONTEXT;
  const parsed = parseTraceParent(traceparent);
  if (!parsed || !isSpanContextValid(parsed)) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, { ...parsed, isRemote: true });
}

const KINDS: Record<HopKind, SpanKind> = { producer: SpanKind.PRODUCER, consumer: SpanKind.CONSUMER, internal: SpanKind.INTERNAL, server: SpanKind.SERVER };

class LiveSpan implements HopSpan {
  #span: Span;
  #traceparent: string | undefined;
  constructor(span: Span) {
    this.#span = span;
  }
  get traceparent(): string {
    return (this.#traceparent ??= format(this.#span.spanContext()));
  }
  set(attributes: Attributes): void {
    this.#span.setAttributes(attributes);
  }
  fail(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.#span.recordException(error);
    this.#span.setAttribute("error.type", error.name);
    this.#span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
  }
  end(): void {
    this.#span.end();
  }
}

/**
 * Tracing as `config` says: off (noTracing) without an endpoint; on, a tracer provider with a
 * batch span processor and an OTLP/HTTP (JSON) exporter to `config.url`, loaded only then.
 */
export async function startTracing(config: TraceConfig): Promise<Tracing> {
  if (config.url === null) return noTracing;
  const [{ TracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { defaultResource, resourceFromAttributes }] = await Promise.all([
    import("@opentelemetry/sdk-trace"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
  ]);
  const provider = new TracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ "service.name": config.serviceName })),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url: config.url }),
        scheduledDelayMillis: config.scheduleDelayMs,
        maxQueueSize: config.maxQueueSize,
        maxExportBatchSize: config.maxExportBatchSize,
      }),
    ],
  });
  const tracer: Tracer = provider.getTracer("rtb");
  return {
    enabled: true,
    span(name, parent, opts = {}) {
      return new LiveSpan(tracer.startSpan(name, { kind: KINDS[opts.kind ?? "internal"], attributes: opts.attributes }, contextOf(parent)));
    },
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

/** A unit's attributes on every span of its hops. */
export const unitAttributes = (u: { unitId: number; attempt: number; kind?: string | undefined }): Attributes =>
  u.kind === undefined ? { "rtb.unit.id": u.unitId, "rtb.unit.attempt": u.attempt } : { "rtb.unit.id": u.unitId, "rtb.unit.attempt": u.attempt, "rtb.unit.kind": u.kind };

/**
 * The messaging semantic conventions' attributes of a hop (opentelemetry.io/docs/specs/semconv/messaging):
 * RabbitMQ, the operation, the exchange or queue, and the routing key when there is one.
 */
export function messagingAttributes(op: { type: "send" | "receive" | "process" | "create"; name: string; destination: string; routingKey?: string }): Attributes {
  const a: Attributes = {
    "messaging.system": "rabbitmq",
    "messaging.operation.type": op.type,
    "messaging.operation.name": op.name,
    "messaging.destination.name": op.destination,
  };
  if (op.routingKey !== undefined) a["messaging.rabbitmq.destination.routing_key"] = op.routingKey;
  return a;
}

/** A report's or a job unit's `traceparent` field: present only when there is one. */
export const traceField = (traceparent: string | undefined): { traceparent?: string } => (traceparent === undefined ? {} : { traceparent });

/** The AMQP headers of a message that carries exactly one unit: its traceparent, when it has one. */
export const traceHeaders = (units: readonly { traceparent?: string | undefined }[]): { headers: { traceparent: string } } | undefined =>
  units.length === 1 && units[0]!.traceparent !== undefined ? { headers: { traceparent: units[0]!.traceparent } } : undefined;
