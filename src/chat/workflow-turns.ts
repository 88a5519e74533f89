/**
 * The turns of workflow apps. A run advances in segments, each a turn (begin … close, seq-numbered,
 * replayable): init_data starts a run, an answer continues it, check_status sends a pending request
 * again, a stop ends a waiting run. A segment that leaves the run waiting also ends with close, whose
 * `extra.run_status` is "input": the conversation is free again, the client unlocks its input, and
 * the answer starts the next segment. What a segment does is workflow-segments.ts.
 */
import { AppError } from '../domain/errors.ts';
import { isRecord, type JsonValue, type Principal } from '../domain/types.ts';
import type { PendingInput } from '../runtimes/workflow/executor.ts';
import { answerText, checkAnswer } from '../runtimes/workflow/input-requests.ts';
import type { MessageRepo } from '../storage/message-repo.ts';
import { idsOf, type AskInput } from './chat-turns.ts';
import { questionRow } from './message-rows.ts';
import type { RateLimiter } from './rate-limiter.ts';
import type { KeptRun, RunStore } from './run-store.ts';
import type { ChatTarget, Targets } from './targets.ts';
import type { Turn, TurnEmit, TurnIds, TurnRegistry, TurnStarted } from './turn-registry.ts';
import type { TurnSeqs } from './turn-seqs.ts';
import { ownerOf, type Segment, type WorkflowSegments } from './workflow-segments.ts';

/** init_data (PROTOCOL.md §3.1): a new workflow run. */
export interface WorkflowStartInput {
  principal: Principal;
  target: ChatTarget;
  scratchKey?: string | undefined;
  /** a graph sent by the client: used only in debug mode on the draft (an editor's own test), else ignored */
  graph?: unknown;
  /** values of the start node's declared variables */
  inputs?: Record<string, JsonValue>;
  /** the question that started the run (a question frame to a workflow app), stored as a question row */
  question?: { text: string; inputs: Record<string, unknown> };
}

/** `input` (PROTOCOL.md §3.1): the answer to the request a run waits for. */
export interface WorkflowAnswerInput {
  principal: Principal;
  target: ChatTarget;
  scratchKey?: string | undefined;
  nodeId: string;
  data: Record<string, unknown>;
  /** the text the client shows for the answer (the question row's text) */
  message?: string | undefined;
  /** the request's message id, as the client knows it (stored with the answer row) */
  messageId?: number | string | undefined;
}

/** check_status: a segment sending the pending request again, or how the run stands when nothing is to be sent. */
export type WorkflowStatus =
  | { started: TurnStarted }
  | { started: null; run_id: string | null; run_status: string | null; node_id: string | null };

const busyElsewhere = () => new AppError('conflict', 'The workflow run is being continued elsewhere');

export class WorkflowTurns {
  constructor(private readonly deps: {
    turns: TurnRegistry; seqs: TurnSeqs; rate: RateLimiter; targets: Targets; messages: MessageRepo; segments: WorkflowSegments;
    /** where runs wait: a stored conversation's, and an unstored one's */
    runs: { stored: RunStore; scratch: RunStore };
  }) {}

  private runsOf(chatId: string | null): RunStore {
    return chatId === null ? this.deps.runs.scratch : this.deps.runs.stored;
  }

  private segment(turn: Turn, ids: TurnIds, version: number | null, emit: TurnEmit): Segment {
    return { key: turn.key, turnId: turn.turnId, ids, version, signal: turn.signal, emit, runs: this.runsOf(ids.chatId) };
  }

