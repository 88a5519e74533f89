import { randomUUID } from 'node:crypto';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import type { AppService } from '../apps/app-service.ts';
import { authorizeAppChat } from '../auth/policy.ts';
import type { Bus } from '../bus/bus.ts';
import type { Config } from '../config/config.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { ChatEventBody } from '../domain/events.ts';
import type { LlmMessage, LlmProvider, LlmUsage, Tool } from '../domain/llm.ts';
import { FLOW_TYPE, isHexId, type AppKind, type AppSpec, type Principal } from '../domain/types.ts';
import { AssistantRuntime } from '../runtimes/assistant-runtime.ts';
import type { Runtime } from '../runtimes/runtime.ts';
import type { WorkflowExecutor } from '../runtimes/workflow/executor.ts';
import { answerText, checkAnswer } from '../runtimes/workflow/input-requests.ts';
import { isRecord, type JsonValue } from '../runtimes/workflow/workflow-graph.ts';
import type { Repos } from '../storage/repos.ts';
import type { ContextRow, NewMessageInput } from '../storage/message-repo.ts';
import type { AppRow, ConversationRow, NewMessage } from '../storage/tables.ts';
import { BREAK_ANSWER, buildContext, CLEAR_MARKER, questionText, readContext } from './context.ts';
import { titleFrom } from './conversation-service.ts';
import { Moderation } from './moderation.ts';
import type { TurnControl } from './turn-control.ts';
import { answerFromText, isDebugKey, WorkflowTurns, type KeptRun, type Segment } from './workflow-turns.ts';

export interface ProviderLookup {
  get(name: string): LlmProvider;
}

export interface ToolLookup {
  resolve(names: string[]): { tools: Tool[]; unknown: string[] };
  get(name: string): Tool | undefined;
}

/** A conversation the caller may chat in, resolved at connect or per frame. */
export interface ChatTarget {
  app: AppRow;
  spec: AppSpec;
  /** null: debug mode on the draft — nothing is stored */
  chatId: string | null;
  /** the published version the spec is from; null: the draft (debug mode) */
  version: number | null;
  /** the stored conversation as resolveTarget read it (its owner checked); null: not created yet, undefined: not read */
  conversation?: ConversationRow | null | undefined;
}

export interface AskInput {
  principal: Principal;
  target: ChatTarget;
  /** the text of the question */
  text: string;
  /** the whole `inputs` object, stored as Bisheng does */
  inputs: Record<string, unknown>;
  clientMessageId?: string | undefined;
  /** the bus key of a debug turn (one per socket or request) */
  debugKey?: string;
  /** the context given by the caller (a stateless OpenAI-style request); otherwise read from the conversation */
  history?: LlmMessage[];
}

/** init_data (PROTOCOL.md §3.1): a new workflow run. */
export interface WorkflowStartInput {
  principal: Principal;
  target: ChatTarget;
  debugKey?: string | undefined;
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
  debugKey?: string | undefined;
  nodeId: string;
  data: Record<string, unknown>;
  /** the text the client shows for the answer (the question row's text) */
  message?: string | undefined;
  /** the request's message id, as the client knows it (stored with the answer row) */
  messageId?: number | string | undefined;
}

/** check_status: a segment re-sending the pending request, or how the run stands when nothing is to be sent. */
export type WorkflowStatus =
  | { started: TurnStarted }
  | { started: null; run_id: string | null; run_status: string | null; node_id: string | null };

export interface TurnStarted {
  key: string;
  turnId: string;
  /** the seq before the turn's first event: replaying after it yields the whole turn */
  fromSeq: number;
  /** a repeated client_message_id: this is the earlier turn */
  duplicate: boolean;
}

interface RunningTurn {
  key: string;
  turnId: string;
  userId: number;
  controller: AbortController;
  done: Promise<void>;
}

/** Whose events a turn's are (and whose message rows). */
interface TurnIds {
  chatId: string | null;
  flowId: string;
  userId: number;
}

type TurnEmit = (body: ChatEventBody) => void;
/** What a chat answer starts from: its stored question, the context, and the input review's reply if it blocked the question. */
type ChatState = { questionId: Promise<number | null>; history: LlmMessage[]; blocked: string | null };
/** What a turn does between processing/begin and processing/close; what it returns goes into the close frame's `extra`. */
type TurnWork = (emit: TurnEmit) => Promise<Record<string, unknown> | void>;

const SEQ_RESERVE = 10_000;

