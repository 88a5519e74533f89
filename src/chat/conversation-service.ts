import { authorizeConversation, type ConversationAction } from '../auth/policy.ts';
import { AppError } from '../domain/errors.ts';
import type { Principal } from '../domain/types.ts';
import type { Repos } from '../storage/repos.ts';
import type { ConversationRow, MessageRow } from '../storage/tables.ts';

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
}
