/**
 * An LlmProvider for any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama,
 * DeepSeek, Qwen, ...), built on the AI SDK. One `stream()` is one model call (one step): tools
 * are declared without `execute`, so the call ends at the tool calls and the runtime runs them.
 *
 * Timeouts, retries and error mapping are ours, not the SDK's (its maxRetries is 0): a retry is
 * only safe before the first chunk reached the caller, and the SDK cannot know when that is.
 */
import { createOpenAICompatible, type OpenAICompatibleProvider as SdkProvider } from '@ai-sdk/openai-compatible';
import { APICallError, AISDKError, InvalidArgumentError, InvalidPromptError, jsonSchema, streamText, type LanguageModel, type ModelMessage, type ToolSet } from 'ai';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config, ProviderConfig } from '../config/config.ts';
import { AppError } from '../domain/errors.ts';
import type { LlmChunk, LlmMessage, LlmProvider, LlmRequest, LlmToolCall, LlmToolSpec, LlmUsage } from '../domain/llm.ts';

// The SDK logs warnings (unsupported settings, system messages, ...) to the console; we do not.
(globalThis as { AI_SDK_LOG_WARNINGS?: unknown }).AI_SDK_LOG_WARNINGS = false;

export interface OpenAiCompatibleOptions {
  name: string;
  baseUrl: string;
  apiKey?: string | undefined;
  /** used when the request names no model */
  model?: string | undefined;
  /** total budget of one `stream()` call, retries included */
  requestTimeoutMs: number;
  /** silence (no stream part) that counts as a stall, from the request start on */
  stallTimeoutMs: number;
  /** attempts after the first, only while nothing has been yielded */
  maxRetries: number;
  /** first backoff between attempts; doubles each retry */
  retryDelayMs?: number;
  /** replaces global fetch (tests, proxies) */
  fetch?: typeof fetch;
}

type Failure = 'stall' | 'total' | null;

const DEFAULT_MODEL = 'gpt-4o-mini';
const noop = () => {};

export class OpenAiCompatibleProvider implements LlmProvider {
  readonly name: string;
  private readonly sdk: SdkProvider;
  private readonly models = new Map<string, LanguageModel>();
  private readonly toolSets = new WeakMap<LlmToolSpec[], ToolSet>();
  private readonly defaultModel: string;
  private readonly apiKey: string;