/**
 * The chat core: starts turns, runs them on a runtime, persists what must last, and publishes
 * every event on the bus. Transports only call this and watch the bus.
 *
 * Every turn has one life cycle (`take` the conversation → prepare and store what comes first →
 * `launch` → processing/begin … processing/close → release): a chat or assistant answer runs on the
 * AssistantRuntime; a workflow *segment* (init_data, an answer, check_status re-sending a request,
 * stop of a waiting run) runs on the workflow executor (workflow-turns.ts). A workflow segment ends
 * with processing/close also when the run then waits for input (`extra.run_status: "input"`): the
 * conversation is free again, the client unlocks its input, and the answer starts the next segment.
 */
export class ChatService implements TurnControl {
  private readonly running = new Map<string, RunningTurn>();
  private readonly clientIds = new Map<string, { turn: TurnStarted; expires: number }>();
  /** when expired client_message_ids are next swept out of `clientIds` (ms) */
  private nextClientIdSweep = 0;
  private readonly debugSeq = new Map<string, number>();
  private readonly limiter: RateLimiterMemory;
  private readonly moderation: Moderation;
  private readonly runtime: Runtime;
  private readonly workflows: WorkflowTurns;
  private readonly unsubscribeControl: () => void;
  private closing = false;

  constructor(private readonly deps: {
    config: Config; repos: Repos; bus: Bus; apps: AppService; providers: ProviderLookup; tools: ToolLookup;
    /** runs workflow apps (its code sandbox is the composition root's) */
    executor: WorkflowExecutor;
    log?: { error(obj: object, msg: string): void };
  }) {
    this.limiter = new RateLimiterMemory({ points: deps.config.chat.messages_per_minute, duration: 60 });
    this.moderation = new Moderation(deps.config.moderation);
    this.runtime = new AssistantRuntime();
    this.workflows = new WorkflowTurns({ config: deps.config, repos: deps.repos, executor: deps.executor, providers: deps.providers, tools: deps.tools, log: deps.log });
    this.unsubscribeControl = deps.bus.onControl((m) => {
      if (m.type === 'stop') this.running.get(m.key)?.controller.abort();
    });
  }

  /**
   * Resolves what a socket or request may chat with. With a chat_id: the published, online app and
   * a conversation that is the caller's (or new). Without: debug mode on the draft (editors only).
   */
  async resolveTarget(p: Principal, appId: string, opts: { chatId: string | null; kind?: AppKind | undefined; versionId?: number | undefined; stateless?: boolean }): Promise<ChatTarget> {
    // without a chat_id a turn is unstored: debug mode on the draft, or a stateless API call on the published app
    const draft = opts.chatId === null && !opts.stateless;
    if (opts.chatId !== null && !isHexId(opts.chatId)) throw AppError.invalid([{ path: 'chat_id', message: 'must be 32 hex characters' }], 'invalid chat_id');
    const app = authorizeAppChat(p, await this.deps.repos.apps.get(appId), { draft });
    if (opts.kind && app.kind !== opts.kind) throw new AppError('forbidden', 'app kind mismatch');
    let conversation: ConversationRow | null | undefined;
    if (opts.chatId !== null) {
      conversation = (await this.deps.repos.conversations.get(opts.chatId)) ?? null;
      if (conversation && (conversation.user_id !== p.id || conversation.is_delete || conversation.flow_id !== app.id)) throw new AppError('forbidden', 'no permission');
    }
    let spec: AppSpec;
    try {
      spec = await this.deps.apps.specFor(app, { draft, version: opts.versionId });
      this.deps.providers.get(spec.model.provider);
    } catch (err) {
      const e = toAppError(err);
      throw e.code === 'app_offline' || e.code === 'not_found' ? e : new AppError('app_unbuildable', 'draft does not build');
    }
    return { app, spec, chatId: opts.chatId, version: draft ? null : (opts.versionId ?? app.published_version), conversation };
  }

  isRunning(key: string): boolean {
    return this.running.has(key);
  }

  /**
   * Forgets the seq counter of a debug key nobody watches any more (an SSE or API request uses one
   * key per request; without this every stateless call would leave an entry behind).
   */
  forgetDebugKey(key: string): void {
    if (!key.startsWith('debug:')) return;
    const forget = () => {
      this.debugSeq.delete(key);
      this.workflows.forget(key);
    };
    const turn = this.running.get(key);
    if (turn) void turn.done.then(forget);
    else forget();
  }

