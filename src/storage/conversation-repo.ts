import { sql, type Kysely } from 'kysely';
import { containsCi } from './app-repo.ts';
import { now } from './db.ts';
import { prepare, type Prepared } from './prepared.ts';
import type { ConversationRow, Database, MessageRow, NewConversation, NewMessage } from './tables.ts';

type NewConversationInput = Omit<NewConversation, 'create_time' | 'update_time'>;

export interface ConversationListFilter {
  userId: number;
  flowTypes?: number[] | undefined;
  flowId?: string | undefined;
  /** matches titles and message text */
  keyword?: string | undefined;
  page: number;
  limit: number;
}

export class ConversationRepo {
  // the statements every turn runs, compiled once (prepared.ts)
  private readonly byChatId: Prepared<ConversationRow>;
  private readonly reserve: Prepared<{ last_seq: number }>;
  private readonly settle: Prepared<unknown>;

  constructor(private readonly db: Kysely<Database>) {
    this.byChatId = prepare(db, ($) => db.selectFrom('conversations').selectAll().where('chat_id', '=', $(0)));
    this.reserve = prepare(db, ($) => db.updateTable('conversations')
      .set((eb) => ({ last_seq: eb('last_seq', '+', $(0)), update_time: $(1), turn_id: $(2), turn_owner: $(3), turn_lease: $(4) }))
      .where('chat_id', '=', $(5)).where('turn_id', 'is', null).returning('last_seq'));
    this.settle = prepare(db, ($) => db.updateTable('conversations').set({ last_seq: $(0), turn_id: null, turn_owner: null, turn_lease: null })
      .where('chat_id', '=', $(1)).where('turn_id', '=', $(2)));
  }

  async create(input: Omit<NewConversation, 'create_time' | 'update_time'>): Promise<ConversationRow> {
    const t = now();
    return this.db.insertInto('conversations').values({ ...input, create_time: t, update_time: t }).returningAll().executeTakeFirstOrThrow();
  }

  /** Creates the conversation; undefined when the chat_id is taken (by anyone, deleted rows included). */
  async createIfAbsent(input: NewConversationInput): Promise<ConversationRow | undefined> {
    const t = now();
    return this.db.insertInto('conversations').values({ ...input, create_time: t, update_time: t })
      .onConflict((oc) => oc.column('chat_id').doNothing()).returningAll().executeTakeFirst();
  }

  /**
   * Creates the conversation from `create` unless it exists (null: it must exist already), lets `guard`
   * vet the stored row (it throws to refuse), then appends the messages and applies `patch` — all in
   * one transaction, so a refusal changes nothing.
   */
  async appendMessages(chatId: string, create: NewConversationInput | null, rows: Array<Omit<NewMessage, 'create_time' | 'update_time' | 'chat_id'>>,
    guard: (c: ConversationRow | undefined) => void, patch: Partial<Pick<ConversationRow, 'sensitive_status'>> = {}): Promise<MessageRow[]> {
    return this.db.transaction().execute(async (trx) => {
      const t = now();
      if (create) await trx.insertInto('conversations').values({ ...create, chat_id: chatId, create_time: t, update_time: t }).onConflict((oc) => oc.column('chat_id').doNothing()).execute();
      guard(await trx.selectFrom('conversations').selectAll().where('chat_id', '=', chatId).executeTakeFirst());
      const out: MessageRow[] = [];
      for (const r of rows) out.push(await trx.insertInto('messages').values({ ...r, chat_id: chatId, create_time: t, update_time: t }).returningAll().executeTakeFirstOrThrow());
      await trx.updateTable('conversations').set({ ...patch, update_time: t }).where('chat_id', '=', chatId).execute();
      return out;
    });
  }

  /**
   * Creates the conversation unless it exists; returns the stored row either way. It is read first:
   * one statement when it exists (every turn but the first). A writer racing the insert wins the
   * conflict and its row is read again.
   */
  async ensure(input: Omit<NewConversation, 'create_time' | 'update_time'>): Promise<ConversationRow> {
    return (await this.get(input.chat_id)) ?? (await this.createIfAbsent(input)) ?? (await this.get(input.chat_id))!;
  }

  /** Soft-deleted rows are returned too; callers decide. */
  async get(chatId: string): Promise<ConversationRow | undefined> {
    return (await this.byChatId([chatId]))[0];
  }

  async list(f: ConversationListFilter): Promise<{ list: ConversationRow[]; total: number }> {
    let q = this.db.selectFrom('conversations as c').where('c.user_id', '=', f.userId).where('c.is_delete', '=', 0);
    if (f.flowTypes?.length) q = q.where('c.flow_type', 'in', f.flowTypes);
    if (f.flowId) q = q.where('c.flow_id', '=', f.flowId);
    if (f.keyword) {
      const pattern = containsCi(f.keyword);
      q = q.where((eb) => eb.or([
        eb(sql`lower(c.name)`, 'like', sql`${pattern} escape '\\'`),
        eb.exists(eb.selectFrom('messages as m').select('m.id').whereRef('m.chat_id', '=', 'c.chat_id')
          .where(sql`lower(m.message)`, 'like', sql`${pattern} escape '\\'`)),
      ]));
    }
    const list = await q.selectAll('c').orderBy('c.update_time', 'desc').orderBy('c.chat_id').limit(f.limit).offset((f.page - 1) * f.limit).execute();
    const { total } = await q.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow();
    return { list, total: Number(total) };
  }

