/**
 * Acceptance tests of "Real-time chat over WebSocket" for turns (PRODUCT.md §3, PROTOCOL.md §3, §8):
 * a real server on SQLite, a real `ws` client and a real OpenAI-compatible mock model over HTTP.
 * Behaviour only: frames, their order and shapes, what is stored, what the model was sent.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { createServer, listen } from '../../src/server.ts';
import { MockLlm, type MockStep } from '../fixtures/mock-llm.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import { ManualClock } from '../helpers/clock.ts';
import { ADMIN_PASSWORD, Api, adminAndUser, dbTargets, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/wait.ts';
import { kinds, streamedText, WsClient, type Frame, closeAll } from '../helpers/ws-client.ts';

const BISHENG_FIELDS = ['is_bot', 'message', 'type', 'category', 'intermediate_steps', 'files', 'user_id', 'message_id', 'source', 'sender', 'receiver', 'liked', 'extra', 'flow_id', 'chat_id'];
const TOOLS = ['calculator', 'current_time'];

const isClose = (f: Frame) => f.category === 'processing' && f.type === 'close';
const isStream = (f: Frame) => f.category === 'processing' && f.type === 'stream';
const extraOf = (f: Frame) => JSON.parse(f.extra) as Record<string, any>;
const tokens = (n: number, word = ' tok') => Array<string>(n).fill(word);
/** upstream timeouts of these suites: short, so the stall cases end soon */
const TIMEOUTS = { stall_timeout: 2, request_timeout: 5 };

/** Every frame of a turn: all Bisheng fields, seq and turn_id; seq strictly increasing; one turn_id. */
function expectWellFormedTurn(frames: Frame[], chatId: string, appId: string): void {
  expect(frames.length).toBeGreaterThan(2);
  for (const f of frames) {
    for (const k of BISHENG_FIELDS) expect(f, `${f.category}/${f.type} lacks ${k}`).toHaveProperty(k);
    expect(typeof f.files).toBe('string');
    expect(typeof f.extra).toBe('string');
    expect(JSON.parse(f.extra)).toBeTypeOf('object');
    expect(Number.isSafeInteger(f.seq)).toBe(true);
    expect(typeof f.turn_id).toBe('string');
    expect(f.chat_id).toBe(chatId);
    expect(f.flow_id).toBe(appId);
  }
  for (let i = 1; i < frames.length; i++) expect(frames[i]!.seq!).toBeGreaterThan(frames[i - 1]!.seq!);
  expect(new Set(frames.map((f) => f.turn_id)).size).toBe(1);
  expect(kinds(frames)[0]).toBe('processing/begin');
  expect(kinds(frames).at(-1)).toBe('processing/close');
  expect(frames.filter(isClose)).toHaveLength(1);
}

/** The error frame of a failed turn, and that it is followed by processing/close only. */
function expectErrorTurn(frames: Frame[], statusCode: number): Frame {
  const k = kinds(frames);
  expect(k.slice(-2), k.join(' ')).toEqual(['error/end', 'processing/close']);
  const err = frames.at(-2)!;
  expect(err.message).toMatchObject({ status_code: statusCode });
  expect(typeof err.message.status_message).toBe('string');
  expect(err.message.status_message.length).toBeGreaterThan(0);
  expect(k).not.toContain('answer/end_cover');
  return err;
}

