import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, sql, type CompiledQuery, type KyselyConfig } from 'kysely';
import pg from 'pg';
import { executeDirectly } from './prepared.ts';
import { GroupCommitSqliteDialect } from './sqlite-driver.ts';
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
  /** how long each statement took, issue to result (metrics) */
  onQuery?: (seconds: number) => void;
}

// PostgreSQL COUNT/SUM return int8/numeric as strings; every count here fits in a JS number.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

export function openDb(options: DbOptions): Db {
  if (options.url) {
    // a PostgreSQL that does not accept connections fails requests within seconds (10500), not never
    const pool = new pg.Pool({ connectionString: options.url, max: 10, connectionTimeoutMillis: 5000 });
    pool.on('error', (err) => options.onIdleError?.(err));
    // pool.end() resolves once every connection is asked to end, before their sockets close: count
    // them until 'remove' so close() returns when the server has really let them go
    let open = 0;
    let allClosed: (() => void) | null = null;
    pool.on('connect', () => { open++; });
    pool.on('remove', () => {
      if (--open === 0) allClosed?.();
    });
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: queryLog(options) });
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
  const dialect = new GroupCommitSqliteDialect(sqlite);
  const kysely = new Kysely<Database>({ dialect, log: queryLog(options) });
  const timed = options.onQuery;
  executeDirectly(kysely as Kysely<never>, timed
    ? <R>(query: CompiledQuery) => {
      const started = performance.now();
      return dialect.execute<R>(query).then((r) => {
        timed((performance.now() - started) / 1000);
        return r;
      });
    }
    : <R>(query: CompiledQuery) => dialect.execute<R>(query));
  return {
    kysely,
    dialect: 'sqlite',
    location: file,
    ping: async () => { await sql`select 1`.execute(kysely); },
    close: () => kysely.destroy(),
  };
}

export const now = (): string => new Date().toISOString();

function queryLog(options: DbOptions): KyselyConfig['log'] {
  const timed = options.onQuery;
  return timed ? (event) => { if (event.level === 'query') timed(event.queryDurationMillis / 1000); } : undefined;
}
