import type { Generated, Insertable, Selectable, Updateable } from 'kysely';

/**
 * Row shapes of every table. Times are ISO-8601 UTC strings (lexically ordered, portable across
 * SQLite and PostgreSQL); booleans are 0/1 integers; JSON is stored as text (Bisheng's shapes).
 */
export interface UsersTable {
  id: Generated<number>;
  user_name: string;
  password_hash: string;
  role: 'admin' | 'user';
  token_version: Generated<number>;
  create_time: string;
  update_time: string;
}

export interface ApiKeysTable {
  id: Generated<number>;
  user_id: number;
  name: string;
  key_hash: string;
  key_prefix: string;
  /** JSON array of app ids, or null for every app the owner may use */
  app_ids: string | null;
  revoked: Generated<number>;
  last_used_time: string | null;
  create_time: string;
}

export interface AppsTable {
  id: string;
  name: string;
  description: string;
  icon: string;
  kind: 'chat' | 'assistant' | 'workflow';
  user_id: number;
  online: Generated<number>;
  /** JSON of AppSpec: the editable draft */
  draft: string;
  published_version: number | null;
  is_delete: Generated<number>;
  create_time: string;
  update_time: string;
}

export interface AppVersionsTable {
  id: Generated<number>;
  app_id: string;
  version: number;
  /** JSON of AppSpec frozen at publish time */
  spec: string;
  user_id: number;
  create_time: string;
}

export interface ConversationsTable {
  chat_id: string;
  name: string;
  flow_id: string;
  flow_type: number;
  flow_name: string;
  user_id: number;
  like_count: Generated<number>;
  dislike_count: Generated<number>;
  copied_count: Generated<number>;
  sensitive_status: Generated<number>;
  is_delete: Generated<number>;
  /** high-water mark of the conversation's event seq (resume across restarts) */
  last_seq: Generated<number>;
  /** the running turn, the instance that runs it, and until when its lease holds (ISO); null between turns */
  turn_id: string | null;
  turn_owner: string | null;
  turn_lease: string | null;
  create_time: string;
  update_time: string;
}

export interface MessagesTable {
  id: Generated<number>;
  chat_id: string;
  flow_id: string;
  user_id: number;
  is_bot: number;
  message: string;
  type: string;
  category: string;
  intermediate_steps: string;
  files: string;
  extra: string;
  source: number;
  sender: string;
  receiver: string | null;
  liked: Generated<number>;
  solved: Generated<number>;
  copied: Generated<number>;
  remark: string;
  sensitive_status: Generated<number>;
  parent_message_id: number | null;
  turn_id: string | null;
  tokens: Generated<number>;
  latency_ms: number | null;
  create_time: string;
  update_time: string;
}

export interface AuditLogTable {
  id: Generated<number>;
  user_id: number | null;
  action: string;
  object_type: string;
  object_id: string;
  detail: string;
  ip: string;
  create_time: string;
}

/** The durable state of a conversation's workflow run (one per conversation). */
export interface WorkflowRunsTable {
  chat_id: string;
  run_id: string;
  app_id: string;
  version: number | null;
  user_id: number;
  status: 'running' | 'input' | 'success' | 'failed' | 'stopped';
  /** JSON of the executor's WorkflowRunState */
  state: string;
  /** the node waiting for input */
  node_id: string | null;
  /** when a pending input request expires */
  expires_at: string | null;
  create_time: string;
  /** also the compare-and-set token of `claim` */
  update_time: string;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export interface Database {
  users: UsersTable;
  api_keys: ApiKeysTable;
  apps: AppsTable;
  app_versions: AppVersionsTable;
  conversations: ConversationsTable;
  messages: MessagesTable;
  audit_log: AuditLogTable;
  workflow_runs: WorkflowRunsTable;
  settings: SettingsTable;
}

export type UserRow = Selectable<UsersTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;
export type AppRow = Selectable<AppsTable>;
export type AppVersionRow = Selectable<AppVersionsTable>;
export type ConversationRow = Selectable<ConversationsTable>;
export type NewConversation = Insertable<ConversationsTable>;
export type MessageRow = Selectable<MessagesTable>;
export type NewMessage = Insertable<MessagesTable>;
export type MessagePatch = Updateable<MessagesTable>;
export type AuditRow = Selectable<AuditLogTable>;
export type WorkflowRunRow = Selectable<WorkflowRunsTable>;
