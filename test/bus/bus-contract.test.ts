import { afterAll, describe, expect, it } from 'vitest';
import type { Bus } from '../../src/bus/bus.ts';
import { MemoryBus } from '../../src/bus/memory-bus.ts';
import { RedisBus } from '../../src/bus/redis-bus.ts';
import type { ChatEvent } from '../../src/domain/events.ts';
import type { RedisClient } from '../../src/redis/connect.ts';
import { dropPrefix, redisClient, redisUrl, testPrefix } from '../helpers/redis.ts';

/** The contract every Bus implementation passes: the memory bus and the Redis bus run the same suite. */
export function busContract(name: string, make: (clock: { now: number }) => Bus | Promise<Bus>): void {
  describe(`${name} bus contract`, () => {
    const ev = (key: string, seq: number, turnId = 't1'): ChatEvent => ({ seq, key, chatId: key, turnId, flowId: 'f', userId: 1, body: { kind: 'delta', content: String(seq), reasoning: '' } });

    it('delivers events to every subscriber of the key, in order, and not to others', async () => {
      const bus = await make({ now: 0 });
      const a: number[] = [];
      const b: number[] = [];
      const other: number[] = [];
      bus.subscribe('k', (e) => a.push(e.seq));
      const unsubscribe = bus.subscribe('k', (e) => b.push(e.seq));
      bus.subscribe('x', (e) => other.push(e.seq));
      bus.publish(ev('k', 1));
      bus.publish(ev('k', 2));
      unsubscribe();
      bus.publish(ev('k', 3));
      expect(a).toEqual([1, 2, 3]);
      expect(b).toEqual([1, 2]);
      expect(other).toEqual([]);
      await bus.close();
    });

    it('a throwing subscriber does not stop the others', async () => {
      const bus = await make({ now: 0 });
      const got: number[] = [];
      bus.subscribe('k', () => { throw new Error('boom'); });
      bus.subscribe('k', (e) => got.push(e.seq));
      bus.publish(ev('k', 1));
      expect(got).toEqual([1]);
      await bus.close();
    });

    it('replays the in-flight turn after any seq it covers, and says when it does not', async () => {
      const bus = await make({ now: 0 });
      expect(await bus.replay('k', 0)).toBeNull();
      for (const s of [11, 12, 13]) bus.publish(ev('k', s));
      expect((await bus.replay('k', 10))!.map((e) => e.seq)).toEqual([11, 12, 13]);
      expect((await bus.replay('k', 12))!.map((e) => e.seq)).toEqual([13]);
      expect(await bus.replay('k', 13)).toEqual([]);
      expect(await bus.replay('k', 5)).toBeNull();
      await bus.close();
    });

    it('keeps the last finished turn for the replay ttl, also while the next turn runs', async () => {
      const clock = { now: 1000 };
      const bus = await make(clock);
      for (const s of [1, 2, 3]) bus.publish(ev('k', s));
      bus.endTurn('k', 10);
      for (const s of [7, 8]) bus.publish(ev('k', s, 't2'));
      expect((await bus.replay('k', 1))!.map((e) => e.seq)).toEqual([2, 3, 7, 8]);
      bus.endTurn('k', 10);
      bus.publish(ev('k', 9, 't3'));
      // turn 1 is two turns back now: gone
      expect(await bus.replay('k', 1)).toBeNull();
      expect((await bus.replay('k', 7))!.map((e) => e.seq)).toEqual([8, 9]);
      bus.endTurn('k', 10);
      clock.now += 11_000;
      expect(await bus.replay('k', 8)).toBeNull();
      expect(await bus.replay('k', 9)).toEqual([]);
      await bus.close();
    });

    it('replays a finished turn exactly as it was published (every field of every event)', async () => {
      const bus = await make({ now: 0 });
      const base = { key: 'k', chatId: 'k', turnId: 't1', flowId: 'f', userId: 7 };
      const published: ChatEvent[] = [
        { ...base, seq: 1, body: { kind: 'begin' } },
        { ...base, seq: 2, body: { kind: 'llm_start' } },
        { ...base, seq: 3, body: { kind: 'delta', content: '', reasoning: 'think' } },
        { ...base, seq: 4, body: { kind: 'delta', content: 'Hello', reasoning: '' } },
        { ...base, seq: 5, body: { kind: 'delta', content: ' wörld ✓', reasoning: '' } },
        { ...base, seq: 6, body: { kind: 'llm_end' } },
        { ...base, seq: 7, body: { kind: 'close' } },
      ];
      for (const e of published) bus.publish(structuredClone(e));
      bus.endTurn('k', 60);
      expect(await bus.replay('k', 0)).toEqual(published);
      expect(await bus.replay('k', 3)).toEqual(published.slice(3));
      // also while the next turn runs
      const next: ChatEvent = { ...base, turnId: 't2', seq: 8, body: { kind: 'delta', content: 'next', reasoning: '' } };
      bus.publish(structuredClone(next));
      expect(await bus.replay('k', 0)).toEqual([...published, next]);
      await bus.close();
    });

    it('carries stop requests to every control listener', async () => {
      const bus = await make({ now: 0 });
      const got: string[] = [];
      const off = bus.onControl((m) => got.push(`${m.type}:${m.key}`));
      bus.sendControl({ type: 'stop', key: 'k' });
      off();
      bus.sendControl({ type: 'stop', key: 'j' });
      await new Promise((r) => setTimeout(r, 20));
      expect(got).toEqual(['stop:k']);
      await bus.close();
    });
  });
}

busContract('memory', (clock) => new MemoryBus(() => clock.now));

const url = redisUrl();
describe.runIf(url)('on Redis', () => {
  const clients: RedisClient[] = [];
  const prefixes: string[] = [];
  afterAll(async () => {
    if (clients[0]) for (const p of prefixes) await dropPrefix(clients[0], p);
    for (const c of clients) c.disconnect();
  });
  /** One instance's bus: its own two connections, a prefix of this test's */
  const instance = async (clock: { now: number }, prefix = testPrefix()) => {
    const [redis, sub] = [await redisClient(url!), await redisClient(url!)];
    clients.push(redis, sub);
    prefixes.push(prefix);
    return new RedisBus(redis, sub, { prefix, replayTtl: 60, now: () => clock.now });
  };
  busContract('redis', (clock) => instance(clock));
});

describe('memory bus retention', () => {
  it('drops the longest-finished turns beyond its event budget; a late resume is then told so', async () => {
    const bus = new MemoryBus(() => 0, 5);
    const ev = (key: string, seq: number): ChatEvent => ({ seq, key, chatId: key, turnId: 't', flowId: 'f', userId: 1, body: { kind: 'close' } });
    for (const key of ['a', 'b']) {
      for (const s of [1, 2, 3]) bus.publish(ev(key, s));
      bus.endTurn(key, 600);
    }
    // 6 events retained > 5: the turn of `a` (finished first) is gone, `b` is kept
    expect(await bus.replay('a', 1)).toBeNull();
    expect((await bus.replay('b', 1))!.map((e) => e.seq)).toEqual([2, 3]);
    await bus.close();
  });
});
