/**
 * An LlmProvider for any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama,
 * DeepSeek, Qwen, ...). One `stream()` is one model call (one step): tools are declared without
 * executing them, so the call ends at the tool calls and the runtime runs them.
 *
 * HTTP is node:http(s) with a keep-alive agent, the event stream is read with `eventsource-parser`
 * (openai-stream.ts): read straight off the socket, a token costs a few µs of CPU, where an SDK's
 * web streams cost several times that (docs/decisions.md).
 *
 * This is also where deltas are coalesced: everything one socket read brought (several tokens when
 * the server is busy) becomes one chunk, so one event and one frame per watcher — below one write per
 * token, which is what lets a loaded gateway keep up instead of queueing. Chunks are handed to the
 * caller from the socket's 'data' event itself: no promise, no generator step per chunk.
 *
 * Timeouts, retries and error mapping are ours: a retry is only safe before the first chunk reached
 * the caller, and only we know when that is.
 */
import http from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config, ProviderConfig } from '../config/config.ts';
import { AppError } from '../domain/errors.ts';
import type { LlmChunk, LlmMessage, LlmProvider, LlmRequest, LlmToolSpec } from '../domain/llm.ts';
import { OpenAiStreamReader, StreamFailure } from './openai-stream.ts';

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
  /** attempts after the first, only while nothing has been handed to the caller */
  maxRetries: number;
  /** first backoff between attempts; doubles each retry */
  retryDelayMs?: number;
}

type Failure = 'stall' | 'total' | null;

const DEFAULT_MODEL = 'gpt-4o-mini';

export class OpenAiCompatibleProvider implements LlmProvider {
  readonly name: string;
  private readonly url: URL;
  private readonly agent: http.Agent;
  private readonly send: typeof http.request;
  private readonly headers: Record<string, string>;
  private readonly toolDefs = new WeakMap<LlmToolSpec[], unknown[]>();
  private readonly defaultModel: string;
  private readonly apiKey: string;

  constructor(private readonly options: OpenAiCompatibleOptions) {
    this.name = options.name;
    this.defaultModel = options.model ?? DEFAULT_MODEL;
    this.apiKey = options.apiKey ?? '';
    this.url = new URL(`${options.baseUrl.replace(/\/+$/, '')}/chat/completions`);
    const secure = this.url.protocol === 'https:';
    this.send = secure ? https.request : http.request;
    // keep-alive: a turn costs no TCP (or TLS) handshake once the pool is warm
    this.agent = secure ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    this.headers = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
    };
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

