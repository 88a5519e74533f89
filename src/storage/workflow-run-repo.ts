import type { Kysely } from 'kysely';
import { now } from './db.ts';
import type { Database, WorkflowRunRow } from './tables.ts';

export type WorkflowRunInput = Omit<WorkflowRunRow, 'create_time' | 'update_time'>;

/** Durable workflow runs: saved whenever a run waits or ends, so any instance can continue it. */
export class WorkflowRunRepo {
  constructor(private readonly db: Kysely<Database>) {}

  get(chatId: string): Promise<WorkflowRunRow | undefined> {
    return this.db.selectFrom('workflow_runs').selectAll().where('chat_id', '=', chatId).executeTakeFirst();
  }

  /** Creates or replaces the conversation's run. */
  async save(run: WorkflowRunInput): Promise<WorkflowRunRow> {
    const t = now();
    return this.db.insertInto('workflow_runs').values({ ...run, create_time: t, update_time: t })
      .onConflict((oc) => oc.column('chat_id').doUpdateSet({
        run_id: run.run_id, app_id: run.app_id, version: run.version, user_id: run.user_id, status: run.status,
        state: run.state, node_id: run.node_id, expires_at: run.expires_at, update_time: t,
      }))
      .returningAll().executeTakeFirstOrThrow();
  }

  /**
   * Takes a waiting run for one continuation: succeeds only if nobody changed it since it was read
   * (compare-and-set on run_id, status and update_time), so two instances never both answer it.
   */
  async claim(run: WorkflowRunRow): Promise<boolean> {
    const r = await this.db.updateTable('workflow_runs').set({ status: 'running', update_time: now() })
      .where('chat_id', '=', run.chat_id).where('run_id', '=', run.run_id).where('status', '=', run.status).where('update_time', '=', run.update_time)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** A claimed run whose segment never ended (its instance died) waits again as it did before the claim. */
  async unclaim(chatId: string): Promise<void> {
    await this.db.updateTable('workflow_runs').set({ status: 'input', update_time: now() }).where('chat_id', '=', chatId).where('status', '=', 'running').execute();
  }

  async delete(chatId: string): Promise<void> {
    await this.db.deleteFrom('workflow_runs').where('chat_id', '=', chatId).execute();
  }
}
