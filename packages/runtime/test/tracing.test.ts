import { expect, it } from "vitest";
import { startOtlpReceiver, waitFor } from "@rtb/testing";
import { ConfigError, loadTraceConfig, noTracing, producerTraceparent, startTracing } from "@rtb/runtime";

const producer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

it("keeps a producer's valid traceparent (version 00 form) and ignores a malformed one", () => {
  expect(producerTraceparent(producer)).toBe(producer);
  // A later version: its first four fields, as W3C says to read it.
  expect(producerTraceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-whatever")).toBe(producer);
  for (const bad of [
    undefined,
    "",
    "nonsense",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", // version 00 has exactly four fields
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // version ff is invalid
    "00-00000000000000000000000000000000-b7ad6b7169203331-01", // all-zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", // all-zero span id
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", // upper case
  ]) {
    expect(producerTraceparent(bad), String(bad)).toBeUndefined();
  }
});

it("is off without an endpoint; the endpoint gets /v1/traces, the traces endpoint is used as is; a bad one names its variable", () => {
  expect(loadTraceConfig({}, "api")).toMatchObject({ url: null, serviceName: "rtb-api", scheduleDelayMs: 5_000 });
  expect(loadTraceConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }, "agent")).toMatchObject({ url: "http://collector:4318/v1/traces", serviceName: "rtb-agent" });
  expect(loadTraceConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://b/traces", OTEL_SERVICE_NAME: "mine" }, "leader")).toMatchObject({ url: "https://b/traces", serviceName: "mine" });
  expect(loadTraceConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:4318", OTEL_SDK_DISABLED: "true" }, "api").url).toBeNull();
  for (const [variable, value] of [["OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"], ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x/"], ["OTEL_BSP_SCHEDULE_DELAY", "soon"], ["OTEL_SDK_DISABLED", "maybe"]] as const) {
    const err = (() => {
      try {
        loadTraceConfig({ [variable]: value }, "api");
      } catch (e) {
        return e;
      }
    })();
    expect(err, variable).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.variable)).toEqual([variable]);
  }
});

it("off, a span passes its parent's traceparent on and nothing more", async () => {
  const tracing = await startTracing(loadTraceConfig({}, "api"));
  expect(tracing).toBe(noTracing);
  expect(tracing.span("dispatch", producer).traceparent).toBe(producer);
  expect(tracing.span("dispatch", undefined).traceparent).toBeUndefined();
});

it("on, a span continues its parent's trace and is exported with the service's name", async () => {
  const receiver = await startOtlpReceiver();
  try {
    const tracing = await startTracing(loadTraceConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "50" }, "leader"));
    expect(tracing.enabled).toBe(true);
    const route = tracing.span("route", producer, { kind: "producer", attributes: { "rtb.unit.id": 7 } });
    const [, traceId, spanId, flags] = route.traceparent!.split("-");
    expect(traceId).toBe("0af7651916cd43dd8448eb211c80319c");
    expect(flags).toBe("01");
    route.fail(new Error("boom"));
    route.end();
    // A malformed parent: a new trace, never an error.
    const fresh = tracing.span("route", "garbage");
    fresh.end();
    await tracing.shutdown();
    const spans = await waitFor("both spans", () => (receiver.spans.length >= 2 ? receiver.spans : null));
    expect(spans[0]).toMatchObject({ service: "rtb-leader", traceId, spanId, parentSpanId: "b7ad6b7169203331", name: "route", kind: 4, status: 2, events: ["exception"] });
    expect(spans[0]!.attributes).toMatchObject({ "rtb.unit.id": 7, "error.type": "Error" });
    expect(spans[1]).toMatchObject({ parentSpanId: "" });
    expect(spans[1]!.traceId).not.toBe(traceId);
  } finally {
    await receiver.close();
  }
});
