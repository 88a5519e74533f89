/**
 * The OpenAI-compatible API (PROTOCOL.md §4), driven by the official `openai` client pointed at a
 * real Parley server, with the mock model over HTTP upstream.
 */
import OpenAI, { APIError, AuthenticationError, BadRequestError, InternalServerError, NotFoundError, RateLimitError } from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MockLlm, type MockStep } from '../fixtures/mock-llm.ts';
import { eventually } from '../helpers/wait.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import { demoApp } from '../helpers/seed.ts';
import type { Api} from '../helpers/server.ts';
import { adminAndUser, closeServer, createApiKey, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { WsClient } from '../helpers/ws-client.ts';

const TOOL_SCRIPT: MockStep[] = [
  { text: 'Let me compute.', toolCalls: [{ id: 'call_1', name: 'calculator', args: { expression: '6 * 7' } }] },
  { text: 'The answer is 42.' },
];

describe('OpenAI-compatible API with the official client', () => {
  let mock: MockLlm;
  let server: TestServer;
  let admin: Api;
  let user: Api;
  let bob: Api;
  let chatApp: string;
  let assistantApp: string;
  let key: string;
  let client: OpenAI;

  const openai = (apiKey: string) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
  const rows = (chatId: string) => server.handle.services.repos.messages.all(chatId);
  /** The same mock script over a WebSocket turn: its end_cover text. */
  const wsAnswer = async (appId: string, steps: MockStep[], question: string) => {
    mock.enqueue(...steps);
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${appId}?chat_id=${newChatId()}`, { token: user.token });
    ws.send({ inputs: { input: question } });
    const frames = await ws.turn(0);
    ws.close();
    return frames.find((f) => f.category === 'answer' && f.type === 'end_cover')!.message as string;
  };
  const post = (body: unknown, headers: Record<string, string> = {}) => fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body),
  });

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock));
    ({ admin, user } = await adminAndUser(server));
    ({ user: bob } = await adminAndUser(server, 'bob'));
    chatApp = await publishedApp(admin, { kind: 'chat', provider: 'mock', prompt: 'You are the app.' });
    assistantApp = await publishedApp(admin, { kind: 'assistant', provider: 'mock', tools: ['calculator'] });
    ({ key } = await createApiKey(user));
    client = openai(key);
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });
  beforeEach(() => mock.reset());

  describe('a chat app', () => {
    it('non-stream: chat.completion whose content equals the WebSocket answer, with usage', async () => {
      const script: MockStep[] = [{ text: 'Hello from the mock model', reasoning: ['think'], usage: { prompt_tokens: 11, completion_tokens: 5 } }];
      const expected = await wsAnswer(chatApp, script, 'hi');
      mock.enqueue(...script);
      const res = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'hi' }] });
      expect(res.object).toBe('chat.completion');
      expect(res.model).toBe(chatApp);
      expect(res.id).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
      expect(res.choices[0]!.message).toMatchObject({ role: 'assistant', content: expected, reasoning_content: 'think' });
      expect(res.choices[0]!.finish_reason).toBe('stop');
      expect(res.usage).toEqual({ prompt_tokens: 11, completion_tokens: 5, total_tokens: 16 });
    });

    it('stream: role first, content deltas, finish_reason stop, usage chunk when asked, then [DONE]', async () => {
      const script: MockStep[] = [{ text: 'Streaming through Parley works', reasoning: ['hmm ', 'ok'], usage: { prompt_tokens: 7, completion_tokens: 9 } }];
      const expected = await wsAnswer(chatApp, script, 'stream please');
      mock.enqueue(...script);
      const stream = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'stream please' }], stream: true, stream_options: { include_usage: true } });
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
      expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
      expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.model === chatApp)).toBe(true);
      const content = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
      expect(content).toBe(expected);
      const reasoning = chunks.map((c) => (c.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '').join('');
      expect(reasoning).toBe('hmm ok');
      const usageChunk = chunks.at(-1)!;
      expect(usageChunk.choices).toEqual([]);
      expect(usageChunk.usage).toEqual({ prompt_tokens: 7, completion_tokens: 9, total_tokens: 16 });
      expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('stop');
      expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    });

    it('stream without include_usage has no usage chunk; the raw stream ends with data: [DONE]', async () => {
      mock.enqueue({ text: 'plain' });
      const res = await post({ model: chatApp, messages: [{ role: 'user', content: 'x' }], stream: true });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      expect(res.headers.get('cache-control')).toBe('no-cache');
      const text = await res.text();
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const chunks = text.split('\n\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
      expect(chunks.every((c) => c.choices.length === 1 && !('usage' in c))).toBe(true);
    });

    it('is stateless by default: the messages are the context, after the app prompt; nothing is stored', async () => {
      const before = (await user.get('/api/v1/chat/list?limit=100')).body.data.length;
      mock.enqueue({ text: 'Paris, still.' });
      const res = await client.chat.completions.create({
        model: chatApp,
        messages: [
          { role: 'system', content: 'Answer briefly.' },
          { role: 'user', content: 'Capital of France?' },
          { role: 'assistant', content: 'Paris.' },
          { role: 'user', content: [{ type: 'text', text: 'And' }, { type: 'text', text: 'now?' }] },
        ],
        temperature: 0.3, max_tokens: 50,
      });
      expect(res.choices[0]!.message.content).toBe('Paris, still.');
      const sent = mock.requests.at(-1)!;
      expect(sent.messages.map((m: any) => [m.role, typeof m.content === 'string' ? m.content : m.content.map((p: any) => p.text).join('')])).toEqual([
        ['system', 'You are the app.'], ['system', 'Answer briefly.'], ['user', 'Capital of France?'], ['assistant', 'Paris.'], ['user', 'And\nnow?'],
      ]);
      expect(sent.temperature).toBe(0.3);
      expect(sent.max_tokens).toBe(50);
      expect((await user.get('/api/v1/chat/list?limit=100')).body.data.length).toBe(before);
    });

    it('metadata.chat_id (or X-Chat-Id) appends to a stored conversation whose context comes from the database', async () => {
      const chatId = newChatId();
      mock.enqueue({ text: 'First answer.' }, { text: 'Second answer.' });
      await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'first' }], metadata: { chat_id: chatId } });
      await client.chat.completions.create(
        { model: chatApp, messages: [{ role: 'user', content: 'ignored context' }, { role: 'user', content: 'second' }] },
        { headers: { 'X-Chat-Id': chatId } },
      );
      const sent = mock.requests.at(-1)!.messages.map((m: any) => (typeof m.content === 'string' ? m.content : m.content.map((p: any) => p.text).join('')));
      expect(sent).toEqual(['You are the app.', 'first', 'First answer.', 'second']);
      const stored = await rows(chatId);
      expect(stored.map((m) => [m.category, m.category === 'question' ? JSON.parse(m.message).input : m.message])).toEqual([
        ['question', 'first'], ['answer', 'First answer.'], ['question', 'second'], ['answer', 'Second answer.'],
      ]);
      const other = await openai((await createApiKey(bob)).key).chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'x' }], metadata: { chat_id: chatId } }).catch((e: unknown) => e);
      expect(other).toBeInstanceOf(NotFoundError);
      expect((other as NotFoundError).code).toBe('chat_not_found');
    });
  });

  describe('an assistant app (calculator)', () => {
    it('stream: tool calls as informational tool_calls deltas, content equal to the WebSocket answer', async () => {
      const expected = await wsAnswer(assistantApp, TOOL_SCRIPT, 'what is 6*7?');
      expect(expected).toBe('Let me compute.The answer is 42.');
      mock.enqueue(...TOOL_SCRIPT);
      const stream = await client.chat.completions.create({ model: assistantApp, messages: [{ role: 'user', content: 'what is 6*7?' }], stream: true });
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(expected);
      const calls = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
      expect(calls).toEqual([{ index: 0, id: 'call_1', type: 'function', function: { name: 'calculator', arguments: JSON.stringify({ expression: '6 * 7' }) } }]);
      expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('stop');
      // the model saw the tool result on the server
      expect(mock.requests.at(-1)!.messages.some((m: any) => m.role === 'tool' && String(m.content).includes('42'))).toBe(true);
    });

    it("the client's stream helper parses the stream into the same final completion as non-stream", async () => {
      mock.enqueue(...TOOL_SCRIPT);
      const final = await client.chat.completions.stream({ model: assistantApp, messages: [{ role: 'user', content: '6*7' }] }).finalChatCompletion();
      mock.enqueue(...TOOL_SCRIPT);
      const whole = await client.chat.completions.create({ model: assistantApp, messages: [{ role: 'user', content: '6*7' }] });
      for (const res of [final, whole]) {
        expect(res.choices[0]!.message.content).toBe('Let me compute.The answer is 42.');
        expect(res.choices[0]!.message.tool_calls).toEqual([{ id: 'call_1', type: 'function', function: { name: 'calculator', arguments: JSON.stringify({ expression: '6 * 7' }) } }]);
        expect(res.choices[0]!.finish_reason).toBe('stop');
      }
      expect(whole.usage!.total_tokens).toBeGreaterThan(0);
    });

    it('an echoed assistant message with informational tool_calls is taken as text context only', async () => {
      mock.enqueue({ text: 'ok' });
      await client.chat.completions.create({
        model: assistantApp,
        messages: [
          { role: 'user', content: '6*7' },
          { role: 'assistant', content: 'The answer is 42.', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'calculator', arguments: '{}' } }] },
          { role: 'user', content: 'thanks' },
        ],
      });
      const sent = mock.requests.at(-1)!.messages;
      expect(sent.map((m: any) => m.role)).toEqual(['system', 'user', 'assistant', 'user']);
      expect(sent[2].tool_calls).toBeUndefined();
    });
  });

  describe('models', () => {
    it("lists the apps the key may use; a key's app_ids scope the list and the completions", async () => {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      expect(ids).toEqual(expect.arrayContaining([chatApp, assistantApp]));
      // every kind of app is a model; workflow apps too (test/sse/workflow-sse.test.ts)
      const workflow = await demoApp(server, 'workflow');
      expect(ids).toContain(workflow.id);
      expect(await client.models.retrieve(workflow.id)).toMatchObject({ id: workflow.id, kind: 'workflow' });
      expect((await client.models.retrieve(chatApp)).id).toBe(chatApp);

      const scoped = openai((await createApiKey(user, [chatApp])).key);
      const scopedIds = [];
      for await (const m of scoped.models.list()) scopedIds.push(m.id);
      expect(scopedIds).toEqual([chatApp]);
      const refused = await scoped.chat.completions.create({ model: assistantApp, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(NotFoundError);
      expect((refused as NotFoundError).code).toBe('model_not_found');
    });
  });

  describe('errors', () => {
    it('bad, missing and revoked keys: 401 authentication_error', async () => {
      const bad = await openai('pk-not-a-real-key').chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      expect(bad).toBeInstanceOf(AuthenticationError);
      expect((bad as AuthenticationError).type).toBe('authentication_error');
      const jwt = await openai(user.token!).models.list().catch((e: unknown) => e);
      expect(jwt).toBeInstanceOf(AuthenticationError);
      const missing = await fetch(`${server.url}/v1/models`);
      expect(missing.status).toBe(401);
      expect((await missing.json()).error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });

      const { key: doomed, id } = await createApiKey(user);
      expect((await openai(doomed).models.list()).data.length).toBeGreaterThan(0);
      expect((await user.delete(`/api/v1/apikeys/${id}`)).status).toBe(200);
      const revoked = await openai(doomed).chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'x' }], stream: true }).catch((e: unknown) => e);
      expect(revoked).toBeInstanceOf(AuthenticationError);
    });

    it('unknown model: 404 model_not_found', async () => {
      const unknown = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      expect(unknown).toBeInstanceOf(NotFoundError);
      expect(unknown).toMatchObject({ status: 404, code: 'model_not_found', param: 'model', type: 'invalid_request_error' });
    });

    it('bad bodies: 400 invalid_request_error with the param, never a 500', async () => {
      const cases: Array<[unknown, string | null]> = [
        ['{not json', null],
        ['', null],
        [{ messages: [{ role: 'user', content: 'x' }] }, 'model'],
        [{ model: chatApp }, 'messages'],
        [{ model: chatApp, messages: [] }, 'messages'],
        [{ model: chatApp, messages: 'hello' }, 'messages'],
        [{ model: chatApp, messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
        [{ model: chatApp, messages: [{ role: 'user', content: 42 }] }, 'messages[0].content'],
        [{ model: chatApp, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x' } }] }] }, 'messages[0].content'],
        [{ model: chatApp, messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] }, 'messages[1].role'],
        [{ model: chatApp, messages: [{ role: 'user', content: '   ' }] }, 'messages[0].content'],
        [{ model: chatApp, messages: [{ role: 'tool', tool_call_id: 'nope', content: 'r' }, { role: 'user', content: 'x' }] }, 'messages[0].tool_call_id'],
        [{ model: chatApp, messages: [{ role: 'user', content: 'x' }], temperature: 'hot' }, 'temperature'],
        [{ model: chatApp, messages: [{ role: 'user', content: 'x' }], stream: 'yes' }, 'stream'],
        [{ model: chatApp, messages: [{ role: 'user', content: 'x' }], n: 2 }, 'n'],
        [{ model: chatApp, messages: [{ role: 'user', content: 'x' }], metadata: { chat_id: 'nope' } }, 'metadata.chat_id'],
        [{ model: 42, messages: [{ role: 'user', content: 'x' }] }, 'model'],
        [{ model: chatApp, messages: [{ role: 'user', content: 'x'.repeat(10_001) }] }, null],
      ];
      for (const [body, param] of cases) {
        const res = await post(body);
        const json = await res.json();
        expect({ status: res.status, body }).toEqual({ status: 400, body });
        expect(json.error.type).toBe('invalid_request_error');
        expect(typeof json.error.message).toBe('string');
        if (param) expect(json.error.param, JSON.stringify(body)).toBe(param);
      }
      const tooBig = await post({ model: chatApp, messages: [{ role: 'user', content: 'x'.repeat(2 * 1024 * 1024) }] });
      expect(tooBig.status).toBe(413);
      expect((await tooBig.json()).error.type).toBe('invalid_request_error');
      const header = await post({ model: chatApp, messages: [{ role: 'user', content: 'x' }] }, { 'x-chat-id': 'zz' });
      expect(header.status).toBe(400);
      const viaClient = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'robot' as 'user', content: 'x' }] }).catch((e: unknown) => e);
      expect(viaClient).toBeInstanceOf(BadRequestError);
      const route = await fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
      expect(route.status).toBe(404);
      expect((await route.json()).error.code).toBe('unknown_url');
    });

    it('upstream failures: 502 before any output; an error event then [DONE] mid-stream', async () => {
      mock.enqueue({ status: 500 });
      const whole = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      expect(whole).toBeInstanceOf(InternalServerError);
      expect(whole).toMatchObject({ status: 502, code: 'upstream_error' });

      mock.enqueue({ status: 500 });
      const early = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'x' }], stream: true }).catch((e: unknown) => e);
      expect(early).toMatchObject({ status: 502 });

      mock.enqueue({ text: Array<string>(10).fill(' tok'), dropAfter: 4 });
      const stream = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'x' }], stream: true });
      let content = '';
      const failure = await (async () => {
        for await (const c of stream) content += c.choices[0]?.delta.content ?? '';
      })().catch((e: unknown) => e);
      expect(content).toBe(' tok'.repeat(4));
      expect(failure).toBeInstanceOf(APIError);
      expect((failure as APIError).error).toMatchObject({ type: 'server_error', code: 'upstream_error' });

      mock.enqueue({ text: Array<string>(10).fill(' tok'), dropAfter: 4 });
      const raw = await (await post({ model: chatApp, messages: [{ role: 'user', content: 'x' }], stream: true })).text();
      const events = raw.split('\n\n').filter(Boolean);
      expect(events.at(-1)).toBe('data: [DONE]');
      expect(JSON.parse(events.at(-2)!.slice(6))).toMatchObject({ error: { code: 'upstream_error' } });
    });

    it('closing the request mid-stream aborts the upstream request and stores the partial answer (break_answer)', async () => {
      const chatId = newChatId();
      mock.enqueue({ text: Array<string>(200).fill(' tok'), delayMs: 15 });
      const stream = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'long' }], stream: true, metadata: { chat_id: chatId } });
      let n = 0;
      for await (const c of stream) {
        if (c.choices[0]?.delta.content) n++;
        if (n >= 3) break; // the client's `break` aborts the HTTP request
      }
      await mock.waitForAbort(5000);
      const stored = await eventually(async () => {
        const r = await rows(chatId);
        return r.length >= 2 ? r : undefined;
      }, 'the partial answer');
      expect(stored[1]).toMatchObject({ category: 'answer', remark: 'break_answer' });
      expect(stored[1]!.message.startsWith(' tok tok tok')).toBe(true);
      expect(stored[1]!.message.length).toBeLessThan(' tok'.repeat(200).length);

      // stateless and non-stream too: the upstream request is aborted
      mock.reset();
      mock.enqueue({ text: Array<string>(200).fill(' tok'), delayMs: 15 });
      const controller = new AbortController();
      const pending = client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'long' }] }, { signal: controller.signal }).catch((e: unknown) => e);
      await eventually(() => (mock.requests.length > 0 ? true : undefined), 'the upstream request');
      controller.abort();
      await pending;
      await mock.waitForAbort(5000);
    });

    it('keeps serving after every failure above (no 500 anywhere)', async () => {
      mock.enqueue({ text: 'still fine' });
      const res = await client.chat.completions.create({ model: chatApp, messages: [{ role: 'user', content: 'ok?' }] });
      expect(res.choices[0]!.message.content).toBe('still fine');
    });
  });
});

describe('OpenAI-compatible API: rate limit (chat.messages_per_minute, shared with the other transports)', () => {
  let mock: MockLlm;
  let server: TestServer;

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, { chat: { messages_per_minute: 2 } }));
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });

  it('answers 429 rate_limit_error with Retry-After once the user used up the minute, over any transport', async () => {
    const { admin, user } = await adminAndUser(server);
    const app = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: (await createApiKey(user)).key, maxRetries: 0 });
    // one turn over the WebSocket, one over the API: the same limiter
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${app}?chat_id=${newChatId()}`, { token: user.token });
    ws.send({ inputs: { input: 'one' } });
    await ws.turn(0);
    ws.close();
    await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'two' }] });
    const limited = await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'three' }], stream: true }).catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(RateLimitError);
    expect(limited).toMatchObject({ status: 429, type: 'rate_limit_error', code: 'rate_limit_exceeded' });
    expect(Number((limited as RateLimitError).headers?.get('retry-after'))).toBeGreaterThan(0);
  });
});
