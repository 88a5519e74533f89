import { describe, expect, it } from 'vitest';
import { MemoryBus } from '../../src/bus/memory-bus.ts';
import { TurnEvents } from '../../src/chat/watch.ts';
import type { ChatEvent, ChatEventBody } from '../../src/domain/events.ts';

const KEY = 'a'.repeat(32);
const event = (seq: number, body: ChatEventBody, userId = 7): ChatEvent => ({ seq, key: KEY, chatId: KEY, turnId: 't1', flowId: 'f', userId, body });
const delta = (seq: number, content: string) => event(seq, { kind: 'delta', content, reasoning: '' });

/** TurnEvents on the in-process bus: one turn's events, in order, to a callback. */
describe('TurnEvents', () => {
  it('hands over the events after the start seq, held ones first, through close; then resolves', async () => {
    const bus = new MemoryBus();
    const events = new TurnEvents(bus, KEY, 7);
    bus.publish(event(10, { kind: 'begin' }));
    bus.publish(delta(11, 'a'));
    bus.publish(event(12, { kind: 'delta', content: 'b', reasoning: '' }, 8)); // another user's: not this caller's turn
    events.start(10);
    const seen: number[] = [];
    const done = events.each((e) => { seen.push(e.seq); });
    bus.publish(delta(13, 'c'));
    // delivered in the publish itself
    expect(seen).toEqual([11, 13]);
    bus.publish(event(14, { kind: 'close' }));
    bus.publish(delta(15, 'after the close'));
    await done;
    expect(seen).toEqual([11, 13, 14]);
  });

  it('a callback that throws stops the delivery and rejects; abort resolves with nothing more', async () => {
    const bus = new MemoryBus();
    const failing = new TurnEvents(bus, KEY, 7);
    failing.start(0);
    const seen: number[] = [];
    const done = failing.each((e) => {
      seen.push(e.seq);
      if (e.seq === 2) throw new Error('encoder broke');
    });
    for (let seq = 1; seq <= 3; seq++) bus.publish(delta(seq, 'x'));
    await expect(done).rejects.toThrow('encoder broke');
    expect(seen).toEqual([1, 2]);

    const aborted = new TurnEvents(bus, KEY, 7);
    aborted.start(3);
    const more: number[] = [];
    const ended = aborted.each((e) => { more.push(e.seq); });
    bus.publish(delta(4, 'y'));
    aborted.abort();
    bus.publish(delta(5, 'z'));
    await ended;
    expect(more).toEqual([4]);
  });
});