  /** Starts a turn. Throws 10413 (too long), 10429 (rate), 10409 (one is running), 10400. */
  async ask(input: AskInput): Promise<TurnStarted> {
    const { principal, target } = input;
    if (this.closing) throw new AppError('busy', 'server shutting down');
    if (input.text.length > this.deps.config.chat.max_message_length) {
      throw new AppError('too_large', `Message longer than ${this.deps.config.chat.max_message_length} characters`);
    }
    if (!input.text.trim()) throw AppError.invalid([{ path: 'inputs/input', message: 'must not be empty' }], 'Empty question');
    const key = target.chatId ?? input.debugKey ?? `debug:${randomUUID()}`;
    const idKey = input.clientMessageId ? `${principal.id}:${key}:${input.clientMessageId}` : null;
    if (idKey) {
      const seen = this.clientIds.get(idKey);
      if (seen && seen.expires > Date.now()) return { ...seen.turn, duplicate: true };
    }
    if (target.app.kind === 'workflow') {
      const started = await this.askWorkflow(input, key);
      if (idKey) this.rememberClientId(idKey, started);
      return started;
    }
    // the conversation is taken before the first await, so a concurrent question gets 10409 before
    // anything of it is stored (a stop in the meantime aborts the turn before it runs)
    const turn = this.take(key, principal.id);

    let history: LlmMessage[] = input.history ?? [];
    const blocked = this.moderation.checkInput(input.text);
    try {
      await this.consumeRate(principal.id);
      // a conversation resolveTarget found missing has no messages yet: it is created with the question (storeQuestion)
      if (target.chatId !== null && target.conversation !== null && !input.history) {
        const window = target.spec.history_window ?? this.deps.config.chat.max_history_messages;
        // the context is read before the question is stored, so it holds only earlier messages
        const chatId = target.chatId;
        history = await readContext((limit) => this.deps.repos.messages.context(chatId, limit), window);
      }
    } catch (err) {
      this.running.delete(key);
      throw err;
    }
    // The turn starts now and its question is stored while the model works on the first token: the
    // turn's events wait (in drive) for the seq floor, and its answer for the question's id.
    const stored = this.storeQuestion(turn, input, blocked);
    const questionId = stored.then((s) => s.questionId);
    questionId.catch(() => undefined);
    this.start(turn, this.idsOf(principal, target), stored.then((s) => s.fromSeq), this.chatWork(turn, input, { questionId, history, blocked }));
    let started: TurnStarted;
    try {
      started = { key, turnId: turn.turnId, fromSeq: (await stored).fromSeq, duplicate: false };
    } catch (err) {
      // nothing of the turn was published; it ends (and frees the conversation) once its work has stopped
      turn.controller.abort();
      throw err;
    }
    if (idKey) this.rememberClientId(idKey, started);
    return started;
  }

  /**
   * Creates the conversation if it is new, stores the turn's question and reserves its seqs. The
   * upstream request never waits for their commit, not even on a conversation's first question: the
   * turn's work sends it within the same microtasks (on SQLite the statements themselves take tens
   * of µs; they commit when the event loop comes round).
   *
   * No yield before them: writes issued while the event loop handles I/O commit in this same
   * iteration (setImmediate), so the seq floor is usually known before the model's first token
   * arrives. Issued from a setImmediate callback instead, their commit would wait for the next
   * iteration — and the first token, held until the floor is known, with it: under load an
   * iteration takes milliseconds.
   *
   * A conversation another user created in the meantime is refused here (the turn then ends with
   * nothing published or stored; its context was empty, so the model saw nothing of theirs).
   */
  private async storeQuestion(turn: RunningTurn, input: AskInput, blocked: string | null): Promise<{ questionId: number | null; fromSeq: number }> {
    const { principal, target } = input;
    if (target.chatId === null) return { questionId: null, fromSeq: await this.seqFloor(turn.key, null) };
    const conv = await this.ensureConversation(principal, target, input.text);
    // independent writes, issued together (on SQLite they share one commit)
    const [questionId, fromSeq] = await Promise.all([
      this.deps.repos.messages.insert({
        ...this.rowBase(this.idsOf(principal, target), turn.turnId), is_bot: 0, type: 'human', category: 'question',
        message: JSON.stringify(input.inputs), sensitive_status: blocked ? 2 : 1,
      }),
      this.seqFloor(turn.key, conv),
      blocked ? this.deps.repos.conversations.update(target.chatId, { sensitive_status: 2 }) : undefined,
    ]);
    return { questionId, fromSeq };
  }

