import { Type } from '@sinclair/typebox';
import type { App } from '../app.ts';
import type { Services } from '../services.ts';

export function registerOpsRoutes(app: App, { db, metrics }: Services): void {
  app.get('/health', {
    config: { public: true },
    schema: {
      tags: ['ops'],
      summary: 'Liveness and dependency check',
      security: [],
      response: {
        200: Type.Object({ status: Type.Literal('ok'), db: Type.Object({ ok: Type.Boolean(), dialect: Type.String(), ms: Type.Number() }) }),
        503: Type.Object({ status: Type.Literal('error'), db: Type.Object({ ok: Type.Boolean(), dialect: Type.String(), error: Type.String() }) }),
      },
    },
  }, async (_req, reply) => {
    const started = performance.now();
    try {
      await db.ping();
      const seconds = (performance.now() - started) / 1000;
      metrics.dbLatency.observe(seconds);
      return { status: 'ok' as const, db: { ok: true, dialect: db.dialect, ms: Math.round(seconds * 10000) / 10 } };
    } catch (err) {
      return reply.status(503).send({ status: 'error' as const, db: { ok: false, dialect: db.dialect, error: (err as Error).message } });
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    metrics.httpRequests.inc({ method: req.method, status: String(reply.statusCode) });
  });

  app.get('/metrics', {
    config: { public: true },
    schema: { tags: ['ops'], summary: 'Prometheus metrics', security: [], produces: ['text/plain'], response: { 200: Type.String() } },
  }, async (_req, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
