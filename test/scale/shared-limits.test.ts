/**
 * What two instances share besides the conversations: limits and client_message_ids (in Redis),
 * and how an instance fares when Redis or PostgreSQL go away. Two servers in this process on one
 * PostgreSQL database and one Redis prefix (the process tests are in instances.test.ts).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { Config, DeepPartial } from '../../src/config/config.ts';
import { RedisConnectionCounter } from '../../src/redis/redis-limits.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId } from '../helpers/apps.ts';
import { demoApp } from '../helpers/seed.ts';
import { dropPrefix, ownRedisServer, redisClient, redisUrl, testPrefix } from '../helpers/redis.ts';
import { ADMIN_PASSWORD, Api, closeServer, createPgDatabase, dbTargets, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/wait.ts';
import { kinds, WsClient } from '../helpers/ws-client.ts';

const redis = redisUrl();
const postgres = dbTargets().some((t) => t.name === 'postgres');

/** Two instances on one fresh PostgreSQL database and one Redis prefix. */
async function pair(mock: MockLlm, redisAt: string, extra: DeepPartial<Config> = {}) {
  const db = await createPgDatabase();
  const prefix = testPrefix();
  const config = mockConfig(mock, { ...extra, server: { database_url: db.url, redis_url: redisAt, redis_prefix: prefix } });
  config.llm!.providers = { ...config.llm!.providers, default: config.llm!.providers!.mock! };
  const a = await startServer({ name: 'sqlite' }, config);
  const b = await startServer({ name: 'sqlite' }, config);
  onTestFinished(async () => {
    await closeServer(a);
    await closeServer(b);
    await db.drop();
    const client = await redisClient(redisAt).catch(() => null);
    if (client) {
      await dropPrefix(client, prefix);
      client.disconnect();
    }
  });
  const token = (await new Api(a.url).login('admin', ADMIN_PASSWORD)).token!;
  const app = (await demoApp(a, 'chat')).id;
  return { a, b, token, app };
}

