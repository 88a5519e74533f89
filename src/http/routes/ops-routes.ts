import { Type } from '@sinclair/typebox';
import type { App } from '../app.ts';
import type { Services } from '../services.ts';

const RedisHealth = Type.Optional(Type.Object({ ok: Type.Boolean(), status: Type.String({ description: "the connection's state: ready, connecting, reconnecting, …" }) }, {
  description: 'present when instances share Redis; not ok: this instance serves from itself alone (degraded) until Redis is back',
}));

export function registerOpsRoutes(app: App, { db, metrics, redis }: Services): void {
  app.get('/health', {
    config: { public: true },
    schema: {
      tags: ['ops'],
      summary: 'Liveness and dependency check: `ok`, `degraded` (Redis away: served by this instance alone) or `error` (the database is away)',
      security: [],
      response: {
        200: Type.Object({
          status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
          db: Type.Object({ ok: Type.Boolean(), dialect: Type.String(), ms: Type.Number() }),
          redis: RedisHealth,
          reason: Type.Optional(Type.String()),
        }),
        503: Type.Object({ status: Type.Literal('error'), db: Type.Object({ ok: Type.Boolean(), dialect: Type.String(), error: Type.String() }), redis: RedisHealth }),
      },
    },
  }, async (_req, reply) => {
    const started = performance.now();
    const shared = redis ? { redis: { ok: redis.status === 'ready', status: redis.status } } : {};
    try {
      await db.ping();
      const seconds = (performance.now() - started) / 1000;
      metrics.dbLatency.observe(seconds);
      const body = { status: 'ok' as 'ok' | 'degraded', db: { ok: true, dialect: db.dialect, ms: Math.round(seconds * 10000) / 10 }, ...shared };
      if (shared.redis && !shared.redis.ok) return { ...body, status: 'degraded' as const, reason: `Redis is ${shared.redis.status}: this instance serves its own conversations only` };
      return body;
    } catch (err) {
      return reply.status(503).send({ status: 'error' as const, db: { ok: false, dialect: db.dialect, error: (err as Error).message }, ...shared });
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