describe('WebSocket chat turns (sqlite, mock model over HTTP)', () => {
  let mock: MockLlm;
  let server: TestServer;
  let admin: Api;
  let user: Api;
  let userId: number;
  let bob: Api;
  let bobId: number;
  let chatApp: string;
  let assistantApp: string;
  const sockets: WsClient[] = [];

  const connect = async (appId: string, chatId: string | null, opts: { api?: Api; query?: string; base?: string } = {}) => {
    const q = [chatId ? `chat_id=${chatId}` : '', opts.query ?? ''].filter(Boolean).join('&');
    const ws = await WsClient.connect(opts.base ?? server.url, `/api/v1/chat/${appId}${q ? `?${q}` : ''}`, { token: (opts.api ?? user).token });
    sockets.push(ws);
    return ws;
  };
  /** Sends a question and returns the frames of its turn (through processing/close). */
  const ask = async (ws: WsClient, text: string, extra: Record<string, unknown> = {}, timeoutMs = 10_000) => {
    const from = ws.frames.length;
    ws.send({ inputs: { input: text }, ...extra });
    return ws.turn(from, timeoutMs);
  };
  /** Stored messages of a conversation, oldest first, through the REST API. */
  const history = async (chatId: string, appId: string, api: Api = user) => {
    const r = await api.get(`/api/v1/chat/history?chat_id=${chatId}&flow_id=${appId}&page_size=100`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body.data as Array<Record<string, any>>).reverse();
  };
  const rows = (chatId: string) => server.handle.services.repos.messages.all(chatId);
  const lastRequestMessages = () => mock.requests.at(-1)!.messages as Array<Record<string, any>>;

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, {
      llm: TIMEOUTS,
      chat: { max_history_messages: 4 },
      moderation: { input_words: ['forbidden'], output_words: ['badword'], input_reply: 'Cannot answer that.', output_reply: 'Answer withheld.' },
    }));
    ({ admin, user, userId } = await adminAndUser(server));
    ({ user: bob, userId: bobId } = await adminAndUser(server, 'bob'));
    chatApp = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
    assistantApp = await publishedApp(admin, { kind: 'assistant', provider: 'mock', tools: TOOLS });
  });
  afterAll(async () => {
    for (const ws of sockets) ws.close();
    await server?.close();
    await mock?.close();
  });
  beforeEach(() => mock.reset());
  afterEach(() => closeAll(sockets));

  describe('a full turn', () => {
    it('chat app: documented frame order, Bisheng fields, seq, end_cover = deltas, stored question and answer', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      // tokens 10 ms apart: each arrives on its own, so each is a frame of its own
      mock.enqueue({ text: 'Hello there, how are you?', usage: { prompt_tokens: 7, completion_tokens: 6 }, delayMs: 10 });
      const frames = await ask(ws, 'Hi!');

      expectWellFormedTurn(frames, chatId, chatApp);
      const k = kinds(frames);
      const streams = frames.filter(isStream);
      expect(k).toEqual([
        'processing/begin', 'processing/start', ...streams.map(() => 'processing/stream'), 'processing/end',
        'answer/start', 'answer/end_cover', 'processing/close',
      ]);
      expect(streams.length).toBeGreaterThan(1);
      for (const s of streams) expect(s.message).toEqual({ content: expect.any(String), reasoning_content: expect.any(String) });
      expect(streamedText(frames)).toBe('Hello there, how are you?');

      const end = frames.find((f) => f.type === 'end_cover')!;
      expect(end.category).toBe('answer');
      expect(end.message).toBe('Hello there, how are you?');
      expect(typeof end.message_id).toBe('number');
      expect(extraOf(end).usage).toEqual({ prompt_tokens: 7, completion_tokens: 6, total_tokens: 13 });
      for (const f of frames) expect(f.user_id).toBe(userId);

      const stored = await history(chatId, chatApp);
      expect(stored.map((m) => [m.category, m.is_bot])).toEqual([['question', 0], ['answer', 1]]);
      expect(JSON.parse(stored[0]!.message)).toEqual({ input: 'Hi!' });
      expect(stored[1]).toMatchObject({ id: end.message_id, message: 'Hello there, how are you?', remark: '', parent_message_id: stored[0]!.id });
      expect((await rows(chatId)).at(-1)!.tokens).toBe(13);
      expect(JSON.parse(stored[1]!.extra).usage).toEqual({ prompt_tokens: 7, completion_tokens: 6, total_tokens: 13 });

      expect(mock.requests).toHaveLength(1);
      expect(mock.requests[0]!.stream).toBe(true);
      expect(mock.requests[0]!.messages).toEqual([
        { role: 'system', content: 'You are a test assistant.' },
        { role: 'user', content: 'Hi!' },
      ]);
    });

    it('assistant app: per LLM call start/stream/end, tool/start then tool/end paired by run_id, answer, close; tool rows stored', async () => {
      const chatId = newChatId();
      const ws = await connect(assistantApp, chatId);
      mock.enqueue(
        { text: 'Let me compute.', toolCalls: [{ id: 'call_1', name: 'calculator', args: { expression: '6 * 7' } }] },
        { text: ' The answer is 42.' },
      );
      const frames = await ask(ws, 'What is 6 times 7?');

      expectWellFormedTurn(frames, chatId, assistantApp);
      const k = kinds(frames);
      const collapse = k.filter((x, i) => !(x === 'processing/stream' && k[i - 1] === 'processing/stream'));
      expect(collapse).toEqual([
        'processing/begin',
        'processing/start', 'processing/stream', 'processing/end',
        'tool/start', 'tool/end',
        'processing/start', 'processing/stream', 'processing/end',
        'answer/start', 'answer/end_cover', 'processing/close',
      ]);

      const start = frames.find((f) => f.category === 'tool' && f.type === 'start')!;
      const end = frames.find((f) => f.category === 'tool' && f.type === 'end')!;
      expect(typeof start.message).toBe('string');
      expect(JSON.parse(start.message)).toEqual({ tool_key: 'calculator', input: { expression: '6 * 7' } });
      expect(JSON.parse(end.message)).toMatchObject({ tool_key: 'calculator', output: '42' });
      expect(extraOf(start).run_id).toBeTruthy();
      expect(extraOf(end).run_id).toBe(extraOf(start).run_id);

      const answer = frames.find((f) => f.type === 'end_cover')!;
      expect(answer.message).toBe(streamedText(frames));
      expect(answer.message).toBe('Let me compute. The answer is 42.');
      expect(extraOf(answer).usage).toMatchObject({ total_tokens: expect.any(Number) });
      expect(extraOf(answer).usage.total_tokens).toBeGreaterThan(0);

      // the model saw the tool result in the second call
      expect(mock.requests).toHaveLength(2);
      const second = mock.requests[1]!.messages as Array<Record<string, any>>;
      const call = second.find((m) => m.role === 'assistant' && m.tool_calls);
      expect(call!.tool_calls[0]).toMatchObject({ id: 'call_1', function: { name: 'calculator' } });
      expect(second.find((m) => m.role === 'tool')).toMatchObject({ tool_call_id: 'call_1', content: '42' });

      const stored = await history(chatId, assistantApp);
      expect(stored.map((m) => m.category)).toEqual(['question', 'tool', 'answer']);
      expect(JSON.parse(stored[1]!.message)).toMatchObject({ tool_key: 'calculator', input: { expression: '6 * 7' }, output: '42' });
      expect(JSON.parse(stored[1]!.extra).run_id).toBe(extraOf(start).run_id);
      expect(stored[2]).toMatchObject({ id: answer.message_id, message: 'Let me compute. The answer is 42.' });
      expect(stored[1]!.parent_message_id).toBe(stored[0]!.id);
      expect(stored[2]!.parent_message_id).toBe(stored[0]!.id);

      // the next turn's context carries the tool exchange
      mock.enqueue({ text: 'ok' });
      await ask(ws, 'thanks');
      const ctx = lastRequestMessages();
      expect(ctx.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'tool', 'assistant', 'user']);
      expect(ctx[3]).toMatchObject({ role: 'tool', content: '42' });
    });

    it('deltas that arrive together go out as one frame: fewer frames than tokens, same text, in order', async () => {
      const ws = await connect(chatApp, newChatId());
      const tokens = Array.from({ length: 64 }, (_, i) => ` t${i}`);
      mock.enqueue({ text: tokens });
      const frames = await ask(ws, 'Hi!');
      const streams = frames.filter(isStream);
      expect(streamedText(frames)).toBe(tokens.join(''));
      expect(streams.length).toBeLessThan(tokens.length / 2);
      expect(frames.find((f) => f.type === 'end_cover')!.message).toBe(tokens.join(''));
    });

    it('reasoning deltas arrive as reasoning_content', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ reasoning: ['Think', 'ing', ' hard'], text: 'Done.' });
      const frames = await ask(ws, 'Reason about it');
      const streams = frames.filter(isStream);
      expect(streams.map((s) => s.message.reasoning_content).join('')).toBe('Thinking hard');
      expect(streamedText(frames)).toBe('Done.');
      expect(frames.find((f) => f.type === 'end_cover')!.message).toBe('Done.');
      const stored = await history(chatId, chatApp);
      expect(stored.at(-1)!.message).toBe('Done.');
    });

    it('seq keeps increasing across the turns of a conversation', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      const a = await ask(ws, 'one');
      const b = await ask(ws, 'two');
      expect(b[0]!.seq!).toBeGreaterThan(a.at(-1)!.seq!);
      expect(b[0]!.turn_id).not.toBe(a[0]!.turn_id);
    });
  });

  describe('one turn at a time', () => {
    it('a question while a turn runs is rejected with 10409 (no seq, no close) and the running turn goes on', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: tokens(30), delayMs: 10 });
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'first' } });
      await ws.until((f) => f.slice(from).some(isStream), 10_000, 'a delta');
      ws.send({ inputs: { input: 'second' } });
      const frames = await ws.turn(from);
      const rejected = frames.filter((f) => f.category === 'error');
      expect(rejected).toHaveLength(1);
      expect(rejected[0]!.message).toMatchObject({ status_code: 10409 });
      expect(rejected[0]!.seq).toBeUndefined();
      const turn = frames.filter((f) => f.seq !== undefined);
      expectWellFormedTurn(turn, chatId, chatApp);
      expect(turn.find((f) => f.type === 'end_cover')!.message).toBe(tokens(30).join(''));
      expect(frames.filter(isClose)).toHaveLength(1);
      expect(mock.requests).toHaveLength(1);
      const stored = await history(chatId, chatApp);
      expect(stored.map((m) => m.category)).toEqual(['question', 'answer']);
    });

    it('a question that is too long or empty is rejected before any turn (no seq, no close, nothing stored)', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      ws.send({ inputs: { input: 'x'.repeat(server.config.chat.max_message_length + 1) } });
      ws.send({ inputs: { input: '   ' } });
      await ws.until((f) => f.length >= 2, 5000, 'two rejections');
      expect(ws.frames.map((f) => [f.category, f.type, f.message.status_code, f.seq])).toEqual([
        ['error', 'end', 10413, undefined], ['error', 'end', 10400, undefined],
      ]);
      expect(mock.requests).toHaveLength(0);
      expect(await rows(chatId)).toEqual([]);
      const frames = await ask(ws, 'a proper question');
      expect(kinds(frames)).toContain('answer/end_cover');
    });

    it('a repeated client_message_id does not start a second turn', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: 'Once.' });
      const first = await ask(ws, 'idempotent', { client_message_id: 'm-1' });
      const n = ws.frames.length;
      ws.send({ inputs: { input: 'idempotent' }, client_message_id: 'm-1' });
      ws.send({ action: 'ping' });
      await ws.until((f) => f.slice(n).some((x) => x.type === 'pong'), 5000, 'pong');
      expect(ws.frames.slice(n).map((f) => f.type)).toEqual(['pong']);
      expect(mock.requests).toHaveLength(1);
      expect((await rows(chatId)).map((m) => m.category)).toEqual(['question', 'answer']);
      expect(first.find((f) => f.type === 'end_cover')!.message).toBe('Once.');
    });
  });

  describe('stop', () => {
    it('mid-stream: the upstream call is aborted, the partial answer is stored as break_answer, answer/end then close; the socket goes on', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: tokens(200), delayMs: 20 });
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'Tell me a long story' } });
      await ws.until((f) => f.slice(from).filter(isStream).length >= 3, 10_000, 'three deltas');
      ws.send({ action: 'stop', chat_id: chatId });
      await mock.waitForAbort();
      const frames = await ws.turn(from);

      expectWellFormedTurn(frames, chatId, chatApp);
      const k = kinds(frames);
      expect(k.slice(-2)).toEqual(['answer/end', 'processing/close']);
      expect(k).not.toContain('answer/end_cover');
      expect(k).not.toContain('error/end');
      const end = frames.at(-2)!;
      expect(end.message).toBe('');
      expect(typeof end.message_id).toBe('number');
      const partial = streamedText(frames);
      expect(partial.length).toBeGreaterThan(0);
      expect(partial.length).toBeLessThan(200 * 4);

      const stored = await history(chatId, chatApp);
      expect(stored.map((m) => m.category)).toEqual(['question', 'answer']);
      expect(stored[1]).toMatchObject({ id: end.message_id, remark: 'break_answer', message: partial });

      // the same socket goes on
      mock.enqueue({ text: 'Fine.' });
      const next = await ask(ws, 'Short one then');
      expect(kinds(next)).toContain('answer/end_cover');
      expect(next.find((f) => f.type === 'end_cover')!.message).toBe('Fine.');
    });

    it('while nothing runs: no crash, no turn frames, the socket goes on', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      ws.send({ action: 'stop' });
      ws.send({ action: 'stop', chat_id: chatId });
      ws.send({ action: 'ping' });
      await ws.until((f) => f.some((x) => x.type === 'pong'), 5000, 'pong');
      expect(ws.frames.filter((f) => f.category === 'processing' || f.category === 'answer')).toEqual([]);
      expect(ws.frames.filter((f) => f.category === 'error')).toEqual([]);
      const frames = await ask(ws, 'still there?');
      expect(kinds(frames)).toContain('answer/end_cover');
      expect(ws.closeCode).toBeNull();
    });
  });

  describe('stop while a tool runs', () => {
    let slow: http.Server;
    let slowSeen = 0;
    let slowClosed = 0;
    let toolServer: TestServer;
    let toolUser: Api;
    let slowApp: string;

    beforeAll(async () => {
      slow = http.createServer((req, res) => {
        slowSeen++;
        req.on('close', () => { if (!res.writableEnded) slowClosed++; });
        setTimeout(() => res.end('slow result'), 8000).unref();
      });
      await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
      const port = (slow.address() as AddressInfo).port;
      toolServer = await startServer({ name: 'sqlite' }, mockConfig(mock, {
        llm: TIMEOUTS,
        tools: { http: [{ name: 'slow_lookup', description: 'slow', method: 'GET', url: `http://127.0.0.1:${port}/slow`, parameters: { type: 'object', properties: {} }, headers: {} }], allowed_hosts: [`127.0.0.1:${port}`], timeout: 30 },
      }));
      const a = await new Api(toolServer.url).login('admin', ADMIN_PASSWORD);
      toolUser = a;
      slowApp = await publishedApp(a, { kind: 'assistant', provider: 'mock', tools: ['slow_lookup'] });
    });
    afterAll(async () => {
      await toolServer?.close();
      slow?.closeAllConnections();
      await new Promise((r) => slow?.close(r));
    });

    it('ends the tool call, stores what there is, sends answer/end then close; the socket goes on', async () => {
      const chatId = newChatId();
      const ws = await connect(slowApp, chatId, { api: toolUser, base: toolServer.url });
      mock.enqueue({ text: 'Looking it up.', toolCalls: [{ name: 'slow_lookup', args: {} }] });
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'look it up' } });
      await ws.until((f) => f.slice(from).some((x) => x.category === 'tool' && x.type === 'start'), 10_000, 'tool/start');
      await eventually(async () => (slowSeen > 0 ? true : undefined), 'the tool request');
      ws.send({ action: 'stop' });
      const frames = await ws.turn(from);
      expectWellFormedTurn(frames, chatId, slowApp);
      const k = kinds(frames);
      expect(k.slice(-2)).toEqual(['answer/end', 'processing/close']);
      expect(k).not.toContain('error/end');
      // every tool/start has its tool/end
      const starts = frames.filter((f) => f.category === 'tool' && f.type === 'start').map((f) => extraOf(f).run_id);
      const ends = frames.filter((f) => f.category === 'tool' && f.type === 'end').map((f) => extraOf(f).run_id);
      expect(ends).toEqual(starts);
      await eventually(async () => (slowClosed > 0 ? true : undefined), 'the tool request to be aborted');
      expect(mock.requests).toHaveLength(1);
      const stored = await toolServer.handle.services.repos.messages.all(chatId);
      const answer = stored.find((m) => m.category === 'answer')!;
      expect(answer).toMatchObject({ id: frames.at(-2)!.message_id, remark: 'break_answer', message: 'Looking it up.' });

      mock.enqueue({ text: 'Next.' });
      const next = await ask(ws, 'next');
      expect(next.find((f) => f.type === 'end_cover')!.message).toBe('Next.');
    });
  });

  describe('resume', () => {
    /** Starts a slow turn on a fresh chat and disconnects after a few deltas; returns what the first socket saw. */
    const disconnectMidStream = async (n = 120) => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: Array.from({ length: n }, (_, i) => ` w${i}`), delayMs: 15 });
      ws.send({ inputs: { input: 'stream a lot' } });
      await ws.until((f) => f.filter(isStream).length >= 5, 10_000, 'five deltas');
      ws.close();
      await ws.waitClose();
      const seen = [...ws.frames];
      return { chatId, seen, lastSeq: seen.at(-1)!.seq!, expected: Array.from({ length: n }, (_, i) => ` w${i}`).join('') };
    };
    /** The resumed frames: contiguous from lastSeq + 1 through processing/close, each once. */
    const expectContiguous = (frames: Frame[], lastSeq: number) => {
      const seqs = frames.map((f) => f.seq!);
      expect(seqs[0]).toBe(lastSeq + 1);
      seqs.forEach((s, i) => expect(s).toBe(lastSeq + 1 + i));
      expect(frames.filter(isClose)).toHaveLength(1);
      expect(isClose(frames.at(-1)!)).toBe(true);
    };

    it('reconnect with ?last_seq: system/info {resumed:true, from_seq}, then every later frame exactly once, in order', async () => {
      const { chatId, seen, lastSeq, expected } = await disconnectMidStream();
      const ws = await connect(chatApp, chatId, { query: `last_seq=${lastSeq}` });
      await ws.turn(0, 15_000);
      const [info, ...rest] = ws.frames;
      expect(info).toMatchObject({ category: 'system', type: 'info', message: { resumed: true, from_seq: lastSeq } });
      expect(info!.seq).toBeUndefined();
      expectContiguous(rest, lastSeq);
      expect(rest.every((f) => f.turn_id === seen[0]!.turn_id)).toBe(true);
      // the two halves make the whole answer
      expect(streamedText(seen) + streamedText(rest)).toBe(expected);
      const end = rest.find((f) => f.type === 'end_cover')!;
      expect(end.message).toBe(expected);
      const stored = await history(chatId, chatApp);
      expect(stored.at(-1)).toMatchObject({ id: end.message_id, message: expected, remark: '' });
    });

    it('run_on_disconnect: the answer is stored even if the client never comes back', async () => {
      const { chatId, expected } = await disconnectMidStream(60);
      const answer = await eventually(async () => (await rows(chatId)).find((m) => m.category === 'answer'), 'the stored answer', 15_000);
      expect(answer).toMatchObject({ message: expected, remark: '' });
      expect(mock.aborted).toBe(0);
    });

    it('{action:"resume", chat_id, last_seq} on an open socket replays, then continues live', async () => {
      const { chatId, lastSeq, expected } = await disconnectMidStream();
      const ws = await connect(chatApp, newChatId());
      ws.send({ action: 'resume', chat_id: chatId, last_seq: lastSeq });
      await ws.turn(0, 15_000);
      const [info, ...rest] = ws.frames;
      expect(info).toMatchObject({ category: 'system', type: 'info', chat_id: chatId, message: { resumed: true, from_seq: lastSeq } });
      expectContiguous(rest, lastSeq);
      expect(rest.every((f) => f.chat_id === chatId)).toBe(true);
      expect(rest.find((f) => f.type === 'end_cover')!.message).toBe(expected);
    });

    it('resuming a finished turn replays its tail from the log', async () => {
      const chatId = newChatId();
      const ws1 = await connect(chatApp, chatId);
      const turn = await ask(ws1, 'quick');
      const cut = turn[2]!.seq!;
      const ws2 = await connect(chatApp, chatId, { query: `last_seq=${cut}` });
      await ws2.turn(0);
      const [info, ...rest] = ws2.frames;
      expect(info!.message).toEqual({ resumed: true, from_seq: cut });
      expect(rest).toEqual(turn.slice(3));
    });

    it('a last_seq the log does not cover (server never saw it) → {resumed:false, reason}', async () => {
      const chatId = newChatId();
      const r = await user.post('/api/v1/chat/message', { flow_id: chatApp, chat_id: chatId, human_message: 'q', answer_message: 'a' });
      expect(r.status).toBe(200);
      const ws = await connect(chatApp, chatId, { query: 'last_seq=3' });
      await ws.until((f) => f.length > 0, 5000, 'system/info');
      expect(ws.frames[0]).toMatchObject({ category: 'system', type: 'info', message: { resumed: false, reason: expect.any(String) } });
      // the socket works normally afterwards
      const frames = await ask(ws, 'hello again');
      expect(kinds(frames)).toContain('answer/end_cover');
    });
  });

  describe('a server with replay_ttl 3 and run_on_disconnect false', () => {
    let ttlServer: TestServer;
    let ttlUser: Api;
    let app: string;
    const clock = new ManualClock();
    beforeAll(async () => {
      ttlServer = await startServer({ name: 'sqlite' }, mockConfig(mock, { llm: TIMEOUTS, chat: { replay_ttl: 3, run_on_disconnect: false } }), { clock });
      ttlUser = await new Api(ttlServer.url).login('admin', ADMIN_PASSWORD);
      app = await publishedApp(ttlUser, { kind: 'chat', provider: 'mock' });
    });
    afterAll(async () => ttlServer?.close());

    it('once the finished turn expired from the log → {resumed:false}', async () => {
      const chatId = newChatId();
      const ws1 = await connect(app, chatId, { api: ttlUser, base: ttlServer.url });
      const turn = await ask(ws1, 'hello');
      ws1.close();
      // within the ttl the tail is replayed
      const early = await connect(app, chatId, { api: ttlUser, base: ttlServer.url, query: `last_seq=${turn[1]!.seq}` });
      await early.turn(0);
      expect(early.frames[0]!.message).toEqual({ resumed: true, from_seq: turn[1]!.seq });
      early.close();
      clock.advance(3001);
      const late = await (await connect(app, chatId, { api: ttlUser, base: ttlServer.url, query: `last_seq=${turn[1]!.seq}` })).settle();
      expect(late.frames).toHaveLength(1);
      expect(late.frames[0]).toMatchObject({ category: 'system', type: 'info', message: { resumed: false, reason: expect.any(String) } });
    });

    it('a disconnect stops the turn; its partial answer is stored as break_answer', async () => {
      const chatId = newChatId();
      const ws = await connect(app, chatId, { api: ttlUser, base: ttlServer.url });
      mock.enqueue({ text: tokens(200), delayMs: 20 });
      ws.send({ inputs: { input: 'long' } });
      await ws.until((f) => f.filter(isStream).length >= 3, 10_000, 'deltas');
      ws.close();
      await mock.waitForAbort();
      const stored = await eventually(async () => {
        const r = await ttlServer.handle.services.repos.messages.all(chatId);
        return r.some((m) => m.category === 'answer') ? r : undefined;
      }, 'the interrupted answer');
      expect(stored.map((m) => [m.category, m.remark])).toEqual([['question', ''], ['answer', 'break_answer']]);
      expect(stored[1]!.message.length).toBeGreaterThan(0);
    });
  });

  describe('failures inside a turn: error frame, then close; the socket stays usable', () => {
    const cases: Array<[string, MockStep[], number]> = [
      ['upstream 500', [{ status: 500 }], 10502],
      ['malformed SSE', [{ text: tokens(6), malformed: true }], 10502],
      ['upstream stall (stall_timeout)', [{ text: tokens(5), stallAfter: 2 }], 10504],
    ];
    for (const [name, steps, code] of cases) {
      it(name, async () => {
        const chatId = newChatId();
        const ws = await connect(chatApp, chatId);
        mock.enqueue(...steps);
        const frames = await ask(ws, `trigger ${name}`, {}, 15_000);
        expectWellFormedTurn(frames, chatId, chatApp);
        expectErrorTurn(frames, code);
        if (name.includes('stall')) await mock.waitForAbort();
        mock.enqueue({ text: 'Recovered.' });
        const next = await ask(ws, 'again');
        expect(next.find((f) => f.type === 'end_cover')!.message).toBe('Recovered.');
        expect(ws.closeCode).toBeNull();
      });
    }

    it('upstream timeout before the first token (ttft beyond the limits)', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: 'late', ttftMs: 8000 });
      const frames = await ask(ws, 'slow start', {}, 15_000);
      expectErrorTurn(frames, 10504);
      await mock.waitForAbort();
      mock.enqueue({ text: 'Recovered.' });
      expect((await ask(ws, 'again')).find((f) => f.type === 'end_cover')!.message).toBe('Recovered.');
    });

    it('a tool that throws (calculator 1/0)', async () => {
      const chatId = newChatId();
      const ws = await connect(assistantApp, chatId);
      mock.enqueue({ toolCalls: [{ name: 'calculator', args: { expression: '1/0' } }] });
      const frames = await ask(ws, 'divide by zero');
      expectWellFormedTurn(frames, chatId, assistantApp);
      const err = expectErrorTurn(frames, 10500);
      expect(err.message.status_message).toMatch(/calculator/);
      const end = frames.find((f) => f.category === 'tool' && f.type === 'end')!;
      expect(extraOf(end).failed).toBe(true);
      mock.enqueue({ text: 'Recovered.' });
      expect((await ask(ws, 'again')).find((f) => f.type === 'end_cover')!.message).toBe('Recovered.');
    });

    it('a tool the app does not have (model calls "nope")', async () => {
      const chatId = newChatId();
      const ws = await connect(assistantApp, chatId);
      mock.enqueue({ toolCalls: [{ name: 'nope', args: {} }] });
      const frames = await ask(ws, 'call a missing tool');
      expectWellFormedTurn(frames, chatId, assistantApp);
      const err = expectErrorTurn(frames, 10502);
      expect(err.message.status_message).toMatch(/nope/);
      mock.enqueue({ text: 'Recovered.' });
      expect((await ask(ws, 'again')).find((f) => f.type === 'end_cover')!.message).toBe('Recovered.');
    });

    it('a question is stored even when its turn fails', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ status: 503 });
      await ask(ws, 'will fail');
      const stored = await history(chatId, chatApp);
      expect(stored.map((m) => m.category)).toEqual(['question']);
    });
  });

  describe('a question that cannot be stored', () => {
    it('gets an error frame (10500); nothing of the turn is sent or stored, its upstream call is abandoned; the next question works', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      // the turn's upstream request goes out while the question is being stored: make the store fail
      const messages = server.handle.services.repos.messages;
      const insert = messages.insert;
      messages.insert = async () => { throw new Error('disk I/O error'); };
      onTestFinished(() => { messages.insert = insert; });
      mock.enqueue({ text: tokens(50), delayMs: 20 });
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'lost' } });
      await ws.until((f) => f.slice(from).some((x) => x.category === 'error'), 10_000, 'an error frame');
      messages.insert = insert;
      const err = ws.frames.slice(from).find((x) => x.category === 'error')!;
      expect(err.message).toMatchObject({ status_code: 10500 });
      expect(JSON.stringify(err)).not.toContain('disk');
      expect(err.seq).toBeUndefined();
      await mock.waitForAbort();
      // the conversation is free again once the abandoned work has stopped
      mock.enqueue({ text: 'Back.' });
      const frames = await eventually(async () => {
        const at = ws.frames.length;
        ws.send({ inputs: { input: 'again' } });
        await ws.until((f) => f.slice(at).some((x) => isClose(x) || x.category === 'error'), 10_000, 'a turn or a refusal');
        return ws.frames.slice(at).some(isClose) ? ws.frames.slice(at) : undefined;
      }, 'the conversation to be free');
      expectWellFormedTurn(frames.filter((f) => f.seq !== undefined), chatId, chatApp);
      expect(ws.frames.slice(from).filter((f) => f.seq !== undefined).every((f) => frames.includes(f))).toBe(true);
      expect(frames.find((f) => f.type === 'end_cover')!.message).toBe('Back.');
      const stored = await history(chatId, chatApp);
      expect(stored.map((m) => [m.category, m.message])).toEqual([['question', JSON.stringify({ input: 'again' })], ['answer', 'Back.']]);
      expect(stored[1]!.parent_message_id).toBe(stored[0]!.id);
    });
  });

  describe('context: regenerate, clear_history, window, interrupted answers', () => {
    it('regenerate: the old answer stays, the new one is a sibling; the next context holds only the newest', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: 'First answer.' });
      await ask(ws, 'Question one');
      mock.enqueue({ text: 'Second answer.' });
      const from = ws.frames.length;
      ws.send({ action: 'regenerate', chat_id: chatId });
      const regen = await ws.turn(from);
      expectWellFormedTurn(regen, chatId, chatApp);
      expect(regen.find((f) => f.type === 'end_cover')!.message).toBe('Second answer.');
      // the regenerated call got the same context as the first one
      expect(mock.requests[1]!.messages).toEqual(mock.requests[0]!.messages);

      const stored = await history(chatId, chatApp);
      expect(stored.map((m) => [m.category, m.message])).toEqual([
        ['question', JSON.stringify({ input: 'Question one' })], ['answer', 'First answer.'], ['answer', 'Second answer.'],
      ]);
      expect(stored[2]!.parent_message_id).toBe(stored[0]!.id);
      expect(stored[1]!.parent_message_id).toBe(stored[0]!.id);

      mock.enqueue({ text: 'ok' });
      await ask(ws, 'Question two');
      expect(lastRequestMessages().slice(1)).toEqual([
        { role: 'user', content: 'Question one' },
        { role: 'assistant', content: 'Second answer.' },
        { role: 'user', content: 'Question two' },
      ]);
    });

    it('regenerate with nothing to regenerate is rejected without a turn', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      ws.send({ action: 'regenerate', chat_id: chatId });
      await ws.until((f) => f.length > 0, 5000, 'an error frame');
      expect(ws.frames[0]).toMatchObject({ category: 'error', type: 'end', message: { status_code: 10404 } });
      expect(ws.frames[0]!.seq).toBeUndefined();
      expect(mock.requests).toHaveLength(0);
    });

    it('clear_history: the next turn sees no earlier message', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      await ask(ws, 'remember 7');
      ws.send({ clear_history: true });
      mock.enqueue({ text: 'fresh' });
      await ask(ws, 'what did I say?');
      expect(lastRequestMessages()).toEqual([
        { role: 'system', content: 'You are a test assistant.' },
        { role: 'user', content: 'what did I say?' },
      ]);
      // the history stays in storage
      const stored = await history(chatId, chatApp);
      expect(stored.filter((m) => m.category === 'question')).toHaveLength(2);
    });

    it('the context holds at most chat.max_history_messages messages', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      for (let i = 1; i <= 4; i++) {
        mock.enqueue({ text: `a${i}` });
        await ask(ws, `q${i}`);
      }
      mock.enqueue({ text: 'a5' });
      await ask(ws, 'q5');
      expect(lastRequestMessages()).toEqual([
        { role: 'system', content: 'You are a test assistant.' },
        { role: 'user', content: 'q3' }, { role: 'assistant', content: 'a3' },
        { role: 'user', content: 'q4' }, { role: 'assistant', content: 'a4' },
        { role: 'user', content: 'q5' },
      ]);
    });

    it('an interrupted (break_answer) answer is not part of the context', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: tokens(200, ' partial'), delayMs: 20 });
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'long one' } });
      await ws.until((f) => f.slice(from).filter(isStream).length >= 2, 10_000, 'deltas');
      ws.send({ action: 'stop' });
      await ws.turn(from);
      mock.enqueue({ text: 'ok' });
      await ask(ws, 'short one');
      const ctx = lastRequestMessages();
      expect(ctx.some((m) => typeof m.content === 'string' && m.content.includes('partial'))).toBe(false);
      expect(ctx.filter((m) => m.role === 'assistant')).toEqual([]);
    });
  });

  describe('sockets and conversations', () => {
    it('two sockets on the same chat_id see the same stream (same frames, same seqs)', async () => {
      const chatId = newChatId();
      const a = await connect(chatApp, chatId);
      const b = await (await connect(chatApp, chatId)).settle();
      mock.enqueue({ text: 'Shared answer for both.', delayMs: 5 });
      const fa = await ask(a, 'shared?');
      const fb = await b.turn(0);
      expect(fb).toEqual(fa);
      expectWellFormedTurn(fb, chatId, chatApp);
    });

    it('one socket carries two conversations; each is stored in its own', async () => {
      const chatA = newChatId();
      const chatB = newChatId();
      const ws = await connect(chatApp, chatA);
      mock.enqueue({ text: 'Answer A' }, { text: 'Answer B' });
      const fa = await ask(ws, 'to A');
      const fb = await ask(ws, 'to B', { chat_id: chatB });
      expect(fa.every((f) => f.chat_id === chatA)).toBe(true);
      expect(fb.every((f) => f.chat_id === chatB)).toBe(true);
      expect(fb.find((f) => f.type === 'end_cover')!.message).toBe('Answer B');
      expect((await history(chatA, chatApp)).map((m) => m.message)).toEqual([JSON.stringify({ input: 'to A' }), 'Answer A']);
      expect((await history(chatB, chatApp)).map((m) => m.message)).toEqual([JSON.stringify({ input: 'to B' }), 'Answer B']);
      // the context of B does not hold A's messages
      mock.enqueue({ text: 'again B' });
      await ask(ws, 'B again', { chat_id: chatB });
      expect(lastRequestMessages().slice(1).map((m) => m.content)).toEqual(['to B', 'Answer B', 'B again']);
    });

    it("another user connecting to a user's chat_id is refused (1008 no permission) and never sees a frame of its turn", async () => {
      const chatId = newChatId();
      const owner = await connect(chatApp, chatId);
      mock.enqueue({ text: tokens(40, ' secret'), delayMs: 10 });
      const from = owner.frames.length;
      owner.send({ inputs: { input: 'my secret question' } });
      await owner.until((f) => f.slice(from).some(isStream), 10_000, 'a delta');
      const intruder = await connect(chatApp, chatId, { api: bob });
      const closed = await intruder.waitClose();
      expect(closed).toEqual({ code: 1008, reason: 'no permission' });
      expect(intruder.frames).toHaveLength(1);
      expect(intruder.frames[0]).toMatchObject({ category: 'error', message: { status_code: 10403 } });

      // nor through a frame naming the chat on the intruder's own socket
      const own = await connect(chatApp, newChatId(), { api: bob });
      own.send({ inputs: { input: 'let me in' }, chat_id: chatId });
      own.send({ action: 'resume', chat_id: chatId, last_seq: 0 });
      own.send({ action: 'stop', chat_id: chatId });
      await owner.turn(from);
      await own.settle();
      expect(own.frames.filter((f) => f.chat_id === chatId && f.category !== 'error')).toEqual([]);
      expect(own.frames.filter((f) => f.category === 'error').every((f) => f.message.status_code === 10403)).toBe(true);
      // the owner's turn was not stopped by the intruder
      expect(kinds(owner.frames.slice(from))).toContain('answer/end_cover');
    });

    it('a user who connected to a chat_id before its owner created it can neither regenerate nor clear it', async () => {
      const chatId = newChatId();
      const early = await (await connect(chatApp, chatId, { api: bob })).settle();
      const owner = await connect(chatApp, chatId);
      mock.enqueue({ text: 'owner answer' });
      await ask(owner, 'owner question');
      const before = await rows(chatId);
      const n = owner.frames.length;
      early.send({ action: 'regenerate', chat_id: chatId });
      early.send({ clear_history: true });
      await early.settle();
      const errors = early.frames.filter((f) => f.category === 'error');
      expect(errors.map((f) => f.message.status_code)).toEqual([10403, 10403]);
      expect(await rows(chatId)).toEqual(before);
      expect(owner.frames.slice(n)).toEqual([]);
      expect(mock.requests).toHaveLength(1);
    });

    it('a first question races another user creating the same chat_id: refused (10403), nothing stored there, the model never sees their messages', async () => {
      const chatId = newChatId();
      const ws = await (await connect(chatApp, chatId)).settle();
      const other = await (await connect(chatApp, chatId, { api: bob })).settle();
      // the question's checks find no conversation; before the turn stores anything, bob creates it
      const chat = server.handle.services.chat;
      const original = chat.resolveTarget.bind(chat);
      chat.resolveTarget = async (p, ...rest) => {
        const target = await original(p, ...rest);
        if (p.id === userId) {
          chat.resolveTarget = original;
          mock.enqueue({ text: 'bob answer' });
          await ask(other, 'bob secret');
          mock.enqueue({ text: tokens(50), delayMs: 20 });
        }
        return target;
      };
      onTestFinished(() => { chat.resolveTarget = original; });
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'mine' } });
      await ws.until((f) => f.slice(from).some((x) => x.category === 'error'), 10_000, 'an error frame');
      const err = ws.frames.slice(from).find((x) => x.category === 'error')!;
      expect(err.message).toMatchObject({ status_code: 10403 });
      expect(ws.frames.slice(from).filter((f) => f.category !== 'error')).toEqual([]);
      // the first request was bob's own turn; the refused turn's (sent while its question was being stored) held only its own question
      expect(JSON.stringify(mock.requests[0]!.messages)).toContain('bob secret');
      for (const r of mock.requests.slice(1)) expect(JSON.stringify(r.messages)).not.toContain('bob');
      expect((await rows(chatId)).map((m) => [m.user_id, m.category, m.message])).toEqual([
        [bobId, 'question', JSON.stringify({ input: 'bob secret' })], [bobId, 'answer', 'bob answer'],
      ]);
    });

    it('a user watching a chat_id before its owner asks never receives the owner\'s frames', async () => {
      const chatId = newChatId();
      const early = await (await connect(chatApp, chatId, { api: bob })).settle();
      const owner = await connect(chatApp, chatId);
      mock.enqueue({ text: 'private answer' });
      await ask(owner, 'private question');
      await early.settle();
      expect(early.frames.filter((f) => f.category !== 'error')).toEqual([]);
    });
  });

  describe('moderation', () => {
    it('a question with an input word is stored with sensitive_status 2 and answered with input_reply, without the model', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      const frames = await ask(ws, 'tell me the FORBIDDEN thing');
      expectWellFormedTurn(frames, chatId, chatApp);
      expect(kinds(frames)).toEqual(['processing/begin', 'answer/start', 'answer/end_cover', 'processing/close']);
      const end = frames.find((f) => f.type === 'end_cover')!;
      expect(end.message).toBe('Cannot answer that.');
      expect(mock.requests).toHaveLength(0);
      const stored = await history(chatId, chatApp);
      expect(stored[0]!.sensitive_status).toBe(2);
      expect(stored.map((m) => m.category)).toEqual(['question', 'answer']);
      expect(stored[1]).toMatchObject({ id: end.message_id, message: 'Cannot answer that.' });
      const info = await user.get(`/api/v1/chat/info?chat_id=${chatId}`);
      expect(info.body.data.sensitive_status).toBe(2);
    });

    it('an answer with an output word is replaced in end_cover and in the stored row', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      mock.enqueue({ text: 'here is a badword for you' });
      const frames = await ask(ws, 'say something');
      const end = frames.find((f) => f.type === 'end_cover')!;
      expect(end.message).toBe('Answer withheld.');
      const stored = await history(chatId, chatApp);
      expect(stored.at(-1)).toMatchObject({ id: end.message_id, message: 'Answer withheld.' });
      expect(stored.at(-1)!.message).not.toMatch(/badword/);
      // the review is recorded on the message and the conversation
      expect(stored.at(-1)!.sensitive_status).toBe(2);
      expect(stored[0]!.sensitive_status).toBe(1);
      expect((await user.get(`/api/v1/chat/info?chat_id=${chatId}`)).body.data.sensitive_status).toBe(2);
      // and the withheld text never reaches the model again
      mock.enqueue({ text: 'fine' });
      await ask(ws, 'next');
      expect(JSON.stringify(lastRequestMessages())).not.toMatch(/badword/);
    });

    it('a blocked question never reaches the model, not even as context of later turns', async () => {
      const chatId = newChatId();
      const ws = await connect(chatApp, chatId);
      await ask(ws, 'something forbidden here');
      mock.enqueue({ text: 'hello' });
      await ask(ws, 'an innocent question');
      expect(mock.requests).toHaveLength(1);
      expect(JSON.stringify(mock.requests[0]!.messages)).not.toMatch(/forbidden|Cannot answer/i);
      expect(lastRequestMessages().slice(1)).toEqual([{ role: 'user', content: 'an innocent question' }]);
    });
  });

  describe('debug mode', () => {
    it('an admin without chat_id streams a turn on the draft and nothing is stored', async () => {
      const before = await server.handle.services.repos.messages.count({ flowId: chatApp });
      const convsBefore = (await server.handle.services.db.kysely.selectFrom('conversations').select('chat_id').execute()).length;
      const ws = await connect(chatApp, null, { api: admin });
      mock.enqueue({ text: 'Debug answer.' });
      const frames = await ask(ws, 'debug question');
      expectWellFormedTurn(frames, '', chatApp);
      const end = frames.find((f) => f.type === 'end_cover')!;
      expect(end.message).toBe('Debug answer.');
      expect(end.message_id).toBeNull();
      expect(mock.requests).toHaveLength(1);
      expect(await server.handle.services.repos.messages.count({ flowId: chatApp })).toBe(before);
      expect((await server.handle.services.db.kysely.selectFrom('conversations').select('chat_id').execute()).length).toBe(convsBefore);
      // a second debug turn on the same socket continues the seq
      const again = await ask(ws, 'debug again');
      expect(again[0]!.seq!).toBeGreaterThan(frames.at(-1)!.seq!);
    });

    it('a plain user may not use debug mode', async () => {
      const ws = await connect(chatApp, null);
      const closed = await ws.waitClose();
      expect(closed.code).toBe(1008);
    });
  });
});

