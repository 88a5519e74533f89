import type { AppService } from '../apps/app-service.ts';
import type { AuthService } from '../auth/auth-service.ts';
import type { Bus } from '../bus/bus.ts';
import type { ChatService } from '../chat/chat-service.ts';
import type { ConversationService } from '../chat/conversation-service.ts';
import type { FeedbackService } from '../chat/feedback-service.ts';
import type { TurnControl } from '../chat/turn-control.ts';
import type { Config } from '../config/config.ts';
import type { RedisClient } from '../redis/connect.ts';
import type { Db } from '../storage/db.ts';
import type { Repos } from '../storage/repos.ts';
import type { WsGateway } from '../ws/ws-gateway.ts';
import type { Metrics } from './metrics.ts';

/** Everything the HTTP layer may call, built by the composition root (src/server.ts). */
export interface Services {
  config: Config;
  db: Db;
  repos: Repos;
  auth: AuthService;
  apps: AppService;
  conversations: ConversationService;
  feedback: FeedbackService;
  turns: TurnControl;
  chat: ChatService;
  /** conversation events, for transports that watch them (SSE) */
  bus: Bus;
  gateway: WsGateway;
  /** the tools apps and workflow nodes may name */
  tools: { names(): string[] };
  metrics: Metrics;
  /** the Redis the instances share; null: one instance, everything in this process */
  redis: RedisClient | null;
}
