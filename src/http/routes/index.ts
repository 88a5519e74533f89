import type { App } from '../app.ts';
import type { Services } from '../services.ts';
import { registerAuthRoutes } from './auth-routes.ts';
import { registerOpsRoutes } from './ops-routes.ts';

export async function registerRoutes(app: App, services: Services): Promise<void> {
  registerOpsRoutes(app, services);
  registerAuthRoutes(app, services);
}
