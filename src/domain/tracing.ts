/** Attributes of a span: what it was about. */
export type SpanAttributes = Record<string, string | number | boolean>;

export interface SpanHandle {
  set(attributes: SpanAttributes): void;
  /** Ends the span; with an error, marked failed. */
  end(error?: unknown): void;
}

/**
 * Traces (OpenTelemetry when configured, nothing otherwise): a port, so the core marks its spans
 * without knowing who records them.
 */
export interface Tracer {
  /** Starts a span, a child of the current one, and runs `fn` inside it (what `fn` starts, sync or async, is its child). */
  start<T>(name: string, attributes: SpanAttributes, fn: (span: SpanHandle) => T): T;
  /** A span that already happened (a database statement, timed by its driver), a child of the current one. */
  record(name: string, startMs: number, endMs: number, attributes: SpanAttributes): void;
}

const NO_SPAN: SpanHandle = { set: () => undefined, end: () => undefined };

export const noTracer: Tracer = {
  start: (_name, _attributes, fn) => fn(NO_SPAN),
  record: () => undefined,
};
