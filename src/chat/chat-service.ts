import { randomUUID } from 'node:crypto';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import type { AppService } from '../apps/app-service.ts';
import { authorizeAppChat } from '../auth/policy.ts';
import type { Bus } from '../bus/bus.ts';
import type { Config } from '../config/config.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { ChatEvent, ChatEventBody } from '../domain/events.ts';
import type { LlmMessage, LlmProvider, LlmUsage, Tool } from '../domain/llm.ts';
import { FLOW_TYPE, isHexId, type AppKind, type AppSpec, type Principal } from '../domain/types.ts';
import { AssistantRuntime } from '../runtimes/assistant-runtime.ts';
import type { Runtime } from '../runtimes/runtime.ts';
import type { Repos } from '../storage/repos.ts';
import type { AppRow, ConversationRow, MessageRow, NewMessage } from '../storage/tables.ts';
import { BREAK_ANSWER, buildContext, CLEAR_MARKER, questionText } from './context.ts';
import { Moderation } from './moderation.ts';
import type { TurnControl } from './turn-control.ts';

export interface ProviderLookup {
  get(name: string): LlmProvider;
}

export interface ToolLookup {
  resolve(names: string[]): { tools: Tool[]; unknown: string[] };
}

/** A conversation the caller may chat in, resolved at connect or per frame. */
export interface ChatTarget {
  app: AppRow;
  spec: AppSpec;
  /** null: debug mode on the draft — nothing is stored */
  chatId: string | null;
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

const SEQ_RESERVE = 10_000;
const TITLE_LENGTH = 60;

/**
 * The chat core: starts turns, runs them on a runtime, persists what must last, and publishes
 * every event on the bus. Transports only call this and watch the bus.
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
  private readonly unsubscribeControl: () => void;
  private closing = false;

  constructor(private readonly deps: { config: Config; repos: Repos; bus: Bus; apps: AppService; providers: ProviderLookup; tools: ToolLookup ; log?: { error(obj: object, msg: string): void } }) {
    this.limiter = new RateLimiterMemory({ points: deps.config.chat.messages_per_minute, duration: 60 });
    this.moderation = new Moderation(deps.config.moderation);
    this.runtime = new AssistantRuntime();
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
    if (opts.chatId !== null) {
      const conv = await this.deps.repos.conversations.get(opts.chatId);
      if (conv && (conv.user_id !== p.id || conv.is_delete || conv.flow_id !== app.id)) throw new AppError('forbidden', 'no permission');
    }
    let spec: AppSpec;
    try {
      spec = await this.deps.apps.specFor(app, { draft, version: opts.versionId });
      this.deps.providers.get(spec.model.provider);
    } catch (err) {
      const e = toAppError(err);
      throw e.code === 'app_offline' || e.code === 'not_found' ? e : new AppError('app_unbuildable', 'draft does not build');
    }
    return { app, spec, chatId: opts.chatId };
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
    const turn = this.running.get(key);
    if (turn) void turn.done.then(() => this.debugSeq.delete(key));
    else this.debugSeq.delete(key);
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
    if (this.running.has(key)) throw new AppError('conflict');
    // the conversation is taken before the first await, so a concurrent question gets 10409 before
    // anything of it is stored (a stop in the meantime aborts the turn before it runs)
    const turnId = randomUUID().replaceAll('-', '');
    const controller = new AbortController();
    const turn: RunningTurn = { key, turnId, userId: principal.id, controller, done: Promise.resolve() };
    this.running.set(key, turn);

    let conv: ConversationRow | null = null;
    let questionId: number | null = null;
    let history: LlmMessage[] = input.history ?? [];
    let fromSeq: number;
    const blocked = this.moderation.checkInput(input.text);
    try {
      await this.consumeRate(principal.id);
      if (target.chatId !== null) {
        conv = await this.ensureConversation(principal, target, input.text);
        const window = target.spec.history_window ?? this.deps.config.chat.max_history_messages;
        // the context is read before the question is stored, so it holds only earlier messages
        if (!input.history) history = window > 0 ? buildContext(await this.deps.repos.messages.latest(target.chatId, window * 2 + 10), window) : [];
        const q = await this.deps.repos.messages.insert({
          ...this.rowBase(principal, target, turnId), is_bot: 0, type: 'human', category: 'question',
          message: JSON.stringify(input.inputs), sensitive_status: blocked ? 2 : 1,
        });
        questionId = q.id;
        if (blocked) await this.deps.repos.conversations.update(target.chatId, { sensitive_status: 2 });
      }
      fromSeq = await this.seqFloor(key, conv);
    } catch (err) {
      this.running.delete(key);
      throw err;
    }
    const started: TurnStarted = { key, turnId, fromSeq, duplicate: false };
    if (idKey) this.rememberClientId(idKey, started);
    // the first event is published on a later tick, so the caller can subscribe first
    turn.done = new Promise<void>((r) => setImmediate(r)).then(() => this.runTurn(turn, input, { fromSeq, questionId, history, blocked }));
    return started;
  }

  /** Re-runs the last question of a conversation; the old answer stays as a sibling. */
  async regenerate(principal: Principal, target: ChatTarget): Promise<TurnStarted> {
    if (target.chatId === null) throw AppError.invalid([{ path: 'chat_id', message: 'required' }]);
    const key = target.chatId;
    if (this.running.has(key)) throw new AppError('conflict');
    const turnId = randomUUID().replaceAll('-', '');
    const controller = new AbortController();
    const turn: RunningTurn = { key, turnId, userId: principal.id, controller, done: Promise.resolve() };
    this.running.set(key, turn);
    let question: MessageRow;
    let history: LlmMessage[];
    let fromSeq: number;
    try {
      // a socket may have resolved this chat_id before its conversation existed: check the owner now
      const conv = await this.ownConversation(principal, target);
      const rows = conv ? await this.deps.repos.messages.latest(key, 200) : [];
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
    turn.done = new Promise<void>((r) => setImmediate(r)).then(() =>
      this.runTurn(turn, { principal, target, text, inputs }, { fromSeq, questionId: question.id, history, blocked: this.moderation.checkInput(text) }));
    return { key, turnId, fromSeq, duplicate: false };
  }

  /** Marks a fresh context: the next turn sees no earlier message. */
  async clearHistory(principal: Principal, target: ChatTarget): Promise<void> {
    if (target.chatId === null) return;
    if (!(await this.ownConversation(principal, target))) return;
    await this.deps.repos.messages.insert({
      ...this.rowBase(principal, target, null), is_bot: 1, type: 'info', category: CLEAR_MARKER, message: '',
    });
  }

  /** Stops the running turn of `key` on whichever instance runs it. */
  async stop(key: string): Promise<boolean> {
    const local = this.running.get(key);
    if (local) {
      local.controller.abort();
      await local.done;
      return true;
    }
    this.deps.bus.sendControl({ type: 'stop', key });
    return false;
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

  private rowBase(p: Principal, target: ChatTarget, turnId: string | null) {
    return {
      chat_id: target.chatId!, flow_id: target.app.id, user_id: p.id, intermediate_steps: '', files: '[]', extra: '{}',
      source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: turnId,
    } satisfies Partial<NewMessage>;
  }

  /** The conversation of `target`, or null while it does not exist; someone else's (or a deleted one) is refused. */
  private async ownConversation(p: Principal, target: ChatTarget): Promise<ConversationRow | null> {
    const conv = await this.deps.repos.conversations.get(target.chatId!);
    if (!conv) return null;
    if (conv.user_id !== p.id || conv.is_delete || conv.flow_id !== target.app.id) throw new AppError('forbidden', 'no permission');
    return conv;
  }

  private async ensureConversation(p: Principal, target: ChatTarget, text: string): Promise<ConversationRow> {
    const conv = await this.deps.repos.conversations.ensure({
      chat_id: target.chatId!, name: text.replace(/\s+/g, ' ').trim().slice(0, TITLE_LENGTH), flow_id: target.app.id,
      flow_type: FLOW_TYPE[target.app.kind], flow_name: target.app.name, user_id: p.id,
    });
    if (conv.user_id !== p.id || conv.is_delete || conv.flow_id !== target.app.id) throw new AppError('forbidden', 'no permission');
    return conv;
  }

  /** The seq before this turn's first event; reserves a block in the database so a crash never reuses seqs. */
  private async seqFloor(key: string, conv: ConversationRow | null): Promise<number> {
    if (!conv) {
      const last = this.debugSeq.get(key) ?? 0;
      return last;
    }
    const fresh = await this.deps.repos.conversations.get(conv.chat_id);
    const floor = fresh?.last_seq ?? 0;
    await this.deps.repos.conversations.raiseSeq(conv.chat_id, floor + SEQ_RESERVE);
    return floor;
  }

  private async runTurn(turn: RunningTurn, input: AskInput, state: { fromSeq: number; questionId: number | null; history: ReturnType<typeof buildContext>; blocked: string | null }): Promise<void> {
    const { target, principal } = input;
    const { bus, repos, config } = this.deps;
    const started = Date.now();
    let seq = state.fromSeq;
    let text = '';
    let step = 0;
    const toolRows: NewMessage[] = [];
    const emit = (body: ChatEventBody) => {
      if (body.kind === 'delta') text += body.content;
      else if (body.kind === 'llm_start') step++;
      else if (body.kind === 'tool_end' && target.chatId !== null) {
        toolRows.push({
          ...this.rowBase(principal, target, turn.turnId), is_bot: 1, type: 'end', category: 'tool', parent_message_id: state.questionId,
          message: JSON.stringify({ tool_key: body.toolKey, input: body.input, output: body.output }),
          intermediate_steps: `Tool output: \n\n${body.output}`, extra: JSON.stringify({ run_id: body.runId, step, failed: body.failed }),
        } as NewMessage);
      }
      const event: ChatEvent = { seq: ++seq, key: turn.key, chatId: target.chatId ?? '', turnId: turn.turnId, flowId: target.app.id, userId: principal.id, body };
      bus.publish(event);
    };

    /**
     * Stores the tool rows and the answer. A blocked answer is recorded (sensitive_status 2 on it and
     * its conversation; `extra.moderation` says which review blocked it, so the context can leave out a
     * blocked question).
     */
    const saveAnswer = async (answer: string, usage: LlmUsage | null, remark: string, moderation: Blocked | null = null): Promise<number | null> => {
      if (target.chatId === null) return null;
      const rows = await repos.messages.insertMany([...toolRows, {
        ...this.rowBase(principal, target, turn.turnId), is_bot: 1, type: 'bot', category: 'answer', message: answer,
        parent_message_id: state.questionId, remark, sensitive_status: moderation ? 2 : 1,
        extra: JSON.stringify({ ...(usage ? { usage } : {}), ...(moderation ? { moderation } : {}), ...(remark === BREAK_ANSWER ? { interrupted: true } : {}) }), tokens: usage?.total_tokens ?? 0, latency_ms: Date.now() - started,
      }]);
      if (moderation === 'output') await repos.conversations.update(target.chatId, { sensitive_status: 2 });
      return rows[rows.length - 1]!.id;
    };
    /** Output review of whatever text is kept, partial answers included. */
    const review = (answer: string): { answer: string; moderation: Blocked | null } => {
      const replaced = this.moderation.checkOutput(answer);
      return replaced === null ? { answer, moderation: null } : { answer: replaced, moderation: 'output' };
    };

    emit({ kind: 'begin' });
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
    } finally {
      emit({ kind: 'close' });
      this.running.delete(turn.key);
      bus.endTurn(turn.key, config.chat.replay_ttl);
      if (target.chatId !== null) await repos.conversations.settleSeq(target.chatId, state.fromSeq + SEQ_RESERVE, seq).catch(() => undefined);
      else this.debugSeq.set(turn.key, seq);
    }
  }
}

class StopSignal extends Error {}

/** Which review blocked an answer: the question (input) or the model's text (output). */
type Blocked = 'input' | 'output';
