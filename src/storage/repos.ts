import { AppRepo } from './app-repo.ts';
import { ConversationRepo } from './conversation-repo.ts';
import type { Db } from './db.ts';
import { MessageRepo } from './message-repo.ts';
import { AuditRepo, StatsRepo } from './stats-repo.ts';
import { ApiKeyRepo, SettingsRepo, UserRepo } from './user-repo.ts';
import { WorkflowRunRepo } from './workflow-run-repo.ts';

/** Every repository over one database: the only code that writes SQL. */
export interface Repos {
  users: UserRepo;
  apiKeys: ApiKeyRepo;
  settings: SettingsRepo;
  apps: AppRepo;
  conversations: ConversationRepo;
  messages: MessageRepo;
  stats: StatsRepo;
  audit: AuditRepo;
  workflowRuns: WorkflowRunRepo;
}

export function createRepos(db: Db): Repos {
  const k = db.kysely;
  return {
    users: new UserRepo(k),
    apiKeys: new ApiKeyRepo(k),
    settings: new SettingsRepo(k),
    apps: new AppRepo(k),
    conversations: new ConversationRepo(k),
    messages: new MessageRepo(k),
    stats: new StatsRepo(k),
    audit: new AuditRepo(k),
    workflowRuns: new WorkflowRunRepo(k),
  };
}
