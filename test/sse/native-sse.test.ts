/**
 * Native SSE (PROTOCOL.md §4, §8.7): the WebSocket question frame in, the §3.2 frames out as
 * text/event-stream, resume with Last-Event-ID. A real server, real HTTP, the mock model over HTTP.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import type { Api} from '../helpers/server.ts';
import { adminAndUser, closeServer, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { WsClient } from '../helpers/ws-client.ts';
import { SseReader } from '../helpers/sse-client.ts';
import { eventually } from '../helpers/wait.ts';


interface Frame {
  category: string;
  type: string;
  message: any;
  seq?: number;
  chat_id: string;
  flow_id: string;
  message_id: number | null;
  [k: string]: unknown;
}

const kind = (f: Frame) => `${f.category}/${f.type}`;
const frames = (r: SseReader) => r.json<Frame>();
const isClose = (f: Frame) => kind(f) === 'processing/close';

describe('native SSE: POST /api/v1/chat/{app_id}/completions', () => {
  let mock: MockLlm;
  let server: TestServer;
  let admin: Api;
  let user: Api;
  let bob: Api;
  let chatApp: string;

  const url = (appId = chatApp) => `${server.url}/api/v1/chat/${appId}/completions`;
  const post = (body: unknown, opts: { api?: Api; headers?: Record<string, string>; appId?: string } = {}) =>
    SseReader.open(url(opts.appId), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${(opts.api ?? user).token}`, ...opts.headers },
      body: JSON.stringify(body),
    });
  const rows = (chatId: string) => server.handle.services.repos.messages.all(chatId);

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { heartbeat_interval: 1 } }));
    ({ admin, user } = await adminAndUser(server));
    ({ user: bob } = await adminAndUser(server, 'bob'));
    chatApp = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });
  beforeEach(() => mock.reset());

  it('streams a whole turn as `event: message` / `id: <seq>` / `data: <frame>`, then ends after processing/close', async () => {
    mock.enqueue({ text: 'Hello big world', delayMs: 10 }); // tokens apart: a frame each
    const chatId = newChatId();
    const r = await post({ inputs: { input: 'hi' }, chat_id: chatId });
    expect(r.response.status).toBe(200);
    expect(r.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(r.response.headers.get('cache-control')).toBe('no-cache');
    expect(r.response.headers.get('x-accel-buffering')).toBe('no');
    await r.finish();
    expect(r.endedByServer).toBe(true);

    const fs = frames(r);
    expect(fs.map(kind)).toEqual([
      'processing/begin', 'processing/start', 'processing/stream', 'processing/stream', 'processing/stream', 'processing/end',
      'answer/start', 'answer/end_cover', 'processing/close',
    ]);
    r.events.forEach((e, i) => {
      expect(e.event).toBe('message');
      expect(e.id).toBe(String(fs[i]!.seq));
    });
    for (let i = 1; i < fs.length; i++) expect(fs[i]!.seq).toBe(fs[i - 1]!.seq! + 1);
    for (const f of fs) {
      expect(f.chat_id).toBe(chatId);
      expect(f.flow_id).toBe(chatApp);
      expect(typeof f.extra).toBe('string');
    }
    expect(fs.find((f) => kind(f) === 'answer/end_cover')!.message).toBe('Hello big world');
    const stored = await rows(chatId);
    expect(stored.map((m) => m.category)).toEqual(['question', 'answer']);
    expect(stored[1]!.message).toBe('Hello big world');
  });

  it('matches what the WebSocket sends for the same question and mock script', async () => {
    mock.enqueue({ text: 'Same frames either way', reasoning: ['think', 'ing'] });
    const viaSse = await (await post({ inputs: { input: 'q' }, chat_id: newChatId() })).finish();
    mock.enqueue({ text: 'Same frames either way', reasoning: ['think', 'ing'] });
    const chatId = newChatId();
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${chatApp}?chat_id=${chatId}`, { token: user.token });
    ws.send({ inputs: { input: 'q' } });
    const viaWs = await ws.turn(0);
    ws.close();
    const shape = (f: any) => ({ kind: `${f.category}/${f.type}`, message: f.category === 'processing' && f.type === 'stream' ? f.message : f.type === 'end_cover' ? f.message : undefined });
    expect(frames(viaSse).map(shape)).toEqual(viaWs.map(shape));
  });

  it('writes `: ping` comments while the turn is silent', async () => {
    mock.enqueue({ text: 'late', ttftMs: 2000 });
    const r = await (await post({ inputs: { input: 'slow' }, chat_id: newChatId() })).finish();
    expect(r.comments).toContain('ping');
    expect(frames(r).at(-1)!.type).toBe('close');
  });

  it('reconnects with Last-Event-ID after a drop and gets every remaining frame exactly once (POST and GET)', async () => {
    for (const via of ['POST', 'GET'] as const) {
      mock.enqueue({ text: Array<string>(30).fill(' tok'), delayMs: 25 });
      const chatId = newChatId();
      const first = await post({ inputs: { input: 'long answer please' }, chat_id: chatId });
      await first.until((r) => frames(r).filter((f) => f.type === 'stream').length >= 4, 10_000, 'four stream frames');
      first.abort();
      await first.ended;
      const seen = frames(first);
      const lastId = first.events.at(-1)!.id!;
      expect(seen.some(isClose)).toBe(false);

      const second = via === 'POST'
        // a fetch-based client retries the same request: the question is not asked again
        ? await post({ inputs: { input: 'long answer please' }, chat_id: chatId }, { headers: { 'last-event-id': lastId } })
        : await SseReader.open(`${url()}?chat_id=${chatId}`, { headers: { authorization: `Bearer ${user.token}`, 'last-event-id': lastId } });
      expect(second.response.status).toBe(200);
      await second.finish();
      const rest = frames(second);
      expect(rest[0]).toMatchObject({ category: 'system', type: 'info', message: { resumed: true, from_seq: Number(lastId) } });
      expect(second.events[0]!.id).toBeNull();
      const replayed = rest.slice(1);
      expect(replayed[0]!.seq).toBe(Number(lastId) + 1);
      for (let i = 1; i < replayed.length; i++) expect(replayed[i]!.seq).toBe(replayed[i - 1]!.seq! + 1);
      expect(isClose(replayed.at(-1)!)).toBe(true);
      expect(second.events.slice(1).map((e) => e.id)).toEqual(replayed.map((f) => String(f.seq)));

      const all = [...seen, ...replayed];
      const text = all.filter((f) => f.type === 'stream').map((f) => f.message.content).join('');
      expect(text).toBe(' tok'.repeat(30));
      expect(all.find((f) => f.type === 'end_cover')!.message).toBe(' tok'.repeat(30));
      // the turn ran on (chat.run_on_disconnect) and asked the model once
      expect(mock.requests).toHaveLength(1);
      const stored = await rows(chatId);
      expect(stored.map((m) => m.category)).toEqual(['question', 'answer']);
      mock.reset();
    }
  });

  it('answers 204 to a resume after the turn ended, and `resumed: false` when the log no longer covers the seq', async () => {
    const chatId = newChatId();
    const one = await (await post({ inputs: { input: 'one' }, chat_id: chatId })).finish();
    const closeId = one.events.at(-1)!.id!;
    const done = await fetch(`${url()}?chat_id=${chatId}&last_event_id=${closeId}`, { headers: { authorization: `Bearer ${user.token}` } });
    expect(done.status).toBe(204);

    await (await post({ inputs: { input: 'two' }, chat_id: chatId })).finish();
    await (await post({ inputs: { input: 'three' }, chat_id: chatId })).finish();
    // seq 1 belongs to the first turn: the log keeps only the last finished turn and the current one
    const gone = await (await post({ chat_id: chatId }, { headers: { 'last-event-id': '1' } })).finish();
    expect(gone.response.status).toBe(200);
    expect(frames(gone)).toEqual([expect.objectContaining({ category: 'system', type: 'info', message: expect.objectContaining({ resumed: false }) })]);
  });

  it('debug mode (no chat_id): admins only, the draft, nothing stored; a dropped request stops the turn', async () => {
    mock.enqueue({ text: 'debug answer' });
    const r = await (await post({ inputs: { input: 'test the draft' } }, { api: admin })).finish();
    const fs = frames(r);
    expect(fs.at(-1)!.type).toBe('close');
    expect(fs.every((f) => f.chat_id === '')).toBe(true);
    expect(fs.find((f) => f.type === 'end_cover')).toMatchObject({ message: 'debug answer', message_id: null });

    const refused = await post({ inputs: { input: 'x' } });
    expect(refused.response.status).toBe(403);
    expect(await refused.body()).toMatchObject({ status_code: 10403 });

    mock.enqueue({ text: Array<string>(200).fill(' tok'), delayMs: 20 });
    const dropped = await post({ inputs: { input: 'long' } }, { api: admin });
    await dropped.until((x) => frames(x).some((f) => f.type === 'stream'), 10_000, 'a stream frame');
    dropped.abort();
    await mock.waitForAbort(5000);
  });

  it('with chat_id and chat.run_on_disconnect the turn runs on after a drop and its answer is stored', async () => {
    mock.enqueue({ text: Array<string>(20).fill(' tok'), delayMs: 10 });
    const chatId = newChatId();
    const r = await post({ inputs: { input: 'keep going' }, chat_id: chatId });
    await r.until((x) => frames(x).some((f) => f.type === 'stream'), 10_000, 'a stream frame');
    r.abort();
    const stored = await eventually(async () => {
      const r = await rows(chatId);
      return r.length >= 2 ? r : undefined;
    }, 'the answer');
    expect(stored[1]).toMatchObject({ category: 'answer', message: ' tok'.repeat(20), remark: '' });
    expect(mock.aborted).toBe(0);
  });

  it('a repeated client_message_id streams the earlier turn instead of asking again', async () => {
    mock.enqueue({ text: 'only once' });
    const chatId = newChatId();
    const first = await (await post({ inputs: { input: 'idempotent' }, chat_id: chatId, client_message_id: 'm-1' })).finish();
    const again = await (await post({ inputs: { input: 'idempotent' }, chat_id: chatId, client_message_id: 'm-1' })).finish();
    expect(frames(again)).toEqual(frames(first));
    expect(mock.requests).toHaveLength(1);
    expect((await rows(chatId)).map((m) => m.category)).toEqual(['question', 'answer']);
  });

  it('an upstream failure inside the turn is an error frame, then processing/close', async () => {
    mock.enqueue({ status: 500 });
    const r = await (await post({ inputs: { input: 'fail' }, chat_id: newChatId() })).finish();
    expect(r.response.status).toBe(200);
    const fs = frames(r);
    expect(fs.slice(-2).map(kind)).toEqual(['error/end', 'processing/close']);
    expect(fs.at(-2)!.message).toMatchObject({ status_code: 10502 });
  });

  it('refuses bad requests before streaming with the envelope and an HTTP status, never a 500', async () => {
    const raw = (body: string, headers: Record<string, string> = {}, token: string | null = user.token) => fetch(url(), {
      method: 'POST', body, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    });
    const cases: Array<[Promise<Response>, number, number]> = [
      [raw('{not json'), 400, 10400],
      [raw(JSON.stringify({ inputs: { input: 42 }, chat_id: newChatId() })), 400, 10400],
      [raw(JSON.stringify({ inputs: {}, chat_id: newChatId() })), 400, 10400],
      [raw(JSON.stringify({ inputs: { input: 'x' }, chat_id: 'not-hex' })), 400, 10400],
      [raw(JSON.stringify({ inputs: { input: 'x' } }), { 'last-event-id': '3' }), 400, 10400],
      [raw(JSON.stringify({ chat_id: newChatId() }), { 'last-event-id': 'abc' }), 400, 10400],
      [raw(JSON.stringify({ inputs: { input: 'x' }, chat_id: newChatId() }), {}, null), 401, 10401],
      [raw(JSON.stringify({ inputs: { input: 'x' }, chat_id: newChatId() }), {}, 'garbage'), 401, 10401],
      [raw(JSON.stringify({ inputs: { input: 'x'.repeat(10_001) }, chat_id: newChatId() })), 413, 10413],
      [fetch(`${server.url}/api/v1/chat/${'0'.repeat(32)}/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` }, body: JSON.stringify({ inputs: { input: 'x' }, chat_id: newChatId() }) }), 404, 10404],
      [fetch(`${url()}?chat_id=${newChatId()}`, { headers: { authorization: `Bearer ${user.token}` } }), 400, 10400],
    ];
    for (const [pending, status, code] of cases) {
      const res = await pending;
      const body = await res.json();
      expect({ status: res.status, code: body.status_code }).toEqual({ status, code });
    }
  });

  it("someone else's conversation answers 404, for a question and for a resume", async () => {
    const chatId = newChatId();
    await (await post({ inputs: { input: 'mine' }, chat_id: chatId })).finish();
    const ask = await post({ inputs: { input: 'theirs?' }, chat_id: chatId }, { api: bob });
    expect(ask.response.status).toBe(404);
    const resume = await post({ chat_id: chatId }, { api: bob, headers: { 'last-event-id': '1' } });
    expect(resume.response.status).toBe(404);
    expect((await resume.body()).status_code).toBe(10404);
  });
});
