import { describe, expect, it } from 'vitest';
import { buildContext } from '../../src/chat/context.ts';
import type { MessageRow } from '../../src/storage/tables.ts';

let nextId = 1;
const row = (over: Partial<MessageRow>): MessageRow => ({
  id: nextId++, chat_id: 'c', flow_id: 'f', user_id: 1, is_bot: 0, message: '', type: 'human', category: 'question', intermediate_steps: '',
  files: '[]', extra: '{}', source: 0, sender: '', receiver: null, liked: 0, solved: 0, copied: 0, remark: '', sensitive_status: 1,
  parent_message_id: null, turn_id: null, tokens: 0, latency_ms: null, create_time: '', update_time: '', ...over,
});

describe('buildContext', () => {
  it('keeps an interrupted answer out of the context even after a user comment replaced its remark', () => {
    const q = row({ message: '{"input":"hi"}', turn_id: 't1' });
    const a = row({ is_bot: 1, category: 'answer', type: 'bot', message: 'partial', parent_message_id: q.id, turn_id: 't1', remark: 'great answer!', extra: '{"interrupted":true}' });
    expect(buildContext([q, a], 50)).toEqual([{ role: 'user', content: 'hi' }]);
  });

  it('uses only the newest answer of a regenerated question and nothing before a clear marker', () => {
    const q0 = row({ message: 'old' });
    const clear = row({ is_bot: 1, category: 'clear_history', type: 'info' });
    const q = row({ message: '{"input":"q"}', turn_id: 't1' });
    const a1 = row({ is_bot: 1, category: 'answer', message: 'first', parent_message_id: q.id, turn_id: 't1' });
    const a2 = row({ is_bot: 1, category: 'answer', message: 'second', parent_message_id: q.id, turn_id: 't2' });
    expect(buildContext([q0, clear, q, a1, a2], 50)).toEqual([{ role: 'user', content: 'q' }, { role: 'assistant', content: 'second' }]);
  });
});
