import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../../src/domain/types.ts';
import type { AppRow } from '../../src/storage/tables.ts';
import { adminAndUser, dbTargets, startServer, type Api, type ApiResponse, type TestServer } from '../helpers/server.ts';
import { demoApp, seedConversation } from '../helpers/seed.ts';

/** A request that names a conversation or message; `id` is a chat_id, `msg` a message id. */
type Call = (api: Api, id: string, msg: number) => Promise<ApiResponse>;

/** Every conversation/message endpoint of this route group (feedback endpoints are tested elsewhere). */
const CALLS: Record<string, Call> = {
  'GET /chat/history': (api, id) => api.get(`/api/v1/chat/history?chat_id=${id}`),
  'GET /chat/message/history': (api, id) => api.get(`/api/v1/chat/message/history?chat_id=${id}&page_size=5`),
  'GET /chat/info': (api, id) => api.get(`/api/v1/chat/info?chat_id=${id}`),
  'GET /chat/{id}/export json': (api, id) => api.get(`/api/v1/chat/${id}/export?format=json`),
  'GET /chat/{id}/export md': (api, id) => api.get(`/api/v1/chat/${id}/export?format=md`),
  'POST /chat/conversation/rename': (api, id) => api.post('/api/v1/chat/conversation/rename', { conversationId: id, name: 'pwned' }),
  'POST /chat/conversation/copy': (api, id) => api.post('/api/v1/chat/conversation/copy', { conversationId: id }),
  'DELETE /chat/{id}': (api, id) => api.delete(`/api/v1/chat/${id}`),
  'GET /chat/session/{id}': (api, id) => api.get(`/api/v1/chat/session/${id}`),
  'PUT /chat/session/{id}': (api, id) => api.put(`/api/v1/chat/session/${id}`, { name: 'pwned' }),
  'DELETE /chat/session/{id}': (api, id) => api.delete(`/api/v1/chat/session/${id}`),
  'GET /session/chat/messages/{id}': (api, id) => api.get(`/api/v1/session/chat/messages/${id}`),
  'POST /chat/interrupt': (api, id) => api.post('/api/v1/chat/interrupt', { chat_id: id }),
  'POST /chat/message (into the conversation)': (api, id) => api.post('/api/v1/chat/message', { flow_id: appId, chat_id: id, human_message: 'injected', answer_message: 'injected' }),
  'PUT /chat/message/{mid}': (api, _id, msg) => api.put(`/api/v1/chat/message/${msg}`, { message: 'pwned', category: 'answer' }),
  'DELETE /chat/message/{mid}': (api, _id, msg) => api.delete(`/api/v1/chat/message/${msg}`),
  'DELETE /chat/message/delete?message_id=': (api, _id, msg) => api.delete(`/api/v1/chat/message/delete?message_id=${msg}`),
};
const WRITES = ['POST /chat/conversation/rename', 'POST /chat/conversation/copy', 'DELETE /chat/{id}', 'PUT /chat/session/{id}', 'DELETE /chat/session/{id}',
  'POST /chat/interrupt', 'POST /chat/message (into the conversation)', 'PUT /chat/message/{mid}', 'DELETE /chat/message/{mid}', 'DELETE /chat/message/delete?message_id='];
let appId = '';

