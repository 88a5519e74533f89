/**
 * The public wire, pinned: what a fixed sequence of requests over every transport (WebSocket
 * frames, native SSE, the OpenAI- and Astron-compatible APIs, REST) gets back, byte for byte, with
 * only the values that differ per run (random ids, times, durations) replaced by placeholders. The
 * transcripts under `golden/` were recorded from the server as it was before the chat core was
 * split by job (issue 12); a change that alters a byte a client sees fails here, and an intended
 * change is recorded again with `npx vitest run test/wire -u` and reviewed in the diff.
 *
 * The model is the offline demo model without delays (deterministic), and the mock LLM where an
 * upstream must fail or stall.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { publishedApp } from '../helpers/apps.ts';
import { demoApp } from '../helpers/seed.ts';
import { adminAndUser, closeServer, createApiKey, mockConfig, startServer, type Api, type TestServer } from '../helpers/server.ts';
import { WsClient } from '../helpers/ws-client.ts';

const chatIdOf = (n: number) => n.toString(16).padStart(32, 'c');

/** One scenario's transcript, with per-run values replaced by stable placeholders. */
class Transcript {
  private readonly lines: string[] = [];
  private readonly ids = new Map<string, string>();

  constructor(private readonly fixed: Record<string, string>) {}

  add(line: string): void {
    this.lines.push(this.normalize(line));
  }

  text(): string {
    return `${this.lines.join('\n')}\n`;
  }

  private placeholder(value: string, kind: string): string {
    if (this.fixed[value]) return this.fixed[value];
    let p = this.ids.get(value);
    if (!p) {
      p = `<${kind}${this.ids.size + 1}>`;
      this.ids.set(value, p);
    }
    return p;
  }

  private normalize(text: string): string {
    return text
      .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/g, (v) => this.placeholder(v, 'uuid'))
      .replace(/\b[0-9a-f]{32}\b/g, (v) => this.placeholder(v, 'id'))
      .replace(/\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?Z?/g, '<time>')
      .replace(/(\\?"(?:created|duration_ms|latency_ms|create_time_ms)\\?":)\d+/g, '$10');
  }
}