  /** Re-runs the last question of a conversation; the old answer stays as a sibling. */
  async regenerate(principal: Principal, target: ChatTarget): Promise<TurnStarted> {
    if (target.chatId === null) throw AppError.invalid([{ path: 'chat_id', message: 'required' }]);
    if (target.app.kind === 'workflow') throw AppError.invalid([{ path: 'action', message: 'a workflow app has no answer to regenerate; start a new run with init_data' }]);
    const key = target.chatId;
    const turn = this.take(key, principal.id);
    let question: ContextRow;
    let history: LlmMessage[];
    let fromSeq: number;
    try {
      // a socket may have resolved this chat_id before its conversation existed: check the owner now
      const conv = await this.ownConversation(principal, target);
      const rows = conv ? await this.deps.repos.messages.context(key, 200) : [];
      const qIndex = rows.findLastIndex((r) => r.category === 'question');
      if (qIndex < 0) throw AppError.notFound('No question to regenerate');
      question = rows[qIndex]!;
      await this.consumeRate(principal.id);
      const window = target.spec.history_window ?? this.deps.config.chat.max_history_messages;
      history = window > 0 ? buildContext(rows.slice(0, qIndex), window) : [];
      fromSeq = await this.seqFloor(key, conv);
    } catch (err) {
      this.running.delete(key);
      throw err;
    }
    const text = questionText(question.message);
    const inputs = { input: text };
    return this.launch(turn, this.idsOf(principal, target), fromSeq,
      this.chatWork(turn, { principal, target, text, inputs }, { questionId: Promise.resolve(question.id), history, blocked: this.moderation.checkInput(text) }));
  }

  /** Marks a fresh context: the next turn sees no earlier message. */
  async clearHistory(principal: Principal, target: ChatTarget): Promise<void> {
    if (target.chatId === null) return;
    if (!(await this.ownConversation(principal, target))) return;
    await this.deps.repos.messages.insert({
      ...this.rowBase(this.idsOf(principal, target), null), is_bot: 1, type: 'info', category: CLEAR_MARKER, message: '',
    });
  }

  /**
   * Stops the running turn of `key` on whichever instance runs it. A workflow run that waits for
   * input is stopped too: a short segment stores it as stopped and ends with processing/close.
   */
  async stop(key: string): Promise<boolean> {
    const local = this.running.get(key);
    if (local) {
      local.controller.abort();
      await local.done;
      return true;
    }
    if (await this.stopWaitingRun(key)) return true;
    this.deps.bus.sendControl({ type: 'stop', key });
    return false;
  }

  // ---- workflow segments ----

  /**
   * init_data: starts a new run of a workflow app. A run that still waits for input must be answered
   * or stopped first (10409), as Bisheng's client does on "restart" (stop, then init_data).
   */
  async startWorkflow(input: WorkflowStartInput): Promise<TurnStarted> {
    const { principal, target } = input;
    this.requireWorkflow(target);
    const key = this.keyOf(target, input.debugKey);
    const turn = this.take(key, principal.id);
    let fromSeq: number;
    try {
      await this.consumeRate(principal.id);
      const current = await this.workflows.load(key);
      if (current?.status === 'input' && current.userId === principal.id && !this.workflows.expired(current.state)) {
        throw new AppError('conflict', 'A workflow run waits for input in this conversation: answer it, or stop it first');
      }
      let conv: ConversationRow | null = null;
      if (target.chatId !== null) {
        conv = await this.ensureConversation(principal, target, input.question?.text ?? target.app.name);
        if (input.question) {
          await this.deps.repos.messages.insert({
            ...this.rowBase(this.idsOf(principal, target), turn.turnId), is_bot: 0, type: 'human', category: 'question', message: JSON.stringify(input.question.inputs),
          });
        }
      }
      fromSeq = await this.seqFloor(key, conv);
    } catch (err) {
      this.running.delete(key);
      throw err;
    }
    // a client's graph only where the caller edits the draft anyway (debug mode needs an editor)
    const graph = input.graph !== undefined && target.version === null ? input.graph : target.spec.graph;
    return this.launch(turn, this.idsOf(principal, target), fromSeq,
      (emit) => this.workflows.start(this.segment(turn, principal, target, emit), target.spec, graph, input.inputs ?? {}));
  }

