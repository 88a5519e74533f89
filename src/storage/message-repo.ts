import { type Kysely, type Transaction } from 'kysely';
import { now } from './db.ts';
import { prepare, type Prepared } from './prepared.ts';
import type { Database, MessagePatch, MessageRow, NewMessage } from './tables.ts';

export type Liked = 0 | 1 | 2;

export interface MessageCountFilter {
  flowId?: string | undefined;
  chatId?: string | undefined;
  userId?: number | undefined;
  from?: string | undefined;
  to?: string | undefined;
}

export type NewMessageInput = Omit<NewMessage, 'create_time' | 'update_time'>;

const CONTEXT_COLUMNS = ['id', 'is_bot', 'message', 'category', 'extra', 'remark', 'sensitive_status', 'parent_message_id', 'turn_id'] as const;
/** What a model context is built from (see buildContext). */
export type ContextRow = Pick<MessageRow, (typeof CONTEXT_COLUMNS)[number]>;

export class MessageRepo {
  /** one prepared INSERT per set of columns given (a question, an answer, … each always gives the same) */
  private readonly inserts = new Map<string, Prepared<Pick<MessageRow, 'id'>>>();
  private readonly contextQuery: Prepared<ContextRow>;

  constructor(private readonly db: Kysely<Database>) {
    this.contextQuery = prepare(db, ($) => db.selectFrom('messages').select(CONTEXT_COLUMNS).where('chat_id', '=', $(0)).orderBy('id', 'desc').limit($(1)));
  }

  /** Stores one message; resolves with its id (a turn stores two: returning only the id spares building a ~30-column row). */
  async insert(input: NewMessageInput): Promise<number> {
    const t = now();
    const row: Record<string, unknown> = { ...input, create_time: t, update_time: t };
    // Kysely leaves out undefined values; so does the shape
    const columns = Object.keys(row).filter((c) => row[c] !== undefined);
    const shape = columns.join();
    let insert = this.inserts.get(shape);
    if (!insert) {
      insert = prepare(this.db, ($) => this.db.insertInto('messages').values(Object.fromEntries(columns.map((c, i) => [c, $(i)])) as NewMessage).returning('id'));
      this.inserts.set(shape, insert);
    }
    return (await insert(columns.map((c) => row[c])))[0]!.id;
  }

  /** Inserts rows in one transaction and touches their conversation. */
  async insertMany(rows: NewMessageInput[]): Promise<MessageRow[]> {
    return this.db.transaction().execute(async (trx) => {
      const out: MessageRow[] = [];
      const t = now();
      for (const r of rows) out.push(await trx.insertInto('messages').values({ ...r, create_time: t, update_time: t }).returningAll().executeTakeFirstOrThrow());
      const chatIds = [...new Set(rows.map((r) => r.chat_id))];
      if (chatIds.length) await trx.updateTable('conversations').set({ update_time: t }).where('chat_id', 'in', chatIds).execute();
      return out;
    });
  }

