import { Type, type TSchema } from '@sinclair/typebox';

/**
 * Wire schemas shared by several route groups. Each is the single source of truth for request
 * validation, response serialisation and the OpenAPI document.
 */
export const Envelope = <T extends TSchema>(data: T) =>
  Type.Object({ status_code: Type.Integer(), status_message: Type.String(), data });

export const ErrorEnvelope = Type.Object({
  status_code: Type.Integer({ description: 'Parley error code (PROTOCOL.md §6)' }),
  status_message: Type.String(),
  data: Type.Any({ description: 'null, or {errors: [{path, message}]} for validation errors' }),
}, { $id: 'ErrorEnvelope' });

export const HexId = Type.String({ pattern: '^[0-9a-f]{32}$', description: '32-hex id' });
export const IntId = Type.Integer({ minimum: 1, maximum: 2147483647 });
export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const PageQuery = {
  page: Type.Integer({ minimum: 1, maximum: 100000, default: 1 }),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
};

export const ListOf = <T extends TSchema>(item: T) => Type.Object({ list: Type.Array(item), total: Type.Integer() });

export const UserSchema = Type.Object({
  user_id: Type.Integer(),
  user_name: Type.String(),
  role: Type.Union([Type.Literal('admin'), Type.Literal('user')]),
  create_time: Type.String(),
});

/** A chat message row in Bisheng's shape (files/extra are JSON-encoded strings). */
export const MessageSchema = Type.Object({
  id: Type.Integer(),
  message_id: Type.Integer({ description: 'same as id' }),
  chat_id: Type.String(),
  flow_id: Type.String(),
  user_id: Type.Integer(),
  is_bot: Type.Integer({ description: '0 user, 1 bot' }),
  message: Type.String({ description: 'plain text or a JSON string' }),
  type: Type.String(),
  category: Type.String(),
  intermediate_steps: Type.String(),
  files: Type.String({ description: 'JSON-encoded array' }),
  extra: Type.String({ description: 'JSON-encoded object' }),
  source: Type.Integer(),
  sender: Type.String(),
  receiver: Nullable(Type.String()),
  liked: Type.Integer({ description: '0 none, 1 like, 2 dislike' }),
  solved: Type.Integer(),
  copied: Type.Integer(),
  remark: Type.String(),
  sensitive_status: Type.Integer(),
  parent_message_id: Nullable(Type.Integer()),
  turn_id: Nullable(Type.String()),
  create_time: Type.String(),
  update_time: Type.String(),
}, { $id: 'Message' });

export const ConversationSchema = Type.Object({
  chat_id: Type.String(),
  name: Type.String(),
  flow_id: Type.String(),
  flow_type: Type.Integer(),
  flow_name: Type.String(),
  user_id: Type.Integer(),
  like: Type.Integer(),
  dislike: Type.Integer(),
  copied: Type.Integer(),
  sensitive_status: Type.Integer(),
  is_delete: Type.Integer(),
  create_time: Type.String(),
  update_time: Type.String(),
}, { $id: 'Conversation' });

/** A conversation in the lists (/chat/list, /chat/session/list). */
export const ChatListItemSchema = Type.Composite([ConversationSchema, Type.Object({
  logo: Type.String(),
  latest_message: Nullable(MessageSchema),
})], { $id: 'ChatListItem' });
