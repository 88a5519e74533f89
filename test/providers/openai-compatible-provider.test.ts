import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { AppError } from '../../src/domain/errors.ts';
import type { LlmChunk, LlmProvider, LlmRequest, LlmToolSpec } from '../../src/domain/llm.ts';
import { OpenAiCompatibleProvider, type OpenAiCompatibleOptions } from '../../src/providers/openai-compatible-provider.ts';
import { createProviders } from '../../src/providers/provider-registry.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';

let mock: MockLlm;
beforeAll(async () => { mock = await MockLlm.start(); });
afterAll(async () => { await mock.close(); });
afterEach(() => { mock.reset(); });

const API_KEY = 'sk-test-secret-key-123';

function provider(opts: Partial<OpenAiCompatibleOptions> = {}): OpenAiCompatibleProvider {
  return new OpenAiCompatibleProvider({
    name: 'mock', baseUrl: mock.url, apiKey: API_KEY, model: 'mock-gpt',
    requestTimeoutMs: 10_000, stallTimeoutMs: 5_000, maxRetries: 1, retryDelayMs: 10, ...opts,
  });
}

function request(over: Partial<LlmRequest> = {}): LlmRequest {
  return { messages: [{ role: 'user', content: 'Hello?' }], signal: new AbortController().signal, ...over };
}

/** One model call's chunks, in the order they were handed over. */
async function collect(p: LlmProvider, req: LlmRequest): Promise<LlmChunk[]> {
  const out: LlmChunk[] = [];
  await p.stream(req, (c) => out.push(c));
  return out;
}

async function failure(p: LlmProvider, req: LlmRequest): Promise<{ error: AppError; chunks: LlmChunk[] }> {
  const chunks: LlmChunk[] = [];
  try {
    await p.stream(req, (c) => chunks.push(c));
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return { error: error as AppError, chunks };
  }
  throw new Error(`expected the stream to fail; got ${JSON.stringify(chunks)}`);
}

const text = (chunks: LlmChunk[], type: 'text' | 'reasoning' = 'text') =>
  chunks.map((c) => (c.type === type ? c.text : '')).join('');

const calculator: LlmToolSpec = {
  name: 'calculator', description: 'Evaluates arithmetic',
  parameters: { type: 'object', properties: { expression: { type: 'string' } }, required: ['expression'] },
};

