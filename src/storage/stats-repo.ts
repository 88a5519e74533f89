import { sql, type Kysely } from 'kysely';
import { now } from './db.ts';
import type { AuditRow, Database } from './tables.ts';

export interface StatsFilter {
  flowId?: string | undefined;
  userId?: number | undefined;
  /** inclusive, ISO date or time */
  from?: string | undefined;
  /** exclusive, ISO date or time */
  to?: string | undefined;
}

export interface DailyStats {
  flow_id: string;
  day: string;
  conversations: number;
  messages: number;
  likes: number;
  dislikes: number;
  copies: number;
  tokens: number;
  avg_latency_ms: number | null;
}

const day = sql<string>`substr(create_time, 1, 10)`;

export class StatsRepo {
  constructor(private readonly db: Kysely<Database>) {}

  /** Counts per app and day, computed by the database. */
  async daily(f: StatsFilter): Promise<DailyStats[]> {
    let m = this.db.selectFrom('messages');
    let c = this.db.selectFrom('conversations');
    if (f.flowId) { m = m.where('flow_id', '=', f.flowId); c = c.where('flow_id', '=', f.flowId); }
    if (f.userId !== undefined) { m = m.where('user_id', '=', f.userId); c = c.where('user_id', '=', f.userId); }
    if (f.from) { m = m.where('create_time', '>=', f.from); c = c.where('create_time', '>=', f.from); }
    if (f.to) { m = m.where('create_time', '<', f.to); c = c.where('create_time', '<', f.to); }

    const msgRows = await m.select([
      'flow_id',
      day.as('day'),
      (eb) => eb.fn.countAll<number>().as('messages'),
      sql<number>`sum(case when liked = 1 then 1 else 0 end)`.as('likes'),
      sql<number>`sum(case when liked = 2 then 1 else 0 end)`.as('dislikes'),
      sql<number>`sum(copied)`.as('copies'),
      sql<number>`sum(tokens)`.as('tokens'),
      sql<number | null>`avg(latency_ms)`.as('avg_latency_ms'),
    ]).groupBy(['flow_id', day]).execute();
    const convRows = await c.select(['flow_id', day.as('day'), (eb) => eb.fn.countAll<number>().as('conversations')]).groupBy(['flow_id', day]).execute();

    const out = new Map<string, DailyStats>();
    const entry = (flowId: string, d: string) => {
      const key = `${flowId}|${d}`;
      let e = out.get(key);
      if (!e) {
        e = { flow_id: flowId, day: d, conversations: 0, messages: 0, likes: 0, dislikes: 0, copies: 0, tokens: 0, avg_latency_ms: null };
        out.set(key, e);
      }
      return e;
    };
    for (const r of msgRows) {
      Object.assign(entry(r.flow_id, r.day), {
        messages: Number(r.messages), likes: Number(r.likes ?? 0), dislikes: Number(r.dislikes ?? 0), copies: Number(r.copies ?? 0),
        tokens: Number(r.tokens ?? 0), avg_latency_ms: r.avg_latency_ms === null ? null : Math.round(Number(r.avg_latency_ms)),
      });
    }
    for (const r of convRows) entry(r.flow_id, r.day).conversations = Number(r.conversations);
    return [...out.values()].sort((a, b) => (a.day === b.day ? a.flow_id.localeCompare(b.flow_id) : b.day.localeCompare(a.day)));
  }
}

export interface AuditInput {
  user_id: number | null;
  action: string;
  object_type: string;
  object_id: string;
  detail?: unknown;
  ip?: string;
}

export interface AuditFilter {
  action?: string | undefined;
  userId?: number | undefined;
  objectId?: string | undefined;
  page: number;
  limit: number;
}

export class AuditRepo {
  constructor(private readonly db: Kysely<Database>) {}

  async record(a: AuditInput): Promise<void> {
    await this.db.insertInto('audit_log').values({
      user_id: a.user_id, action: a.action, object_type: a.object_type, object_id: a.object_id,
      detail: JSON.stringify(a.detail ?? {}), ip: a.ip ?? '', create_time: now(),
    }).execute();
  }

  async list(f: AuditFilter): Promise<{ list: AuditRow[]; total: number }> {
    let q = this.db.selectFrom('audit_log');
    if (f.action) q = q.where('action', '=', f.action);
    if (f.userId !== undefined) q = q.where('user_id', '=', f.userId);
    if (f.objectId) q = q.where('object_id', '=', f.objectId);
    const list = await q.selectAll().orderBy('id', 'desc').limit(f.limit).offset((f.page - 1) * f.limit).execute();
    const { total } = await q.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow();
    return { list, total: Number(total) };
  }
}
