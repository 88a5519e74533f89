import { Type } from '@sinclair/typebox';
import { presentApiKey, presentUser } from '../../auth/auth-service.ts';
import { requireAdmin } from '../../auth/policy.ts';
import { AppError } from '../../domain/errors.ts';
import { ACCESS_COOKIE, type App } from '../app.ts';
import { ok } from '../envelope.ts';
import type { Services } from '../services.ts';
import { Envelope, HexId, IntId, ListOf, Nullable, PageQuery, UserSchema } from '../schemas.ts';

const UserName = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.@-]+$' });
const Password = Type.String({ minLength: 1, maxLength: 256 });
const LoginResult = Type.Object({ access_token: Type.String(), refresh_token: Type.String(), user: UserSchema });
const ApiKeySchema = Type.Object({
  id: Type.Integer(), name: Type.String(), key_prefix: Type.String(), app_ids: Nullable(Type.Array(Type.String())),
  last_used_time: Nullable(Type.String()), create_time: Type.String(),
});

export function registerAuthRoutes(app: App, { auth, repos, config }: Services): void {
  const setCookie = (reply: { setCookie: (n: string, v: string, o: object) => unknown }, token: string) =>
    reply.setCookie(ACCESS_COOKIE, token, { path: '/', httpOnly: true, sameSite: 'lax', secure: config.auth.cookie_secure, maxAge: config.auth.access_token_ttl });

  app.post('/api/v1/user/login', {
    config: { public: true },
    schema: {
      tags: ['auth'], summary: 'Log in; sets the access cookie', security: [],
      body: Type.Object({ user_name: UserName, password: Password }),
      response: { 200: Envelope(LoginResult) },
    },
  }, async (req, reply) => {
    const result = await auth.login(req.body.user_name, req.body.password);
    setCookie(reply, result.access_token);
    return ok(result);
  });

  app.post('/api/v1/user/refresh', {
    config: { public: true },
    schema: {
      tags: ['auth'], summary: 'Exchange a refresh token for new tokens', security: [],
      body: Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 4096 }) }),
      response: { 200: Envelope(LoginResult) },
    },
  }, async (req, reply) => {
    const result = await auth.refresh(req.body.refresh_token);
    setCookie(reply, result.access_token);
    return ok(result);
  });

  app.post('/api/v1/user/logout', {
    schema: { tags: ['auth'], summary: 'Log out: every token issued to the caller so far stops working', response: { 200: Envelope(Type.Null()) } },
  }, async (req, reply) => {
    await auth.logout(req.principal!.id);
    reply.clearCookie(ACCESS_COOKIE, { path: '/' });
    return ok(null);
  });

  app.get('/api/v1/user/info', {
    schema: { tags: ['auth'], summary: 'The caller', response: { 200: Envelope(UserSchema) } },
  }, async (req) => {
    const user = await repos.users.findById(req.principal!.id);
    if (!user) throw new AppError('unauthorized');
    return ok(presentUser(user));
  });

  app.post('/api/v1/user', {
    schema: {
      tags: ['auth'], summary: 'Create a user (admin)',
      body: Type.Object({ user_name: UserName, password: Type.String({ minLength: 8, maxLength: 256 }), role: Type.Union([Type.Literal('admin'), Type.Literal('user')], { default: 'user' }) }),
      response: { 200: Envelope(UserSchema) },
    },
  }, async (req) => {
    requireAdmin(req.principal!);
    const user = await auth.createUser(req.body.user_name, req.body.password, req.body.role);
    return ok(presentUser(user));
  });

  app.get('/api/v1/user', {
    schema: { tags: ['auth'], summary: 'List users (admin)', querystring: Type.Object(PageQuery), response: { 200: Envelope(ListOf(UserSchema)) } },
  }, async (req) => {
    requireAdmin(req.principal!);
    const { list, total } = await repos.users.list(req.query.page, req.query.limit);
    return ok({ list: list.map(presentUser), total });
  });

  app.post('/api/v1/apikeys', {
    schema: {
      tags: ['auth'], summary: 'Create an API key; the secret is in data.key and is shown only here',
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 128 }), app_ids: Type.Optional(Nullable(Type.Array(HexId, { maxItems: 1000 }))) }),
      response: { 200: Envelope(Type.Composite([ApiKeySchema, Type.Object({ key: Type.String() })])) },
    },
  }, async (req) => {
    if (req.principal!.apiKey) throw new AppError('forbidden', 'API keys cannot create API keys');
    const { row, secret } = await auth.createApiKey(req.principal!.id, req.body.name, req.body.app_ids ?? null);
    return ok({ ...presentApiKey(row), key: secret });
  });

  app.get('/api/v1/apikeys', {
    schema: { tags: ['auth'], summary: "The caller's API keys (secrets are never shown again)", response: { 200: Envelope(Type.Array(ApiKeySchema)) } },
  }, async (req) => ok((await repos.apiKeys.listByUser(req.principal!.id)).map(presentApiKey)));

  app.delete('/api/v1/apikeys/:id', {
    schema: { tags: ['auth'], summary: 'Revoke an API key', params: Type.Object({ id: IntId }), response: { 200: Envelope(Type.Null()) } },
  }, async (req) => {
    if (!(await repos.apiKeys.revoke(req.params.id, req.principal!.id))) throw AppError.notFound('API key not found');
    return ok(null);
  });
}