describe('OpenAiCompatibleProvider: streaming', () => {
  it('streams the text of the reply, then one finish with usage', async () => {
    // tokens 10 ms apart: each arrives in a read of its own, so each is a chunk of its own
    mock.enqueue({ text: 'Hello there, how are you?', usage: { prompt_tokens: 7, completion_tokens: 5 }, delayMs: 10 });
    const chunks = await collect(provider(), request());
    expect(text(chunks)).toBe('Hello there, how are you?');
    expect(chunks.filter((c) => c.type === 'text')).toHaveLength(5);
    expect(chunks.at(-1)).toEqual({ type: 'finish', reason: 'stop', usage: { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 } });
    expect(chunks.filter((c) => c.type === 'finish')).toHaveLength(1);
  });

  it('merges the tokens that arrive in one read into one chunk, in order', async () => {
    const tokens = Array.from({ length: 40 }, (_, i) => ` w${i}`);
    mock.enqueue({ text: tokens });
    const chunks = await collect(provider(), request());
    expect(text(chunks)).toBe(tokens.join(''));
    expect(chunks.filter((c) => c.type === 'text').length).toBeLessThan(tokens.length / 2);
  });

  it('reuses its kept-alive connection for the next call', async () => {
    const p = provider();
    mock.enqueue({ text: 'one' }, { text: 'two' });
    expect(text(await collect(p, request()))).toBe('one');
    expect(text(await collect(p, request()))).toBe('two');
    expect(mock.connections).toBe(1);
  });

  it('streams reasoning deltas before the text', async () => {
    mock.enqueue({ reasoning: ['Let', ' me', ' think.'], text: ['Forty', '-two.'] });
    const chunks = await collect(provider(), request());
    expect(text(chunks, 'reasoning')).toBe('Let me think.');
    expect(text(chunks)).toBe('Forty-two.');
    expect(chunks.findIndex((c) => c.type === 'reasoning')).toBeLessThan(chunks.findIndex((c) => c.type === 'text'));
  });

  it('parses tool calls whose arguments arrive split over several chunks', async () => {
    mock.enqueue({ text: 'Let me compute.', toolCalls: [
      { id: 'call_1', name: 'calculator', args: { expression: '12 * (3 + 4)' } },
      { id: 'call_2', name: 'calculator', args: { expression: '2 ** 10' } },
    ] });
    const chunks = await collect(provider(), request({ tools: [calculator] }));
    expect(chunks.filter((c) => c.type === 'tool_call').map((c) => c.type === 'tool_call' && c.call)).toEqual([
      { id: 'call_1', name: 'calculator', args: { expression: '12 * (3 + 4)' } },
      { id: 'call_2', name: 'calculator', args: { expression: '2 ** 10' } },
    ]);
    expect(chunks.at(-1)).toMatchObject({ type: 'finish', reason: 'tool_calls' });
    // the tools went out as OpenAI function definitions
    expect(mock.requests[0]!.tools).toEqual([{ type: 'function', function: { name: 'calculator', description: 'Evaluates arithmetic', parameters: calculator.parameters } }]);
  });

  it('sends the conversation, tool calls and tool results in OpenAI shape, with model and settings', async () => {
    await collect(provider(), request({
      model: 'other-model', temperature: 0.2, maxTokens: 64,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'What is 12 * (3 + 4)?' },
        { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'calculator', args: { expression: '12 * (3 + 4)' } }] },
        { role: 'tool', toolCallId: 'call_1', toolName: 'calculator', content: '84' },
      ],
    }));
    const body = mock.requests[0]!;
    expect(body).toMatchObject({ model: 'other-model', temperature: 0.2, max_tokens: 64, stream: true, stream_options: { include_usage: true } });
    expect(body.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'What is 12 * (3 + 4)?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'calculator', arguments: '{"expression":"12 * (3 + 4)"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '84' },
    ]);
  });

  it('uses the default model and reports zero usage when the upstream sends none', async () => {
    mock.enqueue({ text: 'ok' });
    const chunks = await collect(provider(), request());
    expect(mock.requests[0]!.model).toBe('mock-gpt');
    expect(chunks.at(-1)).toMatchObject({ type: 'finish', usage: { prompt_tokens: expect.any(Number), completion_tokens: 1 } });
  });
});

describe('OpenAiCompatibleProvider: failures', () => {
  it('maps an upstream 500 to upstream_error after max_retries retries, without leaking the API key', async () => {
    mock.enqueue({ status: 500 }, { status: 500 }, { status: 500 });
    const { error } = await failure(provider({ maxRetries: 2 }), request());
    expect(error.code).toBe('upstream_error');
    expect(error.statusCode).toBe(10502);
    expect(error.message).toContain('500');
    expect(error.message).not.toContain(API_KEY);
    expect(mock.requests).toHaveLength(3);
  });

  it('recovers when a retry before the first token succeeds', async () => {
    mock.enqueue({ status: 503 }, { text: 'second time lucky' });
    const chunks = await collect(provider({ maxRetries: 1 }), request());
    expect(text(chunks)).toBe('second time lucky');
    expect(mock.requests).toHaveLength(2);
  });

  it('does not retry a client error (400)', async () => {
    mock.enqueue({ status: 400 }, { text: 'never asked' });
    const { error } = await failure(provider({ maxRetries: 3 }), request());
    expect(error.code).toBe('upstream_error');
    expect(error.message).toContain('400');
    expect(mock.requests).toHaveLength(1);
  });

  it('maps a malformed stream to upstream_error', async () => {
    mock.enqueue({ text: 'one two three four', malformed: true });
    const { error, chunks } = await failure(provider({ maxRetries: 0 }), request());
    expect(error.code).toBe('upstream_error');
    expect(error.message).toMatch(/malformed/);
    expect(text(chunks)).toBe('one two');
  });

  it('retries a connection that broke off before the first token', async () => {
    mock.enqueue({ text: 'lost', dropAfter: 0 }, { text: 'found' });
    const chunks = await collect(provider({ maxRetries: 1 }), request());
    expect(text(chunks)).toBe('found');
    expect(mock.requests).toHaveLength(2);
  });

  it('never retries after the first token: a dropped connection fails the stream', async () => {
    mock.enqueue({ text: 'one two three four', dropAfter: 2 });
    const { error, chunks } = await failure(provider({ maxRetries: 3 }), request());
    expect(error.code).toBe('upstream_error');
    expect(text(chunks)).toBe('one two');
    expect(error.message).toMatch(/broke off/);
    expect(mock.requests).toHaveLength(1);
  });

  it('fails a stalled stream with upstream_timeout and closes the upstream request', async () => {
    const config = loadConfig({ file: null, overrides: { llm: { stall_timeout: 1, max_retries: 0, providers: { mock: { type: 'openai-compatible', base_url: mock.url } } } } }).config;
    const stalling = createProviders(config).get('mock');
    mock.enqueue({ text: 'one two three', stallAfter: 2 });
    const { error, chunks } = await failure(stalling, request());
    expect(error.code).toBe('upstream_timeout');
    expect(error.statusCode).toBe(10504);
    expect(text(chunks)).toBe('one two');
    await mock.waitForAbort(2000);
  });

  it('fails with upstream_timeout when the total request timeout passes, even while tokens flow', async () => {
    mock.enqueue({ text: Array<string>(100).fill(' slow'), delayMs: 50 });
    const { error, chunks } = await failure(provider({ requestTimeoutMs: 600, stallTimeoutMs: 5_000 }), request());
    expect(error.code).toBe('upstream_timeout');
    expect(chunks.length).toBeLessThan(100);
    await mock.waitForAbort(2000);
  });

  it('retries a stall that happens before the first token', async () => {
    mock.enqueue({ stallAfter: 0 }, { text: 'fresh start' });
    const chunks = await collect(provider({ stallTimeoutMs: 1000, maxRetries: 1 }), request());
    expect(text(chunks)).toBe('fresh start');
    expect(mock.requests).toHaveLength(2);
  });
});

