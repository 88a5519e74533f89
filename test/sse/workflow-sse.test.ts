/**
 * Workflow apps over the HTTP transports (PROTOCOL.md §4; issue 5, workflow part): the official
 * `openai` client, native SSE and the Astron API against a real server, the mock model over HTTP.
 * Outputs become assistant content; a run that waits for input ends the response with the request
 * (`parley_input_request` on OpenAI/Astron, the frames themselves on native SSE); the next call with
 * the same chat id answers it.
 */
import OpenAI, { BadRequestError, InternalServerError } from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEMO_APPS } from '../../src/apps/demo-apps.ts';
import type { WorkflowGraph } from '../../src/domain/types.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import { adminAndUser, closeServer, createApiKey, mockConfig, startServer, type Api, type TestServer } from '../helpers/server.ts';
import { SseReader } from '../helpers/sse-client.ts';

const demoGraph = (): WorkflowGraph => structuredClone(DEMO_APPS.find((a) => a.kind === 'workflow')!.spec.graph!);
/** start → name (dialog) → greet (output) → end */
const dialogGraph: WorkflowGraph = {
  nodes: [
    { id: 'start', type: 'start', data: {} },
    { id: 'name', type: 'input', data: { mode: 'dialog', prompt: 'Your name?' } },
    { id: 'greet', type: 'output', data: { message: 'Hello, {{name.user_input}}!' } },
    { id: 'end', type: 'end', data: {} },
  ],
  edges: [{ source: 'start', target: 'name' }, { source: 'name', target: 'greet' }, { source: 'greet', target: 'end' }],
};

interface Frame { category: string; type: string; message: any; message_id: number | null; extra: string; seq?: number }
const kind = (f: Frame) => `${f.category}/${f.type}`;

