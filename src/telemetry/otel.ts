import { context, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { SpanAttributes, SpanHandle, Tracer } from '../domain/tracing.ts';

/**
 * OpenTelemetry traces exported over OTLP/HTTP (JSON) to `endpoint` (e.g. http://collector:4318).
 * Registers the process's tracer provider and its AsyncLocalStorage context, so a span's children
 * are found through whatever async work it starts: turned on only when an endpoint is configured
 * (keeping the context costs every promise a little).
 */
export function otelTracer(opts: { endpoint: string; serviceName: string; instanceId: string }): { tracer: Tracer; shutdown(): Promise<void> } {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': opts.serviceName, 'service.instance.id': opts.instanceId }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/$/, '')}/v1/traces` }))],
  });
  provider.register();
  const otel = provider.getTracer('parley');
  const handle = (span: Span): SpanHandle => ({
    set(attributes) {
      span.setAttributes(attributes);
    },
    end(error) {
      if (error !== undefined) {
        span.recordException(error instanceof Error ? error : new Error(String(error)));
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      }
      span.end();
    },
  });
  const tracer: Tracer = {
    start(name, attributes, fn) {
      const span = otel.startSpan(name, { attributes });
      return context.with(trace.setSpan(context.active(), span), () => fn(handle(span)));
    },
    record(name, startMs, endMs, attributes: SpanAttributes) {
      // only within a traced piece of work (a turn): a statement of a plain REST call is no trace of its own
      if (trace.getActiveSpan()) otel.startSpan(name, { attributes, startTime: startMs }).end(endMs);
    },
  };
  return { tracer, shutdown: () => provider.shutdown() };
}
