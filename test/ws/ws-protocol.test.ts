/**
 * Acceptance tests of the WebSocket protocol edges (PROTOCOL.md §3, §3.3, §5, §8.1–8.3; STYLE.md
 * security habits): bad client frames, connect failures and their close codes, heartbeat and idle
 * close, rate limit, JWT expiry on a long-lived socket, graceful shutdown, and isolation between
 * conversations and users. A real server on SQLite, real `ws` clients, an OpenAI-compatible mock
 * model over HTTP. Behaviour only: frames, close codes and reasons, what is stored, what the model got.
 */
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import type { Config, DeepPartial } from '../../src/config/config.ts';
import { openDatabase } from '../../src/server.ts';
import { createRepos } from '../../src/storage/repos.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import { ManualClock } from '../helpers/clock.ts';
import { Api, adminAndUser, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { eventually, sleep } from '../helpers/wait.ts';
import { kinds, streamedText, WsClient, type Frame, closeAll } from '../helpers/ws-client.ts';

const isClose = (f: Frame) => f.category === 'processing' && f.type === 'close';
const isError = (f: Frame) => f.category === 'error';
const isEndCover = (f: Frame) => f.category === 'answer' && f.type === 'end_cover';

/** An access token for `userId` signed with the server's own secret, expiring at `exp` (seconds since epoch). */
async function tokenExpiringAt(server: TestServer, userId: number, exp: number): Promise<string> {
  const secret = await server.handle.services.repos.settings.get('jwt_secret');
  return new SignJWT({ typ: 'access', ver: 0 })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(String(userId))
    .setIssuer('parley')
    .setIssuedAt()
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(secret));
}

/**
 * Makes every connect of `server` take `ms` longer while it loads the app and conversation (as a busy
 * database would), to open the window in which concurrent connects and early frames race.
 */
function slowConnects(server: TestServer, ms: number): () => void {
  const chat = server.handle.services.chat;
  const original = chat.resolveTarget.bind(chat);
  chat.resolveTarget = async (...args) => {
    await sleep(ms);
    return original(...args);
  };
  return () => { chat.resolveTarget = original; };
}

/** Opens a socket and expects the documented connect failure: one error frame, then the close. */
async function expectConnectFailure(
  baseUrl: string, path: string, options: { token?: string | null; headers?: Record<string, string> },
  expected: { code: number; reason?: string; status?: number },
): Promise<Frame> {
  const ws = await WsClient.connect(baseUrl, path, options);
  const { code, reason } = await ws.waitClose();
  expect(code, `${path}: ${ws.describe()}`).toBe(expected.code);
  if (expected.reason !== undefined) expect(reason).toBe(expected.reason);
  expect(ws.frames, ws.describe()).toHaveLength(1);
  const err = ws.frames[0]!;
  expect(err.category).toBe('error');
  expect(err.type).toBe('end');
  expect(err.seq).toBeUndefined();
  expect(typeof err.message.status_code).toBe('number');
  if (expected.status !== undefined) expect(err.message.status_code).toBe(expected.status);
  return err;
}