  /**
   * `input`: answers the request the run waits for and runs on. The answer is checked before
   * anything is stored (10400 lists every problem; the run keeps waiting); it is stored as a
   * `question` row (is_bot 0). After workflow.input_timeout the run fails with 10527 instead.
   */
  async answerWorkflow(input: WorkflowAnswerInput): Promise<TurnStarted> {
    const { principal, target } = input;
    this.requireWorkflow(target);
    const key = this.keyOf(target, input.debugKey);
    const turn = this.take(key, principal.id);
    const ids = this.idsOf(principal, target);
    let run: KeptRun | null = null;
    let claimed = false;
    let fromSeq: number;
    try {
      await this.consumeRate(principal.id);
      const loaded = await this.workflows.load(key);
      const mine = loaded !== null && loaded.userId === principal.id && loaded.appId === target.app.id;
      if (mine && loaded.status === 'running') throw new AppError('conflict', 'The workflow run is being continued elsewhere');
      const pending = mine && loaded.status === 'input' ? loaded.state.pending : null;
      if (!loaded || !pending) {
        throw AppError.invalid([{ path: 'data', message: `no workflow run waits for input here${loaded ? ` (the run is ${loaded.status})` : ''}` }], 'No workflow run waits for input');
      }
      run = loaded;
      if (input.nodeId !== pending.node_id) {
        throw AppError.invalid([{ path: `data/${input.nodeId}`, message: `the run waits for node "${pending.node_id}"` }], 'The workflow waits for another node');
      }
      const expired = this.workflows.expired(loaded.state);
      const values = expired ? null : checkAnswer(pending.schema, input.data);
      // one continuation per request, whichever instance gets the answer first
      if (!(await this.workflows.claim(loaded))) throw new AppError('conflict', 'The workflow run is being continued elsewhere');
      claimed = true;
      const conv = target.chatId === null ? null : await this.ownConversation(principal, target);
      if (target.chatId !== null && !conv) throw AppError.notFound('Conversation not found');
      if (values && target.chatId !== null) {
        await this.deps.repos.messages.insert({
          ...this.rowBase(ids, turn.turnId), is_bot: 0, type: 'human', category: 'question', message: answerText(pending.schema, values, input.message),
          extra: JSON.stringify({ node_id: pending.node_id, input_message_id: input.messageId ?? pending.message_id }),
        });
      }
      fromSeq = await this.seqFloor(key, conv);
    } catch (err) {
      this.running.delete(key);
      if (claimed && run) await this.workflows.unclaim(run, this.segmentIds(principal, target)).catch(() => undefined);
      throw err;
    }
    const kept = run;
    return this.launch(turn, ids, fromSeq, (emit) => this.workflows.answer(this.segment(turn, principal, target, emit), target.spec, kept,
      { node_id: input.nodeId, data: input.data, message: input.message }));
  }

  /**
   * check_status (after a reconnect or a restart; the run is read from the database): a run that
   * waits for input gets a segment that sends its request again, with its message_id (an expired one
   * fails with 10527). Otherwise nothing is sent in a turn; the caller gets how the run stands.
   */
  async checkWorkflow(principal: Principal, target: ChatTarget, debugKey?: string): Promise<WorkflowStatus> {
    this.requireWorkflow(target);
    const key = this.keyOf(target, debugKey);
    const run = await this.workflows.load(key);
    const mine = run !== null && run.userId === principal.id && run.appId === target.app.id;
    const status = (s: string | null): WorkflowStatus => ({ started: null, run_id: mine ? run.state.run_id : null, run_status: s, node_id: mine ? (run.state.pending?.node_id ?? null) : null });
    if (this.running.has(key)) return status('running');
    if (!mine) return status(null);
    if (run.status !== 'input' || !run.state.pending) return status(run.status);
    let turn: RunningTurn;
    try {
      turn = this.take(key, principal.id);
    } catch {
      return status('running');
    }
    const expired = this.workflows.expired(run.state);
    let fromSeq: number;
    try {
      if (expired && !(await this.workflows.claim(run))) {
        this.running.delete(key);
        return status('running');
      }
      const conv = target.chatId === null ? null : (await this.ownConversation(principal, target));
      fromSeq = await this.seqFloor(key, conv);
    } catch (err) {
      this.running.delete(key);
      throw err;
    }
    return { started: this.launch(turn, this.idsOf(principal, target), fromSeq, (emit) => this.workflows.resend(this.segment(turn, principal, target, emit), run, expired)) };
  }

  /** A question to a workflow app answers the request its run waits for, or starts a new run. */
  private async askWorkflow(input: AskInput, key: string): Promise<TurnStarted> {
    const { principal, target } = input;
    const debugKey = target.chatId === null ? key : undefined;
    const run = await this.workflows.load(key);
    const pending = run?.status === 'input' && run.userId === principal.id && run.appId === target.app.id ? run.state.pending : null;
    if (pending) {
      // `inputs.data` carries structured answers (a form's fields); else the text answers
      const data = isRecord(input.inputs.data) ? input.inputs.data : answerFromText(pending, input.text);
      return this.answerWorkflow({ principal, target, debugKey, nodeId: pending.node_id, data });
    }
    // the start node's declared variables: `inputs.variables`, and `input` (the question's text)
    const variables = isRecord(input.inputs.variables) ? (input.inputs.variables as Record<string, JsonValue>) : {};
    return this.startWorkflow({ principal, target, debugKey, inputs: { ...variables, input: input.text }, question: { text: input.text, inputs: input.inputs } });
  }

