import type { App } from '../app.ts';
import type { Services } from '../services.ts';

export function registerFeedbackRoutes(app: App, services: Services): void {
  void app;
  void services;
}
