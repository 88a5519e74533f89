import type { Config } from '../config/config.ts';
import type { Clock } from '../domain/clock.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { ChatEventBody } from '../domain/events.ts';
import type { LlmMessage, LlmProvider, LlmUsage, Tool } from '../domain/llm.ts';
import type { Principal } from '../domain/types.ts';
import type { Runtime } from '../runtimes/runtime.ts';
import type { Repos } from '../storage/repos.ts';
import type { NewMessageInput } from '../storage/message-repo.ts';
import { BREAK_ANSWER, buildContext, questionText, readContext } from './context.ts';
import { answerRow, clearRow, questionRow, toolRow, type Blocked } from './message-rows.ts';
import type { Moderation } from './moderation.ts';
import type { RateLimiter } from './rate-limiter.ts';
import type { ChatTarget, Targets } from './targets.ts';
import { isLost, type Turn, type TurnEmit, type TurnIds, type TurnRegistry, type TurnStarted, type TurnWork } from './turn-registry.ts';
import type { TurnSeqs } from './turn-seqs.ts';

export interface ToolLookup {
  resolve(names: string[]): { tools: Tool[]; unknown: string[] };
  get(name: string): Tool | undefined;
}

export interface AskInput {
  principal: Principal;
  target: ChatTarget;
  /** the text of the question */
  text: string;
  /** the whole `inputs` object, stored as Bisheng does */
  inputs: Record<string, unknown>;
  clientMessageId?: string | undefined;
  /** the bus key of an unstored turn (one per socket or request: ChatService.newScratchKey) */
  scratchKey?: string;
  /** the context given by the caller (a stateless OpenAI-style request); otherwise read from the conversation */
  history?: LlmMessage[];
}

/** What a chat answer starts from: its stored question, the context, and the input review's reply if it blocked the question. */
type AnswerState = { questionId: Promise<number | null>; history: LlmMessage[]; blocked: string | null };

export const idsOf = (p: Principal, target: ChatTarget): TurnIds => ({ chatId: target.chatId, flowId: target.app.id, userId: p.id });

class StopSignal extends Error {}

/**
 * The turns of chat and assistant apps: a question, or the last one again, answered by the runtime
 * (an LLM, with tools for an assistant), the answer stored once at the end (a stop keeps the partial one).
 */
export class ChatTurns {
  constructor(private readonly deps: {
    config: Config; repos: Repos; turns: TurnRegistry; seqs: TurnSeqs; rate: RateLimiter; targets: Targets;
    moderation: Moderation; runtime: Runtime; providers: { get(name: string): LlmProvider }; tools: ToolLookup; clock: Clock;
    log?: { error(obj: object, msg: string): void } | undefined;
  }) {}

  /** A question on the bus key `key`. */
  async ask(input: AskInput, key: string): Promise<TurnStarted> {
    const { principal, target } = input;
    const ids = idsOf(principal, target);
    const blocked = this.deps.moderation.checkInput(input.text);
    return (await this.deps.turns.begin(key, async (turn) => {
      await this.deps.rate.consume(principal.id);
      let history: LlmMessage[] = input.history ?? [];
      // a conversation resolve found missing has no messages yet: it is created with the question (storeQuestion)
      if (target.chatId !== null && target.conversation !== null && !input.history) {
        const chatId = target.chatId;
        // read before the question is stored, so it holds only earlier messages
        history = await readContext((limit) => this.deps.repos.messages.context(chatId, limit), this.window(target));
      }
      // the turn starts now and its question is stored while the model works on the first token: the
      // turn's events wait for the seq floor, and its answer for the question's id
      const { floor, questionId } = this.storeQuestion(turn, input, ids, blocked);
      questionId.catch(() => undefined);
      return { ids, floor, work: this.answerWork(turn, input, { questionId, history, blocked }) };
    }))!;
  }

  /**
   * Creates the conversation if it is new, stores the question and takes the conversation for the
   * turn (reserving its seqs: 10409 when another instance runs one). The upstream request never
   * waits for their commit: the statements are issued together in the same iteration of the event
   * loop as the request (on SQLite they share one commit), so the seq floor is usually known before
   * the first token. If either fails, the other is undone: a refused turn leaves no question, a
   * question that could not be stored leaves the conversation free. A conversation another user
   * created in the meantime is refused here (the turn then ends with nothing published or stored;
   * its context was empty).
   */
  private storeQuestion(turn: Turn, input: AskInput, ids: TurnIds, blocked: string | null): { floor: Promise<number>; questionId: Promise<number | null> } {
    const { principal, target } = input;
    const chatId = target.chatId;
    if (chatId === null) return { floor: this.deps.seqs.floor(turn.key, null, turn.turnId), questionId: Promise.resolve(null) };
    const { repos, seqs } = this.deps;
    const stored = this.deps.targets.ensure(principal, target, input.text).then(async () => {
      const [question, floor] = await Promise.allSettled([
        repos.messages.insert(questionRow(ids, turn.turnId, JSON.stringify(input.inputs), { sensitive_status: blocked ? 2 : 1 })),
        seqs.floor(turn.key, chatId, turn.turnId),
        blocked ? repos.conversations.update(chatId, { sensitive_status: 2 }) : undefined,
      ]);
      if (question.status === 'fulfilled' && floor.status === 'fulfilled') return { questionId: question.value, fromSeq: floor.value };
      // (a reservation that went through is given back when the turn ends unrun: TurnSeqs.abandon)
      if (question.status === 'fulfilled') await repos.messages.delete(question.value).catch(() => undefined);
      throw floor.status === 'rejected' ? floor.reason : (question as PromiseRejectedResult).reason;
    });
    return { floor: stored.then((s) => s.fromSeq), questionId: stored.then((s) => s.questionId) };
  }

