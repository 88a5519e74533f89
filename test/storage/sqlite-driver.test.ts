import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, type Generated } from 'kysely';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GroupCommitSqliteDialect } from '../../src/storage/sqlite-driver.ts';

interface T {
  parent: { id: number };
  t: { id: Generated<number>; name: string; parent_id: number | null };
}

/** Group commit on a real SQLite file, checked from a second connection (what another process would see). */
describe('SQLite group commit', () => {
  let dir: string;
  let file: string;
  let sqlite: SqliteDatabase.Database;
  let db: Kysely<T>;
  let observer: SqliteDatabase.Database;
  let exec: ReturnType<typeof vi.spyOn>;
  const open = () => {
    const s = new SqliteDatabase(file);
    s.pragma('journal_mode = WAL');
    s.pragma('foreign_keys = ON');
    s.pragma('busy_timeout = 2000');
    return s;
  };
  const stored = () => (observer.prepare('select name from t order by id').all() as { name: string }[]).map((r) => r.name);
  const commits = () => exec.mock.calls.filter((c: unknown[]) => c[0] === 'COMMIT').length;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'parley-group-commit-'));
    file = join(dir, 'g.db');
    sqlite = open();
    sqlite.exec(`create table parent (id integer primary key);
      create table t (id integer primary key, name text not null unique,
        parent_id integer references parent(id) deferrable initially deferred)`);
    exec = vi.spyOn(sqlite, 'exec');
    db = new Kysely<T>({ dialect: new GroupCommitSqliteDialect(sqlite) });
    observer = new SqliteDatabase(file, { readonly: true });
  });
  afterEach(async () => {
    observer.close();
    await db.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes of one event-loop turn share one COMMIT and resolve only once it is done; reads see them at once', async () => {
    const writes = ['a', 'b', 'c'].map((name) => db.insertInto('t').values({ name }).returning('id').executeTakeFirstOrThrow());
    // executed (this connection reads them) but not committed: nobody else sees them yet
    expect((await db.selectFrom('t').select('name').execute()).map((r) => r.name)).toEqual(['a', 'b', 'c']);
    expect(stored()).toEqual([]);
    const settled = vi.fn();
    void Promise.all(writes).then(settled);
    await Promise.resolve();
    expect(settled).not.toHaveBeenCalled();
    expect((await Promise.all(writes)).map((r) => r.id)).toEqual([1, 2, 3]);
    expect(stored()).toEqual(['a', 'b', 'c']);
    expect(commits()).toBe(1);
    // the next turn's write is a new group
    await db.updateTable('t').set({ name: 'd' }).where('name', '=', 'c').execute();
    expect(stored()).toEqual(['a', 'b', 'd']);
    expect(commits()).toBe(2);
  });

  it('a write that fails rejects alone; the others of its group are stored', async () => {
    const a = db.insertInto('t').values({ name: 'a' }).execute();
    const dup = db.insertInto('t').values({ name: 'a' }).execute();
    const b = db.insertInto('t').values({ name: 'b' }).execute();
    await expect(dup).rejects.toThrow(/UNIQUE/);
    await Promise.all([a, b]);
    expect(stored()).toEqual(['a', 'b']);
  });

  it('a COMMIT that fails rejects every write of the group and stores none of them', async () => {
    await db.insertInto('parent').values({ id: 1 }).execute();
    // the foreign key is checked at COMMIT: the orphan fails the whole group
    const good = db.insertInto('t').values({ name: 'good', parent_id: 1 }).execute();
    const orphan = db.insertInto('t').values({ name: 'orphan', parent_id: 99 }).execute();
    await expect(good).rejects.toThrow(/FOREIGN KEY/);
    await expect(orphan).rejects.toThrow(/FOREIGN KEY/);
    expect(stored()).toEqual([]);
    expect(sqlite.inTransaction).toBe(false);
    // and the connection goes on
    await db.insertInto('t').values({ name: 'after', parent_id: 1 }).execute();
    expect(stored()).toEqual(['after']);
  });

  it('an explicit transaction commits the open group first and runs alone; its rollback keeps the group', async () => {
    const before = db.insertInto('t').values({ name: 'before' }).execute();
    await expect(db.transaction().execute(async (trx) => {
      await trx.insertInto('t').values({ name: 'inside' }).execute();
      // a write from outside waits until the transaction is over
      void db.insertInto('t').values({ name: 'outside' }).execute();
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(stored()).toEqual(['before']);
      throw new Error('undo');
    })).rejects.toThrow('undo');
    await before;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(stored()).toEqual(['before', 'outside']);
    await db.transaction().execute((trx) => trx.insertInto('t').values({ name: 'kept' }).execute());
    expect(stored()).toEqual(['before', 'outside', 'kept']);
  });

  it('a second connection of the same process writes without waiting on the first one\'s open group', async () => {
    const other = new Kysely<T>({ dialect: new GroupCommitSqliteDialect(open()) });
    try {
      const first = db.insertInto('t').values({ name: 'first' }).execute();
      const started = Date.now();
      await other.insertInto('t').values({ name: 'second' }).execute();
      // without committing the first group, SQLite's busy handler would block this thread for 2 s
      expect(Date.now() - started).toBeLessThan(1800);
      await first;
      expect(stored()).toEqual(['first', 'second']);
    } finally {
      await other.destroy();
    }
  });

  it('destroy commits what is pending', async () => {
    const pending = db.insertInto('t').values({ name: 'last' }).execute();
    // a read resolves at once, after the write ran
    expect(await db.selectFrom('t').select('name').execute()).toEqual([{ name: 'last' }]);
    expect(stored()).toEqual([]);
    await db.destroy();
    await pending;
    expect(stored()).toEqual(['last']);
    db = new Kysely<T>({ dialect: new GroupCommitSqliteDialect(open()) });
  });
});
