import { FLOW_TYPE, newId } from '../../src/domain/types.ts';
import type { AppRow, ConversationRow, MessageRow } from '../../src/storage/tables.ts';
import type { TestServer } from './server.ts';

/** The seeded demo app of a kind (every test server seeds them on first start). */
export async function demoApp(server: TestServer, kind: 'chat' | 'assistant' | 'workflow' = 'chat'): Promise<AppRow> {
  const { list } = await server.handle.services.repos.apps.list({ kind, page: 1, limit: 10 });
  const app = list.find((a) => a.name.startsWith('Demo'));
  if (!app) throw new Error(`no demo ${kind} app`);
  return app;
}

/**
 * Stores a conversation with `pairs` question/answer rows straight through the repositories, for
 * tests whose subject is an endpoint that reads or changes existing data.
 */
export async function seedConversation(server: TestServer, opts: { userId: number; app: AppRow; pairs?: number; name?: string; chatId?: string }): Promise<{ conversation: ConversationRow; messages: MessageRow[] }> {
  const { repos } = server.handle.services;
  const chatId = opts.chatId ?? newId();
  const conversation = await repos.conversations.create({
    chat_id: chatId, name: opts.name ?? 'Seeded chat', flow_id: opts.app.id, flow_type: FLOW_TYPE[opts.app.kind], flow_name: opts.app.name, user_id: opts.userId,
  });
  const rows = [];
  for (let i = 0; i < (opts.pairs ?? 2); i++) {
    const base = { chat_id: chatId, flow_id: opts.app.id, user_id: opts.userId, intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: null };
    rows.push({ ...base, is_bot: 0, message: `question ${i}`, type: 'human', category: 'question' });
    rows.push({ ...base, is_bot: 1, message: `answer ${i}`, type: 'bot', category: 'answer', tokens: 10 + i, latency_ms: 100 });
  }
  const messages = await repos.messages.insertMany(rows);
  return { conversation, messages };
}
