import { AppError } from '../domain/errors.ts';
import type { Principal } from '../domain/types.ts';
import type { AppRow, ConversationRow } from '../storage/tables.ts';

/**
 * Every authorization decision of Parley, taken right after the entity is loaded.
 * A resource the caller may not see answers exactly like a missing one (404), so existence never leaks.
 */
export type ConversationAction = 'read' | 'write';

export function authorizeConversation(p: Principal, conv: ConversationRow | undefined, action: ConversationAction): ConversationRow {
  if (!conv || conv.is_delete) throw AppError.notFound('Conversation not found');
  const owner = conv.user_id === p.id;
  if (owner || (action === 'read' && p.role === 'admin' && !p.apiKey)) return conv;
  throw AppError.notFound('Conversation not found');
}

/**
 * The conversation a chat turn may use: the caller's own, of this app, not deleted; null while it
 * does not exist yet (the first question creates it). Anything else is one outcome,
 * `conversation_denied`, which HTTP answers like a missing conversation (404) and a WebSocket as no
 * permission (1008).
 */
export function authorizeChatConversation(p: Principal, conv: ConversationRow | undefined | null, appId: string): ConversationRow | null {
  if (!conv) return null;
  if (conv.user_id !== p.id || conv.is_delete || conv.flow_id !== appId) throw new AppError('conversation_denied');
  return conv;
}

/** Whose rows a statistics query covers: admins any user (or everyone); every other caller only their own. */
export function scopeUser(p: Principal, requested: number | undefined): number | undefined {
  return p.role === 'admin' && !p.apiKey ? requested : p.id;
}

export function requireAdmin(p: Principal): void {
  if (p.role !== 'admin' || p.apiKey) throw new AppError('forbidden', 'Admin only');
}

export function canEditApps(p: Principal): boolean {
  return p.role === 'admin' && !p.apiKey;
}

/** May the caller see the app at all (exists, not deleted, within the API key's scope)? */
export function authorizeAppVisible(p: Principal, app: AppRow | undefined): AppRow {
  if (!app) throw AppError.notFound('App not found');
  if (app.is_delete) throw new AppError('app_deleted');
  if (p.apiKey?.appIds && !p.apiKey.appIds.includes(app.id)) throw AppError.notFound('App not found');
  return app;
}

/** May the caller chat with the published app? Admins may also use drafts (debug mode). */
export function authorizeAppChat(p: Principal, app: AppRow | undefined, opts: { draft: boolean }): AppRow {
  const visible = authorizeAppVisible(p, app);
  if (opts.draft) {
    if (!canEditApps(p)) throw new AppError('forbidden', 'Debug mode is for app editors');
    return visible;
  }
  if (!visible.online || visible.published_version === null) throw new AppError('app_offline');
  return visible;
}

/** May the caller start a conversation with the app? Plain users need it online and published; editors may use any visible app. */
export function authorizeAppUse(p: Principal, app: AppRow | undefined): AppRow {
  return canEditApps(p) ? authorizeAppVisible(p, app) : authorizeAppChat(p, app, { draft: false });
}

/**
 * Reviewers (admins) read any conversation, soft-deleted ones included: keeping the messages of a
 * deleted conversation for review is why deletion is soft.
 */
export function authorizeReview(p: Principal, conv: ConversationRow | undefined): ConversationRow {
  requireAdmin(p);
  if (!conv) throw AppError.notFound('Conversation not found');
  return conv;
}

export function requireAppEditor(p: Principal): void {
  if (!canEditApps(p)) throw new AppError('forbidden', 'Only admins may change apps');
}

/** Changing an app (draft, publish, status, delete) or reading its drafts and versions. */
export function authorizeAppEdit(p: Principal, app: AppRow | undefined): AppRow {
  requireAppEditor(p);
  return authorizeAppVisible(p, app);
}

/** Reading one app: editors see every app; others only online, published ones (else 404, so existence does not leak). */
export function authorizeAppRead(p: Principal, app: AppRow | undefined): AppRow {
  const visible = authorizeAppVisible(p, app);
  if (canEditApps(p) || (visible.online && visible.published_version !== null)) return visible;
  throw AppError.notFound('App not found');
}

/** Which apps the caller's app lists may show. */
export function appListScope(p: Principal): { onlineOnly: boolean; ids: string[] | undefined } {
  return { onlineOnly: !canEditApps(p), ids: p.apiKey?.appIds ?? undefined };
}