  /** Stop of a run that waits for input (nothing runs it): a segment stores it as stopped. */
  private async stopWaitingRun(key: string): Promise<boolean> {
    const run = await this.workflows.load(key);
    if (!run || run.status !== 'input' || this.running.has(key)) return false;
    const ids: TurnIds = { chatId: isDebugKey(key) ? null : key, flowId: run.appId, userId: run.userId };
    const turn = this.take(key, run.userId);
    let fromSeq: number;
    try {
      if (!(await this.workflows.claim(run))) {
        this.running.delete(key);
        return false;
      }
      const conv = ids.chatId === null ? null : ((await this.deps.repos.conversations.get(ids.chatId)) ?? null);
      fromSeq = await this.seqFloor(key, conv);
    } catch (err) {
      this.running.delete(key);
      throw err;
    }
    this.launch(turn, ids, fromSeq, (emit) => this.workflows.stop(this.segmentFor(turn, ids, run.row?.version ?? null, emit), run));
    await turn.done;
    return true;
  }

  private requireWorkflow(target: ChatTarget): void {
    if (this.closing) throw new AppError('busy', 'server shutting down');
    if (target.app.kind !== 'workflow') throw AppError.invalid([{ path: 'action', message: `the app is a ${target.app.kind} app, not a workflow` }], 'Not a workflow app');
  }

  private keyOf(target: ChatTarget, debugKey: string | undefined): string {
    return target.chatId ?? debugKey ?? `debug:${randomUUID()}`;
  }

  private segmentIds(p: Principal, target: ChatTarget): Pick<Segment, 'chatId' | 'appId' | 'userId' | 'version'> {
    return { chatId: target.chatId, appId: target.app.id, userId: p.id, version: target.version };
  }

  private segment(turn: RunningTurn, p: Principal, target: ChatTarget, emit: TurnEmit): Segment {
    return this.segmentFor(turn, this.idsOf(p, target), target.version, emit);
  }

  private segmentFor(turn: RunningTurn, ids: TurnIds, version: number | null, emit: TurnEmit): Segment {
    return {
      key: turn.key, turnId: turn.turnId, chatId: ids.chatId, appId: ids.flowId, userId: ids.userId, version,
      signal: turn.controller.signal, emit,
      row: (fields) => ({ ...this.rowBase(ids, turn.turnId), ...fields }) as NewMessage,
    };
  }

  /** Stops accepting turns, stops the running ones (their partial answers are stored) and waits for them. */
  async shutdown(): Promise<void> {
    this.closing = true;
    const turns = [...this.running.values()];
    for (const t of turns) t.controller.abort();
    await Promise.allSettled(turns.map((t) => t.done));
    this.unsubscribeControl();
  }

  /** A repeated client_message_id answers this turn until replay_ttl; expired ids are swept now and then. */
  private rememberClientId(idKey: string, turn: TurnStarted): void {
    const now = Date.now();
    if (now >= this.nextClientIdSweep) {
      for (const [k, v] of this.clientIds) if (v.expires <= now) this.clientIds.delete(k);
      this.nextClientIdSweep = now + 60_000;
    }
    this.clientIds.set(idKey, { turn, expires: now + this.deps.config.chat.replay_ttl * 1000 });
  }

  private async consumeRate(userId: number): Promise<void> {
    try {
      await this.limiter.consume(String(userId));
    } catch (res) {
      const ms = (res as { msBeforeNext?: number }).msBeforeNext ?? 60_000;
      throw new AppError('rate_limited', 'Too many messages; slow down', { data: { retry_after: Math.ceil(ms / 1000) } });
    }
  }

  private rowBase(ids: TurnIds, turnId: string | null) {
    return {
      chat_id: ids.chatId!, flow_id: ids.flowId, user_id: ids.userId, intermediate_steps: '', files: '[]', extra: '{}',
      source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: turnId,
    } satisfies Partial<NewMessage>;
  }

  private idsOf(p: Principal, target: ChatTarget): TurnIds {
    return { chatId: target.chatId, flowId: target.app.id, userId: p.id };
  }

  /** Takes the conversation for a new turn: 10409 while one runs. Synchronous, so two frames can never both take it. */
  private take(key: string, userId: number): RunningTurn {
    if (this.running.has(key)) throw new AppError('conflict');
    const turn: RunningTurn = { key, turnId: randomUUID().replaceAll('-', ''), userId, controller: new AbortController(), done: Promise.resolve() };
    this.running.set(key, turn);
    return turn;
  }