// The race needs real I/O between a question's checks and its writes: it shows on PostgreSQL.
describe.each(dbTargets())('questions at the same moment on $name', (target) => {
  let mock: MockLlm;
  let server: TestServer;
  let user: Api;
  let app: string;
  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer(target, mockConfig(mock, { llm: TIMEOUTS }));
    let admin: Api;
    ({ admin, user } = await adminAndUser(server));
    app = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
  });
  afterAll(async () => {
    await server?.close();
    await mock?.close();
  });

  it('two sockets asking at once: one turn runs, the other gets 10409 and nothing of its question is stored', async () => {
    const chats = Array.from({ length: 5 }, () => newChatId());
    const pairs = await Promise.all(chats.map(async (chatId) => {
      const path = `/api/v1/chat/${app}?chat_id=${chatId}`;
      return [await WsClient.connect(server.url, path, { token: user.token }), await WsClient.connect(server.url, path, { token: user.token })] as const;
    }));
    // slow answers: the first turn is still running when the second question arrives, even under load
    for (let i = 0; i < chats.length; i++) mock.enqueue({ text: Array<string>(10).fill(' tok'), delayMs: 50 });
    try {
      for (const [a, b] of pairs) {
        a.send({ inputs: { input: 'from a' } });
        b.send({ inputs: { input: 'from b' } });
      }
      for (const [i, [a, b]] of pairs.entries()) {
        // each socket watches the chat, so both see the one turn
        await a.turn(0);
        await b.turn(0);
        const errors = [...a.frames, ...b.frames].filter((f) => f.category === 'error');
        expect(errors.map((f) => f.message.status_code)).toEqual([10409]);
        const stored = await server.handle.services.repos.messages.all(chats[i]!);
        expect(stored.map((m) => m.category)).toEqual(['question', 'answer']);
        expect(stored[1]!.parent_message_id).toBe(stored[0]!.id);
        expect(stored[0]!.turn_id).toBe(a.frames.find((f) => f.seq !== undefined)!.turn_id);
      }
      expect(mock.requests).toHaveLength(chats.length);
    } finally {
      for (const [a, b] of pairs) {
        a.close();
        b.close();
      }
    }
  });
});

