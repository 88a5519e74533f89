import type { AppService } from '../apps/app-service.ts';
import { authorizeAppChat, authorizeChatConversation } from '../auth/policy.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { LlmProvider } from '../domain/llm.ts';
import { FLOW_TYPE, isHexId, type AppKind, type AppSpec, type ModelSettings, type Principal } from '../domain/types.ts';
import type { Repos } from '../storage/repos.ts';
import type { AppRow, ConversationRow } from '../storage/tables.ts';
import { titleFrom } from './conversation-service.ts';

/** A conversation the caller may chat in, resolved at connect or per frame. */
export interface ChatTarget {
  app: AppRow;
  spec: AppSpec;
  /** null: an unstored turn — debug mode on the draft, or a stateless API call on the published app */
  chatId: string | null;
  /** the published version the spec is from; null: the draft (debug mode) */
  version: number | null;
  /** the stored conversation as resolve read it (its owner checked); null: not created yet, undefined: not read */
  conversation?: ConversationRow | null | undefined;
}

export interface TargetOptions {
  chatId: string | null;
  /** the app kind a path pins */
  kind?: AppKind | undefined;
  versionId?: number | undefined;
  /** without a chat_id: a stateless call on the published app rather than debug mode on the draft */
  stateless?: boolean;
}

/** Resolves what a socket or request may chat with. */
export class Targets {
  constructor(private readonly deps: { repos: Repos; apps: AppService; providers: { get(name: string): LlmProvider } }) {}

  /**
   * With a chat_id: the published, online app and a conversation that is the caller's (or new).
   * Without: debug mode on the draft (editors only), or a stateless call on the published app.
   */
  async resolve(p: Principal, appId: string, opts: TargetOptions): Promise<ChatTarget> {
    const draft = opts.chatId === null && !opts.stateless;
    if (opts.chatId !== null && !isHexId(opts.chatId)) throw AppError.invalid([{ path: 'chat_id', message: 'must be 32 hex characters' }], 'invalid chat_id');
    const app = authorizeAppChat(p, await this.deps.repos.apps.get(appId), { draft });
    if (opts.kind && app.kind !== opts.kind) throw new AppError('app_kind_mismatch');
    let conversation: ConversationRow | null | undefined;
    if (opts.chatId !== null) conversation = authorizeChatConversation(p, await this.deps.repos.conversations.get(opts.chatId), app.id);
    let spec: AppSpec;
    try {
      spec = await this.deps.apps.specFor(app, { draft, version: opts.versionId });
      this.deps.providers.get(spec.model.provider);
    } catch (err) {
      const e = toAppError(err);
      throw e.code === 'app_offline' || e.code === 'not_found' ? e : new AppError('app_unbuildable', 'draft does not build');
    }
    return { app, spec, chatId: opts.chatId, version: draft ? null : (opts.versionId ?? app.published_version), conversation };
  }

  /**
   * The conversation of a stored target as it is now, or null while it does not exist; checked
   * again, since a socket may have resolved its chat_id before another user created it.
   */
  async own(p: Principal, target: ChatTarget): Promise<ConversationRow | null> {
    return authorizeChatConversation(p, await this.deps.repos.conversations.get(target.chatId!), target.app.id);
  }

  /** The conversation of a stored target, created (titled by `text`) if it is new. */
  async ensure(p: Principal, target: ChatTarget, text: string): Promise<ConversationRow> {
    // resolve read it (and checked whose it is) a moment ago
    if (target.conversation) return target.conversation;
    const conv = await this.deps.repos.conversations.ensure({
      chat_id: target.chatId!, name: titleFrom(text), flow_id: target.app.id,
      flow_type: FLOW_TYPE[target.app.kind], flow_name: target.app.name, user_id: p.id,
    });
    return authorizeChatConversation(p, conv, target.app.id)!;
  }
}

/** The target with a caller's model settings: `temperature` replaces the app's; `max_tokens` may only lower its cap. */
export function withModel(target: ChatTarget, override: { temperature?: number | null | undefined; maxTokens?: number | null | undefined }): ChatTarget {
  const model: ModelSettings = { ...target.spec.model };
  if (override.temperature !== undefined && override.temperature !== null) model.temperature = override.temperature;
  if (override.maxTokens !== undefined && override.maxTokens !== null) model.max_tokens = Math.min(model.max_tokens ?? override.maxTokens, override.maxTokens);
  return { ...target, spec: { ...target.spec, model } };
}
