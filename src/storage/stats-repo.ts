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

export interface StatsTotals {
  conversations: number;
  messages: number;
  likes: number;
  dislikes: number;
  copies: number;
  tokens: number;
  /** over the messages that have a latency (answers); null when none has */
  avg_latency_ms: number | null;
}

export interface DailyStats extends StatsTotals {
  flow_id: string;
  /** the app's name; null when the app row is gone */
  flow_name: string | null;
  day: string;
}

/** Per-group sums; the average is derived from them so the totals can be exact too. */
type Sums = Omit<StatsTotals, 'avg_latency_ms'> & { latency_sum: number; latency_n: number };

const day = sql<string>`substr(create_time, 1, 10)`;
const zero = (): Sums => ({ conversations: 0, messages: 0, likes: 0, dislikes: 0, copies: 0, tokens: 0, latency_sum: 0, latency_n: 0 });
const finish = ({ latency_sum, latency_n, ...s }: Sums): StatsTotals => ({ ...s, avg_latency_ms: latency_n ? Math.round(latency_sum / latency_n) : null });

export class StatsRepo {
  constructor(private readonly db: Kysely<Database>) {}

  /** Counts per app and day (newest day first) and their totals, aggregated by the database. */
  async daily(f: StatsFilter): Promise<{ list: DailyStats[]; total: StatsTotals }> {
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
      sql<number | null>`sum(latency_ms)`.as('latency_sum'),
      sql<number>`count(latency_ms)`.as('latency_n'),
    ]).groupBy(['flow_id', day]).execute();
    const convRows = await c.select(['flow_id', day.as('day'), (eb) => eb.fn.countAll<number>().as('conversations')]).groupBy(['flow_id', day]).execute();

    const groups = new Map<string, { flow_id: string; day: string; sums: Sums }>();
    const group = (flowId: string, d: string) => {
      const key = `${flowId}|${d}`;
      if (!groups.has(key)) groups.set(key, { flow_id: flowId, day: d, sums: zero() });
      return groups.get(key)!.sums;
    };
    const total = zero();
    const add = (target: Sums, part: Partial<Record<keyof Sums, number | null>>) => {
      for (const [k, v] of Object.entries(part) as [keyof Sums, number | null][]) target[k] += Number(v ?? 0);
    };
    for (const { flow_id, day: d, ...part } of [...msgRows, ...convRows]) {
      add(group(flow_id, d), part);
      add(total, part);
    }

    const flowIds = [...new Set([...groups.values()].map((g) => g.flow_id))];
    const names = new Map(flowIds.length ? (await this.db.selectFrom('apps').select(['id', 'name']).where('id', 'in', flowIds).execute()).map((a) => [a.id, a.name]) : []);
    const list = [...groups.values()]
      .map((g) => ({ flow_id: g.flow_id, flow_name: names.get(g.flow_id) ?? null, day: g.day, ...finish(g.sums) }))
      .sort((a, b) => (a.day === b.day ? a.flow_id.localeCompare(b.flow_id) : b.day.localeCompare(a.day)));
    return { list, total: finish(total) };
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