describe('a restart (sqlite)', () => {
  let mock: MockLlm;
  beforeAll(async () => {
    mock = await MockLlm.start();
  });
  afterAll(async () => mock?.close());

  it('a shutdown mid-turn keeps the partial answer; after the restart seq goes on increasing', async () => {
    const first = await startServer({ name: 'sqlite' }, mockConfig(mock, { llm: TIMEOUTS }));
    let second: Awaited<ReturnType<typeof createServer>> | null = null;
    const sockets: WsClient[] = [];
    try {
      const admin = await new Api(first.url).login('admin', ADMIN_PASSWORD);
      const app = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
      const chatId = newChatId();
      const ws = await WsClient.connect(first.url, `/api/v1/chat/${app}?chat_id=${chatId}`, { token: admin.token });
      sockets.push(ws);
      const from = ws.frames.length;
      ws.send({ inputs: { input: 'first' } });
      await ws.turn(from);
      mock.enqueue({ text: tokens(200), delayMs: 20 });
      const cut = ws.frames.length;
      ws.send({ inputs: { input: 'cut short' } });
      await ws.until((f) => f.slice(cut).filter(isStream).length >= 3, 10_000, 'deltas');
      await first.handle.close();
      await mock.waitForAbort();
      const seen = Math.max(...ws.frames.map((f) => f.seq ?? 0));

      second = await createServer(first.config);
      await listen(second);
      const stored = await second.services.repos.messages.all(chatId);
      expect(stored.map((m) => [m.category, m.remark])).toEqual([['question', ''], ['answer', ''], ['question', ''], ['answer', 'break_answer']]);
      expect(stored[3]!.message.length).toBeGreaterThan(0);

      const again = await new Api(second!.url).login('admin', ADMIN_PASSWORD);
      const ws2 = await WsClient.connect(second!.url, `/api/v1/chat/${app}?chat_id=${chatId}`, { token: again.token });
      sockets.push(ws2);
      ws2.send({ inputs: { input: 'after the restart' } });
      const turn = await ws2.turn(0);
      expect(turn[0]!.seq!).toBeGreaterThan(seen);
      expect(kinds(turn)).toContain('answer/end_cover');
    } finally {
      for (const ws of sockets) ws.close();
      await (second as Awaited<ReturnType<typeof createServer>> | null)?.close();
      await first.close();
    }
  });
});
