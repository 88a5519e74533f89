/**
 * The Astron-compatible agent API (PROTOCOL.md §4, §8.8): OpenAI chunks with code/message, errors
 * 1001–1006, ping keep-alives, x-consumer-username only behind astron.trust_consumer_header.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import { adminAndUser, closeServer, createApiKey, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { SseReader } from '../helpers/sse-client.ts';

const PATH = '/agent/v1/chat/completions';

function body(botId: string, extra: Record<string, unknown> = {}) {
  return { bot_id: botId, uid: 'end-user-1', stream: true, parameters: { messages: [{ role: 'user', content: 'hello' }] }, meta_data: { caller: 'tests', caller_sid: 'sid-1', timestamp: 1700000000 }, ...extra };
}

describe('Astron-compatible API', () => {
  let mock: MockLlm;
  let server: TestServer;
  let key: string;
  let app: string;

  const call = (payload: unknown, headers: Record<string, string> = { authorization: `Bearer ${key}` }) => SseReader.open(`${server.url}${PATH}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { heartbeat_interval: 1 }, llm: { stall_timeout: 3 } }));
    const { admin, user } = await adminAndUser(server);
    app = await publishedApp(admin, { kind: 'assistant', provider: 'mock', tools: ['calculator'] });
    ({ key } = await createApiKey(user));
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });
  beforeEach(() => mock.reset());

  it('streams OpenAI chunks with code 0 / message success, the usage on the finish chunk, then [DONE]', async () => {
    mock.enqueue({ text: 'Astron says hi', usage: { prompt_tokens: 3, completion_tokens: 4 } });
    const r = await (await call(body(app))).finish();
    expect(r.response.status).toBe(200);
    expect(r.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(r.events.at(-1)!.data).toBe('[DONE]');
    const chunks = r.json();
    expect(chunks.length).toBeGreaterThan(2);
    for (const c of chunks) expect(c).toMatchObject({ code: 0, message: 'success', object: 'chat.completion.chunk', model: app });
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('Astron says hi');
    expect(chunks.at(-1)).toMatchObject({ choices: [{ finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } });
  });

  it('takes `parameters.input` as the question, and answers non-stream with code 0', async () => {
    mock.enqueue({ text: 'whole answer' });
    const r = await call(body(app, { stream: false, parameters: { input: 'just a string' } }));
    expect(r.response.status).toBe(200);
    const json = await r.body();
    expect(json).toMatchObject({ code: 0, message: 'success', object: 'chat.completion', choices: [{ message: { role: 'assistant', content: 'whole answer' } }] });
    expect(mock.requests.at(-1)!.messages.at(-1)).toMatchObject({ role: 'user' });
  });

  it('streams tool calls of an assistant app as tool_calls deltas', async () => {
    mock.enqueue({ toolCalls: [{ id: 'c1', name: 'calculator', args: { expression: '2+2' } }] }, { text: 'It is 4.' });
    const chunks = (await (await call(body(app))).finish()).json();
    expect(chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? [])).toEqual([{ index: 0, id: 'c1', type: 'function', function: { name: 'calculator', arguments: '{"expression":"2+2"}' } }]);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('It is 4.');
  });

  it('sends `data: {"ping": "pong"}` while silent', async () => {
    mock.enqueue({ text: 'eventually', ttftMs: 2000 });
    const r = await (await call(body(app))).finish();
    expect(r.events.some((e) => e.data === '{"ping":"pong"}')).toBe(true);
    expect(r.events.at(-1)!.data).toBe('[DONE]');
  });

  it('1001: a bad body answers HTTP 400 {code: 1001}, never a 500', async () => {
    const bad: unknown[] = [
      '{not json',
      { uid: 'u', parameters: { input: 'x' } },
      { bot_id: app, parameters: { input: 'x' } },
      { bot_id: app, uid: 'u', parameters: {} },
      { bot_id: app, uid: 'u', parameters: { input: '  ' } },
      { bot_id: app, uid: 'u', parameters: { messages: 'hello' } },
      { bot_id: app, uid: 'u', parameters: { messages: [{ role: 'assistant', content: 'x' }] } },
      { bot_id: app, uid: 'u', stream: 'yes', parameters: { input: 'x' } },
      { bot_id: app, uid: 'u', parameters: { input: 'x' }, meta_data: { timestamp: [] } },
      { bot_id: 'no-such-bot', uid: 'u', parameters: { input: 'x' } },
      { bot_id: app, uid: 'u', parameters: { input: 'x' }, chat_id: 'not-hex' },
    ];
    for (const payload of bad) {
      const r = await call(payload);
      const json = await r.body();
      expect({ status: r.response.status, code: json.code, payload }).toEqual({ status: 400, code: 1001, payload });
      expect(typeof json.message).toBe('string');
    }
  });

  it('1002: a bad or missing key, and x-consumer-username while the trust flag is off, answer HTTP 401', async () => {
    const cases: Array<Record<string, string>> = [
      { authorization: 'Bearer pk-wrong' },
      {},
      { 'x-consumer-username': 'alice' },
      { authorization: 'Basic abc' },
    ];
    const { user } = await adminAndUser(server);
    const { key: doomed, id } = await createApiKey(user);
    await user.delete(`/api/v1/apikeys/${id}`);
    cases.push({ authorization: `Bearer ${doomed}` });
    for (const headers of cases) {
      const r = await call(body(app), headers);
      expect({ status: r.response.status, body: await r.body() }).toEqual({ status: 401, body: { code: 1002, message: expect.any(String) } });
    }
  });

  it('upstream errors while streaming: a last chunk with code 1006 (error) or 1005 (timeout), then [DONE]', async () => {
    mock.enqueue({ status: 500 });
    const failed = await (await call(body(app))).finish();
    expect(failed.response.status).toBe(200);
    expect(failed.events.at(-1)!.data).toBe('[DONE]');
    expect(failed.json().at(-1)).toMatchObject({ code: 1006, message: expect.any(String) });

    mock.enqueue({ text: Array<string>(10).fill(' tok'), stallAfter: 2 });
    const stalled = await (await call(body(app))).finish();
    expect(stalled.events.at(-1)!.data).toBe('[DONE]');
    const chunks = stalled.json().filter((c) => !('ping' in c));
    expect(chunks.slice(0, -1).every((c) => c.code === 0)).toBe(true);
    expect(chunks.at(-1)).toMatchObject({ code: 1005 });

    mock.enqueue({ status: 500 });
    const whole = await call(body(app, { stream: false }));
    expect({ status: whole.response.status, code: (await whole.body()).code }).toEqual({ status: 502, code: 1006 });
  });

  it('chat_id (32 hex) appends to a stored conversation', async () => {
    const chatId = newChatId();
    mock.enqueue({ text: 'stored' });
    await (await call(body(app, { chat_id: chatId }))).finish();
    const rows = await server.handle.services.repos.messages.all(chatId);
    expect(rows.map((m) => [m.category, m.category === 'answer' ? m.message : JSON.parse(m.message).input])).toEqual([['question', 'hello'], ['answer', 'stored']]);
  });
});

describe('Astron-compatible API: rate limit and trusted consumer header', () => {
  let mock: MockLlm;
  let server: TestServer;
  let app: string;

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { messages_per_minute: 2 }, astron: { trust_consumer_header: true } }));
    const { admin } = await adminAndUser(server);
    app = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });

  const call = (headers: Record<string, string>) => SseReader.open(`${server.url}${PATH}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body(app)),
  });

  it('with the trust flag on, x-consumer-username names the user; an unknown one is refused (1002)', async () => {
    await adminAndUser(server, 'carol');
    mock.enqueue({ text: 'hi carol' });
    const ok = await (await call({ 'x-consumer-username': 'carol' })).finish();
    expect(ok.response.status).toBe(200);
    expect(ok.json().map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('hi carol');
    const unknown = await call({ 'x-consumer-username': 'nobody-here' });
    expect({ status: unknown.response.status, code: (await unknown.body()).code }).toEqual({ status: 401, code: 1002 });
  });

  it('1003: over chat.messages_per_minute answers HTTP 429 with Retry-After', async () => {
    const { user } = await adminAndUser(server, 'dave');
    const { key } = await createApiKey(user);
    for (let i = 0; i < 2; i++) {
      const r = await (await call({ authorization: `Bearer ${key}` })).finish();
      expect(r.response.status).toBe(200);
    }
    const limited = await call({ authorization: `Bearer ${key}` });
    expect(limited.response.status).toBe(429);
    expect(Number(limited.response.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await limited.body()).toEqual({ code: 1003, message: expect.any(String) });
  });
});