describe('OpenAiCompatibleProvider: abort', () => {
  it('aborting mid-stream closes the upstream request and ends the iteration quietly', async () => {
    mock.enqueue({ text: Array<string>(200).fill(' tok'), delayMs: 20 });
    const ac = new AbortController();
    const chunks: LlmChunk[] = [];
    await provider().stream(request({ signal: ac.signal }), (c) => {
      chunks.push(c);
      if (chunks.length === 3) ac.abort();
    });
    await mock.waitForAbort(2000);
    expect(chunks.length).toBeLessThan(10);
    expect(chunks.some((c) => c.type === 'finish')).toBe(false);
  });

  it('aborting while the upstream is silent ends the iteration promptly', async () => {
    mock.enqueue({ text: 'one two', stallAfter: 1 });
    const ac = new AbortController();
    const chunks: LlmChunk[] = [];
    const iterating = provider({ stallTimeoutMs: 60_000 }).stream(request({ signal: ac.signal }), (c) => chunks.push(c));
    // the first token came; then the upstream goes silent
    await vi.waitFor(() => expect(text(chunks)).toBe('one'), { timeout: 5000 });
    ac.abort();
    await iterating;
    expect(text(chunks)).toBe('one');
    await mock.waitForAbort(2000);
  });

  it('a chunk handler that throws ends the call with its own error and closes the upstream request', async () => {
    mock.enqueue({ text: Array<string>(200).fill(' tok'), delayMs: 20 }, { text: 'no retry' });
    const seen: LlmChunk[] = [];
    const broken = new Error('the consumer broke');
    await expect(provider({ maxRetries: 2 }).stream(request(), (c) => {
      seen.push(c);
      if (c.type === 'text') throw broken;
    })).rejects.toBe(broken);
    expect(seen).toHaveLength(1);
    await mock.waitForAbort(2000);
    expect(mock.requests).toHaveLength(1);
  });

  it('an already aborted signal sends no request', async () => {
    const ac = new AbortController();
    ac.abort();
    expect(await collect(provider(), request({ signal: ac.signal }))).toEqual([]);
    expect(mock.requests).toHaveLength(0);
  });
});

describe('MockLlm', () => {
  it('answers non-stream requests with a chat.completion and lists its model', async () => {
    mock.enqueue({ text: 'plain answer', toolCalls: [{ name: 'calculator', args: { expression: '1+1' } }] });
    const res = await fetch(`${mock.url}/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }) });
    const body = await res.json() as any;
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0]).toMatchObject({ finish_reason: 'tool_calls', message: { content: 'plain answer', tool_calls: [{ function: { name: 'calculator', arguments: '{"expression":"1+1"}' } }] } });
    const models = await (await fetch(`${mock.url}/models`)).json() as any;
    expect(models.data[0].id).toBe('mock-gpt');
  });
});