  /** Answers the last question of a conversation again; the old answer stays as a sibling. */
  async regenerate(principal: Principal, target: ChatTarget): Promise<TurnStarted> {
    if (target.chatId === null) throw AppError.invalid([{ path: 'chat_id', message: 'required' }]);
    if (target.app.kind === 'workflow') throw AppError.invalid([{ path: 'action', message: 'a workflow app has no answer to regenerate; start a new run with init_data' }]);
    const chatId = target.chatId;
    const ids = idsOf(principal, target);
    return (await this.deps.turns.begin(chatId, async (turn) => {
      const conv = await this.deps.targets.own(principal, target);
      const rows = conv ? await this.deps.repos.messages.context(chatId, 200) : [];
      const qIndex = rows.findLastIndex((r) => r.category === 'question');
      if (qIndex < 0) throw AppError.notFound('No question to regenerate');
      const question = rows[qIndex]!;
      await this.deps.rate.consume(principal.id);
      const window = this.window(target);
      const history = window > 0 ? buildContext(rows.slice(0, qIndex), window) : [];
      const floor = await this.deps.seqs.floor(chatId, chatId, turn.turnId);
      const text = questionText(question.message);
      const work = this.answerWork(turn, { principal, target, text, inputs: { input: text } }, {
        questionId: Promise.resolve(question.id), history, blocked: this.deps.moderation.checkInput(text),
      });
      return { ids, floor, work };
    }))!;
  }

  /** Marks a fresh context: the next turn sees no earlier message. */
  async clearHistory(principal: Principal, target: ChatTarget): Promise<void> {
    if (target.chatId === null) return;
    if (!(await this.deps.targets.own(principal, target))) return;
    await this.deps.repos.messages.insert(clearRow(idsOf(principal, target)));
  }

  private window(target: ChatTarget): number {
    return target.spec.history_window ?? this.deps.config.chat.max_history_messages;
  }

  /** The runtime's events, then the answer stored once (a stop or a failure keeps the partial one). */
  private answerWork(turn: Turn, input: AskInput, state: AnswerState): TurnWork {
    return (publish) => this.answer(turn, input, state, publish);
  }

  private async answer(turn: Turn, input: AskInput, state: AnswerState, publish: TurnEmit): Promise<void> {
    const { target, principal } = input;
    const { repos, moderation, clock } = this.deps;
    const ids = idsOf(principal, target);
    const started = clock.now();
    let text = '';
    let step = 0;
    const toolRows: NewMessageInput[] = [];
    const emit = (body: ChatEventBody) => {
      if (body.kind === 'delta') text += body.content;
      else if (body.kind === 'llm_start') step++;
      else if (body.kind === 'tool_end' && target.chatId !== null) toolRows.push(toolRow(ids, turn.turnId, body, step));
      publish(body);
    };

    /** Stores the tool rows and the answer. */
    const save = async (answer: string, usage: LlmUsage | null, remark: string, blocked: Blocked | null = null): Promise<number | null> => {
      // a lost turn's partial answer was stored by the instance that ended it
      if (target.chatId === null || isLost(turn.signal)) return null;
      // the question is stored by now (it went in while the first token was on its way); if storing it failed, so does this
      const parent = await state.questionId;
      const row = answerRow(ids, turn.turnId, { text: answer, parent, usage, remark, blocked, latencyMs: clock.now() - started });
      // the conversation was marked active when the turn started (its seqs reserved): one row needs no transaction
      const id = toolRows.length
        ? (await repos.messages.insertMany([...toolRows.map((r) => ({ ...r, parent_message_id: parent })), row])).at(-1)!.id
        : await repos.messages.insert(row);
      if (blocked === 'output') await repos.conversations.update(target.chatId, { sensitive_status: 2 });
      return id;
    };
    /** Output review of whatever text is kept, partial answers included. */
    const review = (answer: string): { answer: string; blocked: Blocked | null } => {
      const replaced = moderation.checkOutput(answer);
      return replaced === null ? { answer, blocked: null } : { answer: replaced, blocked: 'output' };
    };

    try {
      if (state.blocked) {
        emit({ kind: 'answer_start' });
        const messageId = await save(state.blocked, null, '', 'input');
        emit({ kind: 'answer_end', messageId, text: state.blocked, usage: null, stopped: false });
      } else {
        const provider = this.deps.providers.get(target.spec.model.provider);
        const { tools, unknown } = this.deps.tools.resolve(target.spec.tools ?? []);
        if (unknown.length) throw new AppError('app_unbuildable', `Unknown tools: ${unknown.join(', ')}`);
        const result = await this.deps.runtime.run({ spec: target.spec, provider, tools, history: state.history, question: input.text, signal: turn.signal, emit });
        if (turn.signal.aborted) throw new StopSignal();
        const { answer, blocked } = review(text);
        emit({ kind: 'answer_start' });
        const messageId = await save(answer, result.usage, '', blocked);
        emit({ kind: 'answer_end', messageId, text: answer, usage: result.usage, stopped: false });
      }
    } catch (err) {
      if (turn.signal.aborted) {
        const partial = review(text);
        const messageId = await save(partial.answer, null, BREAK_ANSWER, partial.blocked).catch(() => null);
        emit({ kind: 'answer_end', messageId, text: '', usage: null, stopped: true });
      } else {
        const e = toAppError(err);
        if (e.code === 'internal' && !(err instanceof AppError)) this.deps.log?.error({ err, chat_id: target.chatId, turn_id: turn.turnId }, 'turn failed');
        if (text) {
          const partial = review(text);
          await save(partial.answer, null, BREAK_ANSWER, partial.blocked).catch(() => null);
        }
        emit({ kind: 'error', code: e.code, message: e.message });
      }
    }
  }
}