  /** Runs a prepared turn (see start) whose seq floor is known. */
  private launch(turn: RunningTurn, ids: TurnIds, fromSeq: number, work: TurnWork): TurnStarted {
    this.start(turn, ids, fromSeq, work);
    return { key: turn.key, turnId: turn.turnId, fromSeq, duplicate: false };
  }

  /**
   * Runs a turn, starting in a microtask: callers subscribe (held) before they ask, so nothing waits
   * for the event loop to come round — under load that wait was most of the added TTFT. With a floor
   * still to come (the question is being stored), the work runs at once and its events wait for it;
   * a floor that fails ends the turn with nothing published.
   */
  private start(turn: RunningTurn, ids: TurnIds, floor: number | Promise<number>, work: TurnWork): void {
    turn.done = Promise.resolve().then(() => this.drive(turn, ids, floor, work));
  }

  /** The life cycle every turn shares: processing/begin, the work, an error frame if it threw, processing/close, release. */
  private async drive(turn: RunningTurn, ids: TurnIds, floor: number | Promise<number>, work: TurnWork): Promise<void> {
    const { bus, repos, config } = this.deps;
    let seq = typeof floor === 'number' ? floor : 0;
    let held: ChatEventBody[] | null = typeof floor === 'number' ? null : [];
    const publish = (body: ChatEventBody) => {
      bus.publish({ seq: ++seq, key: turn.key, chatId: ids.chatId ?? '', turnId: turn.turnId, flowId: ids.flowId, userId: ids.userId, body });
    };
    const emit: TurnEmit = (body) => {
      if (held) held.push(body);
      else publish(body);
    };
    const known = Promise.resolve(floor).then((fromSeq) => {
      if (held) {
        seq = fromSeq;
        const early = held;
        held = null;
        for (const body of early) publish(body);
      }
      return fromSeq;
    });
    known.catch(() => undefined);
    let extra: Record<string, unknown> | void = undefined;
    emit({ kind: 'begin' });
    try {
      extra = await work(emit);
    } catch (err) {
      const e = toAppError(err);
      if (e.code === 'internal' && !(err instanceof AppError)) this.deps.log?.error({ err, chat_id: ids.chatId, turn_id: turn.turnId }, 'turn failed');
      emit({ kind: 'error', code: e.code, message: e.message });
    } finally {
      const fromSeq = await known.catch(() => null);
      if (fromSeq !== null) emit(extra ? { kind: 'close', extra } : { kind: 'close' });
      this.running.delete(turn.key);
      if (fromSeq !== null) {
        bus.endTurn(turn.key, config.chat.replay_ttl);
        if (ids.chatId !== null) await repos.conversations.settleSeq(ids.chatId, fromSeq + SEQ_RESERVE, seq).catch(() => undefined);
        else this.debugSeq.set(turn.key, seq);
      }
    }
  }

  /** The conversation of `target`, or null while it does not exist; someone else's (or a deleted one) is refused. */
  private async ownConversation(p: Principal, target: ChatTarget): Promise<ConversationRow | null> {
    const conv = await this.deps.repos.conversations.get(target.chatId!);
    if (!conv) return null;
    if (conv.user_id !== p.id || conv.is_delete || conv.flow_id !== target.app.id) throw new AppError('forbidden', 'no permission');
    return conv;
  }

  private async ensureConversation(p: Principal, target: ChatTarget, text: string): Promise<ConversationRow> {
    // resolveTarget read it (and checked whose it is) a moment ago
    if (target.conversation) return target.conversation;
    const conv = await this.deps.repos.conversations.ensure({
      chat_id: target.chatId!, name: titleFrom(text), flow_id: target.app.id,
      flow_type: FLOW_TYPE[target.app.kind], flow_name: target.app.name, user_id: p.id,
    });
    if (conv.user_id !== p.id || conv.is_delete || conv.flow_id !== target.app.id) throw new AppError('forbidden', 'no permission');
    return conv;
  }

  /**
   * The seq before this turn's first event; reserves a block of SEQ_RESERVE seqs in the database (one
   * atomic UPDATE … RETURNING) so a crash never reuses seqs. drive() settles it when the turn ends.
   */
  private async seqFloor(key: string, conv: ConversationRow | null): Promise<number> {
    if (!conv) {
      const last = this.debugSeq.get(key) ?? 0;
      return last;
    }
    return (await this.deps.repos.conversations.reserveSeq(conv.chat_id, SEQ_RESERVE)) ?? 0;
  }

  /** A chat or assistant answer: the AssistantRuntime's events, then the answer stored once (a stop keeps the partial one). */
  private chatWork(turn: RunningTurn, input: AskInput, state: ChatState): TurnWork {
    return (publish) => this.runAnswer(turn, input, state, publish);
  }

