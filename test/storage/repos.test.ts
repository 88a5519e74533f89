import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect, sql, type Generated } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { newId } from '../../src/domain/types.ts';
import { openDb } from '../../src/storage/db.ts';
import { cachingStatements, STATEMENT_CACHE_SIZE } from '../../src/storage/sqlite-driver.ts';
import type { Repos } from '../../src/storage/repos.ts';
import type { AppRow } from '../../src/storage/tables.ts';
import { demoApp, seedConversation } from '../helpers/seed.ts';
import { createPgDatabase, dbTargets, startServer, type TestServer } from '../helpers/server.ts';

/** The repository contract: the same behaviour on every database, against its real migrations. */
describe.each(dbTargets())('repositories on $name', (target) => {
  let server: TestServer;
  let repos: Repos;
  let app: AppRow;
  let nextUser = 0;
  const newUser = () => repos.users.create({ user_name: `u${++nextUser}`, password_hash: 'x', role: 'user' });
  const seed = async (pairs = 2) => seedConversation(server, { userId: (await newUser()).id, app, pairs });
  const row = (chatId: string, userId: number, category: string) => ({
    chat_id: chatId, flow_id: app.id, user_id: userId, is_bot: category === 'question' ? 0 : 1, message: category, type: 'bot', category,
    intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: null,
  });

  beforeAll(async () => {
    server = await startServer(target);
    repos = server.handle.services.repos;
    app = await demoApp(server);
  });
  afterAll(async () => server?.close());

  it('users: create, find, unique names, bumpTokenVersion', async () => {
    const u = await repos.users.create({ user_name: 'dora', password_hash: 'h', role: 'user' });
    expect(u).toMatchObject({ user_name: 'dora', role: 'user', token_version: 0 });
    expect(await repos.users.findById(u.id)).toEqual(u);
    expect((await repos.users.findByName('dora'))?.id).toBe(u.id);
    expect(await repos.users.findByName('nobody')).toBeUndefined();
    await expect(repos.users.create({ user_name: 'dora', password_hash: 'h', role: 'user' })).rejects.toThrow();
    await repos.users.bumpTokenVersion(u.id);
    await repos.users.bumpTokenVersion(u.id);
    expect((await repos.users.findById(u.id))!.token_version).toBe(2);
  });

  it('apps: create, publish numbered versions, list versions newest first', async () => {
    const a = await repos.apps.create({ id: newId(), name: 'Contract app', description: '', icon: '', kind: 'chat', user_id: 1, draft: '{"v":0}' });
    expect(a).toMatchObject({ online: 0, published_version: null, is_delete: 0 });
    expect((await repos.apps.publish(a.id, '{"v":1}', 1)).version).toBe(1);
    expect((await repos.apps.publish(a.id, '{"v":2}', 1)).version).toBe(2);
    expect((await repos.apps.get(a.id))!.published_version).toBe(2);
    expect((await repos.apps.listVersions(a.id)).map((v) => [v.version, v.spec])).toEqual([[2, '{"v":2}'], [1, '{"v":1}']]);
    expect((await repos.apps.getVersion(a.id, 1))!.spec).toBe('{"v":1}');
    expect(await repos.apps.getVersion(a.id, 3)).toBeUndefined();
  });

  it('conversations: create/ensure, list with latest messages, soft delete', async () => {
    const user = await newUser();
    const base = { flow_id: app.id, flow_type: 15, flow_name: app.name, user_id: user.id };
    const c1 = await repos.conversations.create({ ...base, chat_id: newId(), name: 'one' });
    expect(await repos.conversations.ensure({ ...base, chat_id: c1.chat_id, name: 'renamed?' })).toEqual(c1);
    const c2 = await repos.conversations.ensure({ ...base, chat_id: newId(), name: 'two' });
    expect(c2).toMatchObject({ ...base, name: 'two', last_seq: 0, is_delete: 0 });
    expect(await repos.conversations.get(c2.chat_id)).toEqual(c2);
    const [q, a] = await repos.messages.insertMany([row(c1.chat_id, user.id, 'question'), row(c1.chat_id, user.id, 'answer'), row(c1.chat_id, user.id, 'input')]);
    const { list, total } = await repos.conversations.list({ userId: user.id, page: 1, limit: 10 });
    expect(total).toBe(2);
    expect(list.map((c) => c.chat_id).sort()).toEqual([c1.chat_id, c2.chat_id].sort());
    const latest = await repos.conversations.latestMessages([c1.chat_id, c2.chat_id]);
    expect(latest.get(c1.chat_id)?.id).toBe(a!.id);
    expect(latest.has(c2.chat_id)).toBe(false);
    expect(q!.id).toBeLessThan(a!.id);

    await repos.conversations.softDelete(c2.chat_id);
    expect((await repos.conversations.list({ userId: user.id, page: 1, limit: 10 })).total).toBe(1);
    expect((await repos.conversations.get(c2.chat_id))!.is_delete).toBe(1);
  });

  it('conversations: ensure of one new chat_id by racing writers yields one row for all', async () => {
    const user = await newUser();
    const chatId = newId();
    const rows = await Promise.all(['a', 'b', 'c', 'd'].map((name) => repos.conversations.ensure({ chat_id: chatId, name, flow_id: app.id, flow_type: 15, flow_name: app.name, user_id: user.id })));
    for (const r of rows) expect(r).toEqual(rows[0]);
    expect(await repos.conversations.get(chatId)).toEqual(rows[0]);
  });

  it('conversations: reserveSeq takes the conversation for one turn and reserves a block; settleSeq gives back the rest and frees it; leases are renewed, found stale and claimed once', async () => {
    const user = await newUser();
    const c = await repos.conversations.create({ chat_id: newId(), name: 'seq', flow_id: app.id, flow_type: 15, flow_name: app.name, user_id: user.id });
    const lastSeq = async () => (await repos.conversations.get(c.chat_id))!.last_seq;
    const turn = (id: string, owner = 'i1', lease = '2099-01-01T00:00:00.000Z') => ({ id, owner, lease });
    await new Promise((r) => setTimeout(r, 5));
    expect(await repos.conversations.reserveSeq(c.chat_id, 100, turn('t1'))).toBe(0);
    expect(await lastSeq()).toBe(100);
    expect(await repos.conversations.get(c.chat_id)).toMatchObject({ turn_id: 't1', turn_owner: 'i1', turn_lease: '2099-01-01T00:00:00.000Z' });
    // a turn starting marks the conversation active
    expect((await repos.conversations.get(c.chat_id))!.update_time > c.update_time).toBe(true);
    // while t1 runs, no other turn (on any instance) gets the conversation, however many try at once
    expect(await Promise.all(Array.from({ length: 4 }, (_, i) => repos.conversations.reserveSeq(c.chat_id, 100, turn(`x${i}`, 'i2'))))).toEqual([undefined, undefined, undefined, undefined]);
    // only t1 settles it
    await repos.conversations.settleSeq(c.chat_id, 'x0', 3);
    expect(await lastSeq()).toBe(100);
    await repos.conversations.settleSeq(c.chat_id, 't1', 7);
    expect(await repos.conversations.get(c.chat_id)).toMatchObject({ last_seq: 7, turn_id: null, turn_owner: null, turn_lease: null });
    // of turns starting at once, one gets it
    const floors = await Promise.all(Array.from({ length: 8 }, (_, i) => repos.conversations.reserveSeq(c.chat_id, 10, turn(`t${i + 2}`))));
    expect(floors.filter((f) => f !== undefined)).toEqual([7]);
    expect(await lastSeq()).toBe(17);
    expect(await repos.conversations.reserveSeq(newId(), 10, turn('t9'))).toBeUndefined();

    // leases: renewed by their owner only; found stale once they ran out; claimed by one sweeper
    const holder = (await repos.conversations.get(c.chat_id))!;
    await repos.conversations.renewTurns('someone else', [c.chat_id], '2000-01-01T00:00:00.000Z');
    expect((await repos.conversations.get(c.chat_id))!.turn_lease).toBe(holder.turn_lease);
    await repos.conversations.renewTurns('i1', [c.chat_id], '2000-01-01T00:00:00.000Z');
    const stale = (await repos.conversations.staleTurns('2001-01-01T00:00:00.000Z', 100)).filter((t) => t.chat_id === c.chat_id);
    expect(stale).toEqual([expect.objectContaining({ chat_id: c.chat_id, turn_id: holder.turn_id, turn_owner: 'i1', turn_lease: '2000-01-01T00:00:00.000Z', last_seq: 17 })]);
    const claims = await Promise.all(['s1', 's2'].map((o) => repos.conversations.claimTurn(c.chat_id, holder.turn_id!, '2000-01-01T00:00:00.000Z', o, '2099-01-01T00:00:00.000Z')));
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect((await repos.conversations.staleTurns('2001-01-01T00:00:00.000Z', 100)).filter((t) => t.chat_id === c.chat_id)).toEqual([]);
  });

  it('conversations: copy duplicates counters and messages, re-linking parents', async () => {
    const { conversation, messages } = await seed(1);
    const answer = await repos.messages.update(messages[1]!.id, { parent_message_id: messages[0]!.id });
    await repos.messages.setLiked(answer.id, 1);
    const source = (await repos.conversations.get(conversation.chat_id))!;
    const copy = await repos.conversations.copy(source, newId(), 'copy');
    expect(copy).toMatchObject({ name: 'copy', user_id: source.user_id, like_count: 1, flow_id: app.id });
    const copied = await repos.messages.latest(copy.chat_id, 10);
    expect(copied.map((m) => [m.message, m.liked])).toEqual([['question 0', 0], ['answer 0', 1]]);
    expect(copied[1]!.parent_message_id).toBe(copied[0]!.id);
    expect(copied[0]!.id).not.toBe(messages[0]!.id);
  });

  it('messages: insert, history cursor, latest, update, delete', async () => {
    const { conversation, messages } = await seed(3);
    const ids = messages.map((m) => m.id);
    const page1 = await repos.messages.history(conversation.chat_id, undefined, 4);
    expect(page1.map((m) => m.id)).toEqual(ids.slice(2).reverse());
    const page2 = await repos.messages.history(conversation.chat_id, page1.at(-1)!.id, 4);
    expect(page2.map((m) => m.id)).toEqual(ids.slice(0, 2).reverse());
    expect((await repos.messages.latest(conversation.chat_id, 2)).map((m) => m.id)).toEqual(ids.slice(4));
    // the context read: the same newest rows, only the columns a context is built from
    const context = await repos.messages.context(conversation.chat_id, 3);
    const pick = ({ id, is_bot, message, category, extra, remark, sensitive_status, parent_message_id, turn_id }: typeof messages[number]) =>
      ({ id, is_bot, message, category, extra, remark, sensitive_status, parent_message_id, turn_id });
    expect(context).toEqual(messages.slice(3).map(pick));

    const one = await repos.messages.insert(row(conversation.chat_id, conversation.user_id, 'answer'));
    expect(one).toBeGreaterThan(ids.at(-1)!);
    const edited = await repos.messages.update(one, { message: 'edited', remark: 'r' });
    expect(edited).toMatchObject({ message: 'edited', remark: 'r' });
    await repos.messages.delete(one);
    expect(await repos.messages.get(one)).toBeUndefined();
  });

  it('prepared statements: each run with its own arguments; inserts of different column sets', async () => {
    const { conversation } = await seed(1);
    const { chat_id: chatId, user_id: userId } = conversation;
    // one INSERT shape without the optional columns, one with them (and one given as undefined: left out)
    const ids = [
      await repos.messages.insert(row(chatId, userId, 'answer')),
      await repos.messages.insert({ ...row(chatId, userId, 'answer'), message: 'with usage', tokens: 42, latency_ms: 7, liked: undefined }),
      await repos.messages.insert({ ...row(chatId, userId, 'question'), message: 'second plain' }),
    ];
    expect(new Set(ids).size).toBe(3);
    const [plain, full, again] = await Promise.all(ids.map((id) => repos.messages.get(id)));
    expect(plain).toMatchObject({ message: 'answer', tokens: 0, liked: 0, chat_id: chatId });
    expect(full).toMatchObject({ message: 'with usage', tokens: 42, latency_ms: 7, liked: 0 });
    expect(again).toMatchObject({ message: 'second plain', category: 'question' });
    // the context read runs with each call's limit and chat_id
    expect((await repos.messages.context(chatId, 2)).map((r) => r.message)).toEqual(['with usage', 'second plain']);
    expect((await repos.messages.context(chatId, 1)).map((r) => r.message)).toEqual(['second plain']);
    expect(await repos.messages.context(newId(), 5)).toEqual([]);
    // seq reservations: one turn at a time, settled by that turn
    const lease = { owner: 'i1', lease: '2099-01-01T00:00:00.000Z' };
    const first = await repos.conversations.reserveSeq(chatId, 100, { id: 'p1', ...lease });
    expect(await repos.conversations.reserveSeq(chatId, 100, { id: 'p2', ...lease })).toBeUndefined();
    await repos.conversations.settleSeq(chatId, 'p1', first! + 3);
    expect((await repos.conversations.get(chatId))!.last_seq).toBe(first! + 3);
    expect(await repos.conversations.reserveSeq(chatId, 100, { id: 'p2', ...lease })).toBe(first! + 3);
    await repos.conversations.settleSeq(chatId, 'p2', first! + 103);
    expect((await repos.conversations.get(chatId))!.last_seq).toBe(first! + 103);
    expect(await repos.conversations.reserveSeq(newId(), 100, { id: 'p3', ...lease })).toBeUndefined();
    expect(await repos.conversations.get(newId())).toBeUndefined();
  });

  it('messages: setLiked moves both counters, is idempotent, and stays exact under concurrency', async () => {
    const { conversation, messages } = await seed(2);
    const counters = async () => {
      const c = (await repos.conversations.get(conversation.chat_id))!;
      return [c.like_count, c.dislike_count];
    };
    const answer = messages[1]!.id;
    for (const [liked, expected] of [[1, [1, 0]], [1, [1, 0]], [2, [0, 1]], [0, [0, 0]], [2, [0, 1]]] as const) {
      expect((await repos.messages.setLiked(answer, liked)).liked).toBe(liked);
      expect(await counters()).toEqual(expected);
    }
    await repos.messages.setLiked(messages[3]!.id, 1);
    expect(await counters()).toEqual([1, 1]);

    // many racing writers: counters must equal what the messages finally say
    const values = [1, 2, 0, 1, 2, 1, 0, 2, 1, 1, 2, 0] as const;
    await Promise.all(values.map((v, i) => repos.messages.setLiked(messages[i % 2 === 0 ? 1 : 3]!.id, v)));
    const final = await Promise.all([1, 3].map(async (i) => (await repos.messages.get(messages[i]!.id))!.liked));
    expect(await counters()).toEqual([final.filter((v) => v === 1).length, final.filter((v) => v === 2).length]);
  });

  it('messages: markCopied counts the first copy only; count filters', async () => {
    const { conversation, messages } = await seed(2);
    await Promise.all([1, 2, 3].map(() => repos.messages.markCopied(messages[1]!.id)));
    expect((await repos.messages.get(messages[1]!.id))!.copied).toBe(1);
    expect((await repos.conversations.get(conversation.chat_id))!.copied_count).toBe(1);

    const userId = conversation.user_id;
    expect(await repos.messages.count({ chatId: conversation.chat_id })).toBe(4);
    expect(await repos.messages.count({ userId, flowId: app.id })).toBe(4);
    expect(await repos.messages.count({ userId, flowId: newId() })).toBe(0);
    await repos.messages.update(messages[0]!.id, { create_time: '2020-05-05T10:00:00.000Z' });
    expect(await repos.messages.count({ userId, from: '2020-05-05T10:00:00.000Z', to: '2020-05-05T10:00:00.001Z' })).toBe(1);
    expect(await repos.messages.count({ userId, to: '2020-05-05T10:00:00.000Z' })).toBe(0);
  });

  it('stats: daily per app and day with exact totals', async () => {
    const { conversation, messages } = await seed(2);
    const userId = conversation.user_id;
    await repos.messages.setLiked(messages[1]!.id, 2);
    await repos.messages.markCopied(messages[3]!.id);
    await repos.messages.update(messages[3]!.id, { create_time: '2021-03-04T23:59:59.999Z', latency_ms: 200 });
    const day = conversation.create_time.slice(0, 10);
    const { list, total } = await repos.stats.daily({ userId });
    expect(list).toEqual([
      { flow_id: app.id, flow_name: app.name, day, conversations: 1, messages: 3, likes: 0, dislikes: 1, copies: 0, tokens: 10, avg_latency_ms: 100 },
      { flow_id: app.id, flow_name: app.name, day: '2021-03-04', conversations: 0, messages: 1, likes: 0, dislikes: 0, copies: 1, tokens: 11, avg_latency_ms: 200 },
    ]);
    expect(total).toEqual({ conversations: 1, messages: 4, likes: 0, dislikes: 1, copies: 1, tokens: 21, avg_latency_ms: 150 });
    expect((await repos.stats.daily({ userId, from: '2021-03-04', to: '2021-03-05' })).list.map((r) => r.day)).toEqual(['2021-03-04']);
    expect(await repos.stats.daily({ userId, flowId: newId() })).toEqual({ list: [], total: { conversations: 0, messages: 0, likes: 0, dislikes: 0, copies: 0, tokens: 0, avg_latency_ms: null } });
  });

  it('audit: record and list newest first with filters and paging', async () => {
    const objectId = newId();
    await repos.audit.record({ user_id: 1, action: 'contract.a', object_type: 't', object_id: objectId, detail: { n: 1 }, ip: '10.0.0.1' });
    await repos.audit.record({ user_id: 2, action: 'contract.b', object_type: 't', object_id: objectId });
    await repos.audit.record({ user_id: null, action: 'contract.a', object_type: 't', object_id: objectId, detail: { n: 3 } });
    const all = await repos.audit.list({ objectId, page: 1, limit: 10 });
    expect(all.total).toBe(3);
    expect(all.list.map((r) => [r.action, r.user_id, r.detail])).toEqual([['contract.a', null, '{"n":3}'], ['contract.b', 2, '{}'], ['contract.a', 1, '{"n":1}']]);
    expect(all.list[2]).toMatchObject({ ip: '10.0.0.1', object_type: 't' });
    expect((await repos.audit.list({ objectId, action: 'contract.a', page: 2, limit: 1 })).list.map((r) => r.detail)).toEqual(['{"n":1}']);
    expect((await repos.audit.list({ objectId, userId: 2, page: 1, limit: 10 })).total).toBe(1);
  });

  it('settings: getOrInit keeps the first value, also when writers race', async () => {
    const values = await Promise.all(['a', 'b', 'c'].map((v) => repos.settings.getOrInit('contract_key', v)));
    expect(new Set(values).size).toBe(1);
    expect(await repos.settings.getOrInit('contract_key', 'z')).toBe(values[0]);
    expect(await repos.settings.get('contract_key')).toBe(values[0]);
    expect(await repos.settings.get('missing_key')).toBeUndefined();
  });

  if (target.name === 'postgres') it('PostgreSQL: idle connections the server terminates are replaced; close lets every connection go', async () => {
    const database = await createPgDatabase();
    const admin = new pg.Client({ connectionString: process.env.PARLEY_TEST_PG_URL });
    await admin.connect();
    try {
      const idleErrors: Error[] = [];
      const db = openDb({ url: database.url, dataDir: '', onIdleError: (err) => idleErrors.push(err) });
      const backends = async () => (await sql<{ pid: number }>`select pg_backend_pid() as pid, pg_sleep(0.05)`.execute(db.kysely)).rows[0]!.pid;
      // three connections at once, then all idle
      const pids = await Promise.all([backends(), backends(), backends()]);
      expect(new Set(pids).size).toBe(3);
      await admin.query('select pg_terminate_backend(pid) from unnest($1::int[]) as pid', [pids]);
      await vi.waitFor(() => expect(idleErrors).toHaveLength(3), { timeout: 5000 });
      for (const err of idleErrors) expect(err.message).toMatch(/terminat/);
      // the pool opened new ones and the process is still here
      expect(pids).not.toContain(await backends());
      await Promise.all([backends(), backends()]);
      await db.close();
      // close waited for the goodbyes: no backend is left on the database (a plain DROP fails otherwise)
      await admin.query(`drop database ${new URL(database.url).pathname.slice(1)}`);
    } finally {
      await admin.end();
      await database.drop();
    }
  });
});

