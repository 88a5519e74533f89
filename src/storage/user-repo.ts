import type { Kysely } from 'kysely';
import { now } from './db.ts';
import { prepare, type Prepared } from './prepared.ts';
import type { ApiKeyRow, Database, UserRow } from './tables.ts';

export class UserRepo {
  /** every authenticated request reads its user: compiled once (prepared.ts) */
  private readonly byId: Prepared<UserRow>;

  constructor(private readonly db: Kysely<Database>) {
    this.byId = prepare(db, ($) => db.selectFrom('users').selectAll().where('id', '=', $(0)));
  }

  async create(input: { user_name: string; password_hash: string; role: 'admin' | 'user' }): Promise<UserRow> {
    const t = now();
    return this.db.insertInto('users').values({ ...input, create_time: t, update_time: t }).returningAll().executeTakeFirstOrThrow();
  }

  async findById(id: number): Promise<UserRow | undefined> {
    return (await this.byId([id]))[0];
  }

  findByName(userName: string): Promise<UserRow | undefined> {
    return this.db.selectFrom('users').selectAll().where('user_name', '=', userName).executeTakeFirst();
  }

  async list(page: number, limit: number): Promise<{ list: UserRow[]; total: number }> {
    const list = await this.db.selectFrom('users').selectAll().orderBy('id').limit(limit).offset((page - 1) * limit).execute();
    const { total } = await this.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow();
    return { list, total: Number(total) };
  }

  async count(): Promise<number> {
    const { n } = await this.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(n);
  }

  /** Invalidates every token issued to the user so far (logout). */
  async bumpTokenVersion(id: number): Promise<void> {
    await this.db.updateTable('users').set((eb) => ({ token_version: eb('token_version', '+', 1), update_time: now() })).where('id', '=', id).execute();
  }

  async setPassword(id: number, passwordHash: string): Promise<void> {
    await this.db.updateTable('users').set((eb) => ({ password_hash: passwordHash, token_version: eb('token_version', '+', 1), update_time: now() })).where('id', '=', id).execute();
  }
}

export class ApiKeyRepo {
  /** every API request looks its key up: compiled once (prepared.ts) */
  private readonly activeByHash: Prepared<ApiKeyRow>;

  constructor(private readonly db: Kysely<Database>) {
    this.activeByHash = prepare(db, ($) => db.selectFrom('api_keys').selectAll().where('key_hash', '=', $(0)).where('revoked', '=', 0));
  }

  create(input: { user_id: number; name: string; key_hash: string; key_prefix: string; app_ids: string[] | null }): Promise<ApiKeyRow> {
    return this.db.insertInto('api_keys').values({
      user_id: input.user_id,
      name: input.name,
      key_hash: input.key_hash,
      key_prefix: input.key_prefix,
      app_ids: input.app_ids === null ? null : JSON.stringify(input.app_ids),
      create_time: now(),
    }).returningAll().executeTakeFirstOrThrow();
  }

  listByUser(userId: number): Promise<ApiKeyRow[]> {
    return this.db.selectFrom('api_keys').selectAll().where('user_id', '=', userId).where('revoked', '=', 0).orderBy('id', 'desc').execute();
  }

  async findActiveByHash(hash: string): Promise<ApiKeyRow | undefined> {
    return (await this.activeByHash([hash]))[0];
  }

  /** @returns whether a key of that user was revoked */
  async revoke(id: number, userId: number): Promise<boolean> {
    const r = await this.db.updateTable('api_keys').set({ revoked: 1 }).where('id', '=', id).where('user_id', '=', userId).where('revoked', '=', 0).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async touch(id: number): Promise<void> {
    await this.db.updateTable('api_keys').set({ last_used_time: now() }).where('id', '=', id).execute();
  }
}

export class SettingsRepo {
  constructor(private readonly db: Kysely<Database>) {}

  async get(key: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
    return row?.value;
  }

  /** Stores `value` unless the key is already set; returns the value that is stored (first writer wins). */
  async getOrInit(key: string, value: string): Promise<string> {
    await this.db.insertInto('settings').values({ key, value }).onConflict((oc) => oc.column('key').doNothing()).execute();
    return (await this.get(key))!;
  }
}
