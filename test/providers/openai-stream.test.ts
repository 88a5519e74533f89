import { describe, expect, it } from 'vitest';
import { OpenAiStreamReader, StreamFailure } from '../../src/providers/openai-stream.ts';

const ev = (o: unknown) => `data: ${typeof o === 'string' ? o : JSON.stringify(o)}\n\n`;
const delta = (d: Record<string, unknown>, finish: string | null = null) => ev({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: d, finish_reason: finish }] });

describe('OpenAiStreamReader', () => {
  it('merges consecutive deltas of one read by sort, keeping their order', () => {
    const r = new OpenAiStreamReader();
    const out = r.feed(delta({ role: 'assistant', content: '' }) + delta({ reasoning_content: 'Hm' }) + delta({ reasoning_content: 'm.' })
      + delta({ content: 'A' }) + delta({ content: 'B' }) + delta({ reasoning: 'again' }) + delta({ content: 'C' }));
    expect(out).toEqual([
      { type: 'reasoning', text: 'Hmm.' }, { type: 'text', text: 'AB' }, { type: 'reasoning', text: 'again' }, { type: 'text', text: 'C' },
    ]);
  });

  it('reads events split anywhere across reads, multi-byte characters included', () => {
    const r = new OpenAiStreamReader();
    const whole = delta({ content: 'héllo ✓' }) + delta({}, 'stop') + ev({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2 } }) + ev('[DONE]');
    const texts: string[] = [];
    for (let i = 0; i < whole.length; i += 7) texts.push(...r.feed(whole.slice(i, i + 7)).map((c) => (c.type === 'text' ? c.text : '')));
    expect(texts.join('')).toBe('héllo ✓');
    expect(r.done).toBe(true);
    expect(r.end()).toEqual([{ type: 'finish', reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }]);
  });

  it('assembles tool calls from their pieces by index and puts them before the finish', () => {
    const r = new OpenAiStreamReader();
    r.feed(delta({ tool_calls: [{ index: 1, id: 'b', type: 'function', function: { name: 'current_time', arguments: '' } }] })
      + delta({ tool_calls: [{ index: 0, id: 'a', type: 'function', function: { name: 'calculator', arguments: '{"expr' } }] })
      + delta({ tool_calls: [{ index: 0, function: { arguments: 'ession":"1+1"}' } }] })
      + delta({ tool_calls: [{ index: 1, function: { arguments: 'not json' } }] })
      + delta({}, 'tool_calls') + ev('[DONE]'));
    expect(r.end()).toEqual([
      { type: 'tool_call', call: { id: 'a', name: 'calculator', args: { expression: '1+1' } } },
      { type: 'tool_call', call: { id: 'b', name: 'current_time', args: {}, rawArgs: 'not json' } },
      { type: 'finish', reason: 'tool_calls', usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } },
    ]);
  });

  it('a body that ends after a finish_reason without [DONE] still finishes', () => {
    const r = new OpenAiStreamReader();
    r.feed(delta({ content: 'x' }) + delta({}, 'length'));
    expect(r.end().at(-1)).toMatchObject({ type: 'finish', reason: 'length' });
  });

  it('a body that ends with neither [DONE] nor a finish_reason fails', () => {
    const r = new OpenAiStreamReader();
    r.feed(delta({ content: 'x' }));
    expect(() => r.end()).toThrow(/without a finish/);
  });

  it('returns the deltas before a malformed chunk, then reports it; later events are ignored', () => {
    const r = new OpenAiStreamReader();
    const out = r.feed(delta({ content: 'one' }) + ev('{not json') + delta({ content: 'two' }));
    expect(out).toEqual([{ type: 'text', text: 'one' }]);
    expect(r.failed()).toBeInstanceOf(StreamFailure);
    expect(r.failed()!.kind).toBe('malformed');
    expect(() => r.end()).toThrow(StreamFailure);
  });

  it.each([
    ['choices not an array', ev({ choices: {} })],
    ['a choice not an object', ev({ choices: [7] })],
    ['delta not an object', ev({ choices: [{ delta: 'x' }] })],
    ['content not text', delta({ content: 42 })],
    ['tool_calls not an array', delta({ tool_calls: {} })],
    ['a chunk that is not an object', ev('[1,2]')],
  ])('a chunk with %s is malformed', (_what, text) => {
    const r = new OpenAiStreamReader();
    r.feed(text);
    expect(r.failed()?.kind).toBe('malformed');
  });

  it('an error object in the stream is reported with its message', () => {
    const r = new OpenAiStreamReader();
    r.feed(ev({ error: { message: 'model overloaded', type: 'server_error' } }));
    expect(r.failed()).toMatchObject({ kind: 'reported', message: expect.stringContaining('model overloaded') });
  });

  it('ignores comments, other fields and chunks without choices', () => {
    const r = new OpenAiStreamReader();
    const out = r.feed(': keep-alive\n\nevent: ping\ndata: {"object":"ping"}\n\n' + delta({ content: 'ok' }) + delta({}, 'stop') + ev('[DONE]'));
    expect(out).toEqual([{ type: 'text', text: 'ok' }]);
    expect(r.end()).toHaveLength(1);
  });
});
