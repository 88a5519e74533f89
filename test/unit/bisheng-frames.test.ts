import { describe, expect, it } from 'vitest';
import { encodeFrame, toFrame } from '../../src/wire/bisheng-frames.ts';
import type { ChatEvent, ChatEventBody } from '../../src/domain/events.ts';

const event = (body: ChatEventBody, over: Partial<ChatEvent> = {}): ChatEvent => ({
  seq: 42, key: 'k', chatId: 'c0ffee00c0ffee00c0ffee00c0ffee00', turnId: 'turn-1', flowId: 'app-1', userId: 7, body, ...over,
});

describe('encodeFrame', () => {
  it.each([
    ['plain text', 'Hello', ''],
    ['quotes, backslashes, control characters', 'say "hi"\\ \n\t\u0001 </script>', ''],
    ['unicode and lone surrogates', 'héllo ✓ 😀 \ud800', ''],
    ['reasoning only', '', 'thinking…'],
  ])('a delta (%s) is exactly its frame as JSON', (_what, content, reasoning) => {
    const e = event({ kind: 'delta', content, reasoning });
    expect(encodeFrame(e)).toBe(JSON.stringify(toFrame(e)));
    expect(JSON.parse(encodeFrame(e))).toMatchObject({ category: 'processing', type: 'stream', message: { content, reasoning_content: reasoning }, seq: 42 });
  });

  it('a delta of a debug turn (no chat_id) too', () => {
    const e = event({ kind: 'delta', content: 'x', reasoning: '' }, { chatId: '', turnId: 'turn-debug' });
    expect(encodeFrame(e)).toBe(JSON.stringify(toFrame(e)));
  });

  it('deltas of interleaved turns carry their own ids and seqs', () => {
    const a = (seq: number) => event({ kind: 'delta', content: 'a', reasoning: '' }, { turnId: 'turn-a', chatId: 'a'.repeat(32), userId: 1, seq });
    const b = (seq: number) => event({ kind: 'delta', content: 'b', reasoning: '' }, { turnId: 'turn-b', chatId: 'b'.repeat(32), userId: 2, seq });
    for (const e of [a(1), b(1), a(2), b(2)]) expect(encodeFrame(e)).toBe(JSON.stringify(toFrame(e)));
  });

  it('other frames are their frame as JSON, encoded once per event', () => {
    const e = event({ kind: 'answer_end', messageId: 9, text: 'done', usage: null, stopped: false });
    const text = encodeFrame(e);
    expect(text).toBe(JSON.stringify(toFrame(e)));
    expect(encodeFrame(e)).toBe(text);
  });
});
