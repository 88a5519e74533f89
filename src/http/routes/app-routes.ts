import type { App } from '../app.ts';
import type { Services } from '../services.ts';

export function registerAppRoutes(app: App, services: Services): void {
  void app;
  void services;
}