  get(id: number): Promise<MessageRow | undefined> {
    return this.db.selectFrom('messages').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /** Newest first; `beforeId` is the cursor (the last id the client has seen). */
  history(chatId: string, beforeId: number | undefined, pageSize: number): Promise<MessageRow[]> {
    let q = this.db.selectFrom('messages').selectAll().where('chat_id', '=', chatId);
    if (beforeId !== undefined) q = q.where('id', '<', beforeId);
    return q.orderBy('id', 'desc').limit(pageSize).execute();
  }

  /** The newest `limit` messages, oldest first. */
  async latest(chatId: string, limit: number): Promise<MessageRow[]> {
    const rows = await this.history(chatId, undefined, limit);
    return rows.reverse();
  }

  /**
   * The newest `limit` messages, oldest first, with only what a model context is built from: a turn
   * reads up to ~110 rows, and a row of every column costs several times as much to fetch.
   */
  async context(chatId: string, limit: number): Promise<ContextRow[]> {
    const rows = await this.contextQuery([chatId, limit]);
    return rows.reverse();
  }

  /** Every message of a conversation, oldest first. */
  /** The rows one turn stored (its question, answer, tool calls …), oldest first. */
  byTurn(chatId: string, turnId: string): Promise<Array<Pick<MessageRow, 'id' | 'category'>>> {
    return this.db.selectFrom('messages').select(['id', 'category']).where('chat_id', '=', chatId).where('turn_id', '=', turnId).orderBy('id').execute();
  }

  all(chatId: string): Promise<MessageRow[]> {
    return this.db.selectFrom('messages').selectAll().where('chat_id', '=', chatId).orderBy('id').execute();
  }

  /** Updates a message and its conversation in one transaction; undefined when the message is gone. */
  async edit(id: number, patch: MessagePatch, conversationPatch: { sensitive_status?: number }): Promise<MessageRow | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const t = now();
      const row = await trx.updateTable('messages').set({ ...patch, update_time: t }).where('id', '=', id).returningAll().executeTakeFirst();
      if (!row) return undefined;
      await trx.updateTable('conversations').set({ ...conversationPatch, update_time: t }).where('chat_id', '=', row.chat_id).execute();
      return row;
    });
  }

  async update(id: number, patch: MessagePatch): Promise<MessageRow> {
    return this.db.updateTable('messages').set({ ...patch, update_time: now() }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
  }

  async delete(id: number): Promise<void> {
    await this.db.deleteFrom('messages').where('id', '=', id).execute();
  }

  /** Sets like/dislike/none and keeps the conversation counters in step. No-op when unchanged. */
  async setLiked(id: number, liked: Liked): Promise<MessageRow> {
    return this.db.transaction().execute(async (trx) => {
      // Compare-and-set: under PostgreSQL's read committed two concurrent calls could both read the
      // old value and both move the counters; the loser of the race re-reads and tries again.
      for (;;) {
        const msg = await trx.selectFrom('messages').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
        if (msg.liked === liked) return msg;
        const row = await trx.updateTable('messages').set({ liked, update_time: now() }).where('id', '=', id).where('liked', '=', msg.liked).returningAll().executeTakeFirst();
        if (!row) continue;
        const count = (state: number, v: number) => (liked === state ? 1 : 0) - (v === state ? 1 : 0);
        await adjustCounters(trx, msg.chat_id, count(1, msg.liked), count(2, msg.liked), 0);
        return row;
      }
    });
  }

  /** Marks the message copied; only the first copy counts on the conversation. */
  async markCopied(id: number): Promise<MessageRow> {
    return this.db.transaction().execute(async (trx) => {
      const r = await trx.updateTable('messages').set({ copied: 1, update_time: now() }).where('id', '=', id).where('copied', '=', 0).returningAll().executeTakeFirst();
      if (r) await adjustCounters(trx, r.chat_id, 0, 0, 1);
      return r ?? (await trx.selectFrom('messages').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
    });
  }

  async count(f: MessageCountFilter): Promise<number> {
    let q = this.db.selectFrom('messages');
    if (f.flowId) q = q.where('flow_id', '=', f.flowId);
    if (f.chatId) q = q.where('chat_id', '=', f.chatId);
    if (f.userId !== undefined) q = q.where('user_id', '=', f.userId);
    if (f.from) q = q.where('create_time', '>=', f.from);
    if (f.to) q = q.where('create_time', '<', f.to);
    const { n } = await q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(n);
  }
}

async function adjustCounters(trx: Transaction<Database>, chatId: string, like: number, dislike: number, copied: number): Promise<void> {
  if (!like && !dislike && !copied) return;
  await trx.updateTable('conversations').set((eb) => ({
    like_count: eb('like_count', '+', like),
    dislike_count: eb('dislike_count', '+', dislike),
    copied_count: eb('copied_count', '+', copied),
  })).where('chat_id', '=', chatId).execute();
}
