import type { App } from '../app.ts';
import type { Services } from '../services.ts';
import { registerAppRoutes } from './app-routes.ts';
import { registerAstronRoutes } from './astron-routes.ts';
import { registerAuthRoutes } from './auth-routes.ts';
import { registerConversationRoutes } from './conversation-routes.ts';
import { registerFeedbackRoutes } from './feedback-routes.ts';
import { registerOpenAiRoutes } from './openai-routes.ts';
import { registerOpsRoutes } from './ops-routes.ts';
import { registerSseRoutes } from './sse-routes.ts';
import { registerWsRoutes } from './ws-routes.ts';

export async function registerRoutes(app: App, services: Services): Promise<void> {
  registerOpsRoutes(app, services);
  registerAuthRoutes(app, services);
  registerAppRoutes(app, services);
  registerConversationRoutes(app, services);
  registerFeedbackRoutes(app, services);
  registerWsRoutes(app, services.gateway);
  registerSseRoutes(app, services);
  registerOpenAiRoutes(app, services);
  registerAstronRoutes(app, services);
}
