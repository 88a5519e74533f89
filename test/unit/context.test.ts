import { describe, expect, it } from 'vitest';
import { buildContext, readContext } from '../../src/chat/context.ts';
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

/** A conversation as a chat app stores it: turns of a question, tool rows and answers; now and then a regenerated, blocked or interrupted answer, or a clear marker. */
function conversation(turns: number, seed: number): MessageRow[] {
  let state = seed;
  const random = () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
  const rows: MessageRow[] = [];
  for (let t = 0; t < turns; t++) {
    if (random() < 0.03) rows.push(row({ is_bot: 1, category: 'clear_history', type: 'info' }));
    const turnId = `t${t}`;
    const blocked = random() < 0.05;
    const q = row({ message: JSON.stringify({ input: `q${t}` }), turn_id: turnId, sensitive_status: blocked ? 2 : 1 });
    rows.push(q);
    const answer = (turn: string) => {
      const tools = blocked ? 0 : random() < 0.3 ? 1 + Math.floor(random() * 4) : 0;
      for (let i = 0; i < tools; i++) {
        rows.push(row({ is_bot: 1, category: 'tool', type: 'end', parent_message_id: q.id, turn_id: turn, message: JSON.stringify({ tool_key: 'calc', input: { i }, output: `${t}.${i}` }), extra: JSON.stringify({ run_id: `r${t}.${i}.${turn}` }) }));
      }
      const interrupted = !blocked && random() < 0.05;
      rows.push(row({
        is_bot: 1, category: 'answer', type: 'bot', message: `a${t} ${turn}`, parent_message_id: q.id, turn_id: turn, sensitive_status: blocked ? 2 : 1,
        remark: interrupted ? 'break_answer' : '', extra: blocked ? '{"moderation":"input"}' : interrupted ? '{"interrupted":true}' : '{}',
      }));
    };
    answer(turnId);
    while (random() < 0.15) answer(`${turnId}r${rows.length}`);
  }
  return rows;
}

describe('readContext', () => {
  /** A reader over stored rows that counts its reads: the newest `limit` rows, oldest first. */
  const reader = (rows: MessageRow[]) => {
    const limits: number[] = [];
    return { limits, read: async (limit: number) => (limits.push(limit), rows.slice(Math.max(0, rows.length - limit))) };
  };

  it('gives what the long read (window × 2 + 10 rows) gives, for conversations of every shape and length', async () => {
    let shortOnly = 0;
    let cases = 0;
    for (let seed = 1; seed <= 60; seed++) {
      for (const turns of [0, 3, 20, 40, 90]) {
        const rows = conversation(turns, seed);
        for (const window of [1, 4, 10, 50]) {
          const r = reader(rows);
          const got = await readContext(r.read, window);
          expect(got, `seed ${seed}, ${turns} turns, window ${window}`).toEqual(buildContext(rows.slice(Math.max(0, rows.length - (window * 2 + 10))), window));
          cases++;
          if (r.limits.length === 1) shortOnly++;
        }
      }
    }
    // most conversations need only the short read; tool-heavy windows need the long one
    expect(shortOnly).toBeGreaterThan(cases / 2);
    expect(shortOnly).toBeLessThan(cases);
  });

  it('never starts the window inside a tool exchange the short read cut', async () => {
    // window 7: the short read (17 rows) starts at turn 0's 8th of ten tool rows; turn 1's twelve
    // answers (regenerated) give two messages, so, read from there, the window would start with a
    // tool call of turn 0 that lacks its first seven calls
    const q0 = row({ message: '{"input":"q0"}', turn_id: 't0' });
    const rows = [q0];
    for (let i = 0; i < 10; i++) rows.push(row({ is_bot: 1, category: 'tool', type: 'end', parent_message_id: q0.id, turn_id: 't0', message: JSON.stringify({ tool_key: 'calc', input: { i }, output: String(i) }), extra: JSON.stringify({ run_id: `r${i}` }) }));
    rows.push(row({ is_bot: 1, category: 'answer', type: 'bot', message: 'a0', parent_message_id: q0.id, turn_id: 't0' }));
    const q1 = row({ message: '{"input":"q1"}', turn_id: 't1' });
    rows.push(q1);
    for (let i = 0; i < 12; i++) rows.push(row({ is_bot: 1, category: 'answer', type: 'bot', message: `a1.${i}`, parent_message_id: q1.id, turn_id: `t1.${i}` }));
    const r = reader(rows);
    const got = await readContext(r.read, 7);
    expect(r.limits).toEqual([17, 24]);
    expect(got).toEqual(buildContext(rows, 7));
    expect(got).toEqual([{ role: 'assistant', content: 'a0' }, { role: 'user', content: 'q1' }, { role: 'assistant', content: 'a1.11' }]);
  });

  it('reads window + 10 rows once for a plain conversation, and nothing for a window of 0', async () => {
    const rows: MessageRow[] = [];
    for (let t = 0; t < 100; t++) {
      const q = row({ message: JSON.stringify({ input: `q${t}` }), turn_id: `t${t}` });
      rows.push(q, row({ is_bot: 1, category: 'answer', type: 'bot', message: `a${t}`, parent_message_id: q.id, turn_id: `t${t}` }));
    }
    const r = reader(rows);
    const got = await readContext(r.read, 50);
    expect(r.limits).toEqual([60]);
    expect(got).toHaveLength(50);
    expect(got[0]).toEqual({ role: 'user', content: 'q75' });
    expect(got.at(-1)).toEqual({ role: 'assistant', content: 'a99' });
    const none = reader(rows);
    expect(await readContext(none.read, 0)).toEqual([]);
    expect(none.limits).toEqual([]);
  });
});