describe.runIf(redis && postgres)('what instances share in Redis', { timeout: 60_000 }, () => {
  let mock: MockLlm;
  beforeAll(async () => {
    mock = await MockLlm.start();
  });
  afterAll(async () => mock?.close());

  const connect = (s: TestServer, app: string, token: string, chatId = newChatId()) => WsClient.connect(s.url, `/api/v1/chat/${app}?chat_id=${chatId}`, { token });

  it('messages per minute count across instances', async () => {
    const { a, b, token, app } = await pair(mock, redis!, { chat: { messages_per_minute: 2 } });
    const onA = await connect(a, app, token);
    const onB = await connect(b, app, token);
    onTestFinished(() => { onA.close(); onB.close(); });
    for (const ws of [onA, onB]) {
      ws.send({ inputs: { input: 'counted' } });
      expect(kinds(await ws.turn(0))).toContain('answer/end_cover');
    }
    const from = onA.frames.length;
    onA.send({ inputs: { input: 'one too many' } });
    await onA.settle();
    expect(onA.frames.slice(from).map((f) => f.message.status_code)).toEqual([10429]);
  });

  it('connections per user count across instances; a closed one frees its place', async () => {
    const { a, b, token, app } = await pair(mock, redis!, { chat: { max_connections_per_user: 2 } });
    const first = await connect(a, app, token);
    const second = await connect(b, app, token);
    const third = await connect(a, app, token);
    onTestFinished(() => { first.close(); second.close(); third.close(); });
    expect(await third.waitClose()).toEqual({ code: 1013, reason: 'too many connections' });
    expect(first.closeCode).toBeNull();
    second.close();
    const fourth = await eventually(async () => {
      const ws = await connect(b, app, token);
      return ws.closeCode === null ? ws : undefined;
    }, 'a place to be free');
    fourth.close();
  });

  it('a repeated client_message_id sent to another instance gets the earlier turn, not a second one', async () => {
    const { a, b, token, app } = await pair(mock, redis!);
    const chatId = newChatId();
    const onA = await (await connect(a, app, token, chatId)).settle();
    const onB = await (await connect(b, app, token, chatId)).settle();
    onTestFinished(() => { onA.close(); onB.close(); });
    mock.enqueue({ text: 'only once' });
    onA.send({ inputs: { input: 'hello' }, client_message_id: 'q-1' });
    const first = await onA.turn(0);
    await onB.turn(0);
    const from = onB.frames.length;
    onB.send({ inputs: { input: 'hello' }, client_message_id: 'q-1' });
    await onB.settle();
    // B's socket had seen that turn: nothing new, and no second turn
    expect(onB.frames.slice(from)).toEqual([]);
    const rows = await b.handle.services.repos.messages.all(chatId);
    expect(rows.map((r) => r.category)).toEqual(['question', 'answer']);
    expect(first.find((f) => f.type === 'end_cover')!.message).toBe('only once');
  });

  it('Redis away: degraded, still answering; back: healthy again, nothing stored lost', async () => {
    const own = await ownRedisServer();
    onTestFinished(() => own.stop());
    const { a, token, app } = await pair(mock, own.url);
    const health = async () => (await fetch(`${a.url}/health`)).json() as Promise<{ status: string; redis?: { ok: boolean } }>;
    expect(await health()).toMatchObject({ status: 'ok', redis: { ok: true } });
    const redisUp = async () => /^parley_redis_up (\d)$/m.exec(await (await fetch(`${a.url}/metrics`)).text())?.[1];
    expect(await redisUp()).toBe('1');
    const chatId = newChatId();
    const ws = await connect(a, app, token, chatId);
    onTestFinished(() => ws.close());
    ws.send({ inputs: { input: 'before' } });
    await ws.turn(0);

    await own.stop();
    await eventually(async () => ((await health()).status === 'degraded' ? true : undefined), 'degraded');
    expect(await redisUp()).toBe('0');
    const from = ws.frames.length;
    ws.send({ inputs: { input: 'while Redis is away' } });
    expect(kinds(await ws.turn(from))).toContain('answer/end_cover');

    await own.start();
    await eventually(async () => ((await health()).status === 'ok' ? true : undefined), 'healthy again', 15_000);
    const again = ws.frames.length;
    ws.send({ inputs: { input: 'after' } });
    expect(kinds(await ws.turn(again))).toContain('answer/end_cover');
    const rows = await a.handle.services.repos.messages.all(chatId);
    expect(rows.map((r) => r.category)).toEqual(['question', 'answer', 'question', 'answer', 'question', 'answer']);
  });

  it('PostgreSQL connections cut mid-turn: a clear error, the process lives on and recovers', async () => {
    const { a, token, app } = await pair(mock, redis!);
    const chatId = newChatId();
    const ws = await connect(a, app, token, chatId);
    onTestFinished(() => ws.close());
    mock.enqueue({ text: Array<string>(40).fill(' tok'), delayMs: 20 });
    ws.send({ inputs: { input: 'cut me' } });
    await ws.until((f) => f.filter((x) => x.type === 'stream').length >= 3, 10_000, 'deltas');
    const admin = new pg.Client({ connectionString: a.config.server.database_url });
    await admin.connect();
    try {
      await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()');
    } finally {
      await admin.end();
    }
    const turn = await ws.turn(0);
    // the pool replaces the cut connections: the turn ends with its answer stored, or with an error frame — never an answer it did not store
    const answer = turn.find((f) => f.type === 'end_cover');
    const stored = await a.handle.services.repos.messages.all(chatId);
    if (answer) expect(stored.find((r) => r.id === answer.message_id)).toMatchObject({ category: 'answer' });
    else expect(turn.find((f) => f.category === 'error')!.message.status_code).toBe(10500);
    // the next question works on fresh connections
    await eventually(async () => {
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'and now?' } });
      const next = await ws.turn(from);
      return kinds(next).includes('answer/end_cover') ? true : undefined;
    }, 'a turn to work again');
    expect((await fetch(`${a.url}/health`)).status).toBe(200);
  });
});

describe.runIf(redis)('the connection count in Redis', () => {
  it('a heartbeat keeps the count alive past its first expiry, and counts a connection Redis missed', async () => {
    const client = await redisClient(redis!);
    const prefix = testPrefix();
    onTestFinished(async () => {
      await dropPrefix(client, prefix);
      client.disconnect();
    });
    const counter = new RedisConnectionCounter(client, { prefix, ttlMs: 30_000, now: () => Date.now() });
    const key = `${prefix}connections:{7}`;
    expect(await counter.open(7, 'c1', 2)).toBe(true);
    // the set about to expire (the user's last connect was a while ago): a heartbeat extends it
    await client.pexpire(key, 50);
    counter.refresh([{ userId: 7, connectionId: 'c1' }]);
    await eventually(async () => ((await client.pttl(key)) > 1000 ? true : undefined), 'the set extended');
    // a connection admitted while Redis was away (or whose set expired) is counted at its next heartbeat
    await client.del(key);
    counter.refresh([{ userId: 7, connectionId: 'c1' }, { userId: 7, connectionId: 'c2' }]);
    await eventually(async () => ((await client.zcard(key)) === 2 ? true : undefined), 'both counted');
    expect(await counter.open(7, 'c3', 2)).toBe(false);
  });
});
