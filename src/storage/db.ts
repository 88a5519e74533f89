import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql, type SqliteDatabase as KyselySqliteDatabase, type SqliteStatement } from 'kysely';
import pg from 'pg';
import type { Database } from './tables.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface Db {
  kysely: Kysely<Database>;
  dialect: Dialect;
  /** where the data lives, for logs (password removed) */
  location: string;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface DbOptions {
  /** postgres://… or empty for SQLite */
  url: string;
  dataDir: string;
  /**
   * Errors of idle PostgreSQL connections (the server restarted or terminated them): the pool has
   * already dropped the connection and the next query opens a new one; without a listener the
   * pool's 'error' event would end the process.
   */
  onIdleError?: (err: Error) => void;
}

// PostgreSQL COUNT/SUM return int8/numeric as strings; every count here fits in a JS number.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

export function openDb(options: DbOptions): Db {
  if (options.url) {
    const pool = new pg.Pool({ connectionString: options.url, max: 10 });
    pool.on('error', (err) => options.onIdleError?.(err));
    // pool.end() resolves once every connection is asked to end, before their sockets close: count
    // them until 'remove' so close() returns when the server has really let them go
    let open = 0;
    let allClosed: (() => void) | null = null;
    pool.on('connect', () => { open++; });
    pool.on('remove', () => {
      if (--open === 0) allClosed?.();
    });
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return {
      kysely,
      dialect: 'postgres',
      location: options.url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@'),
      ping: async () => { await sql`select 1`.execute(kysely); },
      close: async () => {
        const closed = new Promise<void>((resolve) => {
          allClosed = resolve;
        });
        await kysely.destroy();
        // bounded: a dead network never answers the goodbye
        if (open > 0) await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
      },
    };
  }
  const dir = resolve(options.dataDir);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'parley.db');
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  const kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: cachingStatements(sqlite) }) });
  return {
    kysely,
    dialect: 'sqlite',
    location: file,
    ping: async () => { await sql`select 1`.execute(kysely); },
    close: () => kysely.destroy(),
  };
}

/** How many prepared statements the SQLite connection keeps; more distinct SQL texts evict the least recently used. */
export const STATEMENT_CACHE_SIZE = 1000;

/** The SQLite database as Kysely's SqliteDialect sees it, each SQL text prepared once. */
export interface CachingSqliteDatabase extends KyselySqliteDatabase {
  /** statements kept now (at most `max`) */
  readonly size: number;
  readonly max: number;
}

/**
 * Wraps better-sqlite3 for Kysely's SqliteDialect so every SQL text is prepared once: Kysely's
 * SqliteDriver calls `prepare(sql)` for every query, then `reader` and `all`/`run` (executeQuery)
 * or `iterate` (streamQuery), and `close()` on destroy. Prepared statements are kept in a map in
 * least-recently-used order, bounded by `max`, so SQL built from varying lists (`in (…)` with
 * any number of values) cannot grow it without end; an evicted statement is simply garbage.
 *
 * Reuse is safe because `all` and `run` run a statement to completion synchronously (better-sqlite3
 * resets it afterwards, also when it throws) and Kysely uses the statement right after `prepare`.
 * Only an iterator keeps a statement busy until it is exhausted, so `iterate` always runs on a
 * freshly prepared statement: a stream and any other query with the same SQL (in the same
 * transaction, say) never share one.
 */
export function cachingStatements(db: SqliteDatabase.Database, max = STATEMENT_CACHE_SIZE): CachingSqliteDatabase {
  if (!(max >= 1)) throw new RangeError('the statement cache needs room for at least one statement');
  const cache = new Map<string, SqliteStatement>();
  return {
    get size() { return cache.size; },
    max,
    prepare(source: string): SqliteStatement {
      let statement = cache.get(source);
      if (statement) {
        // move to the most recently used end
        cache.delete(source);
      } else {
        const prepared = db.prepare(source);
        statement = {
          reader: prepared.reader,
          all: (parameters) => prepared.all(parameters),
          run: (parameters) => prepared.run(parameters),
          iterate: (parameters) => db.prepare(source).iterate(parameters),
        };
        if (cache.size >= max) cache.delete(cache.keys().next().value!);
      }
      cache.set(source, statement);
      return statement;
    },
    close() {
      cache.clear();
      db.close();
    },
  };
}

export const now = (): string => new Date().toISOString();
