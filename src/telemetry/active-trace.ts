import { trace } from '@opentelemetry/api';

/** The trace of the span running now, for log lines (none while tracing is off: the API is a no-op then). */
export function activeTrace(): { trace_id: string; span_id: string } | undefined {
  const span = trace.getActiveSpan();
  if (!span) return undefined;
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}