describe('WebSocket protocol, limits and connect (sqlite, mock model over HTTP)', () => {
  let mock: MockLlm;
  let server: TestServer;
  let admin: Api;
  let user: Api;
  let userId: number;
  let bob: Api;
  let chatApp: string;
  let assistantApp: string;
  const sockets: WsClient[] = [];
  const ORIGIN = 'https://chat.example.com';

  const connect = async (appId: string, chatId: string | null, opts: { api?: Api; query?: string; base?: string; path?: string } = {}) => {
    const q = [chatId ? `chat_id=${chatId}` : '', opts.query ?? ''].filter(Boolean).join('&');
    const ws = await WsClient.connect(opts.base ?? server.url, `${opts.path ?? '/api/v1/chat/'}${appId}${q ? `?${q}` : ''}`, { token: (opts.api ?? user).token });
    sockets.push(ws);
    expect(ws.closeCode, ws.describe()).toBeNull();
    return ws;
  };
  const ask = async (ws: WsClient, chatId: string | null, text: string, extra: Record<string, unknown> = {}) => {
    const from = ws.frames.length;
    ws.send({ ...(chatId ? { chat_id: chatId } : {}), inputs: { input: text }, ...extra });
    return ws.turn(from);
  };
  /** A valid question on the socket gets a complete answer (the socket survived what came before). */
  const expectAnswers = async (ws: WsClient, chatId: string | null) => {
    const frames = await ask(ws, chatId, 'still there?');
    expect(kinds(frames)[0]).toBe('processing/begin');
    expect(frames.filter(isEndCover), ws.describe()).toHaveLength(1);
    return frames;
  };
  /**
   * Sends a bad frame; expects exactly one error frame with `status` (no seq, no processing/close)
   * and that the socket still answers a valid question afterwards.
   */
  const expectRejected = async (ws: WsClient, chatId: string | null, bad: string | Buffer, status: number): Promise<Frame> => {
    const from = ws.frames.length;
    if (typeof bad === 'string') ws.socket.send(bad);
    else ws.socket.send(bad, { binary: true });
    await ws.until((f) => f.slice(from).some(isError), 10_000, `error ${status}`);
    const after = ws.frames.length;
    const rejection = ws.frames.slice(from, after);
    expect(rejection, ws.describe()).toHaveLength(1);
    const err = rejection[0]!;
    expect(err.type).toBe('end');
    expect(err.seq).toBeUndefined();
    expect(err.turn_id).toBeUndefined();
    expect(err.message.status_code, JSON.stringify(err.message)).toBe(status);
    expect(typeof err.message.status_message).toBe('string');
    // nothing of a turn follows the rejection: the next frames are the next question's turn
    const frames = await expectAnswers(ws, chatId);
    expect(ws.frames.slice(after, after + frames.length)).toEqual(frames);
    for (const f of frames) expect(Number.isSafeInteger(f.seq)).toBe(true);
    expect(ws.closeCode).toBeNull();
    return err;
  };
  const rows = (chatId: string) => server.handle.services.repos.messages.all(chatId);

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, {
      llm: { stall_timeout: 5 },
      chat: { max_message_length: 50, max_frame_bytes: 2048 },
      http: { allowed_origins: [ORIGIN] },
    }));
    ({ admin, user, userId } = await adminAndUser(server));
    ({ user: bob } = await adminAndUser(server, 'bob'));
    chatApp = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
    assistantApp = await publishedApp(admin, { kind: 'assistant', provider: 'mock', tools: ['calculator'] });
  });
  afterAll(async () => {
    for (const ws of sockets) ws.close();
    await server?.close();
    await mock?.close();
  });
  beforeEach(() => mock.reset());
  afterEach(() => closeAll(sockets));

  describe('bad client frames: rejected with an error frame, the socket stays open and keeps working', () => {
    it('invalid JSON → 10400 without seq or processing/close', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      const err = await expectRejected(ws, chatId, '{"inputs": {"input": "hi"', 10400);
      expect(err.message.data.errors).toEqual([expect.objectContaining({ path: expect.any(String), message: expect.any(String) })]);
      await expectRejected(ws, chatId, 'hello', 10400);
      await expectRejected(ws, chatId, '', 10400);
    });

    it('JSON that is not an object, an unknown action, a frame without inputs → 10400', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      for (const bad of ['null', '42', '[1,2]', '"just a string"']) await expectRejected(ws, chatId, bad, 10400);
      const err = await expectRejected(ws, chatId, JSON.stringify({ action: 'dance', chat_id: chatId }), 10400);
      expect(err.message.data.errors).toEqual([expect.objectContaining({ path: 'action' })]);
      await expectRejected(ws, chatId, JSON.stringify({ chat_id: chatId }), 10400);
      await expectRejected(ws, chatId, JSON.stringify({ chat_id: chatId, inputs: 'hi' }), 10400);
    });

    it('wrong types → 10400 with data.errors naming each bad field', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      let err = await expectRejected(ws, chatId, JSON.stringify({ chat_id: chatId, inputs: { input: 5 } }), 10400);
      expect(err.message.data.errors).toContainEqual(expect.objectContaining({ path: 'inputs/input' }));
      err = await expectRejected(ws, chatId, JSON.stringify({ chat_id: 123, inputs: { input: 'hi' } }), 10400);
      expect(err.message.data.errors).toContainEqual(expect.objectContaining({ path: 'chat_id' }));
      err = await expectRejected(ws, chatId, JSON.stringify({ action: 'resume', chat_id: chatId, last_seq: -1 }), 10400);
      expect(err.message.data.errors).toContainEqual(expect.objectContaining({ path: 'last_seq' }));
      err = await expectRejected(ws, chatId, JSON.stringify({ action: 'resume', chat_id: chatId, last_seq: 'x' }), 10400);
      expect(err.message.data.errors).toContainEqual(expect.objectContaining({ path: 'last_seq' }));
      // every problem of one frame is listed at once
      err = await expectRejected(ws, chatId, JSON.stringify({ chat_id: 'not-hex', flow_id: 7, inputs: { input: 5 } }), 10400);
      expect(err.message.data.errors.map((e: { path: string }) => e.path).sort()).toEqual(['chat_id', 'flow_id', 'inputs/input']);
      expect(mock.requests).toHaveLength(5); // only the follow-up questions reached the model
    });

    it('a message longer than chat.max_message_length → 10413; nothing is stored for it', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      await expectRejected(ws, chatId, JSON.stringify({ chat_id: chatId, inputs: { input: 'x'.repeat(51) } }), 10413);
      expect(mock.requests).toHaveLength(1);
      expect((await rows(chatId)).filter((r) => r.category === 'question').map((r) => JSON.parse(r.message).input)).toEqual(['still there?']);
    });

    it('a binary frame → 10400', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      await expectRejected(ws, chatId, Buffer.from(JSON.stringify({ chat_id: chatId, inputs: { input: 'binary' } })), 10400);
      expect(mock.requests).toHaveLength(1);
    });

    it('frames sent before the connect checks finish are handled afterwards, in order; a binary one is still rejected', async () => {
      const chatId = newChatId();
      onTestFinished(slowConnects(server, 200));
      const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/v1/chat/${chatApp}?chat_id=${chatId}`, { headers: { authorization: `Bearer ${user.token}` } });
      const frames: Frame[] = [];
      socket.on('message', (d) => frames.push(JSON.parse(d.toString()) as Frame));
      await new Promise((r) => socket.once('open', r));
      // sent at once, while the server may still be resolving the app and the conversation
      socket.send(Buffer.from(JSON.stringify({ chat_id: chatId, inputs: { input: 'binary' } })), { binary: true });
      socket.send(JSON.stringify({ action: 'ping' }));
      await eventually(() => (frames.length >= 2 ? true : undefined), 'the error and the pong');
      socket.close();
      expect(frames.map((f) => `${f.category}/${f.type}`)).toEqual(['error/end', 'system/pong']);
      expect(frames[0]!.message.status_code).toBe(10400);
      expect(mock.requests).toHaveLength(0);
    });

    it('a frame sent while a reconnect with last_seq is replayed is handled after the replay', async () => {
      const chatId = newChatId();
      const first = await connect(chatApp, chatId);
      const turn = await expectAnswers(first, chatId);
      onTestFinished(slowConnects(server, 200));
      const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/v1/chat/${chatApp}?chat_id=${chatId}&last_seq=0`, { headers: { authorization: `Bearer ${user.token}` } });
      const frames: Frame[] = [];
      socket.on('message', (d) => frames.push(JSON.parse(d.toString()) as Frame));
      await new Promise((r) => socket.once('open', r));
      socket.send(JSON.stringify({ action: 'ping' }));
      await eventually(() => (frames.some((f) => f.type === 'pong') ? true : undefined), 'the pong');
      socket.close();
      expect(frames.map((f) => `${f.category}/${f.type}`)).toEqual(['system/info', ...kinds(turn), 'system/pong']);
      expect(frames[0]!.message).toEqual({ resumed: true, from_seq: 0 });
      expect(frames.slice(1, -1).map((f) => f.seq)).toEqual(turn.map((f) => f.seq));
    });

    it('double-encoded JSON is accepted (Bisheng clients send it)', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      const from = ws.frames.length;
      ws.send(JSON.stringify(JSON.stringify({ chat_id: chatId, inputs: { input: 'double' } })));
      const frames = await ws.turn(from);
      expect(frames.filter(isEndCover)).toHaveLength(1);
      expect(frames.filter(isError)).toHaveLength(0);
      expect(JSON.parse((await rows(chatId))[0]!.message)).toEqual({ input: 'double' });
    });

    it('a frame larger than chat.max_frame_bytes closes the socket with 1009; the server keeps serving', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      ws.send({ chat_id: chatId, inputs: { input: 'y'.repeat(3000) } });
      const { code, reason } = await ws.waitClose();
      expect(code).toBe(1009);
      expect(reason).toBe('message too big');
      expect(ws.frames.filter(isError).map((f) => f.message.status_code)).toEqual([10413]);
      expect(mock.requests).toHaveLength(0);
      const again = await connect(chatApp, chatId);
      await expectAnswers(again, chatId);
    });

    it('a second question while a turn runs in the same conversation → 10409; the first turn completes normally', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: 'one two three four five six', delayMs: 60 });
      ws.send({ chat_id: chatId, inputs: { input: 'first' } });
      await ws.until((f) => f.some((x) => x.category === 'processing' && x.type === 'stream'), 10_000, 'the first stream frame');
      ws.send({ chat_id: chatId, inputs: { input: 'second' } });
      await ws.until((f) => f.some(isError), 10_000, 'the 10409');
      const err = ws.frames.find(isError)!;
      expect(err.message.status_code).toBe(10409);
      expect(err.seq).toBeUndefined();
      const turn = await ws.turn(0);
      const live = turn.filter((f) => !isError(f));
      expect(kinds(live).at(-2)).toBe('answer/end_cover');
      expect(live.find(isEndCover)!.message).toBe('one two three four five six');
      expect(live.filter(isClose)).toHaveLength(1);
      expect(mock.requests).toHaveLength(1);
      expect((await rows(chatId)).map((r) => r.category)).toEqual(['question', 'answer']);
      await expectAnswers(ws, chatId);
    });

    it('a repeated client_message_id starts no second turn; the client gets the turn once (same socket, and a new one)', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: 'only once please', delayMs: 40 });
      const frame = { chat_id: chatId, client_message_id: 'cm-1', inputs: { input: 'idempotent?' } };
      ws.send(frame);
      ws.send(frame);
      await ws.until((f) => f.some(isClose), 10_000, 'processing/close');
      ws.send(frame); // after the end, too
      const pingFrom = ws.frames.length;
      ws.send({ action: 'ping' });
      await ws.until((f) => f.slice(pingFrom).some((x) => x.type === 'pong'), 10_000, 'pong');
      const turnFrames = ws.frames.filter((f) => f.seq !== undefined);
      expect(ws.frames.filter(isError), ws.describe()).toHaveLength(0);
      expect(new Set(turnFrames.map((f) => f.seq)).size).toBe(turnFrames.length);
      expect(turnFrames.filter(isClose)).toHaveLength(1);
      expect(new Set(turnFrames.map((f) => f.turn_id)).size).toBe(1);
      expect(mock.requests).toHaveLength(1);
      expect((await rows(chatId)).map((r) => r.category)).toEqual(['question', 'answer']);

      // a client that lost its socket retries on a new one: it is sent the same turn, once
      const retry = await connect(chatApp, chatId);
      retry.send(frame);
      const replayed = await retry.turn(0);
      expect(replayed.map((f) => f.seq)).toEqual(turnFrames.map((f) => f.seq));
      expect(replayed.find(isEndCover)!.message).toBe('only once please');
      expect(mock.requests).toHaveLength(1);
      expect((await rows(chatId)).map((r) => r.category)).toEqual(['question', 'answer']);
    });

    it('a client_message_id of another conversation or user is a different question', async () => {
      const chatA = newChatId();
      const chatB = newChatId();
      const ws = await connect(chatApp, chatA);
      await ask(ws, chatA, 'hello', { client_message_id: 'same' });
      const second = await ask(ws, chatB, 'hello', { client_message_id: 'same' });
      expect(second.find(isEndCover)?.chat_id).toBe(chatB);
      const bobChat = newChatId();
      const wsBob = await connect(chatApp, bobChat, { api: bob });
      const third = await ask(wsBob, bobChat, 'hello', { client_message_id: 'same' });
      expect(third.filter(isEndCover)).toHaveLength(1);
      expect(mock.requests).toHaveLength(3);
    });

    it('frames in debug mode (no chat_id) that need a conversation → 10400', async () => {
      const ws = await connect(chatApp, null, { api: admin });
      await expectRejected(ws, null, JSON.stringify({ action: 'resume', last_seq: 0 }), 10400);
      await expectRejected(ws, null, JSON.stringify({ action: 'regenerate' }), 10400);
    });
  });

  describe('connect failures (PROTOCOL.md §3, §8.1, §8.2): one error frame, then the documented close', () => {
    const path = (appId: string, chatId: string | null = newChatId(), prefix = '/api/v1/chat/') => `${prefix}${appId}${chatId ? `?chat_id=${chatId}` : ''}`;

    it('no token, a bad token, a forged token, an expired token → 1008 Unauthorized (10401)', async () => {
      const expected = { code: 1008, reason: 'Unauthorized', status: 10401 };
      await expectConnectFailure(server.url, path(chatApp), { token: null }, expected);
      await expectConnectFailure(server.url, path(chatApp), { token: 'not-a-jwt' }, expected);
      await expectConnectFailure(server.url, `${path(chatApp)}&t=garbage`, { token: null }, expected);
      const forged = await new SignJWT({ typ: 'access', ver: 0 }).setProtectedHeader({ alg: 'HS256' }).setSubject(String(userId))
        .setIssuer('parley').setExpirationTime('1h').sign(new TextEncoder().encode('not the secret'));
      await expectConnectFailure(server.url, path(chatApp), { token: forged }, expected);
      const expired = await tokenExpiringAt(server, userId, Math.floor(Date.now() / 1000) - 10);
      await expectConnectFailure(server.url, path(chatApp), { token: expired }, expected);
      // a refresh token is not an access token
      const login = await new Api(server.url).post('/api/v1/user/login', { user_name: 'alice', password: 'alice-password' });
      await expectConnectFailure(server.url, path(chatApp), { token: login.body.data.refresh_token }, expected);
    });

    it('a deleted app → 1008 "app deleted"; an unknown app id → 1008', async () => {
      const doomed = await publishedApp(admin, { kind: 'chat', provider: 'mock', name: 'Doomed' });
      expect((await admin.delete(`/api/v1/apps/${doomed}`)).status).toBe(200);
      await expectConnectFailure(server.url, path(doomed), { token: user.token }, { code: 1008, reason: 'app deleted', status: 10420 });
      await expectConnectFailure(server.url, path('0123456789abcdef0123456789abcdef'), { token: user.token }, { code: 1008, reason: 'app deleted' });
      await expectConnectFailure(server.url, path('no-such-app'), { token: user.token }, { code: 1008 });
    });

    it('an offline app with a chat_id → 1008 "app not online" (also for an admin)', async () => {
      const offline = await publishedApp(admin, { kind: 'chat', provider: 'mock', name: 'Offline' });
      expect((await admin.post(`/api/v1/apps/${offline}/status`, { online: false })).status).toBe(200);
      await expectConnectFailure(server.url, path(offline), { token: user.token }, { code: 1008, reason: 'app not online', status: 10421 });
      await expectConnectFailure(server.url, path(offline), { token: admin.token }, { code: 1008, reason: 'app not online', status: 10421 });
    });

    it("another user's chat_id → 1008 \"no permission\"; nothing of it is sent", async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      await expectAnswers(ws, chatId);
      const err = await expectConnectFailure(server.url, path(chatApp, chatId), { token: bob.token }, { code: 1008, reason: 'no permission', status: 10403 });
      expect(JSON.stringify(err)).not.toContain('still there');
      // the same conversation id through another app is no better
      await expectConnectFailure(server.url, path(assistantApp, chatId), { token: user.token }, { code: 1008, reason: 'no permission' });
    });

    it('a malformed chat_id → 1008 "invalid chat_id"', async () => {
      for (const bad of ['abc', 'ZZZZ456789abcdef0123456789abcdef', `${newChatId()}00`]) {
        await expectConnectFailure(server.url, `/api/v1/chat/${chatApp}?chat_id=${bad}`, { token: user.token }, { code: 1008, reason: 'invalid chat_id', status: 10400 });
      }
    });

    it('an app whose kind does not match a pinned path → 1008 "app kind mismatch"; /api/v1/chat/ takes every kind', async () => {
      const online = await user.get('/api/v1/chat/online');
      const demoWorkflow = (online.body.data as Array<{ id: string; name: string }>).find((a) => a.name === 'Demo workflow')!.id;
      const mismatch = { code: 1008, reason: 'app kind mismatch' };
      await expectConnectFailure(server.url, path(chatApp, newChatId(), '/api/v1/assistant/chat/'), { token: user.token }, mismatch);
      await expectConnectFailure(server.url, path(demoWorkflow, newChatId(), '/api/v1/assistant/chat/'), { token: user.token }, mismatch);
      await expectConnectFailure(server.url, path(assistantApp, newChatId(), '/api/v1/workflow/chat/'), { token: user.token }, mismatch);
      const pinned = await connect(assistantApp, newChatId(), { path: '/api/v1/assistant/chat/' });
      expect(pinned.closeCode).toBeNull();
      for (const app of [chatApp, assistantApp, demoWorkflow]) {
        const ws = await connect(app, newChatId());
        expect(ws.closeCode).toBeNull();
      }
    });

    it('a plain user in debug mode (no chat_id) → 1008; an admin may', async () => {
      await expectConnectFailure(server.url, path(chatApp, null), { token: user.token }, { code: 1008, reason: 'no permission', status: 10403 });
      const ws = await connect(chatApp, null, { api: admin });
      await expectAnswers(ws, null);
    });

    it('an unexpected failure while connecting → 1011 "internal error" (10500, no detail); the process keeps serving', async () => {
      const chat = server.handle.services.chat;
      const original = chat.resolveTarget;
      chat.resolveTarget = async () => { throw new Error('database is on fire at /var/lib/secret'); };
      onTestFinished(() => { chat.resolveTarget = original; });
      // the cause goes to the log (console when no logger is wired), never to the client
      const spy = vi.spyOn(console, 'error').mockImplementation(() => undefined);
      onTestFinished(() => spy.mockRestore());
      const err = await expectConnectFailure(server.url, path(chatApp), { token: user.token }, { code: 1011, reason: 'internal error', status: 10500 });
      expect(JSON.stringify(err)).not.toContain('fire');
      chat.resolveTarget = original;
      const chatId = newChatId();
      await expectAnswers(await connect(chatApp, chatId), chatId);
    });

    it('token in the `t` query parameter and in the Authorization header are accepted', async () => {
      const chatId = newChatId();
      const viaQuery = await WsClient.connect(server.url, `/api/v1/chat/${chatApp}?chat_id=${chatId}&t=${user.token}`, { token: null });
      sockets.push(viaQuery);
      await expectAnswers(viaQuery, chatId);
      const viaHeader = await connect(chatApp, newChatId());
      await expectAnswers(viaHeader, null);
    });

    it('any valid token wins: an invalid header does not hide a valid `t`', async () => {
      const chatId = newChatId();
      const ws = await WsClient.connect(server.url, `/api/v1/chat/${chatApp}?chat_id=${chatId}&t=${user.token}`, { headers: { authorization: 'Bearer nonsense' } });
      sockets.push(ws);
      expect(ws.closeCode).toBeNull();
      await expectAnswers(ws, chatId);
    });

    it('cookie auth: only from an allowed Origin (exact match); a missing Origin is refused too', async () => {
      const cookie = `access_token_cookie=${user.token}`;
      const unauthorized = { code: 1008, reason: 'Unauthorized', status: 10401 };
      await expectConnectFailure(server.url, path(chatApp), { headers: { cookie, origin: 'https://evil.example.com' } }, unauthorized);
      await expectConnectFailure(server.url, path(chatApp), { headers: { cookie, origin: `${ORIGIN}.evil.com` } }, unauthorized);
      await expectConnectFailure(server.url, path(chatApp), { headers: { cookie, origin: 'null' } }, unauthorized);
      await expectConnectFailure(server.url, path(chatApp), { headers: { cookie } }, unauthorized);
      const chatId = newChatId();
      const ws = await WsClient.connect(server.url, path(chatApp, chatId), { headers: { cookie, origin: ORIGIN } });
      sockets.push(ws);
      expect(ws.closeCode, ws.describe()).toBeNull();
      await expectAnswers(ws, chatId);
      // a token in the header needs no Origin check: it cannot be sent by another site's page
      const withHeader = await WsClient.connect(server.url, path(chatApp), { token: user.token, headers: { origin: 'https://evil.example.com' } });
      sockets.push(withHeader);
      expect(withHeader.closeCode).toBeNull();
    });
  });

  describe('connection caps', () => {
    let capped: TestServer;
    let capAdmin: Api;
    let capUser: Api;
    let capBob: Api;
    let capApp: string;

    beforeAll(async () => {
      capped = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { max_concurrent_sessions: 3, max_connections_per_user: 2 } }));
      ({ admin: capAdmin, user: capUser } = await adminAndUser(capped));
      ({ user: capBob } = await adminAndUser(capped, 'bob'));
      capApp = await publishedApp(capAdmin, { kind: 'chat', provider: 'mock' });
    });
    afterAll(async () => capped?.close());

    it('chat.max_connections_per_user → 1013 "too many connections"; chat.max_concurrent_sessions → 1013 "server busy"; a closed socket frees its slot', async () => {
      const open = (api: Api) => connect(capApp, newChatId(), { api, base: capped.url });
      const a1 = await open(capUser);
      await open(capUser);
      await expectConnectFailure(capped.url, `/api/v1/chat/${capApp}?chat_id=${newChatId()}`, { token: capUser.token }, { code: 1013, reason: 'too many connections' });
      await open(capBob);
      await expectConnectFailure(capped.url, `/api/v1/chat/${capApp}?chat_id=${newChatId()}`, { token: capAdmin.token }, { code: 1013, reason: 'server busy' });
      // refused connects hold no slot; a closed socket gives its slot back
      a1.close();
      await a1.waitClose();
      // the slot is free once the server saw the close: a connect is then accepted
      const again = await eventually(async () => {
        const ws = await WsClient.connect(capped.url, `/api/v1/chat/${capApp}?chat_id=${newChatId()}`, { token: capUser.token });
        return ws.closeCode === null ? ws : undefined;
      }, 'a connect to be accepted');
      sockets.push(again);
      await expectAnswers(again, null);
    });

    it('simultaneous connects cannot overshoot the caps', async () => {
      // the caps are checked before the app and conversation are loaded: a burst must still respect them
      onTestFinished(slowConnects(capped, 200));
      const burst = await Promise.all(Array.from({ length: 6 }, () => WsClient.connect(capped.url, `/api/v1/chat/${capApp}?chat_id=${newChatId()}`, { token: capBob.token })));
      sockets.push(...burst);
      const refusedCount = () => burst.filter((ws) => ws.closeCode !== null).length;
      await eventually(() => (refusedCount() >= 4 ? true : undefined), 'four refusals').catch(() => undefined);
      const refused = burst.filter((ws) => ws.closeCode !== null);
      expect(refused.length, burst.map((ws) => `${ws.closeCode}:${ws.describe()}`).join(' | ')).toBeGreaterThanOrEqual(4);
      for (const ws of refused) expect(ws.closeCode).toBe(1013);
      // the accepted ones work
      for (const ws of burst.filter((x) => x.closeCode === null)) {
        ws.send({ action: 'ping' });
        await ws.until((f) => f.some((x) => x.type === 'pong'), 5000, 'pong');
        expect(kinds(ws.frames)).toEqual(['system/pong']);
      }
    });
  });

  describe('heartbeat and idle close (chat.heartbeat_interval 1 s, chat.connection_timeout 2 s)', () => {
    let hb: TestServer;
    let hbUser: Api;
    let hbApp: string;

    beforeAll(async () => {
      // the model's silences here are long on purpose: the upstream limits stay well clear of them
      hb = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { heartbeat_interval: 1, connection_timeout: 2 }, llm: { stall_timeout: 10, request_timeout: 30 } }));
      const { admin: a, user: u } = await adminAndUser(hb);
      hbUser = u;
      hbApp = await publishedApp(a, { kind: 'chat', provider: 'mock' });
    });
    afterAll(async () => hb?.close());

    it('the server sends protocol pings; {action: "ping"} gets a pong frame without seq', async () => {
      const ws = await connect(hbApp, newChatId(), { api: hbUser, base: hb.url });
      let pings = 0;
      ws.socket.on('ping', () => pings++);
      ws.send({ action: 'ping' });
      await ws.until((f) => f.some((x) => x.type === 'pong'), 5000, 'pong');
      const pong = ws.frames.find((x) => x.type === 'pong')!;
      expect(pong.seq).toBeUndefined();
      expect(ws.frames).toHaveLength(1);
      await eventually(() => (pings > 0 ? true : undefined), 'a protocol ping');
    });

    it('a socket that sends no frames is closed after connection_timeout, although its client answers pings', async () => {
      const ws = await connect(hbApp, newChatId(), { api: hbUser, base: hb.url });
      const { code, reason } = await ws.waitClose(15_000);
      expect(code).toBe(1000);
      expect(reason).toBe('idle timeout');
    });

    it('application frames keep a socket alive', async () => {
      const ws = await connect(hbApp, newChatId(), { api: hbUser, base: hb.url });
      for (let i = 0; i < 8; i++) {
        ws.send({ action: 'ping' });
        await sleep(500);
      }
      expect(ws.closeCode).toBeNull();
      expect(ws.frames.filter((f) => f.type === 'pong').length).toBeGreaterThan(0);
    });

    it('a socket watching a running turn is not dropped mid-answer, however long the model is silent', async () => {
      const chatId = newChatId();
      const ws = await connect(hbApp, chatId, { api: hbUser, base: hb.url });
      // silent longer than connection_timeout before the first token, then slow tokens
      mock.enqueue({ text: 'a slow but complete answer', ttftMs: 3500, delayMs: 400 });
      const from = ws.frames.length;
      ws.send({ chat_id: chatId, inputs: { input: 'take your time' } });
      const frames = await ws.turn(from, 20_000);
      expect(frames.find(isEndCover)?.message).toBe('a slow but complete answer');
      // …and once the turn is over, the idle clock runs again
      const { code, reason } = await ws.waitClose(15_000);
      expect([code, reason]).toEqual([1000, 'idle timeout']);
    });

    it('a dead peer (no pong, no frame) watching a running turn is dropped; the turn completes and is stored', async () => {
      const chatId = newChatId();
      const socket = new WebSocket(`${hb.url.replace(/^http/, 'ws')}/api/v1/chat/${hbApp}?chat_id=${chatId}`, { headers: { authorization: `Bearer ${hbUser.token}` }, autoPong: false });
      const closed = new Promise<number>((r) => socket.once('close', (code) => r(code)));
      await new Promise((r) => socket.once('open', r));
      mock.enqueue({ text: Array<string>(40).fill(' slow').join(''), delayMs: 200 });
      socket.send(JSON.stringify({ chat_id: chatId, inputs: { input: 'are you there?' } }));
      const code = await closed;
      expect(code).toBe(1006); // terminated: no close handshake with a dead peer
      const answer = await eventually(async () => (await hb.handle.services.repos.messages.all(chatId)).find((r) => r.category === 'answer'), 'the stored answer');
      expect(answer?.remark).toBe('');
      expect(answer?.message).toBe(Array<string>(40).fill(' slow').join(''));
    });
  });

  describe('rate limit (chat.messages_per_minute 2)', () => {
    let limited: TestServer;
    let lUser: Api;
    let lApp: string;

    beforeAll(async () => {
      limited = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { messages_per_minute: 2 } }));
      const { admin: a, user: u } = await adminAndUser(limited);
      lUser = u;
      lApp = await publishedApp(a, { kind: 'chat', provider: 'mock' });
    });
    afterAll(async () => limited?.close());

    it('the third question in a minute gets 10429 with retry_after; no turn starts; the socket stays open', async () => {
      const chatId = newChatId();
      const ws = await connect(lApp, chatId, { api: lUser, base: limited.url });
      await expectAnswers(ws, chatId);
      await expectAnswers(ws, chatId);
      const from = ws.frames.length;
      ws.send({ chat_id: chatId, inputs: { input: 'one too many' } });
      ws.send({ action: 'ping' });
      await ws.until((f) => f.slice(from).some((x) => x.type === 'pong'), 5000, 'pong');
      const rest = ws.frames.slice(from);
      expect(kinds(rest)).toEqual(['error/end', 'system/pong']);
      expect(rest[0]!.message.status_code).toBe(10429);
      expect(rest[0]!.message.data.retry_after).toBeGreaterThan(0);
      expect(rest[0]!.seq).toBeUndefined();
      expect(mock.requests).toHaveLength(2);
      expect((await limited.handle.services.repos.messages.all(chatId)).filter((r) => r.category === 'question')).toHaveLength(2);
      expect(ws.closeCode).toBeNull();
    });
  });

  describe('JWT expiry on a long-lived socket', () => {
    /** A server whose clock the test moves, and a socket on it with a token that expires in a minute. */
    const expiringSocket = async (extra: DeepPartial<Config> = {}) => {
      const clock = new ManualClock();
      const expiring = await startServer({ name: 'sqlite' }, mockConfig(mock, extra), { clock });
      onTestFinished(() => expiring.close());
      const { admin: a, userId: uid } = await adminAndUser(expiring);
      const app = await publishedApp(a, { kind: 'chat', provider: 'mock' });
      const token = await tokenExpiringAt(expiring, uid, Math.floor(clock.now() / 1000) + 60);
      const chatId = newChatId();
      const ws = await WsClient.connect(expiring.url, `/api/v1/chat/${app}?chat_id=${chatId}`, { token });
      sockets.push(ws);
      expect(ws.closeCode).toBeNull();
      return { clock, ws, chatId };
    };

    it('the next frame after expiry gets 10401 and the socket closes with 1008', async () => {
      const { clock, ws, chatId } = await expiringSocket();
      await expectAnswers(ws, chatId);
      const from = ws.frames.length;
      clock.advance(61_000);
      ws.send({ chat_id: chatId, inputs: { input: 'after expiry' } });
      const { code, reason } = await ws.waitClose();
      expect([code, reason]).toEqual([1008, 'Unauthorized']);
      expect(kinds(ws.frames.slice(from))).toEqual(['error/end']);
      expect(ws.frames[from]!.message.status_code).toBe(10401);
      expect(mock.requests).toHaveLength(1);
    });

    it('the heartbeat sweep closes an expired socket that sends nothing: 10401, then 1008', async () => {
      const { clock, ws } = await expiringSocket({ chat: { heartbeat_interval: 1 } });
      clock.advance(61_000);
      const { code, reason } = await ws.waitClose(15_000);
      expect([code, reason]).toEqual([1008, 'Unauthorized']);
      expect(kinds(ws.frames)).toEqual(['error/end']);
      expect(ws.frames[0]!.message.status_code).toBe(10401);
    });
  });

  describe('graceful shutdown', () => {
    it('a streaming turn is stopped: answer/end (stopped) and processing/close, then close 1001; the partial answer is stored', async () => {
      const down = await startServer({ name: 'sqlite' }, mockConfig(mock));
      try {
        const { admin: a, user: u } = await adminAndUser(down);
        const app = await publishedApp(a, { kind: 'chat', provider: 'mock' });
        const chatId = newChatId();
        const ws = await WsClient.connect(down.url, `/api/v1/chat/${app}?chat_id=${chatId}`, { token: u.token });
        sockets.push(ws);
        mock.enqueue({ text: Array<string>(200).fill(' word').join(''), delayMs: 50 });
        ws.send({ chat_id: chatId, inputs: { input: 'tell me a long story' } });
        await ws.until((f) => f.filter((x) => x.type === 'stream').length >= 3, 10_000, 'three stream frames');

        await down.handle.close();
        const { code, reason } = await ws.waitClose();
        expect([code, reason]).toEqual([1001, 'going away']);
        const k = kinds(ws.frames);
        expect(k.slice(-2), ws.describe()).toEqual(['answer/end', 'processing/close']);
        const end = ws.frames.at(-2)!;
        expect(end.message).toBe('');
        expect(typeof end.message_id).toBe('number');
        const streamed = streamedText(ws.frames);
        expect(streamed.length).toBeGreaterThan(0);

        // the partial answer outlives the process: read it from the same data dir
        const db = await openDatabase(down.config);
        try {
          const stored = await createRepos(db).messages.all(chatId);
          expect(stored.map((r) => r.category)).toEqual(['question', 'answer']);
          expect(stored[1]).toMatchObject({ id: end.message_id, remark: 'break_answer', message: streamed });
        } finally {
          await db.close();
        }
      } finally {
        await down.close();
      }
    });
  });

  describe('several conversations on one socket, and isolation between users', () => {
    it("a socket that watched a chat_id before its owner created the conversation never receives the owner's frames", async () => {
      const chatId = newChatId();
      const early = await connect(chatApp, chatId, { api: bob });
      const owner = await connect(chatApp, chatId);
      mock.enqueue({ text: 'private answer' });
      const frames = await ask(owner, chatId, 'private question');
      expect(frames.find(isEndCover)?.message).toBe('private answer');
      // resuming it from the start is refused as well
      early.send({ action: 'resume', chat_id: chatId, last_seq: 0 });
      early.send({ action: 'ping' });
      await early.until((f) => f.some((x) => x.type === 'pong'), 5000, 'pong');
      expect(kinds(early.frames)).toEqual(['error/end', 'system/pong']);
      expect(early.frames[0]!.message.status_code).toBe(10403);
      expect(JSON.stringify(early.frames)).not.toContain('private');
    });


    it("two conversations run at once on one socket; user B's socket never sees a frame of A's conversations", async () => {
      const a1 = newChatId();
      const a2 = newChatId();
      const b1 = newChatId();
      const alice = await connect(chatApp, a1);
      const bobWs = await connect(chatApp, b1, { api: bob });
      const slow = { text: 'streaming for a while now', delayMs: 40 };
      mock.enqueue(slow, slow, slow);

      alice.send({ chat_id: a1, inputs: { input: 'first conversation' } });
      alice.send({ chat_id: a2, inputs: { input: 'second conversation' } });
      await alice.until((f) => f.some((x) => x.chat_id === a2 && x.type === 'stream'), 10_000, 'a2 streaming');
      // B tries to reach A's conversations while they stream: each attempt is refused
      const bobFrom = bobWs.frames.length;
      bobWs.send({ action: 'resume', chat_id: a1, last_seq: 0 });
      bobWs.send({ chat_id: a2, inputs: { input: 'hijack' } });
      bobWs.send({ action: 'stop', chat_id: a1 });
      bobWs.send({ inputs: { data: { id: chatApp, chatId: a2 } } });
      bobWs.send({ chat_id: b1, inputs: { input: 'my own question' } });
      await bobWs.until((f) => f.some(isClose), 10_000, "bob's turn");
      await alice.until((f) => f.filter(isClose).length === 2, 10_000, "both of alice's turns");

      for (const chatId of [a1, a2]) {
        const frames = alice.frames.filter((f) => f.chat_id === chatId);
        expect(kinds(frames)[0]).toBe('processing/begin');
        expect(kinds(frames).slice(-2)).toEqual(['answer/end_cover', 'processing/close']);
        expect(frames.find(isEndCover)!.message).toBe('streaming for a while now');
        for (let i = 1; i < frames.length; i++) expect(frames[i]!.seq!).toBeGreaterThan(frames[i - 1]!.seq!);
      }
      expect(alice.frames.every((f) => f.chat_id === a1 || f.chat_id === a2)).toBe(true);

      const seen = bobWs.frames.slice(bobFrom);
      expect(seen.some((f) => f.chat_id === a1 || f.chat_id === a2)).toBe(false);
      const aliceTurns = new Set(alice.frames.map((f) => f.turn_id));
      expect(seen.some((f) => aliceTurns.has(f.turn_id))).toBe(false);
      expect(JSON.stringify(seen)).not.toContain('conversation');
      const errors = seen.filter(isError);
      expect(errors.map((e) => e.message.status_code)).toEqual([10403, 10403, 10403, 10403]);
      expect(seen.find(isEndCover)!.chat_id).toBe(b1);
      // nothing of bob's landed in alice's conversations
      const questions = (await rows(a2)).filter((r) => r.category === 'question').map((r) => JSON.parse(r.message).input);
      expect(questions).toEqual(['second conversation']);
      expect(mock.requests).toHaveLength(3);
    });
  });
});
