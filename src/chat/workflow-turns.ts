/**
 * The workflow side of the chat core. A workflow run advances in *segments*; each segment is one
 * turn of the chat core (processing/begin … processing/close, seq-numbered, replayable) whose
 * runtime is the WorkflowExecutor. The chat core starts segments (init_data, an answer, a
 * check_status that re-sends a request, a stop of a waiting run); this module is what a segment
 * does between begin and close, and where runs are kept between segments:
 *
 * - a stored conversation's run lives in `workflow_runs` (saved whenever a segment ends: waiting for
 *   input, success, failed or stopped), so an answer may come after a disconnect or a restart, or to
 *   another instance — never from memory;
 * - a debug run (no chat_id) lives in this process's memory under its debug key, and is forgotten
 *   with it (the socket closed, the API request ended).
 *
 * Persistence, as Bisheng's (reference §5.7): input/over, output_msg/over, output_with_choose_msg/over,
 * output_with_input_msg/over and stream_msg/end frames become message rows (is_bot 1, type and
 * category of the frame, message = the frame message as JSON); the row is written before the frame
 * is published, and the frame carries its `message_id`. node_run, guide_*, stream_msg/stream are
 * not stored. A stopped llm node's partial stream_msg/end is marked `break_answer` (remark and
 * extra.interrupted). The segment's processing/close says how the run stands:
 * `extra: {run_id, run_status, usage}` (usage: the tokens of this segment).
 */
import type { Config } from '../config/config.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { ChatEventBody } from '../domain/events.ts';
import type { LlmProvider, LlmUsage, Tool } from '../domain/llm.ts';
import type { AppSpec, WorkflowGraph } from '../domain/types.ts';
import { WorkflowExecutor, type PendingInput, type RunStatus, type WorkflowAnswer, type WorkflowContext, type WorkflowRunState } from '../runtimes/workflow/executor.ts';
import { isRecord, type JsonValue } from '../runtimes/workflow/workflow-graph.ts';
import type { Repos } from '../storage/repos.ts';
import type { NewMessage, WorkflowRunRow } from '../storage/tables.ts';
import { BREAK_ANSWER } from './context.ts';

/** A run between segments: its state and where it is kept. */
export interface KeptRun {
  state: WorkflowRunState;
  /** how the store sees it: `running` while a segment (here or elsewhere) has claimed it */
  status: RunStatus;
  appId: string;
  userId: number;
  /** the stored row (compare-and-set token of `claim`); null for a debug run kept in memory */
  row: WorkflowRunRow | null;
}

/** The turn a segment runs in, as the chat core hands it over. */
export interface Segment {
  key: string;
  turnId: string;
  /** null: a debug run (nothing stored) */
  chatId: string | null;
  appId: string;
  userId: number;
  /** the app version the run uses; null: the draft */
  version: number | null;
  signal: AbortSignal;
  emit(body: ChatEventBody): void;
  /** a message row of this turn with the common fields filled in */
  row(fields: Pick<NewMessage, 'is_bot' | 'type' | 'category' | 'message'> & Partial<NewMessage>): NewMessage;
}

/** What the processing/close of a segment carries in `extra`. */
export type SegmentEnd = { run_id: string; run_status: RunStatus; usage: LlmUsage };

type Frame = Extract<ChatEventBody, { kind: 'frame' }>;

/** Frames that become message rows (category/type). */
const PERSISTED = new Set(['input/over', 'output_msg/over', 'output_with_choose_msg/over', 'output_with_input_msg/over', 'stream_msg/end']);
const ZERO: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

export class WorkflowTurns {
  /** debug runs by key: only runs that wait for input are kept */
  private readonly memory = new Map<string, { state: WorkflowRunState; appId: string; userId: number }>();

  constructor(private readonly deps: {
    config: Config;
    repos: Repos;
    executor: WorkflowExecutor;
    providers: { get(name: string): LlmProvider };
    tools: { get(name: string): Tool | undefined };
    log?: { error(obj: object, msg: string): void } | undefined;
  }) {}

  /** workflow.input_timeout (minutes) in ms */
  get inputTimeoutMs(): number {
    return this.deps.config.workflow.input_timeout * 60_000;
  }

  expired(state: WorkflowRunState): boolean {
    return WorkflowExecutor.expired(state, this.inputTimeoutMs);
  }

