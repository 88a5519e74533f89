import { authorizeAppUse, authorizeAppVisible, authorizeConversation, authorizeReview, type ConversationAction } from '../auth/policy.ts';
import { AppError } from '../domain/errors.ts';
import { FLOW_TYPE, newId, type Principal } from '../domain/types.ts';
import type { Repos } from '../storage/repos.ts';
import type { AppRow, ConversationRow, MessageRow } from '../storage/tables.ts';
import { displayText } from './export.ts';
import type { TurnControl } from './turn-control.ts';

export const NAME_MAX = 512;
/** How many messages `/session/chat/messages` returns (Bisheng's limit). */
export const LATEST_LIMIT = 1000;
const DEFAULT_NAME = 'New chat';
const COPY_SUFFIX = ' (copy)';
const TITLE_CHARS = 64;

export interface ListQuery {
  flowTypes?: number[] | undefined;
  flowId?: string | undefined;
  keyword?: string | undefined;
  page: number;
  limit: number;
}

export interface HistoryQuery {
  chatId: string;
  flowId?: string | undefined;
  /** the last message id the client has seen */
  cursor?: number | undefined;
  pageSize: number;
}

export interface ConversationItem {
  conversation: ConversationRow;
  /** newest message, input requests excluded */
  latest: MessageRow | null;
}

const BLANK_MESSAGE = { intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: null };

/** A title from the first question: its first line, clipped by code points. */
export function titleFrom(question: string): string {
  const line = displayText(question).split('\n').map((l) => l.trim()).find(Boolean) ?? '';
  return Array.from(line).slice(0, TITLE_CHARS).join('') || DEFAULT_NAME;
}

/** Conversations and their messages as the REST API sees them: load, authorize, act, audit. */
export class ConversationService {
  constructor(private readonly repos: Repos) {}

  /** Loads a conversation the caller may act on; missing, deleted and foreign all answer 404. */
  async load(p: Principal, chatId: string, action: ConversationAction): Promise<ConversationRow> {
    return authorizeConversation(p, await this.repos.conversations.get(chatId), action);
  }

  /** Loads a message whose conversation the caller may act on; otherwise 404. */
  async loadMessage(p: Principal, messageId: number, action: ConversationAction): Promise<{ message: MessageRow; conversation: ConversationRow }> {
    const message = await this.repos.messages.get(messageId);
    if (!message) throw AppError.notFound('Message not found');
    try {
      const conversation = await this.load(p, message.chat_id, action);
      return { message, conversation };
    } catch {
      throw AppError.notFound('Message not found');
    }
  }

  /** The caller's own conversations (admins too), newest update first, each with its latest message. */
  async list(p: Principal, q: ListQuery): Promise<{ list: ConversationItem[]; total: number }> {
    const { list, total } = await this.repos.conversations.list({ ...q, userId: p.id });
    const latest = await this.repos.conversations.latestMessages(list.map((c) => c.chat_id));
    return { list: list.map((c) => ({ conversation: c, latest: latest.get(c.chat_id) ?? null })), total };
  }

  /** A page of messages, newest first. `review`: an admin reading any conversation, deleted ones included. */
  async history(p: Principal, q: HistoryQuery, opts: { review?: boolean } = {}): Promise<MessageRow[]> {
    const conv = opts.review ? authorizeReview(p, await this.repos.conversations.get(q.chatId)) : await this.load(p, q.chatId, 'read');
    if (q.flowId !== undefined && q.flowId !== conv.flow_id) throw AppError.notFound('Conversation not found');
    return this.repos.messages.history(conv.chat_id, q.cursor, q.pageSize);
  }

  /** The newest LATEST_LIMIT messages, oldest first. */
  async latest(p: Principal, chatId: string): Promise<MessageRow[]> {
    await this.load(p, chatId, 'read');
    return this.repos.messages.latest(chatId, LATEST_LIMIT);
  }

  /** The conversation with every message, oldest first (export). */
  async transcript(p: Principal, chatId: string): Promise<{ conversation: ConversationRow; messages: MessageRow[] }> {
    const conversation = await this.load(p, chatId, 'read');
    return { conversation, messages: await this.repos.messages.all(chatId) };
  }

