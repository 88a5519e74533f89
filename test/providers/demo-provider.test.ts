import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { AppError } from '../../src/domain/errors.ts';
import type { LlmChunk, LlmMessage, LlmProvider, LlmRequest, LlmToolSpec } from '../../src/domain/llm.ts';
import { DemoProvider, findExpression } from '../../src/providers/demo-provider.ts';
import { OpenAiCompatibleProvider } from '../../src/providers/openai-compatible-provider.ts';
import { createProviders, ProviderRegistry } from '../../src/providers/provider-registry.ts';

const demo = new DemoProvider({ tokenDelayMs: 0 });

const tool = (name: string): LlmToolSpec => ({ name, description: name, parameters: { type: 'object', properties: {} } });
const TOOLS = [tool('calculator'), tool('current_time')];

function request(messages: LlmMessage[], over: Partial<LlmRequest> = {}): LlmRequest {
  return { messages, signal: new AbortController().signal, ...over };
}

/** One model call's chunks, in the order they were handed over. */
async function collect(provider: LlmProvider, req: LlmRequest): Promise<LlmChunk[]> {
  const out: LlmChunk[] = [];
  await provider.stream(req, (c) => out.push(c));
  return out;
}

const text = (chunks: LlmChunk[], type: 'text' | 'reasoning' = 'text') =>
  chunks.map((c) => (c.type === type ? c.text : '')).join('');

describe('DemoProvider', () => {
  it('streams a deterministic, clearly labelled echo word by word, then a finish with usage', async () => {
    const req = () => request([{ role: 'user', content: 'Tell me about Parley' }]);
    const chunks = await collect(demo, req());
    expect(text(chunks)).toBe('This is Parley\'s offline demo model. You said: "Tell me about Parley". Configure llm.providers (or PARLEY_LLM_BASE_URL) to talk to a real model.');
    expect(chunks.filter((c) => c.type === 'text').length).toBeGreaterThan(10);
    const finish = chunks.at(-1);
    expect(finish).toMatchObject({ type: 'finish', reason: 'stop', usage: { prompt_tokens: 4 } });
    expect(finish?.type === 'finish' && finish.usage.completion_tokens).toBe(chunks.length - 1);
    expect(await collect(demo, req())).toEqual(chunks);
  });

  it('thinks aloud briefly before answering a question', async () => {
    const chunks = await collect(demo, request([{ role: 'user', content: 'Is this real?' }]));
    expect(text(chunks, 'reasoning')).not.toBe('');
    expect(chunks.findIndex((c) => c.type === 'reasoning')).toBeLessThan(chunks.findIndex((c) => c.type === 'text'));
    expect(text(chunks)).toContain('You said: "Is this real?"');
  });

  it('calls the calculator for arithmetic when it is offered', async () => {
    const chunks = await collect(demo, request([{ role: 'user', content: 'What is 12 * (3 + 4)?' }], { tools: TOOLS }));
    expect(chunks).toEqual([
      { type: 'tool_call', call: { id: expect.any(String), name: 'calculator', args: { expression: '12 * (3 + 4)' } } },
      { type: 'finish', reason: 'tool_calls', usage: expect.any(Object) },
    ]);
  });

  it('calls current_time for a time question when it is offered', async () => {
    const chunks = await collect(demo, request([{ role: 'user', content: 'What time is it?' }], { tools: TOOLS }));
    expect(chunks[0]).toEqual({ type: 'tool_call', call: { id: expect.any(String), name: 'current_time', args: {} } });
    expect(chunks[1]).toMatchObject({ type: 'finish', reason: 'tool_calls' });
  });

  it('answers in text when the matching tool is not offered', async () => {
    const chunks = await collect(demo, request([{ role: 'user', content: 'What is 2 + 2?' }], { tools: [tool('current_time')] }));
    expect(chunks.some((c) => c.type === 'tool_call')).toBe(false);
    expect(text(chunks)).toContain('You said: "What is 2 + 2?"');
  });

  it('answers from the tool output after the tool ran', async () => {
    const chunks = await collect(demo, request([
      { role: 'user', content: 'What is 12 * (3 + 4)?' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'calculator', args: { expression: '12 * (3 + 4)' } }] },
      { role: 'tool', toolCallId: 'call_1', toolName: 'calculator', content: '84' },
    ], { tools: TOOLS }));
    expect(text(chunks)).toBe('The result is 84.');
    expect(chunks.at(-1)).toMatchObject({ type: 'finish', reason: 'stop' });
  });

  it('stops streaming when aborted', async () => {
    const slow = new DemoProvider({ tokenDelayMs: 50 });
    const ac = new AbortController();
    const chunks: LlmChunk[] = [];
    await slow.stream(request([{ role: 'user', content: 'Tell me a long story' }], { signal: ac.signal }), (c) => {
      chunks.push(c);
      if (chunks.length === 2) ac.abort();
    });
    expect(chunks).toHaveLength(2);
  });

  it('finds arithmetic in a sentence', () => {
    expect(findExpression('What is 12 * (3 + 4)?')).toBe('12 * (3 + 4)');
    expect(findExpression('compute (2+3)*4 please')).toBe('(2+3)*4');
    expect(findExpression('(what is 2 + 3)')).toBe('2 + 3');
    expect(findExpression('I have 3 apples')).toBeNull();
  });
});

describe('ProviderRegistry', () => {
  it('builds the configured providers, with the demo model as default', () => {
    const { config } = loadConfig({ file: null, overrides: { llm: { providers: { gpt: { type: 'openai-compatible', base_url: 'http://127.0.0.1:9/v1', model: 'm' } } } } });
    const registry = createProviders(config);
    expect(registry.names().sort()).toEqual(['default', 'gpt']);
    expect(registry.get('default')).toBeInstanceOf(DemoProvider);
    expect(registry.get('gpt')).toBeInstanceOf(OpenAiCompatibleProvider);
  });

  it('answers an unknown name with app_unbuildable (10422)', () => {
    const registry = new ProviderRegistry();
    expect(() => registry.get('nope')).toThrow(AppError);
    try {
      registry.get('nope');
    } catch (err) {
      expect((err as AppError).code).toBe('app_unbuildable');
      expect((err as AppError).statusCode).toBe(10422);
      expect((err as AppError).message).toBe('model not configured');
    }
  });

  it('accepts injected providers, replacing one of the same name', async () => {
    const fake: LlmProvider = {
      name: 'default',
      async stream(_req, onChunk) { onChunk({ type: 'finish', reason: 'stop', usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } }); },
    };
    const registry = createProviders(loadConfig({ file: null }).config).register(fake);
    expect(registry.get('default')).toBe(fake);
    expect(await collect(registry.get('default')!, request([]))).toHaveLength(1);
  });
});