  /**
   * init_data: starts a new run. A run that still waits for input must be answered or stopped
   * first (10409), as Bisheng's client does on "restart" (stop, then init_data).
   */
  async start(input: WorkflowStartInput, key: string): Promise<TurnStarted> {
    const { principal, target } = input;
    const { segments, messages } = this.deps;
    const ids = idsOf(principal, target);
    return (await this.deps.turns.begin(key, async (turn) => {
      await this.deps.rate.consume(principal.id);
      const current = await this.runsOf(target.chatId).load(key);
      if (current?.status === 'input' && current.userId === principal.id && !segments.expired(current.state)) {
        throw new AppError('conflict', 'A workflow run waits for input in this conversation: answer it, or stop it first');
      }
      if (target.chatId !== null) await this.deps.targets.ensure(principal, target, input.question?.text ?? target.app.name);
      const floor = await this.deps.seqs.floor(key, target.chatId, turn.turnId);
      if (target.chatId !== null && input.question) await messages.insert(questionRow(ids, turn.turnId, JSON.stringify(input.question.inputs)));
      // a client's graph only where the caller edits the draft anyway (debug mode needs an editor)
      const graph = input.graph !== undefined && target.version === null ? input.graph : target.spec.graph;
      return { ids, floor, work: (emit) => segments.start(this.segment(turn, ids, target.version, emit), target.spec, graph, input.inputs ?? {}) };
    }))!;
  }

  /**
   * `input`: answers the request the run waits for and runs on. The answer is checked before
   * anything is stored (10400 lists every problem; the run keeps waiting); it is stored as a
   * `question` row (is_bot 0). After workflow.input_timeout the run fails with 10527 instead.
   */
  async answer(input: WorkflowAnswerInput, key: string): Promise<TurnStarted> {
    const { principal, target } = input;
    const ids = idsOf(principal, target);
    const runs = this.runsOf(target.chatId);
    return (await this.deps.turns.begin(key, async (turn) => {
      await this.deps.rate.consume(principal.id);
      const run = await runs.load(key);
      const mine = run !== null && run.userId === principal.id && run.appId === target.app.id;
      if (mine && run.status === 'running') throw busyElsewhere();
      const pending = mine && run.status === 'input' ? run.state.pending : null;
      if (!run || !pending) {
        throw AppError.invalid([{ path: 'data', message: `no workflow run waits for input here${run ? ` (the run is ${run.status})` : ''}` }], 'No workflow run waits for input');
      }
      if (input.nodeId !== pending.node_id) {
        throw AppError.invalid([{ path: `data/${input.nodeId}`, message: `the run waits for node "${pending.node_id}"` }], 'The workflow waits for another node');
      }
      const values = this.deps.segments.expired(run.state) ? null : checkAnswer(pending.schema, input.data);
      // one continuation per request, whichever instance gets the answer first
      const prepared = await this.whileClaimed(runs, key, run, ids, target.version, async () => {
        if (target.chatId !== null && !(await this.deps.targets.own(principal, target))) throw AppError.notFound('Conversation not found');
        const floor = await this.deps.seqs.floor(key, target.chatId, turn.turnId);
        if (target.chatId !== null && values) {
          await this.deps.messages.insert(questionRow(ids, turn.turnId, answerText(pending.schema, values, input.message), {
            extra: JSON.stringify({ node_id: pending.node_id, input_message_id: input.messageId ?? pending.message_id }),
          }));
        }
        const answer = { node_id: input.nodeId, data: input.data, message: input.message };
        return { ids, floor, work: (emit: TurnEmit) => this.deps.segments.answer(this.segment(turn, ids, target.version, emit), target.spec, run, answer) };
      });
      if (!prepared) throw busyElsewhere();
      return prepared;
    }))!;
  }

  /**
   * Prepares a segment of `run` with the run claimed for it (null: another instance claimed it
   * first). Should preparing fail (the conversation taken elsewhere, the database), the claim is
   * given back, or the run would stay "running" with nothing running it.
   */
  private async whileClaimed<T>(runs: RunStore, key: string, run: KeptRun, ids: TurnIds, version: number | null, prepare: () => Promise<T>): Promise<T | null> {
    if (!(await runs.claim(run))) return null;
    try {
      return await prepare();
    } catch (err) {
      await runs.unclaim(key, run, ownerOf({ ids, version })).catch(() => undefined);
      throw err;
    }
  }