  /** Starts an empty conversation. A taken chat_id answers 10409, whoever holds it. */
  async create(p: Principal, input: { flowId: string; chatId?: string | undefined; name?: string | undefined }, ip: string): Promise<ConversationRow> {
    const app = authorizeAppUse(p, await this.repos.apps.get(input.flowId));
    const conv = await this.repos.conversations.createIfAbsent(this.newConversation(p, app, input.chatId ?? newId(), input.name ?? DEFAULT_NAME));
    if (!conv) throw new AppError('conflict', 'Conversation already exists');
    await this.audit(p, 'session.create', 'conversation', conv.chat_id, { flow_id: app.id }, ip);
    return conv;
  }

  async rename(p: Principal, chatId: string, name: string): Promise<void> {
    await this.load(p, chatId, 'write');
    await this.repos.conversations.update(chatId, { name });
  }

  /** A new conversation with copies of every message, owned by the caller. */
  async copy(p: Principal, chatId: string): Promise<ConversationRow> {
    const source = await this.load(p, chatId, 'write');
    return this.repos.conversations.copy(source, newId(), source.name.slice(0, NAME_MAX - COPY_SUFFIX.length) + COPY_SUFFIX);
  }

  /** Soft delete: the conversation disappears for its owner; its messages stay for review. */
  async remove(p: Principal, chatId: string, turns: TurnControl, ip: string): Promise<void> {
    await this.load(p, chatId, 'write');
    await turns.stop(chatId);
    await this.repos.conversations.softDelete(chatId);
    await this.audit(p, 'session.delete', 'conversation', chatId, {}, ip);
  }

  /** @returns whether a turn was running */
  async interrupt(p: Principal, chatId: string, turns: TurnControl): Promise<boolean> {
    await this.load(p, chatId, 'write');
    return turns.stop(chatId);
  }

  /**
   * Stores a question/answer pair written by hand, creating the conversation on first use. Both rows
   * count as user-supplied content (sensitive_status 2 on the question and the conversation, as Bisheng).
   */
  async insertPair(p: Principal, input: { flowId: string; chatId: string; question: string; answer: string }, ip: string): Promise<MessageRow[]> {
    const existing = await this.repos.conversations.get(input.chatId);
    const create = existing ? null : this.newConversation(p, authorizeAppVisible(p, await this.repos.apps.get(input.flowId)), input.chatId, titleFrom(input.question));
    const base = { ...BLANK_MESSAGE, flow_id: input.flowId, user_id: p.id };
    const rows = await this.repos.conversations.appendMessages(input.chatId, create, [
      { ...base, is_bot: 0, message: input.question, type: 'human', category: 'question', sensitive_status: 2 },
      { ...base, is_bot: 1, message: input.answer, type: 'bot', category: 'answer', sensitive_status: 1 },
    ], (c) => {
      // checked inside the transaction: a concurrent request may have created the chat_id meanwhile
      if (authorizeConversation(p, c, 'write').flow_id !== input.flowId) throw AppError.notFound('Conversation not found');
    }, { sensitive_status: 2 });
    await this.audit(p, 'message.insert', 'conversation', input.chatId, { message_ids: rows.map((r) => r.id) }, ip);
    return rows;
  }

  /** Owner only. An edited message is user content: source 0, sensitive_status 2 on it and its conversation. */
  async editMessage(p: Principal, id: number, patch: { message: string; category?: string | undefined }, ip: string): Promise<MessageRow> {
    const { message: old } = await this.loadMessage(p, id, 'write');
    const row = await this.repos.messages.edit(id, { message: patch.message, ...(patch.category === undefined ? {} : { category: patch.category }), source: 0, sensitive_status: 2 }, { sensitive_status: 2 });
    if (!row) throw AppError.notFound('Message not found');
    await this.audit(p, 'message.update', 'message', String(id), { chat_id: row.chat_id, old_length: old.message.length, new_length: row.message.length }, ip);
    return row;
  }

  /** Owner only; a hard delete. */
  async deleteMessage(p: Principal, id: number, ip: string): Promise<void> {
    const { message } = await this.loadMessage(p, id, 'write');
    await this.repos.messages.delete(id);
    await this.audit(p, 'message.delete', 'message', String(id), { chat_id: message.chat_id }, ip);
  }

  private newConversation(p: Principal, app: AppRow, chatId: string, name: string) {
    return { chat_id: chatId, name, flow_id: app.id, flow_type: FLOW_TYPE[app.kind], flow_name: app.name, user_id: p.id };
  }

  private audit(p: Principal, action: string, objectType: string, objectId: string, detail: object, ip: string): Promise<void> {
    return this.repos.audit.record({ user_id: p.id, action, object_type: objectType, object_id: objectId, detail, ip });
  }
}