describe('the public wire is byte-for-byte what it was', () => {
  let mock: MockLlm;
  let server: TestServer;
  let admin: Api;
  let alice: Api;
  let bob: Api;
  let key: string;
  const apps: Record<'chat' | 'assistant' | 'workflow' | 'mock', string> = { chat: '', assistant: '', workflow: '', mock: '' };
  let fixed: Record<string, string>;

  beforeAll(async () => {
    mock = await MockLlm.start();
    const config = mockConfig(mock);
    config.llm!.providers = { ...config.llm!.providers, default: { type: 'demo', token_delay_ms: 0 } };
    server = await startServer({ name: 'sqlite' }, config);
    ({ admin, user: alice } = await adminAndUser(server));
    ({ user: bob } = await adminAndUser(server, 'bob'));
    apps.chat = (await demoApp(server, 'chat')).id;
    apps.assistant = (await demoApp(server, 'assistant')).id;
    apps.workflow = (await demoApp(server, 'workflow')).id;
    apps.mock = await publishedApp(admin, { kind: 'chat', provider: 'mock', name: 'Mock chat' });
    ({ key } = await createApiKey(alice));
    fixed = Object.fromEntries([...Object.entries(apps).map(([k, v]) => [v, `<app:${k}>`]), ...Array.from({ length: 20 }, (_, i) => [chatIdOf(i + 1), `<chat${i + 1}>`])]);
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });

  /** Opens a socket and records everything it receives, and what the test sends, into `t`. */
  async function socket(t: Transcript, path: string, token: string | null | undefined): Promise<Ws> {
    const ws = await WsClient.connect(server.url, path, { token });
    t.add(`== connect ${path}`);
    return new Ws(ws, t);
  }

  class Ws {
    private read = 0;
    constructor(readonly ws: WsClient, private readonly t: Transcript) {}
    send(frame: unknown): void {
      this.t.add(`>> ${typeof frame === 'string' ? frame.slice(0, 200) : JSON.stringify(frame)}`);
      this.ws.send(frame);
    }
    private flush(upTo: number): void {
      for (const raw of this.raw.slice(this.read, upTo)) this.t.add(`<< ${raw}`);
      this.read = upTo;
    }
    private get raw(): string[] {
      return this.ws.raw;
    }
    /** Records up to the next processing/close. */
    async turn(): Promise<void> {
      const from = this.read;
      await this.ws.until((f) => f.slice(from).some((x) => x.category === 'processing' && x.type === 'close'), 10_000, 'processing/close');
      const end = from + this.ws.frames.slice(from).findIndex((x) => x.category === 'processing' && x.type === 'close') + 1;
      this.flush(end);
    }
    /** Records what came before the answer to a ping (frames are handled in order). */
    async settle(): Promise<void> {
      this.ws.socket.send(JSON.stringify({ action: 'ping' }));
      const from = this.read;
      await this.ws.until((f) => f.slice(from).some((x) => x.type === 'pong'), 10_000, 'pong');
      const pong = from + this.ws.frames.slice(from).findIndex((x) => x.type === 'pong');
      this.flush(pong);
      this.read = pong + 1;
    }
    async closed(): Promise<void> {
      const { code, reason } = await this.ws.waitClose();
      this.flush(this.ws.frames.length);
      this.t.add(`== closed ${code} ${reason}`);
    }
    close(): Promise<void> {
      this.ws.close();
      return this.ws.waitClose().then(() => undefined);
    }
    lastSeq(): number {
      return this.ws.frames.findLast((f) => f.seq !== undefined)?.seq ?? 0;
    }
  }

  /** An HTTP exchange: request line, status, the headers a client reads, the whole body. */
  async function http(t: Transcript, method: string, path: string, opts: { body?: unknown; headers?: Record<string, string>; token?: string | null } = {}): Promise<string> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(server.url + path, { method, headers, body: opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body) });
    const text = await res.text();
    const shown = ['content-type', 'retry-after', 'x-should-retry'].map((h) => (res.headers.get(h) ? ` ${h}: ${res.headers.get(h)}` : '')).join('');
    t.add(`>> ${method} ${path}${opts.body !== undefined ? ` ${typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body)}` : ''}${shownHeaders(opts.headers)}`);
    t.add(`<< ${res.status}${shown}`);
    t.add(text);
    return text;
  }

  /** the request headers a transcript shows: not the credentials, which differ per run */
  const shownHeaders = (h: Record<string, string> = {}) => {
    const rest = Object.entries(h).filter(([k]) => k !== 'authorization');
    return `${h.authorization ? ' (auth)' : ''}${rest.length ? ` ${JSON.stringify(Object.fromEntries(rest))}` : ''}`;
  };
  const golden = (t: Transcript, name: string) => expect(t.text()).toMatchFileSnapshot(`./golden/${name}.txt`);

  it('WebSocket: a chat conversation (questions, duplicates, regenerate, resume, bad frames, clear)', async () => {
    const t = new Transcript(fixed);
    const chatId = chatIdOf(1);
    const ws = await socket(t, `/api/v1/chat/${apps.chat}?chat_id=${chatId}`, alice.token);
    ws.send({ inputs: { input: 'Hello there' } });
    await ws.turn();
    ws.send({ inputs: { input: 'And a question?' }, client_message_id: 'q-2' });
    await ws.turn();
    ws.send({ inputs: { input: 'And a question?' }, client_message_id: 'q-2' });
    await ws.settle();
    ws.send({ action: 'regenerate', chat_id: chatId });
    await ws.turn();
    const last = ws.lastSeq();
    ws.send({ action: 'resume', chat_id: chatId, last_seq: last - 3 });
    await ws.settle();
    ws.send({ action: 'resume', chat_id: chatId, last_seq: 1 });
    await ws.settle();
    for (const bad of ['not json', '"{\\"action\\": \\"ping\\"}"', '[1,2]', { action: 'bogus' }, { inputs: {} }, { inputs: { input: '' } }, { inputs: { input: 7 } }, { inputs: { input: 'x'.repeat(10_001) } },
      { action: 'resume', chat_id: chatId, last_seq: -1 }, { action: 'input', data: {} }, { chat_id: 'xyz', inputs: { input: 'hi' } }, { action: 'check_status' }]) {
      ws.send(bad);
      await ws.settle();
    }
    ws.send({ clear_history: true });
    await ws.settle();
    ws.send({ inputs: { input: 'After the clear' } });
    await ws.turn();
    await ws.close();
    const again = await socket(t, `/api/v1/chat/${apps.chat}?chat_id=${chatId}&last_seq=${last}`, alice.token);
    await again.settle();
    await again.close();
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatId}&flow_id=${apps.chat}&page_size=50`, { token: alice.token });
    await http(t, 'GET', `/api/v1/chat/info?chat_id=${chatId}`, { token: alice.token });
    await golden(t, 'ws-chat');
  });

  it('WebSocket: an assistant calls a tool; an admin in debug mode', async () => {
    const t = new Transcript(fixed);
    const chatId = chatIdOf(2);
    const ws = await socket(t, `/api/v1/assistant/chat/${apps.assistant}?chat_id=${chatId}`, alice.token);
    ws.send({ inputs: { input: 'What is 12 * (3 + 4)?' } });
    await ws.turn();
    await ws.close();
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatId}&page_size=50`, { token: alice.token });
    const debug = await socket(t, `/api/v1/chat/${apps.assistant}`, admin.token);
    debug.send({ inputs: { input: 'What is 2 + 3?' } });
    await debug.turn();
    await debug.close();
    await golden(t, 'ws-assistant');
  });

  it('WebSocket: the demo workflow through its form, its choice, check_status and stop', async () => {
    const t = new Transcript(fixed);
    const chatId = chatIdOf(3);
    const ws = await socket(t, `/api/v1/workflow/chat/${apps.workflow}?chat_id=${chatId}`, alice.token);
    ws.send({ action: 'init_data', chat_id: chatId, flow_id: apps.workflow });
    await ws.turn();
    ws.send({ action: 'check_status', chat_id: chatId });
    await ws.turn();
    ws.send({ action: 'input', chat_id: chatId, data: { wrong: { data: { topic: 'tea' } } } });
    await ws.settle();
    ws.send({ action: 'input', chat_id: chatId, data: { ask: { data: { topic: '' } } } });
    await ws.settle();
    ws.send({ action: 'init_data', chat_id: chatId, flow_id: apps.workflow });
    await ws.settle();
    ws.send({ action: 'input', chat_id: chatId, data: { ask: { data: { topic: 'tea', length: 'long' }, message: 'tea, long' } } });
    await ws.turn();
    ws.send({ action: 'input', chat_id: chatId, data: { choose: { data: { output_result: 'Finish' } } } });
    await ws.turn();
    ws.send({ action: 'check_status', chat_id: chatId });
    await ws.settle();
    ws.send({ inputs: { input: 'a question starts a run' } });
    await ws.turn();
    ws.send({ inputs: { input: '{"topic": "rain", "length": "short"}' } });
    await ws.turn();
    ws.send({ action: 'init_data', chat_id: chatId, flow_id: apps.workflow });
    await ws.turn();
    ws.send({ action: 'stop', chat_id: chatId });
    await ws.turn();
    ws.send({ action: 'regenerate', chat_id: chatId });
    await ws.settle();
    await ws.close();
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatId}&page_size=50`, { token: alice.token });
    await golden(t, 'ws-workflow');
  });

  it('WebSocket: refused connects and their close codes', async () => {
    const t = new Transcript(fixed);
    const foreign = chatIdOf(1);
    const cases: Array<[string, string | null | undefined]> = [
      [`/api/v1/chat/${apps.chat}?chat_id=${chatIdOf(4)}`, null],
      [`/api/v1/chat/${apps.chat}?chat_id=${chatIdOf(4)}`, 'not-a-token'],
      [`/api/v1/chat/${'0'.repeat(32)}?chat_id=${chatIdOf(4)}`, alice.token],
      [`/api/v1/chat/${apps.chat}?chat_id=${foreign}`, bob.token],
      [`/api/v1/workflow/chat/${apps.chat}?chat_id=${chatIdOf(4)}`, alice.token],
      [`/api/v1/chat/${apps.chat}?chat_id=xyz`, alice.token],
      [`/api/v1/chat/${apps.chat}`, alice.token],
    ];
    for (const [path, token] of cases) {
      const ws = await socket(t, path, token);
      await ws.closed();
    }
    const ws = await socket(t, `/api/v1/chat/${apps.chat}?chat_id=${chatIdOf(4)}`, bob.token);
    ws.send({ chat_id: foreign, inputs: { input: 'not yours' } });
    await ws.settle();
    ws.send('x'.repeat(1024 * 1024 + 10));
    await ws.closed();
    await golden(t, 'ws-refusals');
  });

  it('WebSocket: an upstream that fails, and a stop mid-answer', async () => {
    const t = new Transcript(fixed);
    const chatId = chatIdOf(5);
    const ws = await socket(t, `/api/v1/chat/${apps.mock}?chat_id=${chatId}`, alice.token);
    mock.enqueue({ status: 500 });
    ws.send({ inputs: { input: 'fail please' } });
    await ws.turn();
    mock.enqueue({ text: ['partial answer', ' never sent'], stallAfter: 1 });
    ws.send({ inputs: { input: 'stall please' } });
    await ws.ws.until((f) => f.some((x) => x.type === 'stream' && x.message.content === 'partial answer'), 10_000, 'the first delta');
    ws.send({ action: 'stop' });
    await ws.turn();
    await ws.close();
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatId}&page_size=50`, { token: alice.token });
    await http(t, 'POST', '/api/v1/chat/interrupt', { body: { chat_id: chatId }, token: alice.token });
    await golden(t, 'ws-upstream');
  });

  it('native SSE: ask, resume, refusals, debug mode, a workflow', async () => {
    const t = new Transcript(fixed);
    const chatId = chatIdOf(6);
    const base = `/api/v1/chat/${apps.chat}/completions`;
    const body = await http(t, 'POST', base, { body: { inputs: { input: 'Over SSE?' }, chat_id: chatId }, token: alice.token });
    const first = Number(/id: (\d+)/.exec(body)![1]);
    await http(t, 'GET', `${base}?chat_id=${chatId}&last_event_id=${first + 2}`, { token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'ignored' }, chat_id: chatId }, headers: { 'last-event-id': String(first + 100) }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'ignored' }, chat_id: chatId }, headers: { 'last-event-id': '1' }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'Again, once' }, chat_id: chatId, client_message_id: 'sse-1' }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'Again, once' }, chat_id: chatId, client_message_id: 'sse-1' }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: {}, chat_id: chatId }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'hi' }, chat_id: chatId }, token: bob.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'hi' }, chat_id: chatId }, headers: { 'last-event-id': 'abc' }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'hi' } }, headers: { 'last-event-id': '3' }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'hi' } }, token: alice.token });
    await http(t, 'POST', base, { body: { inputs: { input: 'Debug over SSE' } }, token: admin.token });
    await http(t, 'POST', `/api/v1/chat/${'0'.repeat(32)}/completions`, { body: { inputs: { input: 'hi' }, chat_id: chatIdOf(7) }, token: alice.token });
    const wf = `/api/v1/chat/${apps.workflow}/completions`;
    await http(t, 'POST', wf, { body: { inputs: { input: 'start it' }, chat_id: chatIdOf(8) }, token: alice.token });
    await http(t, 'POST', wf, { body: { inputs: { input: 'x', data: { topic: 'snow', length: 'long' } }, chat_id: chatIdOf(8) }, token: alice.token });
    await http(t, 'POST', wf, { body: { inputs: { input: 'Again' }, chat_id: chatIdOf(8) }, token: alice.token });
    await http(t, 'POST', wf, { body: { inputs: { input: 'not a form' }, chat_id: chatIdOf(8) }, token: alice.token });
    await golden(t, 'sse-native');
  });

  it('OpenAI-compatible API: models, streams, whole answers, tools, a workflow, errors', async () => {
    const t = new Transcript(fixed);
    const auth = { authorization: `Bearer ${key}` };
    const post = (body: unknown, headers: Record<string, string> = {}) => http(t, 'POST', '/v1/chat/completions', { body, headers: { ...auth, ...headers } });
    // bob's conversation, which alice's key may not use
    await http(new Transcript(fixed), 'POST', `/api/v1/chat/${apps.chat}/completions`, { body: { inputs: { input: 'mine' }, chat_id: chatIdOf(14) }, token: bob.token });
    // apps updated in the same millisecond (the seeded ones) are listed in the order of their random ids: shown by name
    const models = new Transcript(fixed);
    const list = JSON.parse(await http(models, 'GET', '/v1/models', { headers: auth })) as { data: Array<{ name: string }> };
    list.data.sort((x, y) => x.name.localeCompare(y.name));
    t.add(`>> GET /v1/models (auth)\n<< 200 content-type: application/json; charset=utf-8 (data sorted by name)\n${JSON.stringify(list)}`);
    await http(t, 'GET', `/v1/models/${apps.chat}`, { headers: auth });
    await http(t, 'GET', '/v1/models/nope', { headers: auth });
    await post({ model: apps.chat, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi?' }] });
    await post({ model: apps.chat, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: [{ type: 'text', text: 'Stream' }, { type: 'text', text: 'me' }] }] });
    await post({ model: apps.chat, stream: true, messages: [{ role: 'user', content: 'Stored?' }], metadata: { chat_id: chatIdOf(9) } });
    await post({ model: apps.assistant, stream: true, messages: [{ role: 'user', content: 'What is 6 * 7?' }] });
    await post({ model: apps.assistant, messages: [{ role: 'user', content: 'What is 6 * 7?' }] });
    await post({ model: apps.workflow, stream: true, messages: [{ role: 'user', content: 'go' }], metadata: { chat_id: chatIdOf(10) } });
    await post({ model: apps.workflow, stream: true, messages: [{ role: 'user', content: 'form' }], metadata: { chat_id: chatIdOf(10), workflow_input: '{"topic":"sun","length":"long"}' } });
    await post({ model: apps.workflow, messages: [{ role: 'user', content: 'Finish' }] }, { 'x-chat-id': chatIdOf(10) });
    await post({ model: apps.workflow, messages: [{ role: 'user', content: 'stateless' }] });
    mock.enqueue({ status: 500 });
    await post({ model: apps.mock, messages: [{ role: 'user', content: 'fail' }] });
    mock.enqueue({ status: 500 });
    await post({ model: apps.mock, stream: true, messages: [{ role: 'user', content: 'fail' }] });
    mock.enqueue({ text: 'a b c', dropAfter: 2 });
    await post({ model: apps.mock, stream: true, messages: [{ role: 'user', content: 'drop' }] });
    await http(t, 'POST', '/v1/chat/completions', { body: { model: apps.chat, messages: [{ role: 'user', content: 'hi' }] } });
    await http(t, 'POST', '/v1/chat/completions', { body: { model: apps.chat, messages: [{ role: 'user', content: 'hi' }] }, headers: { authorization: 'Bearer pk-wrong' } });
    await post({ model: apps.chat, messages: [] });
    await post({ model: apps.chat, messages: [{ role: 'assistant', content: 'hi' }] });
    await post({ model: apps.chat, messages: [{ role: 'user', content: '  ' }] });
    await post({ model: apps.chat, messages: [{ role: 'tool', content: 'x', tool_call_id: 'c1' }, { role: 'user', content: 'hi' }] });
    await post({ model: apps.chat, messages: [{ role: 'user', content: 'hi' }], metadata: { chat_id: 'nothex' } });
    await post({ model: apps.chat, messages: [{ role: 'user', content: 'hi' }], metadata: { chat_id: chatIdOf(9) } }, { 'x-chat-id': chatIdOf(11) });
    await post({ model: apps.chat, messages: [{ role: 'user', content: 'hi' }], metadata: { chat_id: chatIdOf(14) } });
    await post({ model: apps.chat, messages: [{ role: 'user', content: 'hi' }] }, { 'x-chat-id': chatIdOf(14) });
    await post({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] });
    await post({ model: apps.chat, messages: [{ role: 'user', content: 'x'.repeat(10_001) }] });
    await post({ model: apps.workflow, messages: [{ role: 'user', content: 'x' }], metadata: { chat_id: chatIdOf(12), workflow_input: '[1]' } });
    await post('{"model": ');
    await http(t, 'GET', '/v1/nothing', { headers: auth });
    await golden(t, 'openai');
  });

  it('Astron-compatible API: stream, whole, errors', async () => {
    const t = new Transcript(fixed);
    const auth = { authorization: `Bearer ${key}` };
    const post = (body: unknown, headers: Record<string, string> = auth) => http(t, 'POST', '/agent/v1/chat/completions', { body, headers });
    await post({ bot_id: apps.chat, uid: 'u1', parameters: { input: 'Hello Astron' } });
    await post({ bot_id: apps.chat, uid: 'u1', stream: false, parameters: { messages: [{ role: 'user', content: 'Whole?' }] } });
    await post({ bot_id: apps.assistant, uid: 'u1', parameters: { input: 'What is 3 * 3?' } });
    await post({ bot_id: apps.workflow, uid: 'u1', chat_id: chatIdOf(13), parameters: { input: 'go' } });
    await post({ bot_id: apps.workflow, uid: 'u1', chat_id: chatIdOf(13), parameters: { input: 'x', workflow_input: { topic: 'moon', length: 'short' } } });
    mock.enqueue({ status: 500 });
    await post({ bot_id: apps.mock, uid: 'u1', parameters: { input: 'fail' } });
    mock.enqueue({ status: 500 });
    await post({ bot_id: apps.mock, uid: 'u1', stream: false, parameters: { input: 'fail' } });
    await post({ bot_id: apps.chat, uid: 'u1', parameters: { input: 'hi' } }, {});
    await post({ bot_id: apps.chat, uid: 'u1', parameters: { input: 'hi' } }, { 'x-consumer-username': 'alice' });
    await post({ bot_id: 'nope', uid: 'u1', parameters: { input: 'hi' } });
    await post({ bot_id: apps.chat, uid: 'u1', parameters: {} });
    await post({ bot_id: apps.chat, uid: 'u1', chat_id: chatIdOf(14), parameters: { input: 'hi' } });
    await http(t, 'POST', '/agent/v1/nothing', { headers: auth, body: {} });
    await golden(t, 'astron');
  });

  it('REST: the conversations these made, as lists and counts', async () => {
    const t = new Transcript(fixed);
    await http(t, 'GET', '/api/v1/chat/list?page=1&limit=50', { token: alice.token });
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatIdOf(10)}&page_size=50`, { token: alice.token });
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatIdOf(13)}&page_size=50`, { token: alice.token });
    await http(t, 'GET', `/api/v1/chat/history?chat_id=${chatIdOf(1)}&page_size=50`, { token: bob.token });
    await http(t, 'GET', '/api/v1/chat/messages/count', { token: alice.token });
    await golden(t, 'rest');
  });
});
