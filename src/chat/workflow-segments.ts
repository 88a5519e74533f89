/**
 * What a workflow segment does between its begin and close. A workflow run advances in segments,
 * each one turn of the chat core (workflow-turns.ts starts them): init_data, an answer, a
 * check_status that sends the request again, a stop of a waiting run. Between segments the run
 * waits in a RunStore (run-store.ts).
 *
 * Persistence, as Bisheng's (reference §5.7): a request, an output and an llm node's whole text
 * become message rows (message-rows.ts), written before their event is published, so the event
 * carries its `messageId`. Node runs, guides and streamed deltas are not stored. The segment's close
 * says how the run stands: `extra: {run_id, run_status, usage}` (usage: this segment's tokens).
 */
import type { Config } from '../config/config.ts';
import type { Clock } from '../domain/clock.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { WorkflowEventBody } from '../domain/events.ts';
import type { LlmProvider, LlmUsage, Tool } from '../domain/llm.ts';
import type { AppSpec, JsonValue, WorkflowGraph } from '../domain/types.ts';
import {
  inputTimeout, requestOf, WorkflowExecutor, type RunStatus, type WorkflowAnswer, type WorkflowContext, type WorkflowRunState,
} from '../runtimes/workflow/executor.ts';
import type { MessageRepo } from '../storage/message-repo.ts';
import { isPersisted, workflowRow } from './message-rows.ts';
import type { KeptRun, RunOwner, RunStore } from './run-store.ts';
import { isLost, type TurnEmit, type TurnIds } from './turn-registry.ts';

/** The turn a segment runs in, as the workflow turns hand it over. */
export interface Segment {
  key: string;
  turnId: string;
  ids: TurnIds;
  /** the app version the run uses; null: the draft */
  version: number | null;
  signal: AbortSignal;
  emit: TurnEmit;
  /** where the run waits until its next segment */
  runs: RunStore;
}

/** What the close of a segment carries in `extra`. */
export type SegmentEnd = { run_id: string; run_status: RunStatus; usage: LlmUsage };

const ZERO: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

export const ownerOf = (seg: Pick<Segment, 'ids' | 'version'>): RunOwner => ({ appId: seg.ids.flowId, userId: seg.ids.userId, version: seg.version });

export class WorkflowSegments {
  constructor(private readonly deps: {
    config: Config;
    messages: MessageRepo;
    executor: WorkflowExecutor;
    providers: { get(name: string): LlmProvider };
    tools: { get(name: string): Tool | undefined };
    clock: Clock;
    log?: { error(obj: object, msg: string): void } | undefined;
  }) {}

  /** workflow.input_timeout (minutes) in ms */
  get inputTimeoutMs(): number {
    return this.deps.config.workflow.input_timeout * 60_000;
  }

  expired(state: WorkflowRunState): boolean {
    return WorkflowExecutor.expired(state, this.inputTimeoutMs, this.deps.clock.now());
  }

  /** init_data: runs a new run from its start node. */
  start(seg: Segment, spec: AppSpec, graph: unknown, inputs: Record<string, JsonValue>): Promise<SegmentEnd> {
    return this.advance(seg, null, (ctx) => this.deps.executor.start(graph as WorkflowGraph, ctx, inputs), spec);
  }

  /** An answer to the waiting request: the run goes on from there (the answer row is stored by the caller). */
  answer(seg: Segment, spec: AppSpec, run: KeptRun, answer: WorkflowAnswer): Promise<SegmentEnd> {
    return this.advance(seg, run.state, (ctx) => this.deps.executor.resume(run.state, answer, ctx), spec);
  }

  /** check_status on a waiting run: sends its request again (same message_id); an expired one fails the run (10527). */
  resend(seg: Segment, run: KeptRun, expired: boolean): Promise<SegmentEnd> {
    return this.advance(seg, run.state, async () => {
      const pending = run.state.pending!;
      if (expired) throw inputTimeout(pending, this.inputTimeoutMs);
      seg.emit(requestOf(pending));
      return run.state;
    }, null, { keep: false });
  }

