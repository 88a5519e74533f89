import type SqliteDatabase from 'better-sqlite3';
import { SqliteDialect, type CompiledQuery, type DatabaseConnection, type Driver, type QueryResult, type SqliteDatabase as KyselySqliteDatabase, type SqliteStatement } from 'kysely';

/**
 * Kysely's SQLite dialect with group commit. SQLite's cost per write is mostly its commit (the WAL
 * append and the file locks), so a chat turn's four small writes (question, seq reservation, answer,
 * seq settle) cost more in commits than in work.
 *
 * Here a write outside a transaction joins one implicit transaction that commits once the event
 * loop comes round (setImmediate): all the writes of one loop iteration — under load, those of many
 * turns — share one COMMIT. A write runs at once (reads see it, in order), but its promise settles
 * only after that COMMIT: who awaits a write knows it is stored, as with autocommit. If the COMMIT
 * fails (or an error rolls the whole transaction back), every write of the group rejects with the
 * error. An explicit transaction (Kysely's `transaction()`) first commits the open group, then runs
 * alone: other queries wait until it has ended.
 *
 * The writes stay on the event loop's thread: a writer thread was measured and made CPU and TTFT
 * worse (docs/decisions.md).
 */
export class GroupCommitSqliteDialect extends SqliteDialect {
  private readonly statements: CachingSqliteDatabase;
  private core: GroupCommitCore | null = null;

  constructor(private readonly sqlite: SqliteDatabase.Database) {
    const statements = cachingStatements(sqlite);
    super({ database: statements });
    this.statements = statements;
  }

  override createDriver(): Driver {
    this.core = new GroupCommitCore(this.sqlite, this.statements);
    return new GroupCommitDriver(this.core);
  }

  /**
   * Runs a compiled query as the driver does, without Kysely's executor around it (see prepared.ts):
   * as a query of its own, outside any explicit transaction (it waits for one that runs).
   */
  execute<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (!this.core) throw new Error('the dialect has no driver yet');
    return this.core.execute<R>(new Handle(this.core), query);
  }
}

/**
 * The connections of this process with an open group. A second connection to the same file (two
 * servers in one process, as tests run them) would wait on the first one's write lock in SQLite's
 * busy handler, which blocks the thread the first one must commit on: before a connection writes,
 * every other open group of the process commits.
 */
const openGroups = new Set<GroupCommitCore>();
function commitOthers(self: GroupCommitCore): void {
  for (const c of openGroups) if (c !== self) c.commit();
}

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** What Kysely gets from acquireConnection: one per query or transaction, all on the one SQLite connection. */
class Handle implements DatabaseConnection {
  constructor(private readonly core: GroupCommitCore) {}

  executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    return this.core.execute<R>(this, query);
  }

  // eslint-disable-next-line require-yield -- Parley does not stream SQLite queries
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming queries are not supported on SQLite');
  }
}

/** The SQLite connection: the open group, and the handle whose explicit transaction runs. */
class GroupCommitCore {
  /** the handle of the open explicit transaction */
  private owner: Handle | null = null;
  private ownerDone: Promise<void> = Promise.resolve();
  private endOwner: () => void = () => undefined;
  /** the writes of the open implicit transaction, waiting for its COMMIT; null when none is open */
  private group: Waiter[] | null = null;

  constructor(private readonly db: SqliteDatabase.Database, readonly statements: CachingSqliteDatabase) {}

  execute<R>(handle: Handle, query: CompiledQuery): Promise<QueryResult<R>> {
    if (this.owner !== null && this.owner !== handle) return this.ownerDone.then(() => this.execute<R>(handle, query));
    const stmt = this.statements.prepare(query.sql);
    const grouped = this.owner === null && !stmt.readonly;
    if (grouped && this.group === null) {
      commitOthers(this);
      this.db.exec('BEGIN');
      this.group = [];
      openGroups.add(this);
      setImmediate(() => this.commit());
    }
    let result: QueryResult<R>;
    try {
      result = stmt.reader ? { rows: stmt.all(query.parameters) as R[] } : changes(stmt.run(query.parameters));
    } catch (err) {
      // most errors undo only their statement; some (disk full, I/O) roll the whole transaction back
      if (this.group !== null && !this.db.inTransaction) this.fail(this.takeGroup(), err);
      return Promise.reject(err);
    }
    if (!grouped) return Promise.resolve(result);
    return new Promise((resolve, reject) => {
      this.group!.push({ resolve: () => resolve(result), reject });
    });
  }

