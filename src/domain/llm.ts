/**
 * The LLM port: what a runtime asks of a model, independent of any SDK. Providers implement it.
 */
export interface LlmToolSpec {
  name: string;
  description: string;
  /** JSON Schema of the arguments object */
  parameters: Record<string, unknown>;
}

export interface LlmToolCall {
  id: string;
  name: string;
  /** parsed arguments (an object); a provider that cannot parse them passes `{}` and sets `rawArgs` */
  args: Record<string, unknown>;
  rawArgs?: string;
}

/** A conversation message in the model's context. */
export type LlmMessage =
  | { role: 'system'; content: string }
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; toolCalls?: LlmToolCall[] }
  | { role: 'tool'; toolCallId: string; toolName: string; content: string };

export interface LlmUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface LlmRequest {
  messages: LlmMessage[];
  tools?: LlmToolSpec[];
  model?: string | undefined;
  temperature?: number | undefined;
  maxTokens?: number | undefined;
  /** aborts the upstream HTTP request */
  signal: AbortSignal;
}

/** What a provider streams back: deltas, then tool calls (if any), then exactly one `finish`. */
export type LlmChunk =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'tool_call'; call: LlmToolCall }
  | { type: 'finish'; reason: 'stop' | 'length' | 'tool_calls' | 'other'; usage: LlmUsage };

export interface LlmProvider {
  readonly name: string;
  /**
   * Streams one model call: every chunk goes to `onChunk` as it arrives, in order, synchronously
   * (no promise per chunk, docs/decisions.md); the
   * promise settles when the call has ended. Failures reject as AppError: `upstream_error` (10502)
   * for upstream 4xx/5xx and malformed streams, `upstream_timeout` (10504) for timeouts and stalls.
   * An abort through `signal` ends the call quietly (nothing more is delivered) or with an
   * AbortError. If `onChunk` throws, the call ends and rejects with that error.
   */
  stream(request: LlmRequest, onChunk: (chunk: LlmChunk) => void): Promise<void>;
}

/** A tool a runtime may call. */
export interface Tool {
  spec: LlmToolSpec;
  /** @returns the output text; throws on failure (the runtime turns it into an error output) */
  run(args: Record<string, unknown>, signal: AbortSignal): Promise<string>;
}
