import { WorkflowExecutor, type RunStatus, type WorkflowRunState } from '../runtimes/workflow/executor.ts';
import type { WorkflowRunRepo } from '../storage/workflow-run-repo.ts';
import type { WorkflowRunRow } from '../storage/tables.ts';

/** Whose a kept run is, and which app version it runs. */
export interface RunOwner {
  appId: string;
  userId: number;
  /** null: the draft */
  version: number | null;
}

/** A workflow run between segments: its state and who it belongs to. */
export interface KeptRun {
  state: WorkflowRunState;
  /** how the store sees it: `running` while a segment (here or on another instance) has claimed it */
  status: RunStatus;
  appId: string;
  userId: number;
  /** the stored row, the compare-and-set token of `claim` (a database store's) */
  row?: WorkflowRunRow;
}

/**
 * Where workflow runs wait between segments, by bus key. A stored conversation's run lives in the
 * database (saved whenever a segment ends), so it may be answered after a disconnect or a restart,
 * or through another instance; an unstored one (debug mode, a stateless call) lives in this
 * process's memory while it waits, and is forgotten with its scratch key.
 */
export interface RunStore {
  load(key: string): Promise<KeptRun | null>;
  /** Takes a waiting run for one segment: false when it was taken or changed since it was read (another instance answering the same request). */
  claim(run: KeptRun): Promise<boolean>;
  /** Gives back a claimed run that no segment ran for: it waits again as it did. */
  unclaim(key: string, run: KeptRun, owner: RunOwner): Promise<void>;
  /** Keeps a run as a segment left it (until its next segment). */
  keep(key: string, owner: RunOwner, state: WorkflowRunState): Promise<void>;
  forget(key: string): void;
}

/** Runs of unstored conversations: only runs that wait for input are kept. */
export class MemoryRunStore implements RunStore {
  private readonly runs = new Map<string, { state: WorkflowRunState; appId: string; userId: number }>();

  async load(key: string): Promise<KeptRun | null> {
    const m = this.runs.get(key);
    return m ? { ...m, status: m.state.status } : null;
  }

  // only the socket or request of its scratch key reaches it
  async claim(): Promise<boolean> {
    return true;
  }

  async unclaim(): Promise<void> {}

  async keep(key: string, owner: RunOwner, state: WorkflowRunState): Promise<void> {
    if (state.status === 'input') this.runs.set(key, { state, appId: owner.appId, userId: owner.userId });
    else this.runs.delete(key);
  }

  forget(key: string): void {
    this.runs.delete(key);
  }
}

/** Runs of stored conversations, in `workflow_runs` (the key is the chat_id). */
export class DatabaseRunStore implements RunStore {
  /** @param inputTimeoutMs workflow.input_timeout: a waiting run's row says when it expires */
  constructor(private readonly repo: WorkflowRunRepo, private readonly inputTimeoutMs: number) {}

  async load(chatId: string): Promise<KeptRun | null> {
    const row = await this.repo.get(chatId);
    if (!row) return null;
    let state: WorkflowRunState;
    try {
      state = WorkflowExecutor.readState(row.state);
    } catch {
      return null;
    }
    return { state, status: row.status, appId: row.app_id, userId: row.user_id, row };
  }

  claim(run: KeptRun): Promise<boolean> {
    return run.row ? this.repo.claim(run.row) : Promise.resolve(false);
  }

  async unclaim(chatId: string, run: KeptRun, owner: RunOwner): Promise<void> {
    await this.keep(chatId, owner, run.state);
  }

  async keep(chatId: string, owner: RunOwner, state: WorkflowRunState): Promise<void> {
    const pending = state.status === 'input' ? state.pending : null;
    await this.repo.save({
      chat_id: chatId, run_id: state.run_id, app_id: owner.appId, version: owner.version, user_id: owner.userId,
      status: state.status as WorkflowRunRow['status'], state: JSON.stringify(state), node_id: pending?.node_id ?? null,
      expires_at: pending ? new Date(pending.requested_at + this.inputTimeoutMs).toISOString() : null,
    });
  }

  forget(): void {}
}