  /** The newest message of each conversation, input requests excluded (as Bisheng's list does). */
  async latestMessages(chatIds: string[]): Promise<Map<string, MessageRow>> {
    if (chatIds.length === 0) return new Map();
    const rows = await this.db.selectFrom('messages').selectAll().where('id', 'in', (eb) =>
      eb.selectFrom('messages').select((e) => e.fn.max<number>('id').as('id')).where('chat_id', 'in', chatIds).where('category', '!=', 'input').groupBy('chat_id'),
    ).execute();
    return new Map(rows.map((r) => [r.chat_id, r]));
  }

  async update(chatId: string, patch: Partial<Pick<ConversationRow, 'name' | 'sensitive_status'>>): Promise<void> {
    await this.db.updateTable('conversations').set({ ...patch, update_time: now() }).where('chat_id', '=', chatId).execute();
  }

  async touch(chatId: string): Promise<void> {
    await this.db.updateTable('conversations').set({ update_time: now() }).where('chat_id', '=', chatId).execute();
  }

  async softDelete(chatId: string): Promise<void> {
    await this.db.updateTable('conversations').set({ is_delete: 1, update_time: now() }).where('chat_id', '=', chatId).execute();
  }

  /**
   * Starts a turn of the conversation: takes it for `turn` (one atomic step, so of two instances
   * only one gets it) and reserves the next `block` seqs (last_seq += block). Returns the stored
   * high-water mark before them: the block is (mark, mark + block]. Undefined when the conversation
   * does not exist, or another turn holds it. It also marks the conversation as just active.
   */
  async reserveSeq(chatId: string, block: number, turn: { id: string; owner: string; lease: string }): Promise<number | undefined> {
    const row = (await this.reserve([block, now(), turn.id, turn.owner, turn.lease, chatId]))[0];
    return row && row.last_seq - block;
  }

  /** The turn has ended: its seq reservation becomes the real high-water mark and the conversation is free. */
  async settleSeq(chatId: string, turnId: string, actual: number): Promise<void> {
    await this.settle([actual, chatId, turnId]);
  }

  /**
   * Extends the leases of the turns `owner` runs (`chatIds`: those still running there).
   * @returns the chat ids whose lease it extended: `owner` still holds them
   */
  async renewTurns(owner: string, chatIds: string[], lease: string): Promise<Set<string>> {
    const renewed = new Set<string>();
    for (let i = 0; i < chatIds.length; i += 500) {
      const rows = await this.db.updateTable('conversations').set({ turn_lease: lease })
        .where('turn_owner', '=', owner).where('chat_id', 'in', chatIds.slice(i, i + 500)).returning('chat_id').execute();
      for (const r of rows) renewed.add(r.chat_id);
    }
    return renewed;
  }

  /** Conversations whose turn's lease ran out before `before` (ISO): their instance stopped renewing it. */
  staleTurns(before: string, limit: number): Promise<Array<Pick<ConversationRow, 'chat_id' | 'flow_id' | 'flow_type' | 'user_id' | 'last_seq' | 'turn_id' | 'turn_owner' | 'turn_lease'>>> {
    return this.db.selectFrom('conversations').select(['chat_id', 'flow_id', 'flow_type', 'user_id', 'last_seq', 'turn_id', 'turn_owner', 'turn_lease'])
      .where('turn_id', 'is not', null).where('turn_lease', '<', before).orderBy('turn_lease').limit(limit).execute();
  }

  /** Takes over a stale turn (compare-and-set on its lease, so one sweeping instance gets it). */
  async claimTurn(chatId: string, turnId: string, staleLease: string, owner: string, lease: string): Promise<boolean> {
    const r = await this.db.updateTable('conversations').set({ turn_owner: owner, turn_lease: lease })
      .where('chat_id', '=', chatId).where('turn_id', '=', turnId).where('turn_lease', '=', staleLease).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Copies a conversation and all its messages under `newChatId`, in one transaction. */
  async copy(source: ConversationRow, newChatId: string, name: string): Promise<ConversationRow> {
    return this.db.transaction().execute(async (trx) => {
      const t = now();
      const copy = await trx.insertInto('conversations').values({
        chat_id: newChatId, name, flow_id: source.flow_id, flow_type: source.flow_type, flow_name: source.flow_name,
        user_id: source.user_id, like_count: source.like_count, dislike_count: source.dislike_count,
        copied_count: source.copied_count, sensitive_status: source.sensitive_status, create_time: t, update_time: t,
      }).returningAll().executeTakeFirstOrThrow();
      const messages = await trx.selectFrom('messages').selectAll().where('chat_id', '=', source.chat_id).orderBy('id').execute();
      const idMap = new Map<number, number>();
      for (const { id, ...m } of messages) {
        const parent = m.parent_message_id === null ? null : (idMap.get(m.parent_message_id) ?? null);
        const row = await trx.insertInto('messages').values({ ...m, chat_id: newChatId, parent_message_id: parent }).returning('id').executeTakeFirstOrThrow();
        idMap.set(id, row.id);
      }
      return copy;
    });
  }
}