  /** The run of a conversation (from the database) or of a debug key (from memory). */
  async load(key: string): Promise<KeptRun | null> {
    if (isDebugKey(key)) {
      const m = this.memory.get(key);
      return m ? { ...m, status: m.state.status, row: null } : null;
    }
    const row = await this.deps.repos.workflowRuns.get(key);
    if (!row) return null;
    let state: WorkflowRunState;
    try {
      state = JSON.parse(row.state) as WorkflowRunState;
    } catch {
      return null;
    }
    return { state, status: row.status, appId: row.app_id, userId: row.user_id, row };
  }

  /**
   * Takes a waiting run for one segment: false when someone else took or changed it since it was
   * read (another instance answering the same request). Debug runs are only reachable from here.
   */
  async claim(run: KeptRun): Promise<boolean> {
    return run.row ? this.deps.repos.workflowRuns.claim(run.row) : true;
  }

  /** Gives back a claimed run that no segment ran for: it waits again as it did. */
  async unclaim(run: KeptRun, seg: Pick<Segment, 'chatId' | 'appId' | 'userId' | 'version'>): Promise<void> {
    if (run.row) await this.save(seg, run.state);
  }

  /** Drops a debug key's run (its socket or request is gone). */
  forget(key: string): void {
    this.memory.delete(key);
  }

  /** init_data: runs a new run from its start node. */
  start(seg: Segment, spec: AppSpec, graph: unknown, inputs: Record<string, JsonValue>): Promise<SegmentEnd> {
    return this.advance(seg, null, (ctx) => this.deps.executor.start(graph as WorkflowGraph, ctx, inputs), spec);
  }

  /** An answer to the waiting request: the run goes on from there (the answer row is stored by the core). */
  answer(seg: Segment, spec: AppSpec, run: KeptRun, answer: WorkflowAnswer): Promise<SegmentEnd> {
    return this.advance(seg, run.state, (ctx) => this.deps.executor.resume(run.state, answer, ctx), spec);
  }

  /** check_status on a waiting run: sends its request again (same message_id); an expired one fails the run (10527). */
  resend(seg: Segment, run: KeptRun, expired: boolean): Promise<SegmentEnd> {
    return this.advance(seg, run.state, async () => {
      const pending = run.state.pending!;
      if (expired) throw timeoutError(pending, this.inputTimeoutMs);
      seg.emit({ kind: 'frame', ...pending.frame, messageId: pending.message_id });
      return run.state;
    }, null, { store: false });
  }

  /** Stop of a run that waits for input: it ends as stopped. */
  stop(seg: Segment, run: KeptRun): Promise<SegmentEnd> {
    return this.advance(seg, run.state, async () => this.deps.executor.stop(run.state), null);
  }

  /**
   * Runs one step of the engine and keeps what it leaves. A failure is sent as the segment's error
   * frame and kept as a failed run; a bad answer (10400) leaves the run waiting as it was.
   */
  private async advance(
    seg: Segment, before: WorkflowRunState | null,
    step: (ctx: WorkflowContext) => Promise<WorkflowRunState>, spec: AppSpec | null, opts: { store?: boolean } = {},
  ): Promise<SegmentEnd> {
    let after: WorkflowRunState;
    let error: AppError | null = null;
    try {
      after = await step(this.context(seg, spec));
    } catch (err) {
      error = this.workflowError(err, seg);
      after = error.code === 'invalid_request' && before ? before : WorkflowExecutor.failed(before ?? blankRun(), error);
    }
    if (opts.store !== false || error) await this.keep(seg, after);
    if (error) seg.emit({ kind: 'error', code: error.code, message: error.message, data: error.data ?? null });
    return { run_id: after.run_id, run_status: after.status, usage: minus(after.usage, before?.usage ?? ZERO) };
  }

  /** Errors of a run are workflow errors (10527/10528/10531/10541) or a refused answer (10400); anything else is logged and becomes 10541. */
  private workflowError(err: unknown, seg: Segment): AppError {
    const e = toAppError(err);
    if (e.code.startsWith('workflow_') || e.code === 'invalid_request') return e;
    if (e.code === 'internal') this.deps.log?.error({ err, chat_id: seg.chatId, turn_id: seg.turnId }, 'workflow run failed');
    return new AppError('workflow_failed', e.code === 'internal' ? 'Workflow run failed' : e.message, { cause: err });
  }

