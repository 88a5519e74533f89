import { sql, type Kysely } from 'kysely';
import { now } from './db.ts';
import { prepare, type Prepared } from './prepared.ts';
import type { AppRow, AppVersionRow, AppsTable, Database } from './tables.ts';

export interface AppListFilter {
  kind?: AppsTable['kind'] | undefined;
  keyword?: string | undefined;
  onlineOnly?: boolean;
  /** restrict to these ids (API-key scope) */
  ids?: string[] | undefined;
  page: number;
  limit: number;
}

/** `lower(column) LIKE %keyword%`, with LIKE's wildcards in the keyword taken literally. */
export function containsCi(keyword: string) {
  return `%${keyword.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export class AppRepo {
  private readonly byId: Prepared<AppRow>;

  constructor(private readonly db: Kysely<Database>) {
    this.byId = prepare(db, ($) => db.selectFrom('apps').selectAll().where('id', '=', $(0)));
  }

  async create(input: Pick<AppRow, 'id' | 'name' | 'description' | 'icon' | 'kind' | 'user_id' | 'draft'> & { online?: number }): Promise<AppRow> {
    const t = now();
    return this.db.insertInto('apps').values({ ...input, create_time: t, update_time: t }).returningAll().executeTakeFirstOrThrow();
  }

  /** Deleted apps are returned too (the caller tells "deleted" from "missing"). */
  async get(id: string): Promise<AppRow | undefined> {
    return (await this.byId([id]))[0];
  }

  async update(id: string, patch: Partial<Pick<AppRow, 'name' | 'description' | 'icon' | 'draft' | 'online'>>): Promise<AppRow> {
    return this.db.updateTable('apps').set({ ...patch, update_time: now() }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
  }

  async softDelete(id: string): Promise<void> {
    await this.db.updateTable('apps').set({ is_delete: 1, online: 0, update_time: now() }).where('id', '=', id).execute();
  }

  async list(f: AppListFilter): Promise<{ list: AppRow[]; total: number }> {
    let q = this.db.selectFrom('apps').where('is_delete', '=', 0);
    if (f.kind) q = q.where('kind', '=', f.kind);
    if (f.onlineOnly) q = q.where('online', '=', 1).where('published_version', 'is not', null);
    if (f.ids) q = f.ids.length ? q.where('id', 'in', f.ids) : q.where(sql<boolean>`1 = 0`);
    if (f.keyword) {
      const pattern = containsCi(f.keyword);
      q = q.where((eb) => eb.or([
        eb(sql`lower(name)`, 'like', sql`${pattern} escape '\\'`),
        eb(sql`lower(description)`, 'like', sql`${pattern} escape '\\'`),
      ]));
    }
    const list = await q.selectAll().orderBy('update_time', 'desc').orderBy('id').limit(f.limit).offset((f.page - 1) * f.limit).execute();
    const { total } = await q.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow();
    return { list, total: Number(total) };
  }

  /** Freezes `spec` as the next version and makes it the published one. */
  async publish(appId: string, spec: string, userId: number): Promise<AppVersionRow> {
    return this.db.transaction().execute(async (trx) => {
      const { max } = await trx.selectFrom('app_versions').select((eb) => eb.fn.max<number | null>('version').as('max')).where('app_id', '=', appId).executeTakeFirstOrThrow();
      const version = Number(max ?? 0) + 1;
      const row = await trx.insertInto('app_versions').values({ app_id: appId, version, spec, user_id: userId, create_time: now() }).returningAll().executeTakeFirstOrThrow();
      await trx.updateTable('apps').set({ published_version: version, update_time: now() }).where('id', '=', appId).execute();
      return row;
    });
  }

  listVersions(appId: string): Promise<AppVersionRow[]> {
    return this.db.selectFrom('app_versions').selectAll().where('app_id', '=', appId).orderBy('version', 'desc').execute();
  }

  /** The published spec of each of these apps that has one. */
  async publishedSpecs(appIds: string[]): Promise<Array<{ app_id: string; spec: string }>> {
    if (!appIds.length) return [];
    return this.db.selectFrom('app_versions').innerJoin('apps', 'apps.id', 'app_versions.app_id')
      .whereRef('app_versions.version', '=', 'apps.published_version').where('apps.id', 'in', appIds)
      .select(['app_versions.app_id', 'app_versions.spec']).execute();
  }

  getVersion(appId: string, version: number): Promise<AppVersionRow | undefined> {
    return this.db.selectFrom('app_versions').selectAll().where('app_id', '=', appId).where('version', '=', version).executeTakeFirst();
  }
}
