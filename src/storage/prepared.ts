import type { Compilable, CompiledQuery, Kysely } from 'kysely';

/** A prepared query: runs with these arguments, resolves with the rows. */
export type Prepared<R> = (args: readonly unknown[]) => Promise<R[]>;

/** Stands for argument `index` while a prepared query is built; the compiled parameters keep it. */
class Arg {
  constructor(readonly index: number) {}
}

/**
 * A hot query built and compiled by Kysely once, then run with new arguments. Building and
 * compiling cost ~25 µs a query under load — more than SQLite takes to run most of the chat path's —
 * so the statements every turn runs are prepared this way.
 *
 * `build` gets `$`: `$(i)` stands for argument i wherever a value goes (a where operand, an
 * inserted value, a limit). The query's shape must not depend on the arguments: no lists (`in`),
 * no optional clauses; build those per call as usual.
 */
export function prepare<DB, R>(db: Kysely<DB>, build: ($: (index: number) => never) => Compilable<R>): Prepared<R> {
  let compiled: CompiledQuery<R> | null = null;
  return async (args) => {
    compiled ??= build((index) => new Arg(index) as never).compile();
    const parameters = compiled.parameters.map((p) => (p instanceof Arg ? args[p.index] : p));
    return (await db.executeQuery<R>({ ...compiled, parameters })).rows;
  };
}