/** The prepared-statement cache openDb gives Kysely on SQLite. */
describe('SQLite statement cache', () => {
  interface T { t: { id: Generated<number>; name: string } }
  let sqlite: SqliteDatabase.Database;
  const open = (max?: number) => {
    sqlite = new SqliteDatabase(':memory:');
    sqlite.exec('create table t (id integer primary key, name text not null unique)');
    const prepare = vi.spyOn(sqlite, 'prepare');
    const database = cachingStatements(sqlite, max);
    return { database, prepare, db: new Kysely<T>({ dialect: new SqliteDialect({ database }) }) };
  };
  afterEach(() => {
    if (sqlite.open) sqlite.close();
  });

  it('prepares each SQL text once; reuses give correct, independent results', async () => {
    const { database, prepare, db } = open();
    expect(database.max).toBe(STATEMENT_CACHE_SIZE);
    for (const name of ['a', 'b', 'c']) {
      const r = await db.insertInto('t').values({ name }).executeTakeFirstOrThrow();
      expect(r.numInsertedOrUpdatedRows).toBe(1n);
    }
    const byName = (name: string) => db.selectFrom('t').selectAll().where('name', '=', name).execute();
    const a = await byName('a');
    const b = await byName('b');
    expect(a).toEqual([{ id: 1, name: 'a' }]);
    expect(b).toEqual([{ id: 2, name: 'b' }]);
    a[0]!.name = 'changed';
    a.push({ id: 9, name: 'x' });
    expect(await byName('a')).toEqual([{ id: 1, name: 'a' }]);
    expect(await byName('zzz')).toEqual([]);
    // the same UPDATE run again reports its own changes
    const rename = (from: string, to: string) => db.updateTable('t').set({ name: to }).where('name', '=', from).executeTakeFirstOrThrow();
    expect((await rename('c', 'd')).numUpdatedRows).toBe(1n);
    expect((await rename('c', 'd')).numUpdatedRows).toBe(0n);
    // a statement that failed (unique name) is usable again
    await expect(rename('a', 'b')).rejects.toThrow(/UNIQUE/);
    expect((await rename('a', 'e')).numUpdatedRows).toBe(1n);
    expect(database.prepare('select 1').reader).toBe(true);
    expect(database.prepare('select 1')).toBe(database.prepare('select 1'));
    // insert, select, update (and `select 1`): one prepare each
    expect(prepare).toHaveBeenCalledTimes(4);
    expect(database.size).toBe(4);
  });

  it('keeps at most `max` statements, least recently used evicted first; evicted SQL still runs', async () => {
    const { database, prepare, db } = open(3);
    await db.insertInto('t').values([{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]).execute();
    // every list length is another SQL text
    const among = async (ids: number[]) => (await db.selectFrom('t').select('name').where('id', 'in', ids).orderBy('id').execute()).map((r) => r.name);
    const hot = () => db.selectFrom('t').select('name').where('id', '=', 1).executeTakeFirstOrThrow();
    for (let n = 1; n <= 4; n++) {
      expect(await among(Array.from({ length: n }, (_, i) => i + 1))).toEqual(['a', 'b', 'c', 'd'].slice(0, n));
      expect((await hot()).name).toBe('a');
      expect(database.size).toBeLessThanOrEqual(3);
    }
    expect(database.size).toBe(3);
    // the `hot` statement stayed cached throughout; `in (?)` was evicted and is prepared again
    const hotSql = prepare.mock.calls.filter(([s]) => /"id" = \?/.test(s)).length;
    expect(hotSql).toBe(1);
    expect(await among([2])).toEqual(['b']);
    expect(database.size).toBe(3);
    expect(() => cachingStatements(sqlite, 0)).toThrow(RangeError);
  });

  it('a stream never shares its statement with a query of the same SQL', async () => {
    const { database, db } = open();
    await db.insertInto('t').values([{ name: 'a' }, { name: 'b' }, { name: 'c' }]).execute();
    // Kysely holds the connection while it streams; the wrapper must not rely on that
    const text = 'select name from t order by id';
    const seen: unknown[] = [];
    for (const row of database.prepare(text).iterate([])) {
      seen.push(row);
      expect(database.prepare(text).all([])).toHaveLength(3);
    }
    expect(seen).toEqual([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
    // a stream left early, then the same SQL again
    const all = () => db.selectFrom('t').select('name').orderBy('id');
    for await (const row of all().stream()) {
      expect(row.name).toBe('a');
      break;
    }
    const names = [];
    for await (const row of all().stream()) names.push(row.name);
    expect(names).toEqual(['a', 'b', 'c']);
    const twice = await Promise.all([all().execute(), all().execute()]);
    expect(twice[0]).toEqual([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
    expect(twice[0]).toEqual(twice[1]);
    expect(twice[0]).not.toBe(twice[1]);
  });

  it('destroy closes the database', async () => {
    const { database, db } = open();
    await sql`select 1`.execute(db);
    await db.destroy();
    expect(sqlite.open).toBe(false);
    expect(database.size).toBe(0);
  });
});