describe('workflow apps over SSE, the OpenAI and the Astron API', () => {
  let mock: MockLlm;
  let server: TestServer;
  let user: Api;
  let app: string;
  let dialogApp: string;
  let failingApp: string;
  let key: string;
  let client: OpenAI;

  const rows = (chatId: string) => server.handle.services.repos.messages.all(chatId);
  const storedRun = (chatId: string) => server.handle.services.repos.workflowRuns.get(chatId);
  /** the chunks of a stream, and their content joined */
  const collect = async (stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>) => {
    const chunks: Array<OpenAI.Chat.Completions.ChatCompletionChunk & { parley_input_request?: any }> = [];
    for await (const c of stream) chunks.push(c);
    return { chunks, content: chunks.map((c) => c.choices[0]?.delta.content ?? '').join('') };
  };

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock));
    const both = await adminAndUser(server);
    user = both.user;
    app = await publishedApp(both.admin, { kind: 'workflow', provider: 'mock', graph: demoGraph() });
    dialogApp = await publishedApp(both.admin, { kind: 'workflow', provider: 'mock', graph: dialogGraph });
    failingApp = await publishedApp(both.admin, {
      kind: 'workflow', provider: 'mock',
      graph: { ...dialogGraph, nodes: dialogGraph.nodes.map((n) => (n.id === 'greet' ? { id: 'greet', type: 'code', data: { code: 'throw new Error("broken on purpose")' } } : n)) },
    });
    ({ key } = await createApiKey(user));
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
  });
  afterAll(async () => {
    await closeServer(server);
    await mock?.close();
  });
  beforeEach(() => mock.reset());

  describe('OpenAI-compatible API', () => {
    it('stream: outputs are the content; a waiting run ends the response with parley_input_request; the next calls answer it', async () => {
      const chatId = newChatId();
      const metadata = { chat_id: chatId };

      const first = await collect(await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'start' }], stream: true, metadata }));
      expect(first.chunks[0]!.choices[0]!.delta.role).toBe('assistant');
      expect(first.content).toBe('What should I write about?');
      const last = first.chunks.at(-1)!;
      expect(last.choices[0]!.finish_reason).toBe('stop');
      expect(last.parley_input_request).toMatchObject({
        node_id: 'ask', kind: 'form', message_id: expect.any(Number),
        input_schema: { input_type: 'form_input', value: [{ key: 'topic', type: 'text' }, { key: 'length', type: 'select', options: ['short', 'long'] }] },
      });
      expect(await storedRun(chatId)).toMatchObject({ status: 'input', node_id: 'ask' });

      // a form's answer: its fields as JSON in metadata.workflow_input
      mock.enqueue({ text: 'Tea is a calm drink.', usage: { prompt_tokens: 5, completion_tokens: 6 } });
      const second = await collect(await client.chat.completions.create({
        model: app, messages: [{ role: 'user', content: 'tea, long' }], stream: true, stream_options: { include_usage: true },
        metadata: { ...metadata, workflow_input: JSON.stringify({ topic: 'tea', length: 'long' }) },
      }));
      expect(second.content).toBe('Tea is a calm drink.\n\nThat was a long note about tea. What next?');
      expect(second.chunks.find((c) => c.parley_input_request)!.parley_input_request).toMatchObject({ node_id: 'choose', kind: 'choose', options: ['Again', 'Finish'] });
      expect(second.chunks.at(-1)!.usage).toEqual({ prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 });
      expect(mock.requests[0]!.messages.at(-1)).toEqual({ role: 'user', content: 'Write a long note about tea.' });

      // a choice: the text of the last user message; the run ends (no request)
      const third = await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'Finish' }], metadata });
      expect(third.choices[0]!.message.content).toBe('');
      expect(third.choices[0]!.finish_reason).toBe('stop');
      expect((third as { parley_input_request?: unknown }).parley_input_request).toBeUndefined();
      expect(await storedRun(chatId)).toMatchObject({ status: 'success' });

      const stored = await rows(chatId);
      expect(stored.map((r) => `${r.is_bot ? 'bot' : 'user'} ${r.category}`)).toEqual([
        'user question', 'bot input', 'user question', 'bot stream_msg', 'bot output_with_choose_msg', 'user question',
      ]);
      expect(stored[2]!.message).toBe('Topic: tea\nLength: long');
      expect(stored[5]!.message).toBe('Finish');
    });

    it('non-stream: a dialog input answered by the text; a form answered by a JSON user message', async () => {
      const chatId = newChatId();
      const asked = await client.chat.completions.create({ model: dialogApp, messages: [{ role: 'user', content: 'hi' }], metadata: { chat_id: chatId } });
      expect(asked.choices[0]!.message.content).toBe('Your name?');
      expect((asked as { parley_input_request?: unknown }).parley_input_request).toMatchObject({ node_id: 'name', kind: 'dialog', input_schema: { input_type: 'dialog_input' } });
      const greeted = await client.chat.completions.create({ model: dialogApp, messages: [{ role: 'user', content: 'Ada' }], metadata: { chat_id: chatId } });
      expect(greeted.choices[0]!.message.content).toBe('Hello, Ada!');
      expect((greeted as { parley_input_request?: unknown }).parley_input_request).toBeUndefined();

      const formChat = newChatId();
      await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'go' }], metadata: { chat_id: formChat } });
      mock.enqueue({ text: 'Short.' });
      const written = await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: '{"topic": "tea", "length": "short"}' }], metadata: { chat_id: formChat } });
      expect(written.choices[0]!.message.content).toBe('Short.\n\nA short note about tea was written.');
      expect(await storedRun(formChat)).toMatchObject({ status: 'success' });
    });

    it('a bad answer is a 400 listing the problems, and the run keeps waiting; a form answered with plain text is refused', async () => {
      const chatId = newChatId();
      await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'go' }], metadata: { chat_id: chatId } });
      const bad = await client.chat.completions.create({
        model: app, messages: [{ role: 'user', content: 'x' }], metadata: { chat_id: chatId, workflow_input: JSON.stringify({ length: 'huge' }) },
      }).catch((e: unknown) => e);
      expect(bad).toBeInstanceOf(BadRequestError);
      expect((bad as BadRequestError).message).toContain('is required (Topic)');
      expect((bad as BadRequestError).message).toContain('must be one of: short, long');
      const text = await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'tea please' }], metadata: { chat_id: chatId } }).catch((e: unknown) => e);
      expect(text).toBeInstanceOf(BadRequestError);
      expect((text as BadRequestError).message).toContain('asks for a form');
      const notJson = await client.chat.completions.create({ model: app, messages: [{ role: 'user', content: 'x' }], metadata: { chat_id: chatId, workflow_input: '{nope' } }).catch((e: unknown) => e);
      expect(notJson).toMatchObject({ status: 400, param: 'metadata.workflow_input' });
      expect(await storedRun(chatId)).toMatchObject({ status: 'input', node_id: 'ask' });
    });

    it('stateless (no chat id): runs until the first input request and ends there; nothing is kept', async () => {
      const first = await client.chat.completions.create({ model: dialogApp, messages: [{ role: 'user', content: 'hi' }] });
      expect(first.choices[0]!.message.content).toBe('Your name?');
      expect((first as { parley_input_request?: unknown }).parley_input_request).toMatchObject({ node_id: 'name', kind: 'dialog' });
      // the same again: each stateless call is a new run
      const again = await client.chat.completions.create({ model: dialogApp, messages: [{ role: 'user', content: 'Ada' }], stream: true });
      const { content, chunks } = await collect(again);
      expect(content).toBe('Your name?');
      expect(chunks.at(-1)!.parley_input_request).toMatchObject({ node_id: 'name' });
    });

    it('a failing run: 500 workflow_failed before any content (non-stream); the error event after content (stream)', async () => {
      const chatId = newChatId();
      await client.chat.completions.create({ model: failingApp, messages: [{ role: 'user', content: 'hi' }], metadata: { chat_id: chatId } });
      const failed = await client.chat.completions.create({ model: failingApp, messages: [{ role: 'user', content: 'Ada' }], metadata: { chat_id: chatId } }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(InternalServerError);
      expect(failed).toMatchObject({ status: 500, code: 'workflow_failed' });
      expect((failed as InternalServerError).message).toContain('broken on purpose');
      expect(await storedRun(chatId)).toMatchObject({ status: 'failed' });
    });
  });

  describe('native SSE', () => {
    const post = (body: unknown) => SseReader.open(`${server.url}/api/v1/chat/${app}/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` }, body: JSON.stringify(body),
    });

    it('streams the workflow frames; the response ends with the request and processing/close; the next call answers it', async () => {
      const chatId = newChatId();
      const first = await (await post({ inputs: { input: 'start' }, chat_id: chatId })).finish();
      expect(first.response.status).toBe(200);
      expect(first.endedByServer).toBe(true);
      const f1 = first.json<Frame>();
      expect(f1.map(kind).slice(-2)).toEqual(['input/over', 'processing/close']);
      expect(f1.map(kind)[0]).toBe('processing/begin');
      expect(JSON.parse(f1.at(-1)!.extra)).toMatchObject({ run_status: 'input' });
      expect(first.events.every((e) => e.id === String(JSON.parse(e.data).seq))).toBe(true);

      mock.enqueue({ text: 'A long one.' });
      const second = await (await post({ inputs: { input: 'tea, long', data: { topic: 'tea', length: 'long' } }, chat_id: chatId })).finish();
      const f2 = second.json<Frame>();
      expect(f2.map(kind)).toContain('stream_msg/end');
      expect(f2.map(kind).slice(-2)).toEqual(['output_with_choose_msg/over', 'processing/close']);
      expect(f2[0]!.seq!).toBeGreaterThan(f1.at(-1)!.seq!);

      const third = await (await post({ inputs: { input: 'Again' }, chat_id: chatId })).finish();
      expect(JSON.parse(third.json<Frame>().at(-1)!.extra)).toMatchObject({ run_status: 'success' });
      expect((await rows(chatId)).filter((r) => r.category === 'question').map((r) => r.message)).toEqual([
        JSON.stringify({ input: 'start' }), 'Topic: tea\nLength: long', 'Again',
      ]);
    });
  });

  describe('Astron-compatible API', () => {
    const call = (payload: unknown) => SseReader.open(`${server.url}/agent/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(payload),
    });
    const body = (parameters: Record<string, unknown>, chatId: string, extra: Record<string, unknown> = {}) =>
      ({ bot_id: app, uid: 'end-user', stream: true, parameters, chat_id: chatId, ...extra });

    it('chunks with code 0; the finish chunk carries parley_input_request; parameters.workflow_input answers a form', async () => {
      const chatId = newChatId();
      const first = await (await call(body({ input: 'start' }, chatId))).finish();
      expect(first.events.at(-1)!.data).toBe('[DONE]');
      const chunks = first.json();
      for (const c of chunks) expect(c).toMatchObject({ code: 0, message: 'success' });
      expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('What should I write about?');
      expect(chunks.at(-1)).toMatchObject({ choices: [{ finish_reason: 'stop' }], parley_input_request: { node_id: 'ask', kind: 'form' } });

      mock.enqueue({ text: 'Brief.' });
      const second = await call(body({ input: 'tea', workflow_input: { topic: 'tea', length: 'short' } }, chatId, { stream: false }));
      const json = await second.body();
      expect(json).toMatchObject({ code: 0, object: 'chat.completion', choices: [{ message: { content: 'Brief.\n\nA short note about tea was written.' } }] });
      expect(json.parley_input_request).toBeUndefined();
      expect(await storedRun(chatId)).toMatchObject({ status: 'success' });
    });
  });
});
