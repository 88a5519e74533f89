import type { AppSpec } from '../domain/types.ts';
import type { ChatEventBody } from '../domain/events.ts';
import type { LlmMessage, LlmProvider, LlmUsage, Tool } from '../domain/llm.ts';

/** What the chat core hands a runtime for one turn. Runtimes never touch storage or the wire. */
export interface TurnContext {
  spec: AppSpec;
  provider: LlmProvider;
  tools: Tool[];
  /** earlier messages of the conversation, oldest first (no system prompt) */
  history: LlmMessage[];
  question: string;
  /** aborted by stop, shutdown or a disconnect in debug mode */
  signal: AbortSignal;
  emit(body: ChatEventBody): void;
}

export interface RuntimeResult {
  usage: LlmUsage;
}

export interface Runtime {
  run(ctx: TurnContext): Promise<RuntimeResult>;
}

export const ZERO_USAGE: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

export function addUsage(a: LlmUsage, b: LlmUsage): LlmUsage {
  return { prompt_tokens: a.prompt_tokens + b.prompt_tokens, completion_tokens: a.completion_tokens + b.completion_tokens, total_tokens: a.total_tokens + b.total_tokens };
}
