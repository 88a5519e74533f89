import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../../src/domain/types.ts';
import type { AppRow } from '../../src/storage/tables.ts';
import { Api, adminAndUser, dbTargets, startServer, type ApiResponse, type TestServer } from '../helpers/server.ts';
import { demoApp, seedConversation } from '../helpers/seed.ts';
import { sleep } from '../helpers/wait.ts';

const expectError = (r: ApiResponse, http: number, code: number) => {
  expect(r.status, JSON.stringify(r.body)).toBe(http);
  expect(r.body.status_code).toBe(code);
};

describe.each(dbTargets())('conversations and messages on $name', (target) => {
  let server: TestServer;
  let admin: Api;
  let user: Api;
  let userId: number;
  let app: AppRow;

  const db = () => server.handle.services.db.kysely;
  const repos = () => server.handle.services.repos;
  /** Everything a failed request must leave alone. */
  const snapshot = async () => ({
    conversations: await db().selectFrom('conversations').selectAll().orderBy('chat_id').execute(),
    messages: await db().selectFrom('messages').selectAll().orderBy('id').execute(),
    audit: await db().selectFrom('audit_log').selectAll().orderBy('id').execute(),
  });
  const unchanged = async (requests: () => Promise<void>) => {
    const before = await snapshot();
    await requests();
    expect(await snapshot()).toEqual(before);
  };
  const insert = (api: Api, chatId: string, question = 'q', answer = 'a', flowId = app.id) =>
    api.post('/api/v1/chat/message', { flow_id: flowId, chat_id: chatId, human_message: question, answer_message: answer });
  const seed = (opts: { pairs?: number; name?: string } = {}) => seedConversation(server, { userId, app, ...opts });
  const audits = (action: string, objectId: string) =>
    db().selectFrom('audit_log').selectAll().where('action', '=', action).where('object_id', '=', objectId).execute();

  beforeAll(async () => {
    server = await startServer(target);
    ({ admin, user, userId } = await adminAndUser(server));
    app = await demoApp(server, 'chat');
  });
  afterAll(async () => server?.close());

  describe('POST /api/v1/chat/message', () => {
    it('creates the conversation and answers the two stored rows (question, answer)', async () => {
      const chatId = newId();
      const r = await insert(user, chatId, '{"input": "What is Parley?"}', 'A chat service.');
      expect(r.status).toBe(200);
      const [q, a] = r.body.data;
      expect(q).toMatchObject({ chat_id: chatId, flow_id: app.id, user_id: userId, is_bot: 0, type: 'human', category: 'question', sensitive_status: 2, message: '{"input": "What is Parley?"}', files: '[]', extra: '{}' });
      expect(a).toMatchObject({ chat_id: chatId, is_bot: 1, type: 'bot', category: 'answer', sensitive_status: 1, message: 'A chat service.' });
      expect(q.message_id).toBe(q.id);
      expect(a.id).toBeGreaterThan(q.id);
      const info = (await user.get(`/api/v1/chat/info?chat_id=${chatId}`)).body.data;
      expect(info).toMatchObject({ chat_id: chatId, name: 'What is Parley?', flow_id: app.id, flow_type: 15, flow_name: app.name, user_id: userId, sensitive_status: 2 });
      expect(await audits('message.insert', chatId)).toHaveLength(1);
    });

    it('appends to an existing conversation of the caller', async () => {
      const { conversation } = await seed();
      const r = await insert(user, conversation.chat_id, 'more', 'sure');
      expect(r.status).toBe(200);
      expect((await repos().messages.all(conversation.chat_id)).map((m) => m.message)).toEqual(['question 0', 'answer 0', 'question 1', 'answer 1', 'more', 'sure']);
      expect((await repos().conversations.get(conversation.chat_id))!.name).toBe('Seeded chat');
    });

    it('refuses an unknown app (10404), a deleted app (10420) and another app\'s conversation (10404), changing nothing', async () => {
      const { conversation } = await seed();
      const deleted = await repos().apps.create({ id: newId(), name: 'Gone', description: '', icon: '', kind: 'chat', user_id: 1, draft: '{}', online: 1 });
      await repos().apps.softDelete(deleted.id);
      const other = await demoApp(server, 'assistant');
      await unchanged(async () => {
        expectError(await insert(user, newId(), 'q', 'a', newId()), 404, 10404);
        expectError(await insert(user, newId(), 'q', 'a', deleted.id), 404, 10420);
        expectError(await insert(user, conversation.chat_id, 'q', 'a', other.id), 404, 10404);
      });
    });

    it('validates the body: every bad field listed, caps at 100k chars, malformed JSON', async () => {
      await unchanged(async () => {
        const wrong = await user.post('/api/v1/chat/message', { flow_id: 5, chat_id: 'nope', human_message: ['x'] });
        expectError(wrong, 400, 10400);
        expect(wrong.body.data.errors.map((e: { path: string }) => e.path).sort()).toEqual(['body/answer_message', 'body/chat_id', 'body/flow_id', 'body/human_message']);
        expectError(await insert(user, newId(), 'x'.repeat(100_001)), 400, 10400);
        expectError(await insert(user, newId(), 'q', 'x'.repeat(100_001)), 400, 10400);
        expectError(await user.call('POST', '/api/v1/chat/message', { raw: '{"flow_id": ' }), 400, 10400);
        expectError(await user.call('POST', '/api/v1/chat/message', { raw: '' }), 400, 10400);
      });
      expect((await insert(user, newId(), 'x'.repeat(100_000))).status).toBe(200);
    });

    it('stores SQL-looking text literally', async () => {
      const chatId = newId();
      const evil = "x'); DROP TABLE messages;--";
      expect((await insert(user, chatId, evil, `${evil} "%_\\`)).status).toBe(200);
      const history = (await user.get(`/api/v1/chat/history?chat_id=${chatId}`)).body.data;
      expect(history.map((m: { message: string }) => m.message)).toEqual([`${evil} "%_\\`, evil]);
      expect(await repos().messages.count({})).toBeGreaterThan(0);
    });

    it('needs a login', async () => {
      await unchanged(async () => expectError(await insert(new Api(server.url), newId()), 401, 10401));
    });
  });

  describe('GET /api/v1/chat/list', () => {
    let alice: Api;
    let aliceId: number;
    let chat: string;
    let assistant: string;

    beforeAll(async () => {
      ({ user: alice, userId: aliceId } = await adminAndUser(server, 'lister'));
      const assistantApp = await demoApp(server, 'assistant');
      chat = (await seedConversation(server, { userId: aliceId, app, name: 'Quarterly numbers' })).conversation.chat_id;
      await sleep(5); // rows stamped a moment apart: the list is newest first
      assistant = (await seedConversation(server, { userId: aliceId, app: assistantApp, name: 'Travel plans' })).conversation.chat_id;
      await sleep(5);
      // an input request after the answer must not become latest_message
      await repos().messages.insertMany([{ chat_id: assistant, flow_id: assistantApp.id, user_id: aliceId, is_bot: 1, message: 'fill the form', type: 'over', category: 'input', intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: null }]);
    });

    it('answers a plain array, newest update first, with latest_message excluding input rows', async () => {
      const r = await alice.get('/api/v1/chat/list');
      expect(r.status).toBe(200);
      expect(Array.isArray(r.body.data)).toBe(true);
      expect(r.body.data.map((c: { chat_id: string }) => c.chat_id)).toEqual([assistant, chat]);
      expect(r.body.data[0]).toMatchObject({ chat_id: assistant, name: 'Travel plans', flow_type: 5, logo: '', latest_message: { message: 'answer 1', category: 'answer' } });
      expect(r.body.data[1]).toMatchObject({ flow_id: app.id, flow_name: app.name, create_time: expect.any(String), update_time: expect.any(String) });
    });

    it('latest_message is null for an empty conversation; paging by page and limit', async () => {
      const empty = await alice.post('/api/v1/chat/session/create', { flow_id: app.id, name: 'Empty' });
      const page1 = (await alice.get('/api/v1/chat/list?page=1&limit=1')).body.data;
      expect(page1).toEqual([expect.objectContaining({ chat_id: empty.body.data.chat_id, latest_message: null })]);
      expect((await alice.get('/api/v1/chat/list?page=3&limit=1')).body.data.map((c: { chat_id: string }) => c.chat_id)).toEqual([chat]);
      await alice.delete(`/api/v1/chat/${empty.body.data.chat_id}`);
    });

    it('filters by flow_type, repeated or comma-separated', async () => {
      const ids = async (q: string) => (await alice.get(`/api/v1/chat/list?${q}`)).body.data.map((c: { chat_id: string }) => c.chat_id);
      expect(await ids('flow_type=5')).toEqual([assistant]);
      expect(await ids('flow_type=15')).toEqual([chat]);
      expect(await ids('flow_type=5,15')).toEqual([assistant, chat]);
      expect(await ids('flow_type=5&flow_type=15')).toEqual([assistant, chat]);
      expect(await ids('flow_type=10')).toEqual([]);
    });

    it('keyword matches titles and message text, case-insensitively, wildcards literal', async () => {
      const ids = async (k: string) => (await alice.get(`/api/v1/chat/list?keyword=${encodeURIComponent(k)}`)).body.data.map((c: { chat_id: string }) => c.chat_id);
      expect(await ids('quarterly')).toEqual([chat]);
      expect(await ids('FILL THE')).toEqual([assistant]);
      expect(await ids('answer 1')).toEqual([assistant, chat]);
      expect(await ids('%')).toEqual([]);
      expect(await ids("'; DROP TABLE conversations;--")).toEqual([]);
    });

    it('rejects bad paging and filters with 10400', async () => {
      for (const q of ['page=0', 'limit=101', 'limit=x', 'flow_type=abc', `keyword=${'k'.repeat(257)}`]) {
        expectError(await alice.get(`/api/v1/chat/list?${q}`), 400, 10400);
      }
    });
  });

  describe('history', () => {
    it('pages by cursor over 45 messages: every message exactly once, newest first', async () => {
      const { conversation, messages } = await seedConversation(server, { userId, app, pairs: 23 });
      const expected = messages.slice(0, 45).map((m) => m.id);
      await repos().messages.delete(messages[45]!.id);
      const seen: number[] = [];
      let cursor = '';
      for (let i = 0; i < 10; i++) {
        const r = await user.get(`/api/v1/chat/history?chat_id=${conversation.chat_id}&flow_id=${app.id}&page_size=10${cursor}`);
        expect(r.status).toBe(200);
        if (r.body.data.length === 0) break;
        expect(r.body.data.length).toBeLessThanOrEqual(10);
        seen.push(...r.body.data.map((m: { id: number }) => m.id));
        cursor = `&id=${seen.at(-1)}`;
      }
      expect(seen).toEqual([...expected].reverse());
    });

    it('defaults to 20 rows; the alias /chat/message/history answers the same', async () => {
      const { conversation } = await seed({ pairs: 15 });
      const r = await user.get(`/api/v1/chat/history?chat_id=${conversation.chat_id}`);
      expect(r.body.data).toHaveLength(20);
      expect(r.body.data[0]).toMatchObject({ message: 'answer 14', message_id: r.body.data[0].id });
      const alias = await user.get(`/api/v1/chat/message/history?chat_id=${conversation.chat_id}`);
      expect(alias.body).toEqual(r.body);
    });

    it('answers 10404 for a missing conversation or another flow_id, 10400 for bad parameters', async () => {
      const { conversation } = await seed();
      expectError(await user.get(`/api/v1/chat/history?chat_id=${newId()}`), 404, 10404);
      expectError(await user.get(`/api/v1/chat/history?chat_id=${conversation.chat_id}&flow_id=${newId()}`), 404, 10404);
      for (const q of ['', 'chat_id=xyz', `chat_id=${conversation.chat_id}&page_size=101`, `chat_id=${conversation.chat_id}&page_size=0`, `chat_id=${conversation.chat_id}&id=-1`, `chat_id=${conversation.chat_id}&id=abc`]) {
        expectError(await user.get(`/api/v1/chat/history?${q}`), 400, 10400);
      }
    });

    it('admins read any conversation through /chat/history (read-only)', async () => {
      const { conversation } = await seed();
      expect((await admin.get(`/api/v1/chat/history?chat_id=${conversation.chat_id}`)).body.data).toHaveLength(4);
    });
  });

  describe('GET /api/v1/session/chat/history (admin review)', () => {
    it('reads any conversation, soft-deleted ones included', async () => {
      const { conversation } = await seed();
      await user.delete(`/api/v1/chat/${conversation.chat_id}`);
      const r = await admin.get(`/api/v1/session/chat/history?chat_id=${conversation.chat_id}&page_size=3`);
      expect(r.status).toBe(200);
      expect(r.body.data.map((m: { message: string }) => m.message)).toEqual(['answer 1', 'question 1', 'answer 0']);
    });

    it('is admin only (10403) and answers 10404 for a missing conversation', async () => {
      const { conversation } = await seed();
      expectError(await user.get(`/api/v1/session/chat/history?chat_id=${conversation.chat_id}`), 403, 10403);
      expectError(await admin.get(`/api/v1/session/chat/history?chat_id=${newId()}`), 404, 10404);
      expectError(await admin.get('/api/v1/session/chat/history?chat_id=1'), 400, 10400);
    });
  });

  describe('GET /api/v1/session/chat/messages/{conversationId}', () => {
    it('answers the 1000 latest messages, oldest first', async () => {
      const { conversation, messages } = await seed({ pairs: 501 });
      const r = await user.get(`/api/v1/session/chat/messages/${conversation.chat_id}`);
      expect(r.status).toBe(200);
      expect(r.body.data.map((m: { id: number }) => m.id)).toEqual(messages.slice(2).map((m) => m.id));
      expect((await admin.get(`/api/v1/session/chat/messages/${conversation.chat_id}`)).body.data).toHaveLength(1000);
    });

    it('answers [] for an empty conversation, 10404 for a missing one, 10400 for a bad id', async () => {
      const created = await user.post('/api/v1/chat/session/create', { flow_id: app.id });
      expect((await user.get(`/api/v1/session/chat/messages/${created.body.data.chat_id}`)).body.data).toEqual([]);
      expectError(await user.get(`/api/v1/session/chat/messages/${newId()}`), 404, 10404);
      expectError(await user.get('/api/v1/session/chat/messages/not-hex'), 400, 10400);
    });
  });

  describe('conversation info', () => {
    it('GET /chat/info and GET /chat/session/{chat_id} answer the conversation row', async () => {
      const { conversation } = await seed({ name: 'Info me' });
      const r = await user.get(`/api/v1/chat/info?chat_id=${conversation.chat_id}`);
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({
        chat_id: conversation.chat_id, name: 'Info me', flow_id: app.id, flow_type: 15, flow_name: app.name, user_id: userId,
        like: 0, dislike: 0, copied: 0, sensitive_status: 1, is_delete: 0, create_time: conversation.create_time, update_time: expect.any(String),
      });
      expect((await user.get(`/api/v1/chat/session/${conversation.chat_id}`)).body).toEqual(r.body);
    });

    it('answers 10404 for a missing conversation and 10400 for a malformed or absent chat_id', async () => {
      expectError(await user.get(`/api/v1/chat/info?chat_id=${newId()}`), 404, 10404);
      expectError(await user.get(`/api/v1/chat/session/${newId()}`), 404, 10404);
      expectError(await user.get('/api/v1/chat/info'), 400, 10400);
      expectError(await user.get(`/api/v1/chat/info?chat_id=${newId().toUpperCase()}`), 400, 10400);
      expectError(await user.get(`/api/v1/chat/session/${newId()}0`), 400, 10400);
    });
  });

  describe('GET /api/v1/chat/{chat_id}/export', () => {
    let chatId: string;
    beforeAll(async () => {
      chatId = (await seed({ name: 'Export # me\nplease' })).conversation.chat_id;
      const base = { chat_id: chatId, flow_id: app.id, user_id: userId, intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, parent_message_id: null, turn_id: null };
      await repos().messages.insertMany([
        { ...base, is_bot: 0, message: '{"input": "weather in Paris?", "data": {}}', type: 'human', category: 'question', remark: '' },
        { ...base, is_bot: 1, message: '{"tool_key": "weather", "output": "sunny"}', type: 'end', category: 'tool', remark: '' },
        { ...base, is_bot: 1, message: 'thinking…', type: 'bot', category: 'reasoning_answer', remark: '' },
        { ...base, is_bot: 1, message: 'It is ```sunny```.', type: 'bot', category: 'answer', remark: 'break_answer' },
      ]);
    });

    it('json: {conversation, messages oldest first} as an attachment', async () => {
      const r = await user.get(`/api/v1/chat/${chatId}/export?format=json`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      expect(r.headers.get('content-disposition')).toBe(`attachment; filename="conversation-${chatId}.json"`);
      expect(r.body.conversation).toMatchObject({ chat_id: chatId, name: 'Export # me\nplease' });
      expect(r.body.messages.map((m: { message: string }) => m.message)).toEqual((await repos().messages.all(chatId)).map((m) => m.message));
      expect(r.body.messages[0]).toMatchObject({ message: 'question 0', message_id: r.body.messages[0].id });
      expect((await user.get(`/api/v1/chat/${chatId}/export`)).body).toEqual(r.body);
    });

    it('md: a Markdown transcript with question inputs, tool rows and interrupted answers', async () => {
      const r = await user.get(`/api/v1/chat/${chatId}/export?format=md`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(/^text\/markdown/);
      expect(r.headers.get('content-disposition')).toBe(`attachment; filename="conversation-${chatId}.md"`);
      const md: string = r.body;
      expect(md.startsWith('# Export # me please\n')).toBe(true);
      expect(md).toContain('**User**:\n\nquestion 0\n\n**Assistant**:\n\nanswer 0');
      expect(md).toContain('**User**:\n\nweather in Paris?\n');
      expect(md).not.toContain('"input"');
      expect(md).toContain('**Tool** `weather`:\n\n```json\n{\n  "tool_key": "weather",\n  "output": "sunny"\n}\n```');
      expect(md).toContain('**Assistant** (reasoning_answer):\n\nthinking…');
      expect(md).toContain('**Assistant**:\n\nIt is ```sunny```.\n\n_(interrupted)_');
    });

    it('answers the envelope for errors: 10404 missing, 10400 bad format or id', async () => {
      const missing = await user.get(`/api/v1/chat/${newId()}/export`);
      expectError(missing, 404, 10404);
      expect(missing.headers.get('content-disposition')).toBeNull();
      expectError(await user.get(`/api/v1/chat/${chatId}/export?format=pdf`), 400, 10400);
      expectError(await user.get('/api/v1/chat/abc/export'), 400, 10400);
    });
  });

  describe('rename', () => {
    it('POST /chat/conversation/rename and PUT /chat/session/{chat_id} rename', async () => {
      const { conversation } = await seed();
      const r = await user.post('/api/v1/chat/conversation/rename', { conversationId: conversation.chat_id, name: 'Renamed 名前 ✓' });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ status_code: 200, status_message: 'SUCCESS', data: null });
      expect((await user.get(`/api/v1/chat/info?chat_id=${conversation.chat_id}`)).body.data.name).toBe('Renamed 名前 ✓');
      expect((await user.put(`/api/v1/chat/session/${conversation.chat_id}`, { name: 'Again' })).status).toBe(200);
      expect((await repos().conversations.get(conversation.chat_id))!.name).toBe('Again');
      expect((await user.post('/api/v1/chat/conversation/rename', { conversationId: conversation.chat_id, name: 'n'.repeat(512) })).status).toBe(200);
    });

    it('stores an SQL-injection name literally and every table stays intact', async () => {
      const { conversation } = await seed();
      const evil = "x'); DROP TABLE messages;--";
      expect((await user.post('/api/v1/chat/conversation/rename', { conversationId: conversation.chat_id, name: evil })).status).toBe(200);
      expect((await user.get(`/api/v1/chat/info?chat_id=${conversation.chat_id}`)).body.data.name).toBe(evil);
      expect((await user.get(`/api/v1/chat/history?chat_id=${conversation.chat_id}`)).body.data).toHaveLength(4);
      expect((await user.get(`/api/v1/chat/list?keyword=${encodeURIComponent(evil)}&limit=100`)).body.data.map((c: { chat_id: string }) => c.chat_id)).toContain(conversation.chat_id);
    });

    it('refuses bad names and unknown conversations, changing nothing', async () => {
      const { conversation } = await seed();
      const id = conversation.chat_id;
      await unchanged(async () => {
        for (const name of ['', '   ', 'n'.repeat(513), 5, null]) {
          expectError(await user.post('/api/v1/chat/conversation/rename', { conversationId: id, name }), 400, 10400);
        }
        expectError(await user.post('/api/v1/chat/conversation/rename', { name: 'x' }), 400, 10400);
        expectError(await user.post('/api/v1/chat/conversation/rename', { conversationId: newId(), name: 'x' }), 404, 10404);
        expectError(await user.put(`/api/v1/chat/session/${newId()}`, { name: 'x' }), 404, 10404);
        expectError(await user.put(`/api/v1/chat/session/${id}`, {}), 400, 10400);
        expectError(await user.call('POST', '/api/v1/chat/conversation/rename', { raw: `{"conversationId": "${id}", "name": ` }), 400, 10400);
      });
    });
  });

  describe('POST /api/v1/chat/conversation/copy', () => {
    it('duplicates the messages under a new chat_id', async () => {
      const { conversation, messages } = await seed({ name: 'Original', pairs: 3 });
      const r = await user.post('/api/v1/chat/conversation/copy', { conversationId: conversation.chat_id });
      expect(r.status).toBe(200);
      const copy = r.body.data;
      expect(copy).toMatchObject({ name: 'Original (copy)', flow_id: app.id, flow_type: 15, user_id: userId, is_delete: 0 });
      expect(copy.chat_id).toMatch(/^[0-9a-f]{32}$/);
      expect(copy.chat_id).not.toBe(conversation.chat_id);
      const copied = (await user.get(`/api/v1/chat/history?chat_id=${copy.chat_id}&page_size=100`)).body.data.reverse();
      expect(copied.map((m: { message: string }) => m.message)).toEqual(messages.map((m) => m.message));
      expect(copied.map((m: { is_bot: number }) => m.is_bot)).toEqual(messages.map((m) => m.is_bot));
      const newIds = new Set(copied.map((m: { id: number }) => m.id));
      expect(newIds.size).toBe(messages.length);
      for (const m of messages) expect(newIds.has(m.id)).toBe(false);
      expect(await repos().messages.all(conversation.chat_id)).toEqual(messages);
    });

    it('keeps the name within 512 chars', async () => {
      const { conversation } = await seed({ name: 'n'.repeat(512) });
      const copy = (await user.post('/api/v1/chat/conversation/copy', { conversationId: conversation.chat_id })).body.data;
      expect(copy.name).toBe(`${'n'.repeat(505)} (copy)`);
    });

    it('answers 10404 for missing or deleted conversations, 10400 for a bad id, changing nothing', async () => {
      const { conversation } = await seed();
      await user.delete(`/api/v1/chat/${conversation.chat_id}`);
      await unchanged(async () => {
        expectError(await user.post('/api/v1/chat/conversation/copy', { conversationId: newId() }), 404, 10404);
        expectError(await user.post('/api/v1/chat/conversation/copy', { conversationId: conversation.chat_id }), 404, 10404);
        expectError(await user.post('/api/v1/chat/conversation/copy', { conversationId: 12 }), 400, 10400);
      });
    });
  });

  describe('soft delete', () => {
    it('DELETE /chat/{chat_id} hides the conversation everywhere, keeps its messages, and is audited', async () => {
      const { conversation, messages } = await seed({ name: 'Delete me' });
      const id = conversation.chat_id;
      const r = await user.delete(`/api/v1/chat/${id}`);
      expect(r.status).toBe(200);
      expect(r.body.data).toBeNull();
      expect((await user.get('/api/v1/chat/list?limit=100')).body.data.map((c: { chat_id: string }) => c.chat_id)).not.toContain(id);
      expect((await user.get('/api/v1/chat/session/list?limit=100')).body.data.list.map((c: { chat_id: string }) => c.chat_id)).not.toContain(id);
      expect((await user.get('/api/v1/chat/list?keyword=Delete%20me')).body.data).toEqual([]);
      expectError(await user.get(`/api/v1/chat/info?chat_id=${id}`), 404, 10404);
      expectError(await user.get(`/api/v1/chat/history?chat_id=${id}`), 404, 10404);
      expect((await repos().conversations.get(id))!.is_delete).toBe(1);
      expect(await repos().messages.all(id)).toEqual(messages);
      expect(await audits('session.delete', id)).toEqual([expect.objectContaining({ user_id: userId, object_type: 'conversation', object_id: id })]);
      // a deleted chat_id cannot be revived by inserting into it
      expectError(await insert(user, id), 404, 10404);
    });

    it('DELETE /chat/session/{chat_id} is the same; a second delete answers 10404', async () => {
      const { conversation } = await seed();
      expect((await user.delete(`/api/v1/chat/session/${conversation.chat_id}`)).status).toBe(200);
      await unchanged(async () => {
        expectError(await user.delete(`/api/v1/chat/session/${conversation.chat_id}`), 404, 10404);
        expectError(await user.delete(`/api/v1/chat/${conversation.chat_id}`), 404, 10404);
        expectError(await user.delete('/api/v1/chat/xyz'), 400, 10400);
      });
    });
  });

  describe('PUT /api/v1/chat/message/{message_id}', () => {
    it('edits the text (and category): source 0, sensitive_status 2 on the message and its conversation, audited', async () => {
      const { conversation, messages } = await seed();
      const answer = messages[1]!;
      const r = await user.put(`/api/v1/chat/message/${answer.id}`, { message: 'edited answer', category: 'answer' });
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({ id: answer.id, message_id: answer.id, message: 'edited answer', category: 'answer', source: 0, sensitive_status: 2 });
      expect((await repos().messages.get(answer.id))!.message).toBe('edited answer');
      expect((await repos().conversations.get(conversation.chat_id))!.sensitive_status).toBe(2);
      const audit = await audits('message.update', String(answer.id));
      expect(audit).toHaveLength(1);
      expect(JSON.parse(audit[0]!.detail)).toEqual({ chat_id: conversation.chat_id, old_length: 'answer 0'.length, new_length: 'edited answer'.length });
      const q = await user.put(`/api/v1/chat/message/${messages[0]!.id}`, { message: 'new question' });
      expect(q.body.data).toMatchObject({ message: 'new question', category: 'question' });
    });

    it('refuses bad input and unknown ids, changing nothing', async () => {
      const { messages } = await seed();
      const id = messages[0]!.id;
      await unchanged(async () => {
        expectError(await user.put('/api/v1/chat/message/999999', { message: 'x' }), 404, 10404);
        for (const bad of ['0', '-3', 'abc', '1.5', '99999999999']) expectError(await user.put(`/api/v1/chat/message/${bad}`, { message: 'x' }), 400, 10400);
        expectError(await user.put(`/api/v1/chat/message/${id}`, {}), 400, 10400);
        expectError(await user.put(`/api/v1/chat/message/${id}`, { message: 7 }), 400, 10400);
        expectError(await user.put(`/api/v1/chat/message/${id}`, { message: 'x'.repeat(100_001) }), 400, 10400);
        expectError(await user.put(`/api/v1/chat/message/${id}`, { message: 'x', category: 'c'.repeat(33) }), 400, 10400);
        expectError(await user.call('PUT', `/api/v1/chat/message/${id}`, { raw: '{"message"' }), 400, 10400);
      });
    });
  });

  describe('DELETE /api/v1/chat/message', () => {
    it('deletes permanently by path and by the ?message_id= alias, audited', async () => {
      const { conversation, messages } = await seed();
      expect((await user.delete(`/api/v1/chat/message/${messages[0]!.id}`)).status).toBe(200);
      expect((await user.delete(`/api/v1/chat/message/delete?message_id=${messages[1]!.id}`)).status).toBe(200);
      expect(await repos().messages.get(messages[0]!.id)).toBeUndefined();
      expect(await repos().messages.get(messages[1]!.id)).toBeUndefined();
      expect((await repos().messages.all(conversation.chat_id)).map((m) => m.id)).toEqual([messages[2]!.id, messages[3]!.id]);
      expect(await audits('message.delete', String(messages[0]!.id))).toEqual([expect.objectContaining({ user_id: userId, object_type: 'message' })]);
    });

    it('answers 10404 for unknown or already deleted ids, 10400 for bad ones, changing nothing', async () => {
      const { messages } = await seed();
      await user.delete(`/api/v1/chat/message/${messages[0]!.id}`);
      await unchanged(async () => {
        expectError(await user.delete(`/api/v1/chat/message/${messages[0]!.id}`), 404, 10404);
        expectError(await user.delete(`/api/v1/chat/message/delete?message_id=${messages[0]!.id}`), 404, 10404);
        expectError(await user.delete('/api/v1/chat/message/abc'), 400, 10400);
        expectError(await user.delete('/api/v1/chat/message/delete'), 400, 10400);
        expectError(await user.delete('/api/v1/chat/message/delete?message_id=1%20OR%201=1'), 400, 10400);
      });
    });
  });

  describe('POST /api/v1/chat/session/create', () => {
    it('creates a conversation with the given chat_id and name, audited', async () => {
      const chatId = newId();
      const r = await user.post('/api/v1/chat/session/create', { flow_id: app.id, chat_id: chatId, name: 'Planned' });
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({ chat_id: chatId, name: 'Planned', flow_id: app.id, flow_type: 15, flow_name: app.name, user_id: userId, is_delete: 0 });
      expect(await audits('session.create', chatId)).toHaveLength(1);
      expect((await user.get(`/api/v1/chat/history?chat_id=${chatId}`)).body.data).toEqual([]);
    });

    it('generates a chat_id when absent', async () => {
      const r = await user.post('/api/v1/chat/session/create', { flow_id: app.id });
      expect(r.body.data.chat_id).toMatch(/^[0-9a-f]{32}$/);
      expect(r.body.data.name).toBe('New chat');
    });

    it('answers 10409 for a chat_id that is taken (own, deleted or another user\'s), changing nothing', async () => {
      const own = (await seed()).conversation.chat_id;
      const deleted = (await seed()).conversation.chat_id;
      await user.delete(`/api/v1/chat/${deleted}`);
      const { userId: otherId } = await adminAndUser(server, 'creator2');
      const foreign = (await seedConversation(server, { userId: otherId, app })).conversation.chat_id;
      await unchanged(async () => {
        for (const chatId of [own, deleted, foreign]) expectError(await user.post('/api/v1/chat/session/create', { flow_id: app.id, chat_id: chatId }), 409, 10409);
      });
    });

    it('plain users need an online app (10421); admins may use an offline one; unknown apps 10404', async () => {
      const offline = await repos().apps.create({ id: newId(), name: 'Offline', description: '', icon: '', kind: 'chat', user_id: 1, draft: '{}', online: 0 });
      await unchanged(async () => {
        expectError(await user.post('/api/v1/chat/session/create', { flow_id: offline.id }), 403, 10421);
        expectError(await user.post('/api/v1/chat/session/create', { flow_id: newId() }), 404, 10404);
        expectError(await user.post('/api/v1/chat/session/create', { flow_id: app.id, chat_id: 'short' }), 400, 10400);
        expectError(await user.post('/api/v1/chat/session/create', { flow_id: app.id, name: 'n'.repeat(513) }), 400, 10400);
        expectError(await user.post('/api/v1/chat/session/create', { chat_id: newId() }), 400, 10400);
      });
      expect((await admin.post('/api/v1/chat/session/create', { flow_id: offline.id })).status).toBe(200);
    });
  });

  describe('GET /api/v1/chat/session/list', () => {
    it('answers {list, total}, filtered by flow_id and keyword', async () => {
      const { user: carol, userId: carolId } = await adminAndUser(server, 'carol');
      const other = await demoApp(server, 'workflow');
      const a = (await seedConversation(server, { userId: carolId, app, name: 'Alpha' })).conversation.chat_id;
      await sleep(5);
      const b = (await seedConversation(server, { userId: carolId, app: other, name: 'Beta' })).conversation.chat_id;
      const all = (await carol.get('/api/v1/chat/session/list')).body.data;
      expect(all.total).toBe(2);
      expect(all.list.map((c: { chat_id: string }) => c.chat_id)).toEqual([b, a]);
      expect(all.list[0].latest_message).toMatchObject({ message: 'answer 1' });
      const byApp = (await carol.get(`/api/v1/chat/session/list?flow_id=${app.id}`)).body.data;
      expect(byApp).toMatchObject({ total: 1, list: [{ chat_id: a }] });
      expect((await carol.get('/api/v1/chat/session/list?keyword=beta')).body.data).toMatchObject({ total: 1, list: [{ chat_id: b }] });
      expect((await carol.get('/api/v1/chat/session/list?page=2&limit=1')).body.data).toMatchObject({ total: 2, list: [{ chat_id: a }] });
    });

    it('rejects bad filters with 10400', async () => {
      expectError(await user.get('/api/v1/chat/session/list?flow_id=zzz'), 400, 10400);
      expectError(await user.get('/api/v1/chat/session/list?limit=0'), 400, 10400);
    });
  });

  describe('POST /api/v1/chat/interrupt', () => {
    it('answers {stopped: false} when no turn runs', async () => {
      const { conversation } = await seed();
      const r = await user.post('/api/v1/chat/interrupt', { chat_id: conversation.chat_id });
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({ stopped: false });
    });

    it('answers 10404 for a missing conversation and 10400 for a bad body', async () => {
      expectError(await user.post('/api/v1/chat/interrupt', { chat_id: newId() }), 404, 10404);
      expectError(await user.post('/api/v1/chat/interrupt', {}), 400, 10400);
      expectError(await user.post('/api/v1/chat/interrupt', { chat_id: 123 }), 400, 10400);
    });
  });

  it('every endpoint needs a login', async () => {
    const anon = new Api(server.url);
    const id = newId();
    const calls = [
      anon.get('/api/v1/chat/list'), anon.get(`/api/v1/chat/history?chat_id=${id}`), anon.get(`/api/v1/chat/info?chat_id=${id}`),
      anon.get(`/api/v1/chat/${id}/export`), anon.delete(`/api/v1/chat/${id}`), anon.post('/api/v1/chat/conversation/copy', { conversationId: id }),
      anon.get('/api/v1/chat/session/list'), anon.post('/api/v1/chat/interrupt', { chat_id: id }), anon.delete('/api/v1/chat/message/1'),
    ];
    for (const r of await Promise.all(calls)) expectError(r, 401, 10401);
  });
});
