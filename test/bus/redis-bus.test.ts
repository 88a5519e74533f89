/**
 * The Redis bus between instances: two RedisBus objects on one Redis stand for two server
 * processes (the bus contract itself runs in bus-contract.test.ts).
 */
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { RedisBus } from '../../src/bus/redis-bus.ts';
import type { ChatEvent } from '../../src/domain/events.ts';
import type { RedisClient } from '../../src/redis/connect.ts';
import { dropPrefix, ownRedisServer, redisClient, redisUrl, testPrefix } from '../helpers/redis.ts';
import { eventually } from '../helpers/wait.ts';

const url = redisUrl();
const ev = (seq: number, turnId = 't1', key = 'k', chatId: string = key): ChatEvent =>
  ({ seq, key, chatId, turnId, flowId: 'f', userId: 1, body: { kind: 'delta', content: String(seq), reasoning: '' } });
const close = (seq: number, turnId = 't1'): ChatEvent => ({ ...ev(seq, turnId), body: { kind: 'close' } });

describe.runIf(url)('Redis bus between instances', () => {
  const clients: RedisClient[] = [];
  const prefix = testPrefix();
  afterAll(async () => {
    if (clients[0]) await dropPrefix(clients[0], prefix);
    for (const c of clients) c.disconnect();
  });
  /** `wrap`: what the bus's command connection is seen through (a test that makes its commands fail) */
  const instance = async (at = url!, errors: unknown[] = [], wrap = (c: RedisClient) => c) => {
    const [redis, sub] = [await redisClient(at), await redisClient(at)];
    clients.push(redis, sub);
    // as the server says it: conversations are shared, the scratch keys of unstored turns are not
    const bus = new RedisBus(wrap(redis), sub, { prefix, replayTtl: 60, onError: (e) => errors.push(e), shared: (k) => !k.startsWith('scratch:') });
    onTestFinished(() => bus.close());
    return bus;
  };

  it('every event published on A reaches a watcher on B once, in seq order; B replays them; the next turn may run on B', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = `k${Math.random()}`;
    const onA: number[] = [];
    const onB: number[] = [];
    a.subscribe(key, (e) => onA.push(e.seq));
    b.subscribe(key, (e) => onB.push(e.seq));
    await Promise.all([a.whenSubscribed(key), b.whenSubscribed(key)]);
    for (let s = 1; s <= 50; s++) a.publish(ev(s, 't1', key));
    a.publish({ ...close(51), key, chatId: key });
    a.endTurn(key, 60);
    // A's own watcher has them at once
    expect(onA).toHaveLength(51);
    await eventually(() => (onB.length >= 51 ? true : undefined), 'B to get the turn');
    expect(onB).toEqual(onA);
    expect((await b.replay(key, 40))!.map((e) => e.seq)).toEqual([41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]);
    // the next turn runs on B: A's watcher gets it, and the log keeps both turns
    for (const s of [52, 53]) b.publish({ ...ev(s, 't2', key) });
    await eventually(() => (onA.length >= 53 ? true : undefined), 'A to get the turn run on B');
    expect(onA.slice(51)).toEqual([52, 53]);
    expect((await a.replay(key, 49))!.map((e) => e.seq)).toEqual([50, 51, 52, 53]);
  });

  it('a stop sent on one instance reaches the others (and its own listeners once)', async () => {
    const [a, b] = [await instance(), await instance()];
    const onA: string[] = [];
    const onB: string[] = [];
    a.onControl((m) => onA.push(m.key));
    b.onControl((m) => onB.push(m.key));
    await eventually(async () => {
      a.sendControl({ type: 'stop', key: 'probe' });
      return onB.includes('probe') ? true : undefined;
    }, 'the control channel');
    a.sendControl({ type: 'stop', key: 'k1' });
    await eventually(() => (onB.includes('k1') ? true : undefined), 'B to get the stop');
    expect(onA.filter((k) => k === 'k1')).toHaveLength(1);
  });

  it('unstored turns (no chat id) stay on their instance, without a subscription in Redis', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = `scratch:${Math.random()}`;
    const onB: number[] = [];
    b.subscribe(key, (e) => onB.push(e.seq));
    await b.whenSubscribed(key);
    a.publish(ev(1, 't1', key, ''));
    a.endTurn(key, 60);
    expect(await b.replay(key, 0)).toBeNull();
    expect((await a.replay(key, 0))!.map((e) => e.seq)).toEqual([1]);
    expect(onB).toEqual([]);
    expect(await clients[0]!.pubsub('NUMSUB', `${prefix}{${key}}:ev`)).toEqual([`${prefix}{${key}}:ev`, 0]);
  });

  it('Redis away: the instance serves its own turns and replays from its own log; back, it rejoins', async () => {
    const redis = await ownRedisServer();
    onTestFinished(() => redis.stop());
    const errors: unknown[] = [];
    const [a, b] = [await instance(redis.url, errors), await instance(redis.url)];
    const key = 'kdown';
    const onA: number[] = [];
    const onB: number[] = [];
    a.subscribe(key, (e) => onA.push(e.seq));
    b.subscribe(key, (e) => onB.push(e.seq));
    await Promise.all([a.whenSubscribed(key), b.whenSubscribed(key)]);

    await redis.stop();
    await eventually(() => (clients.at(-4)!.status !== 'ready' ? true : undefined), 'the connection to drop');
    for (const s of [1, 2, 3]) a.publish(ev(s, 't1', key));
    expect(onA).toEqual([1, 2, 3]);
    expect((await a.replay(key, 1))!.map((e) => e.seq)).toEqual([2, 3]);
    expect(errors.length).toBeGreaterThan(0);

    await redis.start();
    await eventually(async () => {
      a.publish(ev(onA.length + 1, 't1', key));
      return onB.length > 0 ? true : undefined;
    }, 'B to get events again', 15_000);
    expect(onB.every((s) => s > 3)).toBe(true);
  });

  it('a batch lost to a Redis blip mid-turn: the shared log restarts after it, never replays across the hole', async () => {
    let failing = false;
    // the command connection as a blip leaves it: the scripts sent meanwhile fail
    const blip = (c: RedisClient) => new Proxy(c, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'evalsha' && typeof value === 'function') {
          return (...args: unknown[]) => (failing ? Promise.reject(new Error('Connection is closed.')) : (value as (...a: unknown[]) => unknown).apply(target, args));
        }
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const errors: unknown[] = [];
    const [a, b] = [await instance(url!, errors, blip), await instance()];
    const key = `kblip${Math.random()}`;
    a.publish(ev(1, 't1', key));
    await eventually(async () => ((await b.replay(key, 0))?.length === 1 ? true : undefined), 'the first event stored');
    failing = true;
    a.publish(ev(2, 't1', key));
    a.publish(ev(3, 't1', key));
    await eventually(() => (errors.length > 0 ? true : undefined), 'the lost batch');
    failing = false;
    a.publish(ev(4, 't1', key));
    a.publish(ev(5, 't1', key));
    await eventually(async () => ((await b.replay(key, 3))?.length === 2 ? true : undefined), 'the log after the hole');
    expect((await b.replay(key, 3))!.map((e) => e.seq)).toEqual([4, 5]);
    // before the hole Redis has no answer (B has none of its own): the client reloads instead of missing 2 and 3
    expect(await b.replay(key, 0)).toBeNull();
    // A has every event in its own log
    expect((await a.replay(key, 0))!.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('a conversation left while Redis was away is not listened to again once it is back', async () => {
    const redis = await ownRedisServer();
    onTestFinished(() => redis.stop());
    const a = await instance(redis.url);
    const key = 'kleft';
    const channel = `${prefix}{${key}}:ev`;
    const off = a.subscribe(key, () => undefined);
    await a.whenSubscribed(key);
    const probe = await redisClient(redis.url);
    expect(await probe.pubsub('NUMSUB', channel)).toEqual([channel, 1]);
    probe.disconnect();
    await redis.stop();
    await eventually(() => (clients.at(-1)!.status !== 'ready' ? true : undefined), 'the connection to drop');
    off();
    await redis.start();
    const after = await redisClient(redis.url);
    clients.push(after);
    await eventually(async () => (clients.at(-2)!.status === 'ready' ? true : undefined), 'the subscriber back');
    await eventually(async () => ((await after.pubsub('NUMSUB', `${prefix}control`)) as [string, number])[1] === 1 ? true : undefined, 'the control channel again');
    await eventually(async () => ((await after.pubsub('NUMSUB', channel)) as [string, number])[1] === 0 ? true : undefined, 'the left channel dropped');
  });

  it("a message it cannot read (another version's) is dropped: the instance lives on and reads the next", async () => {
    const errors: unknown[] = [];
    const a = await instance(url!, errors);
    const key = `kbad${Math.random()}`;
    const got: number[] = [];
    a.subscribe(key, (e) => got.push(e.seq));
    await a.whenSubscribed(key);
    const stops: string[] = [];
    a.onControl((m) => stops.push(m.key));
    const raw = clients[0]!;
    await raw.publish(`${prefix}{${key}}:ev`, 'other-instance|{not json');
    await raw.publish(`${prefix}{${key}}:ev`, 'other-instance|{"seq":"one"}');
    await raw.publish(`${prefix}control`, 'other-instance|[1,2]');
    await raw.publish(`${prefix}{${key}}:ev`, `other-instance|${JSON.stringify(ev(7, 't9', key))}`);
    await raw.publish(`${prefix}control`, `other-instance|${JSON.stringify({ type: 'stop', key })}`);
    await eventually(() => (got.length === 1 && stops.length === 1 ? true : undefined), 'the readable messages');
    expect(got).toEqual([7]);
    expect(stops).toEqual([key]);
    expect(errors.length).toBeGreaterThan(0);
  });
});