  private async runAnswer(turn: RunningTurn, input: AskInput, state: ChatState, publish: TurnEmit): Promise<void> {
    const { target, principal } = input;
    const { repos } = this.deps;
    const ids = this.idsOf(principal, target);
    const started = Date.now();
    let text = '';
    let step = 0;
    const toolRows: NewMessage[] = [];
    const emit = (body: ChatEventBody) => {
      if (body.kind === 'delta') text += body.content;
      else if (body.kind === 'llm_start') step++;
      else if (body.kind === 'tool_end' && target.chatId !== null) {
        toolRows.push({
          ...this.rowBase(ids, turn.turnId), is_bot: 1, type: 'end', category: 'tool',
          message: JSON.stringify({ tool_key: body.toolKey, input: body.input, output: body.output }),
          intermediate_steps: `Tool output: \n\n${body.output}`, extra: JSON.stringify({ run_id: body.runId, step, failed: body.failed }),
        } as NewMessage);
      }
      publish(body);
    };

    /**
     * Stores the tool rows and the answer. A blocked answer is recorded (sensitive_status 2 on it and
     * its conversation; `extra.moderation` says which review blocked it, so the context can leave out a
     * blocked question).
     */
    const saveAnswer = async (answer: string, usage: LlmUsage | null, remark: string, moderation: Blocked | null = null): Promise<number | null> => {
      if (target.chatId === null) return null;
      // the question is stored by now (it went in while the first token was on its way); if storing it failed, so does this
      const parent = await state.questionId;
      const row: NewMessageInput = {
        ...this.rowBase(ids, turn.turnId), is_bot: 1, type: 'bot', category: 'answer', message: answer,
        parent_message_id: parent, remark, sensitive_status: moderation ? 2 : 1,
        extra: JSON.stringify({ ...(usage ? { usage } : {}), ...(moderation ? { moderation } : {}), ...(remark === BREAK_ANSWER ? { interrupted: true } : {}) }), tokens: usage?.total_tokens ?? 0, latency_ms: Date.now() - started,
      };
      // the conversation was marked active when the turn started (reserveSeq): one row needs no transaction
      const id = toolRows.length
        ? (await repos.messages.insertMany([...toolRows.map((r) => ({ ...r, parent_message_id: parent })), row])).at(-1)!.id
        : await repos.messages.insert(row);
      if (moderation === 'output') await repos.conversations.update(target.chatId, { sensitive_status: 2 });
      return id;
    };
    /** Output review of whatever text is kept, partial answers included. */
    const review = (answer: string): { answer: string; moderation: Blocked | null } => {
      const replaced = this.moderation.checkOutput(answer);
      return replaced === null ? { answer, moderation: null } : { answer: replaced, moderation: 'output' };
    };

    try {
      if (state.blocked) {
        emit({ kind: 'answer_start' });
        const messageId = await saveAnswer(state.blocked, null, '', 'input');
        emit({ kind: 'answer_end', messageId, text: state.blocked, usage: null, stopped: false });
      } else {
        const provider = this.deps.providers.get(target.spec.model.provider);
        const { tools, unknown } = this.deps.tools.resolve(target.spec.tools ?? []);
        if (unknown.length) throw new AppError('app_unbuildable', `Unknown tools: ${unknown.join(', ')}`);
        const result = await this.runtime.run({ spec: target.spec, provider, tools, history: state.history, question: input.text, signal: turn.controller.signal, emit });
        if (turn.controller.signal.aborted) throw new StopSignal();
        const { answer, moderation } = review(text);
        emit({ kind: 'answer_start' });
        const messageId = await saveAnswer(answer, result.usage, '', moderation);
        emit({ kind: 'answer_end', messageId, text: answer, usage: result.usage, stopped: false });
      }
    } catch (err) {
      if (turn.controller.signal.aborted) {
        const partial = review(text);
        const messageId = await saveAnswer(partial.answer, null, BREAK_ANSWER, partial.moderation).catch(() => null);
        emit({ kind: 'answer_end', messageId, text: '', usage: null, stopped: true });
      } else {
        const e = toAppError(err);
        if (e.code === 'internal' && !(err instanceof AppError)) this.deps.log?.error({ err, chat_id: target.chatId, turn_id: turn.turnId }, 'turn failed');
        if (text) {
          const partial = review(text);
          await saveAnswer(partial.answer, null, BREAK_ANSWER, partial.moderation).catch(() => null);
        }
        emit({ kind: 'error', code: e.code, message: e.message });
      }
    }
  }
}

class StopSignal extends Error {}

/** Which review blocked an answer: the question (input) or the model's text (output). */
type Blocked = 'input' | 'output';