  constructor(private readonly options: OpenAiCompatibleOptions) {
    this.name = options.name;
    this.defaultModel = options.model ?? DEFAULT_MODEL;
    this.apiKey = options.apiKey ?? '';
    this.sdk = createOpenAICompatible({
      name: options.name,
      baseURL: options.baseUrl.replace(/\/+$/, ''),
      ...(options.apiKey ? { apiKey: options.apiKey } : {}),
      includeUsage: true,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
  }

  static fromConfig(name: string, provider: ProviderConfig, llm: Config['llm']): OpenAiCompatibleProvider {
    return new OpenAiCompatibleProvider({
      name,
      baseUrl: provider.base_url ?? '',
      apiKey: provider.api_key,
      model: provider.model,
      requestTimeoutMs: llm.request_timeout * 1000,
      stallTimeoutMs: llm.stall_timeout * 1000,
      maxRetries: llm.max_retries,
    });
  }

  async *stream(request: LlmRequest): AsyncGenerator<LlmChunk> {
    const { signal } = request;
    if (signal.aborted) return;
    const { requestTimeoutMs, stallTimeoutMs, maxRetries, retryDelayMs = 250 } = this.options;
    const deadline = Date.now() + requestTimeoutMs;
    const model = this.model(request.model ?? this.defaultModel);
    const messages = toModelMessages(request.messages);
    const tools = request.tools?.length ? this.toolSet(request.tools) : undefined;

    // One controller per attempt; the caller's signal and our timer abort the current one.
    let controller = new AbortController();
    let failure: Failure;
    let lastPartAt = 0;
    // while the consumer holds a chunk we are not waiting on upstream: no stall, only the deadline
    let paused = false;
    let timer: NodeJS.Timeout | undefined;
    // One timer per attempt, re-armed lazily: chunks only stamp `lastPartAt` (no timer churn per chunk).
    const tick = () => {
      const now = Date.now();
      const stallAt = paused ? now + stallTimeoutMs : lastPartAt + stallTimeoutMs;
      if (now >= deadline || now >= stallAt) {
        failure = now >= deadline ? 'total' : 'stall';
        controller.abort();
        return;
      }
      timer = setTimeout(tick, Math.min(deadline, stallAt) - now);
    };
    const onCallerAbort = () => controller.abort();
    signal.addEventListener('abort', onCallerAbort, { once: true });

    let yielded = false;
    try {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) controller = new AbortController();
        failure = null;
        lastPartAt = Date.now();
        timer = setTimeout(tick, Math.min(deadline - lastPartAt, stallTimeoutMs));
        const result = streamText({
          model,
          messages,
          allowSystemInMessages: true,
          ...(tools ? { tools } : {}),
          ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
          ...(request.maxTokens !== undefined ? { maxOutputTokens: request.maxTokens } : {}),
          maxRetries: 0,
          abortSignal: controller.signal,
          experimental_include: { requestBody: false },
          // errors arrive as `error` parts below; the default handler would print them
          onError: noop,
        });
        const parts = result.fullStream[Symbol.asyncIterator]();
        let error: unknown;
        let finished = false;
        try {
          for (;;) {
            const next = await parts.next();
            if (next.done) break;
            const part = next.value;
            lastPartAt = Date.now();
            let chunk: LlmChunk;
            switch (part.type) {
              case 'text-delta':
                if (!part.text) continue;
                chunk = { type: 'text', text: part.text };
                break;
              case 'reasoning-delta':
                if (!part.text) continue;
                chunk = { type: 'reasoning', text: part.text };
                break;
              case 'tool-call':
                chunk = { type: 'tool_call', call: toToolCall(part.toolCallId, part.toolName, part.input) };
                break;
              case 'finish':
                chunk = { type: 'finish', reason: toFinishReason(part.finishReason), usage: toUsage(part.totalUsage) };
                finished = true;
                break;
              case 'error':
                throw part.error;
              case 'abort':
                // our timer or the caller; decided below
                throw new DOMException('aborted', 'AbortError');
              default:
                continue;
            }
            yielded = true;
            if (finished) {
              clearTimeout(timer);
              yield chunk;
              return;
            }
            paused = true;
            yield chunk;
            paused = false;
            lastPartAt = Date.now();
          }
          throw new AppError('upstream_error', 'upstream stream ended without a finish');
        } catch (err) {
          error = err;
        } finally {
          clearTimeout(timer);
          // abort first: it ends a pending upstream read, so closing the iterator cannot hang
          controller.abort();
          parts.return?.().catch(noop);
        }

        if (signal.aborted) return;
        const appError = this.toAppError(error, failure);
        const retryable = failure !== 'total' && isRetryable(error);
        const wait = retryDelay(error, retryDelayMs * 2 ** attempt);
        if (yielded || !retryable || attempt >= maxRetries || Date.now() + wait >= deadline) throw appError;
        try {
          await sleep(wait, undefined, { signal });
        } catch {
          return; // the caller aborted during the backoff
        }
      }
    } finally {
      clearTimeout(timer);
      controller.abort();
      signal.removeEventListener('abort', onCallerAbort);
    }
  }

  private model(id: string): LanguageModel {
    let model = this.models.get(id);
    if (!model) {
      model = this.sdk.chatModel(id);
      this.models.set(id, model);
    }
    return model;
  }

  /** Tool sets are cached per spec array: runtimes pass the same array on every call of a turn. */
  private toolSet(specs: LlmToolSpec[]): ToolSet {
    let set = this.toolSets.get(specs);
    if (!set) {
      set = {};
      // no `execute`: the SDK ends the step at the tool calls and hands them to us
      for (const spec of specs) set[spec.name] = { description: spec.description, inputSchema: jsonSchema(spec.parameters) };
      this.toolSets.set(specs, set);
    }
    return set;
  }