describe.each(dbTargets())('conversation isolation on $name', (target) => {
  let server: TestServer;
  let admin: Api;
  let alice: Api;
  let bob: Api;
  let bobId: number;
  let app: AppRow;
  let chatId: string;
  let messageId: number;

  const db = () => server.handle.services.db.kysely;
  const snapshot = async () => ({
    conversations: await db().selectFrom('conversations').selectAll().orderBy('chat_id').execute(),
    messages: await db().selectFrom('messages').selectAll().orderBy('id').execute(),
    audit: await db().selectFrom('audit_log').selectAll().orderBy('id').execute(),
  });
  /** What Alice sees of her conversation. */
  const aliceView = async () => ({
    info: (await alice.get(`/api/v1/chat/info?chat_id=${chatId}`)).body,
    history: (await alice.get(`/api/v1/chat/history?chat_id=${chatId}&page_size=100`)).body,
    list: (await alice.get('/api/v1/chat/list?limit=100')).body,
  });
  const chatIds = (r: ApiResponse) => (r.body.data.list ?? r.body.data).map((c: { chat_id: string }) => c.chat_id);

  beforeAll(async () => {
    server = await startServer(target);
    let aliceId: number;
    ({ admin, user: alice, userId: aliceId } = await adminAndUser(server, 'alice'));
    ({ user: bob, userId: bobId } = await adminAndUser(server, 'bob'));
    app = await demoApp(server, 'chat');
    appId = app.id;
    const r = await alice.post('/api/v1/chat/message', { flow_id: app.id, chat_id: newId(), human_message: 'the secret launch code is zebra-42', answer_message: 'noted, zebra-42' });
    chatId = r.body.data[0].chat_id;
    messageId = r.body.data[1].id;
    await seedConversation(server, { userId: aliceId, app, name: 'Alice second chat' });
  });
  afterAll(async () => server?.close());

  it.each(Object.keys(CALLS))("another user gets 10404 for Alice's conversation: %s", async (name) => {
    const call = CALLS[name]!;
    const before = await snapshot();
    const view = await aliceView();
    const r = await call(bob, chatId, messageId);
    expect(r.status, JSON.stringify(r.body)).toBe(404);
    expect(r.body.status_code).toBe(10404);
    expect(r.headers.get('content-disposition')).toBeNull();
    expect(JSON.stringify(r.body)).not.toContain('zebra');
    // a foreign id answers exactly like a missing one, so existence never leaks (inserting into a
    // missing chat_id creates it, so that call has nothing to compare with)
    if (!name.startsWith('POST /chat/message')) expect((await call(bob, newId(), 2_000_000_000)).body).toEqual(r.body);
    expect(await snapshot()).toEqual(before);
    expect(await aliceView()).toEqual(view);
  });

  it.each(WRITES)("an admin may not change Alice's conversation either (10404): %s", async (name) => {
    const before = await snapshot();
    const r = await CALLS[name]!(admin, chatId, messageId);
    expect(r.status, JSON.stringify(r.body)).toBe(404);
    expect(r.body.status_code).toBe(10404);
    expect(await snapshot()).toEqual(before);
  });

  it("an admin may read Alice's conversation", async () => {
    for (const name of Object.keys(CALLS).filter((n) => !WRITES.includes(n))) {
      expect((await CALLS[name]!(admin, chatId, messageId)).status, name).toBe(200);
    }
    expect((await admin.get(`/api/v1/session/chat/history?chat_id=${chatId}`)).body.data).toHaveLength(2);
  });

  it('the review history is for admins only (10403), and a taken chat_id cannot be claimed (10409)', async () => {
    const before = await snapshot();
    const review = await bob.get(`/api/v1/session/chat/history?chat_id=${chatId}`);
    expect(review.status).toBe(403);
    expect(review.body.status_code).toBe(10403);
    const claim = await bob.post('/api/v1/chat/session/create', { flow_id: app.id, chat_id: chatId, name: 'mine now' });
    expect(claim.status).toBe(409);
    expect(claim.body.status_code).toBe(10409);
    expect(await snapshot()).toEqual(before);
  });

  it("lists and keyword searches never show Alice's conversations to Bob", async () => {
    const own = await bob.post('/api/v1/chat/message', { flow_id: app.id, chat_id: newId(), human_message: 'my own zebra question', answer_message: 'ok' });
    const bobChat = own.body.data[0].chat_id;
    expect(chatIds(await bob.get('/api/v1/chat/list?limit=100'))).toEqual([bobChat]);
    expect(chatIds(await bob.get('/api/v1/chat/session/list?limit=100'))).toEqual([bobChat]);
    expect(chatIds(await bob.get('/api/v1/chat/list?keyword=zebra'))).toEqual([bobChat]);
    expect((await bob.get('/api/v1/chat/list?keyword=launch%20code')).body.data).toEqual([]);
    expect((await bob.get('/api/v1/chat/session/list?keyword=launch%20code')).body.data).toEqual({ list: [], total: 0 });
    expect((await bob.get('/api/v1/chat/list?keyword=Alice%20second')).body.data).toEqual([]);
    expect(chatIds(await alice.get('/api/v1/chat/list?keyword=launch%20code'))).toEqual([chatId]);
    expect(chatIds(await alice.get('/api/v1/chat/list?limit=100'))).not.toContain(bobChat);
    expect((await server.handle.services.repos.conversations.get(bobChat))!.user_id).toBe(bobId);
  });

  it('two users racing to insert into the same new chat_id: one wins, the other gets 10404 and writes nothing', async () => {
    const contested = newId();
    const send = (api: Api, who: string) => api.post('/api/v1/chat/message', { flow_id: app.id, chat_id: contested, human_message: who, answer_message: who });
    const [a, b] = await Promise.all([send(alice, 'alice'), send(bob, 'bob')]);
    expect([a.status, b.status].sort()).toEqual([200, 404]);
    const winner = a.status === 200 ? 'alice' : 'bob';
    const rows = await server.handle.services.repos.messages.all(contested);
    expect(rows.map((m) => m.message)).toEqual([winner, winner]);
  });
});
