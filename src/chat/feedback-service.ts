import { requireAdmin, scopeUser } from '../auth/policy.ts';
import { AppError } from '../domain/errors.ts';
import type { Principal } from '../domain/types.ts';
import type { Liked, MessageCountFilter } from '../storage/message-repo.ts';
import type { Repos } from '../storage/repos.ts';
import type { AuditFilter } from '../storage/stats-repo.ts';
import type { ConversationService } from './conversation-service.ts';

export type TelemetryOperation = 'like' | 'dislike' | 'copy';

export interface StatisticsQuery {
  flowId?: string | undefined;
  userId?: number | undefined;
  /** YYYY-MM-DD, inclusive */
  startDate?: string | undefined;
  /** YYYY-MM-DD, inclusive */
  endDate?: string | undefined;
}

const nextDay = (day: string) => new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
/** Stored times are UTC ISO strings, so bounds must be too for the string comparison to hold. */
function toStoredTime(t: string | undefined, path: string): string | undefined {
  if (t === undefined) return undefined;
  const ms = Date.parse(t);
  // RFC 3339 allows leap seconds (23:59:60), which Date cannot represent
  if (Number.isNaN(ms)) throw AppError.invalid([{ path, message: 'must be a representable time' }]);
  return new Date(ms).toISOString();
}

/** Feedback on messages (like, copy, comment, telemetry), usage statistics and the audit log. */
export class FeedbackService {
  constructor(private readonly repos: Repos, private readonly conversations: ConversationService) {}

  /** Feedback is the owner's alone: a foreign or missing message answers 404 alike. */
  private async ownMessage(p: Principal, messageId: number): Promise<void> {
    await this.conversations.loadMessage(p, messageId, 'write');
  }

  async setLiked(p: Principal, messageId: number, liked: Liked, comment?: string): Promise<void> {
    await this.ownMessage(p, messageId);
    await this.repos.messages.setLiked(messageId, liked);
    if (comment !== undefined) await this.repos.messages.update(messageId, { remark: comment });
  }

  async markCopied(p: Principal, messageId: number): Promise<void> {
    await this.ownMessage(p, messageId);
    await this.repos.messages.markCopied(messageId);
  }

  /** Stored in `remark` as Bisheng does; an interrupted answer stays marked in `extra.interrupted`, so it stays out of the context. */
  async comment(p: Principal, messageId: number, comment: string): Promise<void> {
    await this.ownMessage(p, messageId);
    await this.repos.messages.update(messageId, { remark: comment });
  }

  async telemetry(p: Principal, messageId: number, operation: TelemetryOperation, ip: string): Promise<void> {
    await this.ownMessage(p, messageId);
    await this.repos.audit.record({ user_id: p.id, action: 'message.telemetry', object_type: 'message', object_id: String(messageId), detail: { operation_type: operation }, ip });
  }

  async statistics(p: Principal, q: StatisticsQuery) {
    if (q.startDate && q.endDate && q.startDate > q.endDate) throw AppError.invalid([{ path: 'querystring/end_date', message: 'must not be before start_date' }]);
    return this.repos.stats.daily({ flowId: q.flowId, userId: scopeUser(p, q.userId), from: q.startDate, to: q.endDate && nextDay(q.endDate) });
  }

  countMessages(p: Principal, f: MessageCountFilter): Promise<number> {
    return this.repos.messages.count({ ...f, userId: scopeUser(p, f.userId), from: toStoredTime(f.from, 'querystring/start_time'), to: toStoredTime(f.to, 'querystring/end_time') });
  }

  audit(p: Principal, f: AuditFilter) {
    requireAdmin(p);
    return this.repos.audit.list(f);
  }
}
