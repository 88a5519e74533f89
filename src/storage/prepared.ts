import type { Compilable, CompiledQuery, Kysely, QueryResult } from 'kysely';

/** A prepared query: runs with these arguments, resolves with the rows. */
export type Prepared<R> = (args: readonly unknown[]) => Promise<R[]>;

/** Runs a compiled query on the database's connection directly. */
export type DirectExecute = <R>(query: CompiledQuery) => Promise<QueryResult<R>>;

const direct = new WeakMap<object, DirectExecute>();

/**
 * Lets prepared queries on `db` skip Kysely's executor (acquiring and releasing a connection, the
 * plugin steps: about what SQLite takes to run a small query).
 * The SQLite database registers its driver's own execution; PostgreSQL's queries go through Kysely.
 * Only for a Kysely instance without plugins: their result transforms would be skipped.
 */
export function executeDirectly(db: Kysely<never>, execute: DirectExecute): void {
  direct.set(db, execute);
}

/** Stands for argument `index` while a prepared query is built; the compiled parameters keep it. */
class Arg {
  constructor(readonly index: number) {}
}

/**
 * A hot query built and compiled by Kysely once, then run with new arguments: building and
 * compiling cost more than SQLite takes to run most of the chat path's statements (docs/decisions.md).
 *
 * `build` gets `$`: `$(i)` stands for argument i wherever a value goes (a where operand, an
 * inserted value, a limit). The query's shape must not depend on the arguments: no lists (`in`),
 * no optional clauses; build those per call as usual.
 */
export function prepare<DB, R>(db: Kysely<DB>, build: ($: (index: number) => never) => Compilable<R>): Prepared<R> {
  let compiled: CompiledQuery<R> | null = null;
  let execute: DirectExecute | undefined;
  return async (args) => {
    if (!compiled) {
      compiled = build((index) => new Arg(index) as never).compile();
      execute = direct.get(db);
    }
    const parameters = compiled.parameters.map((p) => (p instanceof Arg ? args[p.index] : p));
    const query = { ...compiled, parameters };
    return (await (execute ? execute<R>(query) : db.executeQuery<R>(query))).rows;
  };
}