  /** Commits the open group; its writes resolve (or all reject with the error). */
  commit(): void {
    if (this.group === null) return;
    const group = this.takeGroup();
    try {
      this.db.exec('COMMIT');
    } catch (err) {
      this.fail(group, err);
      return;
    }
    for (const w of group) w.resolve();
  }

  /** The open group's writes; the group is closed. */
  private takeGroup(): Waiter[] {
    const group = this.group ?? [];
    this.group = null;
    openGroups.delete(this);
    return group;
  }

  /** Rolls back what is left of a failed group and rejects its writes. */
  private fail(group: Waiter[], err: unknown): void {
    try {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
    } catch {
      // nothing left to undo
    }
    for (const w of group) w.reject(err);
  }

  /** Starts `handle`'s explicit transaction once no other one runs; the open group commits first. */
  async begin(handle: Handle): Promise<void> {
    while (this.owner !== null) await this.ownerDone;
    commitOthers(this);
    this.commit();
    this.db.exec('BEGIN');
    this.owner = handle;
    this.ownerDone = new Promise((resolve) => {
      this.endOwner = resolve;
    });
  }

  /** Ends the explicit transaction: COMMIT or ROLLBACK (a failed COMMIT may have ended it already). */
  end(how: 'COMMIT' | 'ROLLBACK'): void {
    try {
      if (how === 'COMMIT' || this.db.inTransaction) this.db.exec(how);
    } finally {
      // a failed COMMIT is followed by Kysely's rollback, which ends the ownership for good
      if (how === 'ROLLBACK' || !this.db.inTransaction) {
        this.owner = null;
        this.endOwner();
      }
    }
  }
}

function changes(r: { changes: number | bigint; lastInsertRowid: number | bigint }): QueryResult<never> {
  return { numAffectedRows: BigInt(r.changes), insertId: BigInt(r.lastInsertRowid), rows: [] };
}

class GroupCommitDriver implements Driver {
  constructor(private readonly core: GroupCommitCore) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    return new Handle(this.core);
  }

  async releaseConnection(): Promise<void> {}

  beginTransaction(connection: DatabaseConnection): Promise<void> {
    return this.core.begin(connection as Handle);
  }

  async commitTransaction(): Promise<void> {
    this.core.end('COMMIT');
  }

  async rollbackTransaction(): Promise<void> {
    this.core.end('ROLLBACK');
  }

  async destroy(): Promise<void> {
    this.core.commit();
    this.core.statements.close();
  }
}

/** How many prepared statements the SQLite connection keeps; more distinct SQL texts evict the least recently used. */
export const STATEMENT_CACHE_SIZE = 1000;

/** A prepared statement; `readonly` when it writes nothing (better-sqlite3's `readonly`). */
export interface CachedStatement extends SqliteStatement {
  readonly readonly: boolean;
}

/** The SQLite database as Kysely's SqliteDialect sees it, each SQL text prepared once. */
export interface CachingSqliteDatabase extends KyselySqliteDatabase {
  prepare(sql: string): CachedStatement;
  /** statements kept now (at most `max`) */
  readonly size: number;
  readonly max: number;
}

/**
 * Wraps better-sqlite3 so every SQL text is prepared once, in the shape Kysely's SqliteDialect
 * takes (the group-commit driver above uses it the same way): `prepare(sql)` for every query, then
 * `reader` and `all`/`run`, or `iterate` for a stream, and `close()` on destroy. Prepared statements are kept in a map in
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
  const cache = new Map<string, CachedStatement>();
  return {
    get size() { return cache.size; },
    max,
    prepare(source: string): CachedStatement {
      let statement = cache.get(source);
      if (statement) {
        // move to the most recently used end
        cache.delete(source);
      } else {
        const prepared = db.prepare(source);
        statement = {
          reader: prepared.reader,
          readonly: prepared.readonly,
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

