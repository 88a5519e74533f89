import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { createServer, listen } from '../../src/server.ts';
import { newChatId } from '../helpers/apps.ts';
import { demoApp } from '../helpers/seed.ts';
import { ADMIN_PASSWORD, Api, dbTargets, startServer, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/wait.ts';
import { WsClient } from '../helpers/ws-client.ts';

describe.each(dbTargets())('operations endpoints on $name', (target) => {
  let server: TestServer;
  beforeAll(async () => { server = await startServer(target); });
  afterAll(async () => server?.close());

  it('/health checks the database', async () => {
    const r = await new Api(server.url).get('/health');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'ok', db: { ok: true, dialect: target.name } });
  });

  it('/metrics exposes Prometheus text with request counters', async () => {
    await new Api(server.url).get('/health');
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toMatch(/parley_http_requests_total\{method="GET",status="200"\} \d+/);
    expect(text).toContain('parley_db_ping_seconds');
  });

  it('/metrics counts turns, their first delta and duration, open connections and database statements', async () => {
    const admin = await new Api(server.url).login('admin', ADMIN_PASSWORD);
    const app = (await demoApp(server, 'chat')).id;
    const metric = async (pattern: RegExp) => Number(pattern.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1] ?? 'NaN');
    const before = await metric(/^parley_turns_ended_total\{outcome="finished"\} (\d+)$/m) || 0;
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${app}?chat_id=${newChatId()}`, { token: admin.token });
    ws.send({ inputs: { input: 'count me' } });
    await ws.turn(0);
    expect(await metric(/^parley_connections_open\{transport="websocket"\} (\d+)$/m)).toBe(1);
    expect(await metric(/^parley_turns_started_total (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(await metric(/^parley_turns_ended_total\{outcome="finished"\} (\d+)$/m)).toBe(before + 1);
    expect(await metric(/^parley_turn_first_delta_seconds_count (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(await metric(/^parley_turn_duration_seconds_count (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(await metric(/^parley_deltas_streamed_total (\d+)$/m)).toBeGreaterThan(0);
    expect(await metric(/^parley_db_query_seconds_count (\d+)$/m)).toBeGreaterThan(0);
    expect(await metric(/^parley_turns_running (\d+)$/m)).toBe(0);
    expect(await metric(/^parley_nodejs_eventloop_lag_seconds (\S+)$/m)).toBeGreaterThanOrEqual(0);
    ws.close();
    await ws.waitClose();
    await eventually(async () => ((await metric(/^parley_connections_open\{transport="websocket"\} (\d+)$/m)) === 0 ? true : undefined), 'the socket to be counted out');
  });

  it('unknown paths answer 404 in the envelope, never 500', async () => {
    for (const path of ['/nope', '/api/v1/nope', '/api/v1/chat/list/extra/deep', '/docs/nope.js']) {
      const r = await new Api(server.url).get(path);
      expect(r.status, path).toBe(404);
      if (path.startsWith('/api')) expect(r.body.status_code).toBe(10404);
    }
  });

  it('a protected endpoint without login answers 10401', async () => {
    const r = await new Api(server.url).get('/api/v1/chat/list');
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ status_code: 10401, status_message: 'Login required', data: null });
  });

  it('bodies over http.body_limit answer 10413', async () => {
    const api = await new Api(server.url).login('admin', ADMIN_PASSWORD);
    const r = await api.post('/api/v1/chat/comment', { message_id: 1, comment: 'x'.repeat(server.config.http.body_limit + 10) });
    expect(r.status).toBe(413);
    expect(r.body.status_code).toBe(10413);
  });
});

describe('/health when the database is gone', () => {
  it('answers 503 with the error, and the process keeps serving', async () => {
    const server = await startServer();
    try {
      await server.handle.services.db.close();
      const r = await new Api(server.url).get('/health');
      expect(r.status).toBe(503);
      expect(r.body).toMatchObject({ status: 'error', db: { ok: false } });
      expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
    } finally {
      await server.handle.app.close();
    }
  });
});

describe('request logs', () => {
  it('carry a request id and never the token of the `t` query parameter', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { config } = loadConfig({ file: null, env: {}, overrides: { server: { host: '127.0.0.1', port: 0, data_dir: mkdtempSync(join(tmpdir(), 'parley-log-')) }, auth: { admin_password: ADMIN_PASSWORD } } });
    const handle = await createServer(config, { logger: pino({ level: 'info' }, sink) });
    try {
      const url = await listen(handle);
      const api = await new Api(url).login('admin', ADMIN_PASSWORD);
      const res = await fetch(`${url}/api/v1/user/info?t=${api.token}`, { headers: { 'x-request-id': 'req-abc-123' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toBe('req-abc-123');
      const log = lines.join('');
      expect(log).toContain('req-abc-123');
      expect(log).toContain('t=[redacted]');
      expect(log).not.toContain(api.token!);

      // an event stream (written to the raw response) carries the request id and is logged the same way
      const { list } = await handle.services.repos.apps.list({ kind: 'chat', page: 1, limit: 10 });
      const key = (await api.post('/api/v1/apikeys', { name: 'log test' })).body.data.key as string;
      const sse = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-request-id': 'req-sse-456' },
        body: JSON.stringify({ model: list.find((a) => a.name.startsWith('Demo'))!.id, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(sse.status).toBe(200);
      expect(sse.headers.get('x-request-id')).toBe('req-sse-456');
      expect(sse.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      expect((await sse.text()).trimEnd().endsWith('data: [DONE]')).toBe(true);
      await vi.waitFor(() => expect(lines.some((l) => l.includes('req-sse-456') && l.includes('"status":200'))).toBe(true));
    } finally {
      await handle.close();
    }
  });
});