  private context(seg: Segment, spec: AppSpec | null): WorkflowContext {
    const { config, providers, tools } = this.deps;
    return {
      emit: (body) => this.publish(seg, body),
      signal: seg.signal,
      providers,
      defaultModel: spec?.model ?? { provider: 'default' },
      tools,
      maxSteps: config.workflow.max_steps,
      chatId: seg.chatId ?? undefined,
      inputTimeoutMs: this.inputTimeoutMs,
    };
  }

  /** Stores the frames that last (before they are sent, so they carry their message_id), then publishes. */
  private async publish(seg: Segment, body: ChatEventBody): Promise<void> {
    if (body.kind === 'frame' && seg.chatId !== null && PERSISTED.has(`${body.category}/${body.type}`)) {
      await this.store(seg, body);
    }
    seg.emit(body);
  }

  private async store(seg: Segment, frame: Frame): Promise<void> {
    const interrupted = isRecord(frame.message) && frame.message.interrupted === true;
    const [row] = await this.deps.repos.messages.insertMany([seg.row({
      is_bot: 1, type: frame.type, category: frame.category, message: JSON.stringify(frame.message),
      files: JSON.stringify(frame.files ?? []),
      remark: interrupted ? BREAK_ANSWER : '', extra: JSON.stringify(interrupted ? { interrupted: true } : {}),
    })]);
    frame.messageId = row!.id;
  }

  /** Where the run waits until its next segment: its row, or memory for a debug run (only while it waits). */
  private async keep(seg: Segment, state: WorkflowRunState): Promise<void> {
    if (seg.chatId === null) {
      if (state.status === 'input') this.memory.set(seg.key, { state, appId: seg.appId, userId: seg.userId });
      else this.memory.delete(seg.key);
      return;
    }
    await this.save(seg, state);
  }

  private async save(seg: Pick<Segment, 'chatId' | 'appId' | 'userId' | 'version'>, state: WorkflowRunState): Promise<void> {
    const pending = state.status === 'input' ? state.pending : null;
    await this.deps.repos.workflowRuns.save({
      chat_id: seg.chatId!, run_id: state.run_id, app_id: seg.appId, version: seg.version, user_id: seg.userId,
      status: state.status as WorkflowRunRow['status'], state: JSON.stringify(state), node_id: pending?.node_id ?? null,
      expires_at: pending ? new Date(pending.requested_at + this.inputTimeoutMs).toISOString() : null,
    });
  }
}

export const isDebugKey = (key: string): boolean => key.startsWith('debug:');

/**
 * The answer data a plain question gives a waiting request: the text for a dialog input, the
 * choice or edited text for an output node; a form needs its fields as a JSON object.
 * @throws AppError 10400 for a form answered with anything but a JSON object
 */
export function answerFromText(pending: PendingInput, text: string): Record<string, unknown> {
  switch (pending.kind) {
    case 'dialog': return { user_input: text };
    case 'choose': return { output_result: text.trim() };
    case 'edit': return { output_result: text };
    case 'form': {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        value = undefined;
      }
      if (isRecord(value)) return value;
      const keys = pending.schema.kind === 'form' ? pending.schema.input_schema.value.map((i) => i.key) : [];
      throw AppError.invalid([{ path: 'inputs/input', message: `this step asks for a form: answer with a JSON object of its fields (${keys.join(', ')})` }], 'The workflow waits for a form');
    }
  }
}

function timeoutError(pending: PendingInput, timeoutMs: number): AppError {
  const name = typeof pending.frame.message.name === 'string' ? pending.frame.message.name : pending.node_id;
  return new AppError('workflow_input_timeout', `node "${name}" waited for input longer than ${formatMinutes(timeoutMs)}`, { data: { node_id: pending.node_id, node_name: name } });
}

const formatMinutes = (ms: number) => (ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`);

/** The state kept for a run that failed before the engine made one (its graph did not validate): the graph is not kept. */
function blankRun(): WorkflowRunState {
  const now = Date.now();
  return {
    version: 1, run_id: crypto.randomUUID().replaceAll('-', ''), status: 'waiting', graph: { nodes: [], edges: [] },
    variables: {}, steps: {}, queue: [], pending: null, usage: ZERO, error: null, created_at: now, updated_at: now,
  };
}

function minus(a: LlmUsage, b: LlmUsage): LlmUsage {
  return { prompt_tokens: a.prompt_tokens - b.prompt_tokens, completion_tokens: a.completion_tokens - b.completion_tokens, total_tokens: a.total_tokens - b.total_tokens };
}
