import type { Bus } from '../../bus/bus.ts';
import type { ChatService } from '../../chat/chat-service.ts';
import { withModel, type ChatTarget } from '../../chat/targets.ts';
import type { TurnStarted } from '../../chat/turn-registry.ts';
import { TurnEvents } from '../../chat/watch.ts';
import type { LlmMessage } from '../../domain/llm.ts';
import type { Principal } from '../../domain/types.ts';
import { toAppError } from '../../domain/errors.ts';
import { refused } from './request.ts';

export interface CompletionInput {
  appId: string;
  /** null: stateless (nothing stored) */
  chatId: string | null;
  question: string;
  history: LlmMessage[];
  temperature?: number | null | undefined;
  maxTokens?: number | null | undefined;
  /** how the chat id is named in errors */
  chatIdParam: string;
  /** workflow apps: the structured answer to the waiting request (a form's fields) */
  workflowInput?: Record<string, unknown> | undefined;
}

/** A started turn and its events, for one HTTP response. */
export class Completion {
  readonly created = Math.floor(Date.now() / 1000);
  private settled = false;

  constructor(private readonly chat: ChatService, readonly key: string, readonly turn: TurnStarted, readonly target: ChatTarget, readonly events: TurnEvents) {}

  /** null: stateless (the turn's key is this request's scratch key) */
  get chatId(): string | null {
    return this.target.chatId;
  }

  /** The client went away: stop the turn (the upstream request is aborted; a stored conversation keeps the partial answer). */
  cancel(): void {
    this.events.abort();
    if (this.chat.isRunning(this.key)) void (this.chatId === null ? this.chat.stopScratch(this.key) : this.chat.stop(this.chatId));
    this.settle();
  }

  /** The response is done with the turn. */
  settle(): void {
    if (this.settled) return;
    this.settled = true;
    this.events.abort();
    if (this.chatId === null) this.chat.forgetScratch(this.key);
  }
}

/**
 * Resolves the app (`model`) and the conversation, starts the turn and subscribes to its events.
 * An app the caller may not use is a model that does not exist; someone else's conversation one
 * that does not exist either (PROTOCOL.md §8.10).
 */
export async function startCompletion(chat: ChatService, bus: Bus, p: Principal, input: CompletionInput): Promise<Completion> {
  let target: ChatTarget;
  try {
    target = await chat.resolveTarget(p, input.appId, { chatId: input.chatId, stateless: true });
  } catch (err) {
    const e = toAppError(err);
    if (e.code === 'not_found' || e.code === 'app_deleted' || e.code === 'app_offline') {
      throw refused('not_found', `The model '${input.appId.slice(0, 64)}' does not exist or you do not have access to it.`, 'model', 'model_not_found');
    }
    if (e.code === 'conversation_denied') throw refused('not_found', 'Conversation not found', input.chatIdParam, 'chat_not_found');
    throw e;
  }
  target = withModel(target, { temperature: input.temperature, maxTokens: input.maxTokens });

  const stateless = input.chatId === null;
  const key = input.chatId ?? chat.newScratchKey();
  const events = new TurnEvents(bus, key, p.id);
  let turn: TurnStarted;
  try {
    const data = target.app.kind === 'workflow' && input.workflowInput ? { data: input.workflowInput } : {};
    turn = await chat.ask({
      principal: p, target, text: input.question, inputs: { input: input.question, ...data }, scratchKey: key,
      ...(stateless ? { history: input.history } : {}),
    });
  } catch (err) {
    events.abort();
    if (stateless) chat.forgetScratch(key);
    throw err;
  }
  events.start(turn.fromSeq);
  return new Completion(chat, key, turn, target, events);
}