  /**
   * check_status (after a reconnect or a restart): a run that waits for input gets a segment that
   * sends its request again, with its message id (an expired one fails with 10527). Otherwise
   * nothing is sent in a turn; the caller gets how the run stands.
   */
  async check(principal: Principal, target: ChatTarget, key: string): Promise<WorkflowStatus> {
    const runs = this.runsOf(target.chatId);
    const run = await runs.load(key);
    const mine = run !== null && run.userId === principal.id && run.appId === target.app.id;
    const status = (s: string | null): WorkflowStatus => ({ started: null, run_id: mine ? run.state.run_id : null, run_status: s, node_id: mine ? (run.state.pending?.node_id ?? null) : null });
    if (this.deps.turns.isRunning(key)) return status('running');
    if (!mine) return status(null);
    if (run.status !== 'input' || !run.state.pending) return status(run.status);
    const ids = idsOf(principal, target);
    const expired = this.deps.segments.expired(run.state);
    let started: TurnStarted | null;
    try {
      started = await this.deps.turns.begin(key, async (turn) => {
        const prepare = async () => {
          if (target.chatId !== null) await this.deps.targets.own(principal, target);
          const floor = await this.deps.seqs.floor(key, target.chatId, turn.turnId);
          return { ids, floor, work: (emit: TurnEmit) => this.deps.segments.resend(this.segment(turn, ids, target.version, emit), run, expired) };
        };
        // an expired request fails the run: claimed, as an answer would
        return expired ? this.whileClaimed(runs, key, run, ids, target.version, prepare) : prepare();
      });
    } catch (err) {
      if (err instanceof AppError && err.code === 'conflict') return status('running');
      throw err;
    }
    return started ? { started } : status('running');
  }

  /** A question to a workflow app answers the request its run waits for, or starts a new run. */
  async ask(input: AskInput, key: string): Promise<TurnStarted> {
    const { principal, target } = input;
    const run = await this.runsOf(target.chatId).load(key);
    const pending = run?.status === 'input' && run.userId === principal.id && run.appId === target.app.id ? run.state.pending : null;
    if (pending) {
      // `inputs.data` carries structured answers (a form's fields); else the text answers
      const data = isRecord(input.inputs.data) ? input.inputs.data : answerFromText(pending, input.text);
      return this.answer({ principal, target, nodeId: pending.node_id, data }, key);
    }
    // the start node's declared variables: `inputs.variables`, and `input` (the question's text)
    const variables = isRecord(input.inputs.variables) ? (input.inputs.variables as Record<string, JsonValue>) : {};
    return this.start({ principal, target, inputs: { ...variables, input: input.text }, question: { text: input.text, inputs: input.inputs } }, key);
  }

  /** Stops a run that waits for input (nothing runs it): a segment stores it as stopped. @returns whether one waited */
  async stopWaiting(key: string, chatId: string | null): Promise<boolean> {
    const runs = this.runsOf(chatId);
    const run = await runs.load(key);
    if (!run || run.status !== 'input' || this.deps.turns.isRunning(key)) return false;
    const ids: TurnIds = { chatId, flowId: run.appId, userId: run.userId };
    const version = run.row?.version ?? null;
    const started = await this.deps.turns.begin(key, (turn) => this.whileClaimed(runs, key, run, ids, version, async () => {
      const floor = await this.deps.seqs.floor(key, chatId, turn.turnId);
      return { ids, floor, work: (emit: TurnEmit) => this.deps.segments.stop(this.segment(turn, ids, version, emit), run) };
    }));
    if (!started) return false;
    await this.deps.turns.settled(key);
    return true;
  }

  /** Drops what an unstored conversation's run kept (its scratch key is gone). */
  forget(key: string): void {
    this.deps.runs.scratch.forget(key);
  }
}

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