  /** Stop of a run that waits for input: it ends as stopped. */
  stop(seg: Segment, run: KeptRun): Promise<SegmentEnd> {
    return this.advance(seg, run.state, async () => this.deps.executor.stop(run.state, this.deps.clock.now()), null);
  }

  /**
   * Runs one step of the engine and keeps what it leaves. A failure is sent as the segment's error
   * and kept as a failed run; a bad answer (10400) leaves the run waiting as it was.
   */
  private async advance(
    seg: Segment, before: WorkflowRunState | null,
    step: (ctx: WorkflowContext) => Promise<WorkflowRunState>, spec: AppSpec | null, opts: { keep?: boolean } = {},
  ): Promise<SegmentEnd> {
    let after: WorkflowRunState;
    let error: AppError | null = null;
    try {
      after = await step(this.context(seg, spec));
    } catch (err) {
      error = this.workflowError(err, seg);
      after = error.code === 'invalid_request' && before ? before : WorkflowExecutor.failed(before ?? this.blankRun(), error, this.deps.clock.now());
    }
    // a lost segment's run was put back to waiting by the instance that ended it
    if ((opts.keep !== false || error) && !isLost(seg.signal)) await seg.runs.keep(seg.key, ownerOf(seg), after);
    if (error) seg.emit({ kind: 'error', code: error.code, message: error.message, data: error.data ?? null });
    return { run_id: after.run_id, run_status: after.status, usage: minus(after.usage, before?.usage ?? ZERO) };
  }

  /** Errors of a run are workflow errors (10527/10528/10531/10541) or a refused answer (10400); anything else is logged and becomes 10541. */
  private workflowError(err: unknown, seg: Segment): AppError {
    const e = toAppError(err);
    if (e.code.startsWith('workflow_') || e.code === 'invalid_request') return e;
    if (e.code === 'internal') this.deps.log?.error({ err, chat_id: seg.ids.chatId, turn_id: seg.turnId }, 'workflow run failed');
    return new AppError('workflow_failed', e.code === 'internal' ? 'Workflow run failed' : e.message, { cause: err });
  }

  private context(seg: Segment, spec: AppSpec | null): WorkflowContext {
    const { config, providers, tools, clock } = this.deps;
    return {
      emit: (body) => this.publish(seg, body),
      signal: seg.signal,
      providers,
      defaultModel: spec?.model ?? { provider: 'default' },
      tools,
      maxSteps: config.workflow.max_steps,
      chatId: seg.ids.chatId ?? undefined,
      now: () => clock.now(),
      inputTimeoutMs: this.inputTimeoutMs,
    };
  }

  /** Stores the events that last (before they are sent, so they carry their message id), then publishes. */
  private async publish(seg: Segment, body: WorkflowEventBody): Promise<void> {
    if (isLost(seg.signal)) return;
    if (seg.ids.chatId !== null && isPersisted(body)) {
      const [row] = await this.deps.messages.insertMany([workflowRow(seg.ids, seg.turnId, body)]);
      body.messageId = row!.id;
    }
    seg.emit(body);
  }

  /** The state kept for a run that failed before the engine made one (its graph did not validate): the graph is not kept. */
  private blankRun(): WorkflowRunState {
    const now = this.deps.clock.now();
    return {
      version: 1, run_id: crypto.randomUUID().replaceAll('-', ''), status: 'waiting', graph: { nodes: [], edges: [] },
      variables: {}, steps: {}, queue: [], pending: null, usage: ZERO, error: null, created_at: now, updated_at: now,
    };
  }
}

function minus(a: LlmUsage, b: LlmUsage): LlmUsage {
  return { prompt_tokens: a.prompt_tokens - b.prompt_tokens, completion_tokens: a.completion_tokens - b.completion_tokens, total_tokens: a.total_tokens - b.total_tokens };
}
