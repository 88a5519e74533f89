import { randomUUID } from 'node:crypto';
import fastifyCookie from '@fastify/cookie';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import fastifyWebsocket from '@fastify/websocket';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type RawServerDefault } from 'fastify';
import type { Logger } from 'pino';
import { AppError, retryAfter, toAppError, type FieldError } from '../domain/errors.ts';
import type { Principal } from '../domain/types.ts';
import { errorBody } from './envelope.ts';
import type { Services } from './services.ts';
import { ErrorEnvelope } from './schemas.ts';
import { registerRoutes } from './routes/index.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** the route needs no login */
    public?: boolean;
  }
}

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, TypeBoxTypeProvider>;

export const ACCESS_COOKIE = 'access_token_cookie';

/** Removes secrets from a URL before it is logged (the `t` query parameter carries a JWT). */
export function redactUrl(url: string): string {
  return url.replace(/([?&]t=)[^&]*/g, '$1[redacted]');
}

/** Token from `Authorization: Bearer`, the cookie, or the `t` query parameter. */
export function tokenFrom(req: Pick<FastifyRequest, 'headers' | 'cookies' | 'query'>): string | null {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const cookie = req.cookies?.[ACCESS_COOKIE];
  if (cookie) return cookie;
  const t = (req.query as Record<string, unknown> | undefined)?.t;
  return typeof t === 'string' && t ? t : null;
}

function validationErrors(err: FastifyError): FieldError[] {
  return (err.validation ?? []).map((v) => {
    const missing = v.keyword === 'required' ? `/${String((v.params as { missingProperty?: string }).missingProperty)}` : '';
    const base = v.instancePath || '';
    return { path: `${err.validationContext ?? 'body'}${base}${missing}`, message: v.message ?? 'invalid' };
  });
}

/** Maps any thrown value onto the one error catalogue, as HTTP answers it. */
export function asAppError(err: unknown): AppError {
  // someone else's conversation is answered exactly like a missing one (PROTOCOL.md §8.10)
  if (err instanceof AppError) return err.code === 'conversation_denied' ? AppError.notFound('Conversation not found') : err;
  const fe = err as FastifyError;
  if (fe?.validation) return AppError.invalid(validationErrors(fe));
  switch (fe?.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return AppError.invalid([{ path: 'body', message: fe.message }], 'Malformed JSON body');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return AppError.invalid([{ path: 'content-type', message: fe.message }], 'Unsupported content type');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('too_large', 'Payload too large');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return AppError.invalid([{ path: 'content-length', message: fe.message }]);
  }
  if (typeof fe?.statusCode === 'number' && fe.statusCode === 400 && typeof fe.message === 'string' && !(err instanceof TypeError)) {
    return AppError.invalid([{ path: 'request', message: fe.message }]);
  }
  return toAppError(err);
}

/** Fastify refused the body for its size (413), as opposed to a question over chat.max_message_length (400). */
export const isPayloadTooLarge = (err: unknown): boolean => (err as { code?: unknown } | null)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE';

/**
 * An error handler: every failure in one error shape (`encode`: Parley's envelope, or an API's own,
 * PROTOCOL.md §8.9). Unknown errors are logged, never shown.
 */
export function errorHandler(encode: (e: AppError, payloadTooLarge: boolean) => { status: number; body: unknown }) {
  return (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = asAppError(err);
    if (e.code === 'internal') req.log.error({ err: e.cause ?? err }, 'unhandled error');
    const { status, body } = encode(e, isPayloadTooLarge(err));
    if (e.code === 'rate_limited') reply.header('retry-after', retryAfter(e));
    return reply.status(status).send(body);
  };
}

export async function buildApp(services: Services, logger: Logger): Promise<App> {
  const { config } = services;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.http.body_limit,
    trustProxy: config.server.trust_proxy,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w-]{1,64}$/.test(given) ? given : randomUUID();
    },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
    logController: new LogController({ disableRequestLogging: true }),
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  app.addHook('onResponse', async (req, reply) => {
    req.log.info({ method: req.method, url: redactUrl(req.url), status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request');
  });

  // Bodies are JSON and keep their types (a number where a string belongs is an error); query
  // strings, params and headers are text and are coerced to the declared types.
  const ajvBody = addFormats(new Ajv({ allErrors: true, coerceTypes: false, useDefaults: true, removeAdditional: false, strict: false }));
  const ajvText = addFormats(new Ajv({ allErrors: true, coerceTypes: 'array', useDefaults: true, removeAdditional: false, strict: false }));
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? ajvBody : ajvText).compile(schema));

  await app.register(fastifyCookie);
  // ws accepts 100 MiB frames unless told otherwise; no permessage-deflate (STYLE.md)
  await app.register(fastifyWebsocket, {
    options: { maxPayload: config.chat.max_frame_bytes, perMessageDeflate: false },
    // replaces the plugin's own preClose, which closes every socket at once without a code: first
    // stop accepting, persist running turns' partial answers and close sockets with 1001 (PRODUCT.md §7)
    preClose: async function (this: FastifyInstance) {
      await services.gateway.shutdown();
      for (const client of this.websocketServer.clients) client.close(1001, 'going away');
      this.websocketServer.close();
    },
  });
  app.decorateRequest('principal', null);
  app.addSchema(ErrorEnvelope);

  app.setErrorHandler(errorHandler((e) => ({ status: e.httpStatus, body: errorBody(e) })));
  app.setNotFoundHandler((req, reply) => reply.status(404).send(errorBody(new AppError('not_found', `No route ${req.method} ${req.url.split('?')[0]}`))));

  // Authentication, before the body is read: every route needs a user unless its config says `public`.
  app.addHook('onRequest', async (req) => {
    const url = req.routeOptions.url;
    if (!url || req.routeOptions.config?.public || url.startsWith('/docs')) return;
    const token = tokenFrom(req);
    const principal = token ? await services.auth.authenticate(token) : null;
    if (!principal) throw new AppError('unauthorized', token ? 'Invalid or expired token' : 'Login required');
    req.principal = principal;
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Parley', version: '0.1.0', description: 'Real-time chat service for LLM applications. REST answers use the envelope {status_code, status_message, data}.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' }, cookie: { type: 'apiKey', in: 'cookie', name: ACCESS_COOKIE } } },
      security: [{ bearer: [] }, { cookie: [] }],
    },
    refResolver: { buildLocalReference: (json, _base, _frag, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list' } });
  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());

  await registerRoutes(app, services);
  return app;
}
