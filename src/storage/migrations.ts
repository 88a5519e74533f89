import { Migrator, type Kysely, type Migration, type MigrationProvider, type CreateTableBuilder } from 'kysely';
import type { Dialect } from './db.ts';

type AnyDb = Kysely<unknown>;

/** Migrations are code, in order; each gets the dialect so ids and text types fit both databases. */
function migrations(dialect: Dialect): Record<string, Migration> {
  const id = <T extends string>(t: CreateTableBuilder<T, never>) =>
    dialect === 'postgres'
      ? t.addColumn('id', 'serial', (c) => c.primaryKey())
      : t.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());

  return {
    '0001_init': {
      async up(db: AnyDb) {
        await id(db.schema.createTable('users'))
          .addColumn('user_name', 'varchar(64)', (c) => c.notNull().unique())
          .addColumn('password_hash', 'text', (c) => c.notNull())
          .addColumn('role', 'varchar(16)', (c) => c.notNull())
          .addColumn('token_version', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .addColumn('update_time', 'varchar(32)', (c) => c.notNull())
          .execute();

        await id(db.schema.createTable('api_keys'))
          .addColumn('user_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
          .addColumn('name', 'varchar(128)', (c) => c.notNull())
          .addColumn('key_hash', 'varchar(128)', (c) => c.notNull().unique())
          .addColumn('key_prefix', 'varchar(32)', (c) => c.notNull())
          .addColumn('app_ids', 'text')
          .addColumn('revoked', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_used_time', 'varchar(32)')
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .execute();

        await db.schema.createTable('apps')
          .addColumn('id', 'varchar(32)', (c) => c.primaryKey())
          .addColumn('name', 'varchar(256)', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull())
          .addColumn('icon', 'text', (c) => c.notNull())
          .addColumn('kind', 'varchar(16)', (c) => c.notNull())
          .addColumn('user_id', 'integer', (c) => c.notNull())
          .addColumn('online', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('draft', 'text', (c) => c.notNull())
          .addColumn('published_version', 'integer')
          .addColumn('is_delete', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .addColumn('update_time', 'varchar(32)', (c) => c.notNull())
          .execute();

        await id(db.schema.createTable('app_versions'))
          .addColumn('app_id', 'varchar(32)', (c) => c.notNull().references('apps.id').onDelete('cascade'))
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('spec', 'text', (c) => c.notNull())
          .addColumn('user_id', 'integer', (c) => c.notNull())
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .addUniqueConstraint('app_versions_app_version', ['app_id', 'version'])
          .execute();

        await db.schema.createTable('conversations')
          .addColumn('chat_id', 'varchar(32)', (c) => c.primaryKey())
          .addColumn('name', 'varchar(512)', (c) => c.notNull())
          .addColumn('flow_id', 'varchar(32)', (c) => c.notNull())
          .addColumn('flow_type', 'integer', (c) => c.notNull())
          .addColumn('flow_name', 'varchar(256)', (c) => c.notNull())
          .addColumn('user_id', 'integer', (c) => c.notNull())
          .addColumn('like_count', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('dislike_count', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('copied_count', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('sensitive_status', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('is_delete', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_seq', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .addColumn('update_time', 'varchar(32)', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('conversations_user').on('conversations').columns(['user_id', 'is_delete', 'update_time']).execute();
        await db.schema.createIndex('conversations_flow').on('conversations').column('flow_id').execute();

        await id(db.schema.createTable('messages'))
          .addColumn('chat_id', 'varchar(32)', (c) => c.notNull())
          .addColumn('flow_id', 'varchar(32)', (c) => c.notNull())
          .addColumn('user_id', 'integer', (c) => c.notNull())
          .addColumn('is_bot', 'integer', (c) => c.notNull())
          .addColumn('message', 'text', (c) => c.notNull())
          .addColumn('type', 'varchar(32)', (c) => c.notNull())
          .addColumn('category', 'varchar(32)', (c) => c.notNull())
          .addColumn('intermediate_steps', 'text', (c) => c.notNull())
          .addColumn('files', 'text', (c) => c.notNull())
          .addColumn('extra', 'text', (c) => c.notNull())
          .addColumn('source', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('sender', 'varchar(128)', (c) => c.notNull().defaultTo(''))
          .addColumn('receiver', 'text')
          .addColumn('liked', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('solved', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('copied', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('remark', 'varchar(4096)', (c) => c.notNull().defaultTo(''))
          .addColumn('sensitive_status', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('parent_message_id', 'integer')
          .addColumn('turn_id', 'varchar(32)')
          .addColumn('tokens', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('latency_ms', 'integer')
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .addColumn('update_time', 'varchar(32)', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('messages_chat').on('messages').columns(['chat_id', 'id']).execute();
        await db.schema.createIndex('messages_flow_time').on('messages').columns(['flow_id', 'create_time']).execute();

        await id(db.schema.createTable('audit_log'))
          .addColumn('user_id', 'integer')
          .addColumn('action', 'varchar(64)', (c) => c.notNull())
          .addColumn('object_type', 'varchar(32)', (c) => c.notNull())
          .addColumn('object_id', 'varchar(64)', (c) => c.notNull())
          .addColumn('detail', 'text', (c) => c.notNull())
          .addColumn('ip', 'varchar(64)', (c) => c.notNull())
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_log_time').on('audit_log').column('create_time').execute();

        await db.schema.createTable('settings')
          .addColumn('key', 'varchar(64)', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
      },
      async down(db: AnyDb) {
        for (const t of ['settings', 'audit_log', 'messages', 'conversations', 'app_versions', 'apps', 'api_keys', 'users']) {
          await db.schema.dropTable(t).ifExists().execute();
        }
      },
    },
    '0002_workflow_runs': {
      async up(db: AnyDb) {
        await db.schema.createTable('workflow_runs')
          .addColumn('chat_id', 'varchar(64)', (c) => c.primaryKey())
          .addColumn('run_id', 'varchar(32)', (c) => c.notNull())
          .addColumn('app_id', 'varchar(32)', (c) => c.notNull())
          .addColumn('version', 'integer')
          .addColumn('user_id', 'integer', (c) => c.notNull())
          .addColumn('status', 'varchar(16)', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('node_id', 'varchar(128)')
          .addColumn('expires_at', 'varchar(32)')
          .addColumn('create_time', 'varchar(32)', (c) => c.notNull())
          .addColumn('update_time', 'varchar(32)', (c) => c.notNull())
          .execute();
      },
      async down(db: AnyDb) {
        await db.schema.dropTable('workflow_runs').ifExists().execute();
      },
    },
    // which instance runs a conversation's turn, until when (renewed while it runs): one turn per
    // conversation across instances, and a turn whose instance died is found and ended
    '0003_turn_owner': {
      async up(db: AnyDb) {
        for (const [column, type] of [['turn_id', 'varchar(32)'], ['turn_owner', 'varchar(64)'], ['turn_lease', 'varchar(32)']] as const) {
          await db.schema.alterTable('conversations').addColumn(column, type).execute();
        }
        await db.schema.createIndex('conversations_turn_lease').on('conversations').column('turn_lease').execute();
      },
      async down(db: AnyDb) {
        await db.schema.dropIndex('conversations_turn_lease').ifExists().execute();
        for (const column of ['turn_lease', 'turn_owner', 'turn_id']) await db.schema.alterTable('conversations').dropColumn(column).execute();
      },
    },
  };
}

class CodeProvider implements MigrationProvider {
  constructor(private readonly dialect: Dialect) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.dialect);
  }
}

export interface MigrationReport {
  applied: string[];
}

/** Brings the schema to the newest migration. Safe to call on every start and from several instances. */
export async function migrateToLatest(db: Kysely<never>, dialect: Dialect): Promise<MigrationReport> {
  const migrator = new Migrator({ db, provider: new CodeProvider(dialect) });
  // Kysely serialises concurrent migrators with its lock table, but two instances starting at once
  // can race on creating that table; the loser simply tries again.
  for (let attempt = 1; ; attempt++) {
    const { error, results } = await migrator.migrateToLatest();
    if (!error) return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
    if (attempt >= 3) throw error instanceof Error ? error : new Error(String(error));
    await new Promise((r) => setTimeout(r, 100 * attempt));
  }
}
