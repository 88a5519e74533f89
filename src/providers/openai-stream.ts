/**
 * Reads an OpenAI chat completions event stream (`text/event-stream` of `chat.completion.chunk`s, as
 * OpenAI, vLLM, Ollama, DeepSeek, Qwen … send it) into LlmChunks. Text in, chunks out, no I/O: the
 * provider feeds it whatever a socket read delivered and hands on what comes back.
 *
 * Deltas of one read are merged (consecutive text, consecutive reasoning): under load a read carries
 * many tokens, and every chunk costs a trip through the runtime and the bus. Tool calls are
 * assembled from their pieces (by `index`) and come out at the end, before the one `finish`.
 */
import { createParser, type EventSourceMessage, type EventSourceParser } from 'eventsource-parser';
import type { LlmChunk, LlmToolCall, LlmUsage } from '../domain/llm.ts';

type FinishReason = Extract<LlmChunk, { type: 'finish' }>['reason'];

/** Why a stream cannot go on: `malformed` (not the OpenAI shape) or `reported` (an error object in the stream). */
export class StreamFailure extends Error {
  constructor(readonly kind: 'malformed' | 'reported', message: string) {
    super(message);
  }
}

interface PartialCall {
  id: string;
  name: string;
  args: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const optString = (v: unknown): v is string | null | undefined => v === undefined || v === null || typeof v === 'string';

export class OpenAiStreamReader {
  /** `data: [DONE]` arrived: nothing more will come */
  done = false;
  private readonly parser: EventSourceParser;
  private out: LlmChunk[] = [];
  private failure: StreamFailure | null = null;
  private readonly calls = new Map<number, PartialCall>();
  private finishReason: string | null = null;
  private usage: LlmUsage | null = null;

  constructor() {
    this.parser = createParser({ onEvent: (e) => this.onEvent(e) });
  }

  /**
   * The deltas in `text` (consecutive ones of a sort merged). A failure met on the way is kept for
   * `failed()`: the deltas before it are still returned, so they reach the client first.
   */
  feed(text: string): LlmChunk[] {
    this.parser.feed(text);
    const out = this.out;
    this.out = [];
    return out;
  }

  failed(): StreamFailure | null {
    return this.failure;
  }

  /** At the end of the body: the assembled tool calls and the finish. Throws when the stream never finished. */
  end(): LlmChunk[] {
    if (this.failure) throw this.failure;
    if (!this.done && this.finishReason === null) throw new StreamFailure('malformed', 'the stream ended without a finish');
    const out: LlmChunk[] = [];
    for (const index of [...this.calls.keys()].sort((a, b) => a - b)) {
      const c = this.calls.get(index)!;
      if (!c.name) throw new StreamFailure('malformed', `tool call ${index} has no function name`);
      out.push({ type: 'tool_call', call: toToolCall(c.id || `call_${index}`, c.name, c.args) });
    }
    out.push({ type: 'finish', reason: toFinishReason(this.finishReason), usage: this.usage ?? { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } });
    return out;
  }

  private onEvent(event: EventSourceMessage): void {
    if (this.failure || this.done) return;
    const data = event.data;
    if (data === '[DONE]') {
      this.done = true;
      return;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(data);
    } catch {
      return this.fail('malformed', `a chunk is not JSON: ${data.slice(0, 80)}`);
    }
    if (!isObject(chunk)) return this.fail('malformed', 'a chunk is not an object');
    if (chunk.error !== undefined && chunk.error !== null) {
      const e = chunk.error;
      const message = isObject(e) && typeof e.message === 'string' ? e.message : JSON.stringify(e).slice(0, 200);
      return this.fail('reported', `the upstream reported an error: ${message}`);
    }
    if (isObject(chunk.usage)) this.usage = toUsage(chunk.usage);
    const choices = chunk.choices;
    if (choices === undefined || choices === null) return;
    if (!Array.isArray(choices)) return this.fail('malformed', '`choices` is not an array');
    const choice: unknown = choices[0];
    if (choice === undefined) return;
    if (!isObject(choice)) return this.fail('malformed', 'a choice is not an object');
    const delta = choice.delta;
    if (isObject(delta)) {
      const reasoning = delta.reasoning_content ?? delta.reasoning;
      if (!optString(reasoning) || !optString(delta.content)) return this.fail('malformed', 'a delta has non-text content');
      if (reasoning) this.push('reasoning', reasoning);
      if (delta.content) this.push('text', delta.content);
      if (delta.tool_calls !== undefined && delta.tool_calls !== null) {
        if (!Array.isArray(delta.tool_calls)) return this.fail('malformed', '`tool_calls` is not an array');
        for (const piece of delta.tool_calls as unknown[]) if (!this.addCallPiece(piece)) return;
      }
    } else if (delta !== undefined && delta !== null) {
      return this.fail('malformed', '`delta` is not an object');
    }
    if (typeof choice.finish_reason === 'string') this.finishReason = choice.finish_reason;
  }

  private push(type: 'text' | 'reasoning', text: string): void {
    const last = this.out[this.out.length - 1];
    if (last && last.type === type) last.text += text;
    else this.out.push({ type, text });
  }

  private addCallPiece(piece: unknown): boolean {
    if (!isObject(piece)) {
      this.fail('malformed', 'a tool call piece is not an object');
      return false;
    }
    const index = typeof piece.index === 'number' ? piece.index : this.calls.size;
    const fn = isObject(piece.function) ? piece.function : {};
    if (!optString(piece.id) || !optString(fn.name) || !optString(fn.arguments)) {
      this.fail('malformed', 'a tool call piece has non-text fields');
      return false;
    }
    let call = this.calls.get(index);
    if (!call) {
      call = { id: '', name: '', args: '' };
      this.calls.set(index, call);
    }
    if (piece.id) call.id = piece.id;
    if (fn.name) call.name += fn.name;
    if (fn.arguments) call.args += fn.arguments;
    return true;
  }

  private fail(kind: StreamFailure['kind'], message: string): void {
    this.failure = new StreamFailure(kind, message);
  }
}

function toToolCall(id: string, name: string, input: string): LlmToolCall {
  if (!input.trim()) return { id, name, args: {} };
  try {
    const args: unknown = JSON.parse(input);
    if (isObject(args)) return { id, name, args };
  } catch {
    // fall through: the runtime decides what to tell the model about unparseable arguments
  }
  return { id, name, args: {}, rawArgs: input };
}

function toFinishReason(reason: string | null): FinishReason {
  switch (reason) {
    case 'stop': return 'stop';
    case 'length': return 'length';
    case 'tool_calls':
    case 'function_call': return 'tool_calls';
    default: return 'other';
  }
}

function toUsage(usage: Record<string, unknown>): LlmUsage {
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const prompt = num(usage.prompt_tokens);
  const completion = num(usage.completion_tokens);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