  async stream(request: LlmRequest, onChunk: (chunk: LlmChunk) => void): Promise<void> {
    const { signal } = request;
    if (signal.aborted) return;
    const { requestTimeoutMs, stallTimeoutMs, maxRetries, retryDelayMs = 250 } = this.options;
    const deadline = Date.now() + requestTimeoutMs;
    const body = JSON.stringify({
      model: request.model ?? this.defaultModel,
      messages: toOpenAiMessages(request.messages),
      ...(request.tools?.length ? { tools: this.tools(request.tools) } : {}),
      ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
      ...(request.maxTokens !== undefined ? { max_tokens: request.maxTokens } : {}),
      stream: true,
      stream_options: { include_usage: true },
    });

    // One controller per attempt; the caller's signal and our timer abort the current one.
    let controller = new AbortController();
    let failure: Failure;
    let lastPartAt = 0;
    let timer: NodeJS.Timeout | undefined;
    // One timer per attempt, re-armed lazily: reads only stamp `lastPartAt` (no timer churn per read).
    const tick = () => {
      const now = Date.now();
      const stallAt = lastPartAt + stallTimeoutMs;
      if (now >= deadline || now >= stallAt) {
        failure = now >= deadline ? 'total' : 'stall';
        controller.abort();
        return;
      }
      timer = setTimeout(tick, Math.min(deadline, stallAt) - now);
    };
    // the caller's abort, as a plain flag: `signal.aborted` is a checked getter, and deliver asks per chunk
    let callerAborted = false;
    const onCallerAbort = () => {
      callerAborted = true;
      controller.abort();
    };
    signal.addEventListener('abort', onCallerAbort, { once: true });

    // a chunk reached the caller: no retry after that
    let delivered = false;
    // what the caller's onChunk threw: it ends the call and is rethrown as it is
    let callerError: { error: unknown } | null = null;
    const deliver = (chunks: LlmChunk[]) => {
      for (const chunk of chunks) {
        // after an abort nothing more is delivered
        if (callerAborted) return;
        delivered = true;
        try {
          onChunk(chunk);
        } catch (error) {
          callerError = { error };
          throw error;
        }
      }
    };
    try {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) controller = new AbortController();
        failure = null;
        lastPartAt = Date.now();
        timer = setTimeout(tick, Math.min(deadline - lastPartAt, stallTimeoutMs));
        let response: http.IncomingMessage | undefined;
        let error: unknown;
        // the answer arrived whole: the response is left to end by itself, so its socket goes back to the pool
        let clean = false;
        try {
          // rejects on an HTTP error status; the stall timer already runs (a silent connect counts too)
          response = await this.post(body, controller.signal);
          const reader = new OpenAiStreamReader();
          await readBody(response, (text) => {
            lastPartAt = Date.now();
            deliver(reader.feed(text));
            const failed = reader.failed();
            if (failed) throw failed;
            // after [DONE] the body has usually ended already; if not, what is left is drained below
            return reader.done;
          });
          const tail = reader.end();
          clearTimeout(timer);
          clean = true;
          deliver(tail);
          return;
        } catch (err) {
          error = err;
        } finally {
          clearTimeout(timer);
          if (clean) drain(response!);
          else {
            // ends the request; the socket is not reused
            controller.abort();
            response?.destroy();
          }
        }

        if (callerError) throw (callerError as { error: unknown }).error;
        if (signal.aborted) return;
        const upstream = this.toUpstreamError(error, failure);
        if (delivered || !upstream.retryable || attempt >= maxRetries) throw upstream.error;
        const wait = upstream.retryAfterMs ?? retryDelayMs * 2 ** attempt;
        if (Date.now() + wait >= deadline) throw upstream.error;
        try {
          await sleep(wait, undefined, { signal });
        } catch {
          return; // the caller aborted during the backoff
        }
      }
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onCallerAbort);
    }
  }

  /**
   * POSTs the request; resolves with a 2xx response (decoding UTF-8), rejects with an HttpStatusError
   * (its body read, bounded) or the connection's error. A kept-alive socket the upstream closed
   * meanwhile is retried at once on a fresh one: that is not the upstream failing.
   */
  private post(body: string, signal: AbortSignal, fresh = false): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      let answered = false;
      const req = this.send(this.url, { method: 'POST', agent: this.agent, headers: { ...this.headers, 'content-length': Buffer.byteLength(body) }, signal }, (res) => {
        answered = true;
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          res.setEncoding('utf8');
          resolve(res);
          return;
        }
        readBounded(res, 64 * 1024).then((text) => reject(new HttpStatusError(status, text, res.headers['retry-after'])), reject);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        // only before any answer: an error after it (the body broke off) is the stream's, not the connection's
        if (!answered && !fresh && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE') && !signal.aborted) {
          this.post(body, signal, true).then(resolve, reject);
        } else reject(err);
      });
      req.end(body);
    });
  }

  /** Tool definitions are cached per spec array: runtimes pass the same array on every call of a turn. */
  private tools(specs: LlmToolSpec[]): unknown[] {
    let defs = this.toolDefs.get(specs);
    if (!defs) {
      defs = specs.map((spec) => ({ type: 'function', function: { name: spec.name, description: spec.description, parameters: spec.parameters } }));
      this.toolDefs.set(specs, defs);
    }
    return defs;
  }

  /** The AppError to report, whether another attempt may help, and how long the upstream asked us to wait. */
  private toUpstreamError(err: unknown, failure: Failure): { error: AppError; retryable: boolean; retryAfterMs?: number | undefined } {
    if (failure === 'total') return { error: new AppError('upstream_timeout', `${this.name}: no complete answer within ${this.options.requestTimeoutMs / 1000} s`), retryable: false };
    if (failure === 'stall') return { error: new AppError('upstream_timeout', `${this.name}: stream stalled for ${this.options.stallTimeoutMs / 1000} s`), retryable: true };
    if (err instanceof AppError) return { error: err, retryable: false };
    let message: string;
    let retryable = true;
    let retryAfterMs: number | undefined;
    if (err instanceof HttpStatusError) {
      message = `${this.name}: upstream HTTP ${err.status}: ${err.detail}`;
      // 408/409/429/5xx are worth another attempt; other 4xx are not
      retryable = err.status === 408 || err.status === 409 || err.status === 429 || err.status >= 500;
      retryAfterMs = err.retryAfterMs;
    } else if (err instanceof StreamFailure) {
      message = err.kind === 'malformed' ? `${this.name}: malformed upstream stream: ${err.message}` : `${this.name}: ${err.message}`;
    } else if (err instanceof BodyBrokeOff) {
      message = `${this.name}: upstream stream broke off: ${err.message}`;
    } else {
      // no answer at all: the connection failed
      const e = err as NodeJS.ErrnoException;
      const what = e?.code ? `${e.code}${e.message && !e.message.includes(e.code) ? ` (${e.message})` : ''}` : String(e?.message ?? err);
      message = `${this.name}: upstream unreachable: ${what}`;
    }
    return { error: new AppError('upstream_error', this.redact(message.slice(0, 500)), { cause: err }), retryable, retryAfterMs };
  }

  private redact(text: string): string {
    return this.apiKey.length >= 4 ? text.replaceAll(this.apiKey, '***') : text;
  }
}

