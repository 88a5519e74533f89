import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/config.ts';
import type { Clock } from '../../src/domain/clock.ts';
import { createServer, listen, type ServerHandle } from '../../src/server.ts';
import type { MockLlm } from '../fixtures/mock-llm.ts';

export const ADMIN_PASSWORD = 'admin-pass-123';

export interface DbTarget {
  name: 'sqlite' | 'postgres';
}

const PG_URL = process.env.PARLEY_TEST_PG_URL ?? '';
const REQUIRE = process.env.PARLEY_TEST_REQUIRE_SERVICES === '1';

/**
 * The databases the storage/API suites run on: SQLite always, PostgreSQL when PARLEY_TEST_PG_URL
 * is set. With PARLEY_TEST_REQUIRE_SERVICES=1 a missing PostgreSQL fails the run instead of skipping.
 */
export function dbTargets(): DbTarget[] {
  if (!PG_URL) {
    if (REQUIRE) throw new Error('PARLEY_TEST_REQUIRE_SERVICES=1 but PARLEY_TEST_PG_URL is not set');
    if (!warned) {
      warned = true;
      console.warn('[parley tests] PostgreSQL suites skipped: PARLEY_TEST_PG_URL is not set');
    }
    return [{ name: 'sqlite' }];
  }
  return [{ name: 'sqlite' }, { name: 'postgres' }];
}
let warned = false;

/** Creates a fresh PostgreSQL database for one test server; returns its URL and a dropper. */
export async function createPgDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `parley_t_${process.pid}_${Math.random().toString(16).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

export interface TestServer {
  url: string;
  handle: ServerHandle;
  config: Config;
  dataDir: string;
  /**
   * Stops this server (as a deploy does: gracefully) and starts a new process-equivalent on the same
   * data (SQLite file or PostgreSQL database) and config; `url` and `handle` then name the new one.
   */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a real Parley server on a free loopback port, built exactly as production builds it.
 * @param opts.clock the time its core reads (a ManualClock moves it without sleeping)
 */
export async function startServer(target: DbTarget = { name: 'sqlite' }, overrides: DeepPartial<Config> = {}, opts: { clock?: Clock } = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'parley-test-'));
  const pgDb = target.name === 'postgres' ? await createPgDatabase() : null;
  const { config } = loadConfig({
    file: null,
    env: {},
    overrides: {
      ...overrides,
      server: { host: '127.0.0.1', port: 0, data_dir: dataDir, database_url: pgDb?.url ?? '', ...overrides.server },
      auth: { admin_password: ADMIN_PASSWORD, ...overrides.auth },
      log: { level: 'silent', ...overrides.log },
    },
  });
  const handle = await createServer(config, opts);
  const url = await listen(handle);
  const server: TestServer = {
    url,
    handle,
    config,
    dataDir,
    async restart() {
      await server.handle.close();
      server.handle = await createServer(config, opts);
      server.url = await listen(server.handle);
    },
    async close() {
      await server.handle.close();
      if (pgDb) await pgDb.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * A server config whose provider `mock` is the mock model over HTTP; no retries, short timeouts
 * (`extra.llm` may set others).
 */
export function mockConfig(mock: MockLlm, extra: DeepPartial<Config> = {}): DeepPartial<Config> {
  return {
    ...extra,
    chat: { messages_per_minute: 1000, ...extra.chat },
    llm: {
      stall_timeout: 3, request_timeout: 10, max_retries: 0,
      providers: { mock: { type: 'openai-compatible', base_url: mock.url, model: 'mock-gpt' } },
      ...extra.llm,
    },
  };
}

/**
 * Closes a test server. Node's fetch may leave a connection behind that never sent a request after a
 * client aborted a stream; the server would wait for it (until its headers timeout), so it is cut first.
 */
export async function closeServer(server: TestServer | undefined): Promise<void> {
  if (!server) return;
  server.handle.app.server.closeAllConnections();
  await server.close();
}

export interface ApiResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/** A tiny HTTP client over real fetch. */
export class Api {
  token: string | null = null;

  constructor(readonly baseUrl: string) {}

  async call<T = any>(method: string, path: string, options: { body?: unknown; raw?: string; headers?: Record<string, string>; token?: string | null } = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...options.headers };
    const token = options.token === undefined ? this.token : options.token;
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (options.raw !== undefined) {
      body = options.raw;
      headers['content-type'] ??= 'application/json';
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(this.baseUrl + path, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, headers: res.headers, body: parsed as T };
  }

  get<T = any>(path: string, options?: Parameters<Api['call']>[2]) { return this.call<T>('GET', path, options); }
  post<T = any>(path: string, body?: unknown, options?: Parameters<Api['call']>[2]) { return this.call<T>('POST', path, { ...options, body }); }
  put<T = any>(path: string, body?: unknown, options?: Parameters<Api['call']>[2]) { return this.call<T>('PUT', path, { ...options, body }); }
  delete<T = any>(path: string, options?: Parameters<Api['call']>[2]) { return this.call<T>('DELETE', path, options); }

  async login(userName: string, password: string): Promise<this> {
    const r = await this.post('/api/v1/user/login', { user_name: userName, password });
    if (r.status !== 200) throw new Error(`login ${userName} failed: ${r.status} ${JSON.stringify(r.body)}`);
    this.token = r.body.data.access_token;
    return this;
  }
}

/** Logs in as admin and creates (or reuses) a plain user; returns clients for both. */
export async function adminAndUser(server: TestServer, userName = 'alice'): Promise<{ admin: Api; user: Api; userId: number }> {
  const admin = await new Api(server.url).login('admin', ADMIN_PASSWORD);
  let r = await admin.post('/api/v1/user', { user_name: userName, password: `${userName}-password`, role: 'user' });
  if (r.status !== 200 && r.body?.status_code !== 10400) throw new Error(`create user failed: ${JSON.stringify(r.body)}`);
  const user = await new Api(server.url).login(userName, `${userName}-password`);
  r = await user.get('/api/v1/user/info');
  return { admin, user, userId: r.body.data.user_id };
}

/** Creates an API key for `api`'s user; returns the secret and the key id. */
export async function createApiKey(api: Api, appIds?: string[]): Promise<{ key: string; id: number }> {
  const r = await api.post('/api/v1/apikeys', { name: 'test key', ...(appIds ? { app_ids: appIds } : {}) });
  if (r.status !== 200) throw new Error(`create api key: ${JSON.stringify(r.body)}`);
  return { key: r.body.data.key as string, id: r.body.data.id as number };
}
