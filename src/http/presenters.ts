import type { AuditRow, ConversationRow, MessageRow } from '../storage/tables.ts';

/** The only code that decides what a stored message looks like on the wire. */
export const presentMessage = (m: MessageRow) => ({ ...m, message_id: m.id });

export const presentConversation = (c: ConversationRow) => ({
  chat_id: c.chat_id,
  name: c.name,
  flow_id: c.flow_id,
  flow_type: c.flow_type,
  flow_name: c.flow_name,
  user_id: c.user_id,
  like: c.like_count,
  dislike: c.dislike_count,
  copied: c.copied_count,
  sensitive_status: c.sensitive_status,
  is_delete: c.is_delete,
  create_time: c.create_time,
  update_time: c.update_time,
});

/** A conversation in the lists: Bisheng's ChatList item (`logo` is kept for its client, always ''). */
export const presentChatListItem = (c: ConversationRow, latest: MessageRow | null) => ({
  ...presentConversation(c),
  logo: '',
  latest_message: latest ? presentMessage(latest) : null,
});

export const presentAudit = (r: AuditRow) => ({ ...r, detail: JSON.parse(r.detail) as Record<string, unknown> });