/** An upstream answer with a non-2xx status. */
class HttpStatusError extends Error {
  readonly detail: string;
  /** a short Retry-After (≤ 30 s) from a 429/503, in ms */
  readonly retryAfterMs: number | undefined;

  constructor(readonly status: number, body: string, retryAfter: string | undefined) {
    super(`HTTP ${status}`);
    this.detail = errorDetail(body);
    const after = Number(retryAfter);
    this.retryAfterMs = after > 0 && after <= 30 ? after * 1000 : undefined;
  }
}

/** The message of an OpenAI error body (`{"error":{"message":…}}`), or the start of whatever else came. */
function errorDetail(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown };
    const e = parsed.error;
    if (typeof e === 'string') return e;
    if (typeof e?.message === 'string') return e.message;
    if (typeof parsed.message === 'string') return parsed.message;
  } catch {
    // not JSON
  }
  return body.trim().slice(0, 200) || '(empty body)';
}

/** The body of a 2xx answer ended before its end (the connection reset or closed). */
class BodyBrokeOff extends Error {}

/**
 * Hands a streaming response body to `onText` as it arrives, as UTF-8 text: everything one socket
 * read brought at once (the HTTP parser emits one 'data' per chunk of the chunked encoding, so one
 * per token; they are joined in a microtask that runs once the read is parsed — several tokens in
 * one piece under load). Resolves at the end of the body, or as soon as `onText` returns true (the
 * stream said it is done); rejects with what `onText` threw, or with BodyBrokeOff when the body
 * broke off before its end (what came before is handed over first).
 */
function readBody(response: http.IncomingMessage, onText: (text: string) => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let pending: string[] = [];
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      response.off('data', onData);
      if (err) reject(err);
      else resolve();
    };
    const flush = () => {
      if (settled || pending.length === 0) return;
      const text = pending.length === 1 ? pending[0]! : pending.join('');
      pending = [];
      let done: boolean;
      try {
        done = onText(text);
      } catch (err) {
        settle(err as Error);
        return;
      }
      if (done) settle();
    };
    const onData = (text: string) => {
      if (pending.push(text) === 1) queueMicrotask(flush);
    };
    response.on('data', onData);
    response.on('end', () => {
      flush();
      settle();
    });
    response.on('error', (err) => {
      flush();
      settle(new BodyBrokeOff(err.message));
    });
    response.on('close', () => {
      flush();
      // closed before its end without an error of its own
      settle(response.complete ? undefined : new BodyBrokeOff('aborted'));
    });
  });
}

/**
 * Reads what is left of a finished answer (the end of the body after `[DONE]`, usually already
 * parsed), so the response ends and its socket goes back to the pool; gives up after 5 s.
 */
function drain(response: http.IncomingMessage): void {
  if (response.destroyed || response.readableEnded) return;
  if (!response.complete) {
    const giveUp = setTimeout(() => response.destroy(), 5000);
    giveUp.unref();
    response.once('close', () => clearTimeout(giveUp));
  }
  response.resume();
}

function readBounded(res: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (piece: string) => {
      if (text.length < max) text += piece;
    });
    res.on('end', () => resolve(text.slice(0, max)));
    res.on('error', reject);
  });
}

/** LlmMessage[] → OpenAI chat messages. */
export function toOpenAiMessages(messages: LlmMessage[]): unknown[] {
  return messages.map((m) => {
    switch (m.role) {
      case 'system':
      case 'user':
        return { role: m.role, content: m.content };
      case 'assistant':
        return {
          role: 'assistant',
          content: m.content || null,
          ...(m.toolCalls?.length ? { tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } })) } : {}),
        };
      case 'tool':
        return { role: 'tool', tool_call_id: m.toolCallId, content: m.content };
    }
  });
}
