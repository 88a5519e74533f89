import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, Api, adminAndUser, dbTargets, startServer, type TestServer } from '../helpers/server.ts';

describe.each(dbTargets())('auth on $name', (target) => {
  let server: TestServer;
  let admin: Api;
  let user: Api;

  beforeAll(async () => {
    server = await startServer(target);
    ({ admin, user } = await adminAndUser(server));
  });
  afterAll(async () => server?.close());

  it('logs in, sets the cookie, and the cookie authenticates', async () => {
    const anon = new Api(server.url);
    const r = await anon.post('/api/v1/user/login', { user_name: 'admin', password: ADMIN_PASSWORD });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status_code: 200, status_message: 'SUCCESS', data: { user: { user_name: 'admin', role: 'admin' } } });
    const cookie = r.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/access_token_cookie=[^;]+;.*HttpOnly/i);
    const info = await anon.get('/api/v1/user/info', { headers: { cookie: cookie.split(';')[0]! } });
    expect(info.body.data.user_name).toBe('admin');
  });

  it('accepts the token from the t query parameter', async () => {
    const info = await new Api(server.url).get(`/api/v1/user/info?t=${user.token}`);
    expect(info.status).toBe(200);
    expect(info.body.data.user_name).toBe('alice');
  });

  it('rejects a wrong password with 10401 and no cookie', async () => {
    const r = await new Api(server.url).post('/api/v1/user/login', { user_name: 'admin', password: 'wrong' });
    expect(r.status).toBe(401);
    expect(r.body.status_code).toBe(10401);
    expect(r.headers.get('set-cookie')).toBeNull();
  });

  it('validates login bodies: every bad field listed', async () => {
    const r = await new Api(server.url).post('/api/v1/user/login', { user_name: 5 });
    expect(r.status).toBe(400);
    expect(r.body.status_code).toBe(10400);
    const paths = r.body.data.errors.map((e: { path: string }) => e.path).sort();
    expect(paths).toEqual(['body/password', 'body/user_name']);
  });

  it('refreshes tokens and rejects an access token used as refresh token', async () => {
    const login = await new Api(server.url).post('/api/v1/user/login', { user_name: 'alice', password: 'alice-password' });
    const r = await new Api(server.url).post('/api/v1/user/refresh', { refresh_token: login.body.data.refresh_token });
    expect(r.status).toBe(200);
    expect(r.body.data.access_token).toEqual(expect.any(String));
    const bad = await new Api(server.url).post('/api/v1/user/refresh', { refresh_token: login.body.data.access_token });
    expect(bad.status).toBe(401);
    expect(bad.body.status_code).toBe(10401);
  });

  it('logout invalidates the tokens issued before it', async () => {
    const bob = await (await adminAndUser(server, 'bob')).user;
    expect((await bob.get('/api/v1/user/info')).status).toBe(200);
    expect((await bob.post('/api/v1/user/logout')).status).toBe(200);
    const after = await bob.get('/api/v1/user/info');
    expect(after.status).toBe(401);
    expect(after.body.status_code).toBe(10401);
  });

  it('only admins create and list users', async () => {
    const r = await user.post('/api/v1/user', { user_name: 'mallory', password: 'mallory-password' });
    expect(r.status).toBe(403);
    expect(r.body.status_code).toBe(10403);
    expect((await user.get('/api/v1/user')).status).toBe(403);
    const list = await admin.get('/api/v1/user?page=1&limit=100');
    expect(list.status).toBe(200);
    expect(list.body.data.list.map((u: { user_name: string }) => u.user_name)).toEqual(expect.arrayContaining(['admin', 'alice']));
    expect(list.body.data.total).toBeGreaterThanOrEqual(2);
  });

  it('refuses a duplicate user name', async () => {
    const r = await admin.post('/api/v1/user', { user_name: 'alice', password: 'another-password' });
    expect(r.status).toBe(400);
    expect(r.body.status_code).toBe(10400);
  });

  it('creates API keys whose secret is shown once and revokes them', async () => {
    const created = await user.post('/api/v1/apikeys', { name: 'ci' });
    expect(created.status).toBe(200);
    const { id, key } = created.body.data;
    expect(key).toMatch(/^pk-/);
    const list = await user.get('/api/v1/apikeys');
    expect(list.body.data).toEqual([expect.objectContaining({ id, name: 'ci', app_ids: null })]);
    expect(JSON.stringify(list.body)).not.toContain(key);
    // last_used_time: set by a use, to the minute (a second use right after writes nothing)
    expect(list.body.data[0].last_used_time).toBeNull();
    const useKey = () => new Api(server.url).get('/v1/models', { token: key });
    const lastUsed = async () => (await user.get('/api/v1/apikeys')).body.data[0].last_used_time as string | null;
    expect((await useKey()).status).toBe(200);
    const used = await lastUsed();
    expect(Date.now() - Date.parse(used!)).toBeLessThan(60_000);
    expect((await useKey()).status).toBe(200);
    expect(await lastUsed()).toBe(used);
    expect((await admin.get('/api/v1/apikeys')).body.data).toEqual([]);
    expect((await admin.delete(`/api/v1/apikeys/${id}`)).status).toBe(404);
    expect((await user.delete(`/api/v1/apikeys/${id}`)).status).toBe(200);
    expect((await user.delete(`/api/v1/apikeys/${id}`)).status).toBe(404);
    expect((await user.get('/api/v1/apikeys')).body.data).toEqual([]);
    const bad = await user.post('/api/v1/apikeys', { name: '' });
    expect(bad.body.status_code).toBe(10400);
  });

  describe('JWT hardening: every bad token gets 10401', () => {
    const secretOf = async () => (await server.handle.services.repos.settings.get('jwt_secret'))!;
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const expect401 = async (token: string) => {
      const r = await new Api(server.url).get('/api/v1/user/info', { token });
      expect(r.status).toBe(401);
      expect(r.body.status_code).toBe(10401);
    };
    const claims = () => ({ sub: '1', typ: 'access', ver: 0, iss: 'parley' });

    it('expired', async () => {
      const key = new TextEncoder().encode(await secretOf());
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(1000).setExpirationTime(2000).sign(key);
      await expect401(token);
    });

    it('forged signature', async () => {
      const key = new TextEncoder().encode('not-the-secret-not-the-secret-32');
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(key);
      await expect401(token);
      // a real token with its signature swapped
      const real = admin.token!.split('.');
      await expect401(`${real[0]}.${real[1]}.${token.split('.')[2]}`);
    });

    it('alg none', async () => {
      const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims(), exp: Math.floor(Date.now() / 1000) + 3600 })}.`;
      await expect401(token);
    });

    it('missing exp', async () => {
      const key = new TextEncoder().encode(await secretOf());
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(key);
      await expect401(token);
    });

    it('wrong issuer and garbage', async () => {
      const key = new TextEncoder().encode(await secretOf());
      await expect401(await new SignJWT({ ...claims(), iss: 'other' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(key));
      await expect401('not-a-jwt');
    });

    it('a correctly signed token is accepted (control)', async () => {
      const key = new TextEncoder().encode(await secretOf());
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(key);
      expect((await new Api(server.url).get('/api/v1/user/info', { token })).status).toBe(200);
    });
  });
});
