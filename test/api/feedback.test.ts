import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppRow, MessageRow } from '../../src/storage/tables.ts';
import { demoApp, seedConversation } from '../helpers/seed.ts';
import { Api, adminAndUser, dbTargets, startServer, type ApiResponse, type TestServer } from '../helpers/server.ts';

const expectError = (r: ApiResponse, http: number, code: number) => {
  expect(r.status).toBe(http);
  expect(r.body.status_code).toBe(code);
};
const expectInvalid = (r: ApiResponse, path?: string) => {
  expectError(r, 400, 10400);
  expect(r.body.data.errors.length).toBeGreaterThan(0);
  if (path) expect(r.body.data.errors.map((e: { path: string }) => e.path)).toContain(path);
};

describe.each(dbTargets())('feedback, statistics and audit on $name', (target) => {
  let server: TestServer;
  let admin: Api;
  let alice: Api;
  let bob: Api;
  let aliceId: number;
  let app: AppRow;

  const repos = () => server.handle.services.repos;
  const counters = async (chatId: string) => {
    const c = (await repos().conversations.get(chatId))!;
    return { like: c.like_count, dislike: c.dislike_count, copied: c.copied_count };
  };
  /** A fresh conversation of alice's; returns its chat_id and first answer. */
  const aliceChat = async (): Promise<{ chatId: string; answer: MessageRow; messages: MessageRow[] }> => {
    const { conversation, messages } = await seedConversation(server, { userId: aliceId, app });
    return { chatId: conversation.chat_id, answer: messages[1]!, messages };
  };

  beforeAll(async () => {
    server = await startServer(target);
    ({ admin, user: alice, userId: aliceId } = await adminAndUser(server, 'alice'));
    ({ user: bob } = await adminAndUser(server, 'bob'));
    app = await demoApp(server);
  });
  afterAll(async () => server?.close());

  describe('liked', () => {
    it('like → dislike → none keeps the conversation counters right at every step', async () => {
      const { chatId, answer } = await aliceChat();
      const steps: Array<[0 | 1 | 2, { like: number; dislike: number }]> = [[1, { like: 1, dislike: 0 }], [1, { like: 1, dislike: 0 }], [2, { like: 0, dislike: 1 }], [0, { like: 0, dislike: 0 }], [2, { like: 0, dislike: 1 }]];
      for (const [liked, expected] of steps) {
        const r = await alice.post('/api/v1/liked', { message_id: answer.id, liked });
        expect(r.status).toBe(200);
        expect(r.body).toEqual({ status_code: 200, status_message: 'SUCCESS', data: null });
        expect((await repos().messages.get(answer.id))!.liked).toBe(liked);
        expect(await counters(chatId)).toEqual({ ...expected, copied: 0 });
      }
    });

    it('the alias counts across messages, and a comment is stored with the like', async () => {
      const { chatId, messages } = await aliceChat();
      expect((await alice.post('/api/v1/chat/liked', { message_id: messages[1]!.id, liked: 1 })).status).toBe(200);
      expect((await alice.post('/api/v1/chat/liked', { message_id: messages[3]!.id, liked: 1, comment: 'spot on' })).status).toBe(200);
      expect(await counters(chatId)).toEqual({ like: 2, dislike: 0, copied: 0 });
      expect((await repos().messages.get(messages[3]!.id))!.remark).toBe('spot on');
    });

    it('rejects wrong types, out-of-range values, missing fields and malformed JSON', async () => {
      const { chatId, answer } = await aliceChat();
      expectInvalid(await alice.post('/api/v1/liked', { message_id: answer.id, liked: '1' }), 'body/liked');
      expectInvalid(await alice.post('/api/v1/liked', { message_id: answer.id, liked: 3 }), 'body/liked');
      expectInvalid(await alice.post('/api/v1/liked', { message_id: String(answer.id), liked: 1 }), 'body/message_id');
      expectInvalid(await alice.post('/api/v1/liked', { liked: 1 }), 'body/message_id');
      expectInvalid(await alice.post('/api/v1/liked', { message_id: answer.id, liked: 1, comment: 'x'.repeat(4097) }), 'body/comment');
      expectInvalid(await alice.call('POST', '/api/v1/liked', { raw: '{"message_id": 1, "liked": ' }));
      expect(await counters(chatId)).toEqual({ like: 0, dislike: 0, copied: 0 });
    });
  });

  describe('copied', () => {
    it('sets copied once and counts only the first copy', async () => {
      const { chatId, answer } = await aliceChat();
      for (let i = 0; i < 3; i++) expect((await alice.post('/api/v1/chat/copied', { message_id: answer.id })).status).toBe(200);
      expect((await repos().messages.get(answer.id))!.copied).toBe(1);
      expect(await counters(chatId)).toEqual({ like: 0, dislike: 0, copied: 1 });
    });

    it('rejects a missing or non-integer message_id', async () => {
      expectInvalid(await alice.post('/api/v1/chat/copied', {}), 'body/message_id');
      expectInvalid(await alice.post('/api/v1/chat/copied', { message_id: 1.5 }), 'body/message_id');
    });
  });

  describe('comment', () => {
    it('stores the comment in remark, SQL-looking text literally, up to 4096 chars', async () => {
      const { answer } = await aliceChat();
      const sneaky = "x'); DROP TABLE messages; -- \" OR 1=1";
      expect((await alice.post('/api/v1/chat/comment', { message_id: answer.id, comment: sneaky })).status).toBe(200);
      expect((await repos().messages.get(answer.id))!.remark).toBe(sneaky);
      const longest = '评'.repeat(4096);
      expect((await alice.post('/api/v1/chat/comment', { message_id: answer.id, comment: longest })).status).toBe(200);
      expect((await repos().messages.get(answer.id))!.remark).toBe(longest);
    });

    it('rejects an over-long or missing comment and keeps the old one', async () => {
      const { answer } = await aliceChat();
      await alice.post('/api/v1/chat/comment', { message_id: answer.id, comment: 'first' });
      expectInvalid(await alice.post('/api/v1/chat/comment', { message_id: answer.id, comment: 'x'.repeat(4097) }), 'body/comment');
      expectInvalid(await alice.post('/api/v1/chat/comment', { message_id: answer.id }), 'body/comment');
      expectInvalid(await alice.post('/api/v1/chat/comment', { message_id: answer.id, comment: 42 }), 'body/comment');
      expect((await repos().messages.get(answer.id))!.remark).toBe('first');
    });
  });

  describe('telemetry', () => {
    it('records an audit row for the owner', async () => {
      const { answer } = await aliceChat();
      expect((await alice.post('/api/v1/session/chat/message/telemetry', { message_id: answer.id, operation_type: 'copy' })).body).toMatchObject({ status_code: 200, data: null });
      const audit = await admin.get(`/api/v1/audit?action=message.telemetry&object_id=${answer.id}`);
      expect(audit.body.data).toEqual({
        total: 1,
        list: [{ id: expect.any(Number), user_id: aliceId, action: 'message.telemetry', object_type: 'message', object_id: String(answer.id), detail: { operation_type: 'copy' }, ip: expect.any(String), create_time: expect.any(String) }],
      });
    });

    it('rejects an unknown operation_type', async () => {
      const { answer } = await aliceChat();
      expectInvalid(await alice.post('/api/v1/session/chat/message/telemetry', { message_id: answer.id, operation_type: 'share' }), 'body/operation_type');
      expectInvalid(await alice.post('/api/v1/session/chat/message/telemetry', { operation_type: 'like' }), 'body/message_id');
    });
  });

  describe('ownership', () => {
    it("answers 404 to other users (admins included) for alice's messages and leaves them untouched", async () => {
      const { chatId, answer } = await aliceChat();
      await alice.post('/api/v1/liked', { message_id: answer.id, liked: 1 });
      const before = await repos().messages.get(answer.id);
      for (const caller of [bob, admin]) {
        expectError(await caller.post('/api/v1/liked', { message_id: answer.id, liked: 2 }), 404, 10404);
        expectError(await caller.post('/api/v1/chat/liked', { message_id: answer.id, liked: 0 }), 404, 10404);
        expectError(await caller.post('/api/v1/chat/copied', { message_id: answer.id }), 404, 10404);
        expectError(await caller.post('/api/v1/chat/comment', { message_id: answer.id, comment: 'mine now' }), 404, 10404);
        expectError(await caller.post('/api/v1/session/chat/message/telemetry', { message_id: answer.id, operation_type: 'like' }), 404, 10404);
      }
      expect(await repos().messages.get(answer.id)).toEqual(before);
      expect(await counters(chatId)).toEqual({ like: 1, dislike: 0, copied: 0 });
      expect((await admin.get(`/api/v1/audit?object_id=${answer.id}`)).body.data.total).toBe(0);
    });

    it('answers a missing message and one in a deleted conversation exactly alike', async () => {
      const { chatId, answer } = await aliceChat();
      await repos().conversations.softDelete(chatId);
      const missing = await alice.post('/api/v1/chat/copied', { message_id: 2147483647 });
      const deleted = await alice.post('/api/v1/chat/copied', { message_id: answer.id });
      expectError(missing, 404, 10404);
      expect(deleted.body).toEqual(missing.body);
      expectError(await alice.post('/api/v1/chat/comment', { message_id: 2147483647, comment: 'x' }), 404, 10404);
      expectError(await alice.post('/api/v1/liked', { message_id: 2147483647, liked: 1 }), 404, 10404);
      expectError(await alice.post('/api/v1/session/chat/message/telemetry', { message_id: 2147483647, operation_type: 'dislike' }), 404, 10404);
    });

    it('requires a login', async () => {
      expectError(await new Api(server.url).post('/api/v1/chat/copied', { message_id: 1 }), 401, 10401);
    });
  });

  describe('statistics and counts', () => {
    let carol: Api;
    let carolId: number;
    let today: string;
    const oldDay = '2024-01-02';

    beforeAll(async () => {
      ({ user: carol, userId: carolId } = await adminAndUser(server, 'carol'));
      // two conversations: 3 pairs today, 2 pairs moved back to oldDay (tokens 10+i, latency 100 per answer)
      const a = await seedConversation(server, { userId: carolId, app, pairs: 3 });
      const b = await seedConversation(server, { userId: carolId, app, pairs: 2 });
      today = a.conversation.create_time.slice(0, 10);
      for (const m of b.messages) await repos().messages.update(m.id, { create_time: `${oldDay}T12:00:00.000Z` });
      await carol.post('/api/v1/liked', { message_id: a.messages[1]!.id, liked: 1 });
      await carol.post('/api/v1/liked', { message_id: a.messages[3]!.id, liked: 2 });
      await carol.post('/api/v1/chat/copied', { message_id: b.messages[1]!.id });
    });

    const todayRow = () => ({ flow_id: app.id, flow_name: app.name, day: today, conversations: 2, messages: 6, likes: 1, dislikes: 1, copies: 0, tokens: 33, avg_latency_ms: 100 });
    const oldRow = () => ({ flow_id: app.id, flow_name: app.name, day: oldDay, conversations: 0, messages: 4, likes: 0, dislikes: 0, copies: 1, tokens: 21, avg_latency_ms: 100 });
    const carolTotal = { conversations: 2, messages: 10, likes: 1, dislikes: 1, copies: 1, tokens: 54, avg_latency_ms: 100 };

    it('reflects the seeded rows exactly, per app and day, newest day first', async () => {
      const r = await carol.get('/api/v1/chat/statistics');
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({ list: [todayRow(), oldRow()], total: carolTotal });
    });

    it('filters by inclusive date range and by app, and validates dates', async () => {
      expect((await carol.get(`/api/v1/chat/statistics?start_date=${oldDay}&end_date=${oldDay}`)).body.data.list).toEqual([oldRow()]);
      expect((await carol.get(`/api/v1/chat/statistics?start_date=${today}`)).body.data.list).toEqual([todayRow()]);
      const other = await demoApp(server, 'assistant');
      expect((await carol.get(`/api/v1/chat/statistics?flow_id=${other.id}`)).body.data).toEqual({
        list: [], total: { conversations: 0, messages: 0, likes: 0, dislikes: 0, copies: 0, tokens: 0, avg_latency_ms: null },
      });
      expectInvalid(await carol.get('/api/v1/chat/statistics?start_date=2024-13-45'), 'querystring/start_date');
      expectInvalid(await carol.get('/api/v1/chat/statistics?flow_id=nope'), 'querystring/flow_id');
      expectInvalid(await carol.get(`/api/v1/chat/statistics?start_date=${today}&end_date=${oldDay}`), 'querystring/end_date');
    });

    it("never shows a user another user's stats; admins see anyone's or everyone's", async () => {
      const mine = (await carol.get('/api/v1/chat/statistics')).body.data;
      expect((await carol.get(`/api/v1/chat/statistics?user_id=${aliceId}`)).body.data).toEqual(mine);
      expect((await alice.get(`/api/v1/chat/statistics?user_id=${carolId}`)).body.data.total.messages).toBe(await repos().messages.count({ userId: aliceId }));
      expect((await admin.get(`/api/v1/chat/statistics?user_id=${carolId}`)).body.data).toEqual(mine);
      const everyone = (await admin.get('/api/v1/chat/statistics')).body.data.total;
      expect(everyone.messages).toBe(await repos().messages.count({}));
    });

    it('counts only the caller’s messages unless the caller is an admin', async () => {
      const { chatId } = await aliceChat();
      const aliceAll = await repos().messages.count({ userId: aliceId });
      expect((await alice.get('/api/v1/chat/messages/count')).body).toEqual({ status_code: 200, status_message: 'SUCCESS', data: { count: aliceAll } });
      expect((await alice.get(`/api/v1/chat/messages/count?chat_id=${chatId}`)).body.data.count).toBe(4);
      expect((await alice.get(`/api/v1/chat/messages/count?user_id=${carolId}`)).body.data.count).toBe(aliceAll);
      expect((await bob.get(`/api/v1/chat/messages/count?chat_id=${chatId}`)).body.data.count).toBe(0);
      expect((await admin.get(`/api/v1/chat/messages/count?user_id=${carolId}`)).body.data.count).toBe(10);
      expect((await admin.get(`/api/v1/chat/messages/count?user_id=${carolId}&flow_id=${app.id}`)).body.data.count).toBe(10);
    });

    it('takes a half-open time range of dates or RFC 3339 times', async () => {
      const count = async (q: string) => (await carol.get(`/api/v1/chat/messages/count?${q}`)).body.data.count;
      expect(await count(`start_time=${oldDay}&end_time=2024-01-03`)).toBe(4);
      expect(await count(`start_time=${oldDay}T12:00:00Z&end_time=${oldDay}T12:00:01Z`)).toBe(4);
      expect(await count(`start_time=${oldDay}T14:00:00%2B02:00&end_time=${oldDay}T12:00:00Z`)).toBe(0);
      expect(await count(`end_time=${oldDay}T12:00:00Z`)).toBe(0);
      expect(await count(`start_time=2024-01-03`)).toBe(6);
      expectInvalid(await carol.get('/api/v1/chat/messages/count?start_time=yesterday'), 'querystring/start_time');
      expectInvalid(await carol.get('/api/v1/chat/messages/count?end_time=2016-12-31T23:59:60Z'), 'querystring/end_time');
      expectInvalid(await carol.get('/api/v1/chat/messages/count?chat_id=abc'), 'querystring/chat_id');
      expectInvalid(await carol.get('/api/v1/chat/messages/count?user_id=x'), 'querystring/user_id');
    });
  });

  describe('audit', () => {
    it('lists newest first with filters and pagination', async () => {
      const { answer } = await aliceChat();
      for (const op of ['like', 'dislike', 'copy']) await alice.post('/api/v1/session/chat/message/telemetry', { message_id: answer.id, operation_type: op });
      const page1 = await admin.get(`/api/v1/audit?object_id=${answer.id}&user_id=${aliceId}&limit=2`);
      expect(page1.body.data.total).toBe(3);
      expect(page1.body.data.list.map((a: { detail: { operation_type: string } }) => a.detail.operation_type)).toEqual(['copy', 'dislike']);
      const page2 = await admin.get(`/api/v1/audit?object_id=${answer.id}&limit=2&page=2`);
      expect(page2.body.data.list.map((a: { detail: { operation_type: string } }) => a.detail.operation_type)).toEqual(['like']);
      expect((await admin.get(`/api/v1/audit?object_id=${answer.id}&action=session.delete`)).body.data).toEqual({ list: [], total: 0 });
    });

    it('is for admins only and validates paging', async () => {
      expectError(await alice.get('/api/v1/audit'), 403, 10403);
      expectInvalid(await admin.get('/api/v1/audit?page=0'), 'querystring/page');
      expectInvalid(await admin.get('/api/v1/audit?limit=1000'), 'querystring/limit');
    });
  });
});