  private toAppError(err: unknown, failure: Failure): AppError {
    if (failure === 'total') return new AppError('upstream_timeout', `${this.name}: no complete answer within ${this.options.requestTimeoutMs / 1000} s`);
    if (failure === 'stall') return new AppError('upstream_timeout', `${this.name}: stream stalled for ${this.options.stallTimeoutMs / 1000} s`);
    if (err instanceof AppError) return err;
    if (InvalidPromptError.isInstance(err) || InvalidArgumentError.isInstance(err)) {
      return new AppError('internal', undefined, { cause: err });
    }
    let message: string;
    if (APICallError.isInstance(err)) {
      const status = err.statusCode;
      if (status === undefined) message = `${this.name}: upstream unreachable: ${err.message}`;
      else if (status >= 400) message = `${this.name}: upstream HTTP ${status}: ${err.message}`;
      // a 2xx whose body broke off (connection reset mid-stream)
      else message = `${this.name}: upstream stream broke off: ${err.cause instanceof Error ? err.cause.message : err.message}`;
    } else if (AISDKError.isInstance(err)) {
      message = `${this.name}: malformed upstream stream: ${err.message}`;
    } else {
      message = `${this.name}: upstream failed: ${err instanceof Error ? err.message : String(err)}`;
    }
    return new AppError('upstream_error', this.redact(message.slice(0, 500)), { cause: err });
  }

  private redact(text: string): string {
    return this.apiKey.length >= 4 ? text.replaceAll(this.apiKey, '***') : text;
  }
}

/** HTTP 408/409/429/5xx, network failures, stalls and broken streams are worth another attempt; 4xx are not. */
function isRetryable(err: unknown): boolean {
  if (APICallError.isInstance(err)) return err.isRetryable || (err.statusCode !== undefined && err.statusCode < 400);
  if (InvalidPromptError.isInstance(err) || InvalidArgumentError.isInstance(err)) return false;
  return true;
}

/** Honours a short Retry-After (seconds) from a 429/503; otherwise the exponential backoff. */
function retryDelay(err: unknown, backoffMs: number): number {
  if (APICallError.isInstance(err)) {
    const after = Number(err.responseHeaders?.['retry-after']);
    if (after > 0 && after <= 30) return after * 1000;
  }
  return backoffMs;
}

function toToolCall(id: string, name: string, input: unknown): LlmToolCall {
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) return { id, name, args: input as Record<string, unknown> };
  // an invalid call (arguments not JSON, or not an object): the runtime decides what to tell the model
  return { id, name, args: {}, rawArgs: typeof input === 'string' ? input : JSON.stringify(input) };
}

function toFinishReason(reason: string): 'stop' | 'length' | 'tool_calls' | 'other' {
  switch (reason) {
    case 'stop': return 'stop';
    case 'length': return 'length';
    case 'tool-calls': return 'tool_calls';
    default: return 'other';
  }
}

function toUsage(usage: { inputTokens?: number | undefined; outputTokens?: number | undefined; totalTokens?: number | undefined }): LlmUsage {
  const prompt = usage.inputTokens ?? 0;
  const completion = usage.outputTokens ?? 0;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: usage.totalTokens ?? prompt + completion };
}

export function toModelMessages(messages: LlmMessage[]): ModelMessage[] {
  return messages.map((m): ModelMessage => {
    switch (m.role) {
      case 'system':
      case 'user':
        return { role: m.role, content: m.content };
      case 'assistant':
        if (!m.toolCalls?.length) return { role: 'assistant', content: m.content };
        return {
          role: 'assistant',
          content: [
            ...(m.content ? [{ type: 'text' as const, text: m.content }] : []),
            ...m.toolCalls.map((c) => ({ type: 'tool-call' as const, toolCallId: c.id, toolName: c.name, input: c.args })),
          ],
        };
      case 'tool':
        return { role: 'tool', content: [{ type: 'tool-result', toolCallId: m.toolCallId, toolName: m.toolName, output: { type: 'text', value: m.content } }] };
    }
  });
}
