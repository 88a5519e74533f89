import type { ErrorCode } from '../../domain/errors.ts';
import type { ChatEvent, NodeRun } from '../../domain/events.ts';
import type { LlmUsage } from '../../domain/llm.ts';
import { isRecord } from '../../domain/types.ts';
import type { ChatCompletion, InputRequest, ToolCallOut } from './schemas.ts';

export interface ChunkChoice {
  index: number;
  delta: Record<string, unknown>;
  logprobs: null;
  finish_reason: 'stop' | 'length' | null;
}

export interface Chunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  system_fingerprint: null;
  choices: ChunkChoice[];
  usage?: LlmUsage | null;
  parley_input_request?: InputRequest;
}

const ZERO: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

/**
 * Turns one turn's events into OpenAI chunks, and keeps what a whole (non-stream) answer needs.
 * Pure: what it returns depends only on the events it was given (and the id, time and model it was made with).
 *
 * Workflow apps: their outputs (llm nodes' text, output nodes' messages, a request's prompt) are the
 * content, pieces of different node runs separated by a blank line; a request the run then waits
 * for goes with the finish (`parley_input_request`).
 */
export class CompletionEncoder {
  /** the text streamed so far */
  streamed = '';
  reasoning = '';
  readonly toolCalls: ToolCallOut[] = [];
  usage: LlmUsage = ZERO;
  /** the final answer (a chat answer's end), unless the turn was stopped */
  answer: string | null = null;
  error: { code: ErrorCode; message: string } | null = null;
  /** a workflow run waits for this (sent with the finish) */
  inputRequest: InputRequest | null = null;
  /** the finish chunk was sent */
  private finished = false;
  /** the workflow node run the last content came from: content of another one starts after a blank line */
  private source: string | null = null;
  /** streamed text per workflow node run */
  private readonly nodeText = new Map<string, string>();

  constructor(readonly id: string, readonly created: number, readonly model: string) {}

  chunk(delta: Record<string, unknown>, finish: ChunkChoice['finish_reason'] = null): Chunk {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, system_fingerprint: null, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
  }

  usageChunk(): Chunk {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, system_fingerprint: null, choices: [], usage: this.usage };
  }

  /** The chunks one event adds to the stream (none for most bookkeeping events). */
  push(e: ChatEvent): Chunk[] {
    const b = e.body;
    switch (b.kind) {
      case 'begin':
        return [this.chunk({ role: 'assistant', content: '' })];
      case 'delta': {
        const delta: Record<string, unknown> = {};
        if (b.content) {
          delta.content = b.content;
          this.streamed += b.content;
        }
        if (b.reasoning) {
          delta.reasoning_content = b.reasoning;
          this.reasoning += b.reasoning;
        }
        return Object.keys(delta).length ? [this.chunk(delta)] : [];
      }
      case 'tool_start': {
        const call: ToolCallOut = { id: b.runId, type: 'function', function: { name: b.toolKey, arguments: JSON.stringify(b.input ?? {}) } };
        const index = this.toolCalls.push(call) - 1;
        return [this.chunk({ tool_calls: [{ index, ...call }] })];
      }
      case 'answer_end': {
        const out: Chunk[] = [];
        if (b.usage) this.usage = b.usage;
        if (!b.stopped) {
          this.answer = b.text;
          // an answer that was not streamed (a moderation reply) or only partly: send the rest
          if (b.text.length > this.streamed.length && b.text.startsWith(this.streamed)) {
            out.push(this.chunk({ content: b.text.slice(this.streamed.length) }));
            this.streamed = b.text;
          }
        }
        out.push(this.chunk({}, 'stop'));
        this.finished = true;
        return out;
      }
      case 'error':
        this.error = { code: b.code, message: b.message };
        return [];
      case 'close': {
        // a workflow segment ends here (a chat turn finished with its answer)
        const usage = b.extra?.usage;
        if (isRecord(usage) && typeof usage.total_tokens === 'number') this.usage = usage as unknown as LlmUsage;
        if (this.finished || this.error) return [];
        this.finished = true;
        const last = this.chunk({}, 'stop');
        if (this.inputRequest) last.parley_input_request = this.inputRequest;
        return [last];
      }
      case 'node_delta': {
        const out = this.content(b.node, b.content);
        this.nodeText.set(b.node.runId, (this.nodeText.get(b.node.runId) ?? '') + b.content);
        if (b.reasoning) {
          this.reasoning += b.reasoning;
          out.push(this.chunk({ reasoning_content: b.reasoning }));
        }
        return out;
      }
      case 'node_answer': {
        // a node that does not stream sends its text only here
        const seen = this.nodeText.get(b.node.runId) ?? '';
        return b.content.length > seen.length && b.content.startsWith(seen) ? this.content(b.node, b.content.slice(seen.length)) : [];
      }
      case 'output':
        return this.content(b.node, b.text);
      case 'input_request': {
        const { schema } = b;
        const request: InputRequest = { node_id: b.node.nodeId, kind: schema.kind, message_id: b.messageId ?? null };
        if (schema.kind === 'choose') request.options = schema.options;
        else if (schema.kind === 'edit') request.input_msg = schema.input_msg;
        else request.input_schema = schema.input_schema;
        this.inputRequest = request;
        return this.content(b.node, b.text);
      }
      case 'llm_start':
      case 'llm_end':
      case 'tool_end':
      case 'answer_start':
      case 'node_start':
      case 'node_end':
      case 'guide_word':
      case 'guide_questions':
        return [];
    }
  }

  private content(node: NodeRun, text: string): Chunk[] {
    if (!text) return [];
    const piece = this.streamed && this.source !== null && this.source !== node.runId ? `\n\n${text}` : text;
    this.source = node.runId;
    this.streamed += piece;
    return [this.chunk({ content: piece })];
  }

  /** The whole answer as a `chat.completion`. */
  completion(): ChatCompletion {
    return {
      id: this.id, object: 'chat.completion', created: this.created, model: this.model, system_fingerprint: null,
      choices: [{
        index: 0,
        message: {
          role: 'assistant', content: this.answer ?? this.streamed, refusal: null,
          ...(this.reasoning ? { reasoning_content: this.reasoning } : {}),
          ...(this.toolCalls.length ? { tool_calls: this.toolCalls } : {}),
        },
        logprobs: null, finish_reason: 'stop',
      }],
      usage: this.usage,
      ...(this.inputRequest ? { parley_input_request: this.inputRequest } : {}),
    };
  }
}
