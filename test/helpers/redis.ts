import { spawn, type ChildProcess } from 'node:child_process';
import net, { type AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { connectRedis, whenReady, type RedisClient } from '../../src/redis/connect.ts';

const REDIS_URL = process.env.PARLEY_TEST_REDIS_URL ?? '';
const REQUIRE = process.env.PARLEY_TEST_REQUIRE_SERVICES === '1';
let warned = false;

/**
 * The Redis the Redis suites run on (PARLEY_TEST_REDIS_URL), or null: they are skipped, with a
 * printed reason. With PARLEY_TEST_REQUIRE_SERVICES=1 a missing Redis fails the run instead.
 */
export function redisUrl(): string | null {
  if (REDIS_URL) return REDIS_URL;
  if (REQUIRE) throw new Error('PARLEY_TEST_REQUIRE_SERVICES=1 but PARLEY_TEST_REDIS_URL is not set');
  if (!warned) {
    warned = true;
    console.warn('[parley tests] Redis suites skipped: PARLEY_TEST_REDIS_URL is not set');
  }
  return null;
}

/** A key prefix of its own for one test (runs never see each other's keys). */
export const testPrefix = (): string => `parley-test:${process.pid}:${Math.random().toString(16).slice(2, 10)}:`;

/** A connected client; fails if Redis does not answer within 5 s. */
export async function redisClient(url: string): Promise<RedisClient> {
  const client = connectRedis(url);
  if (!(await whenReady(client, 5000))) {
    client.disconnect();
    throw new Error(`Redis at ${url} did not answer`);
  }
  return client;
}

/** Deletes every key under `prefix`. */
export async function dropPrefix(client: RedisClient, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await (client as Redis).scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await client.del(...keys);
  } while (cursor !== '0');
}

/**
 * A redis-server of the test's own on a free loopback port (nothing kept on disk), for tests that
 * stop Redis and start it again: `stop()` kills it, `start()` brings it back on the same port.
 */
export async function ownRedisServer(): Promise<{ url: string; start(): Promise<void>; stop(): Promise<void> }> {
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
  let child: ChildProcess | null = null;
  const server = {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      const client = connectRedis(server.url);
      const up = await whenReady(client, 10_000);
      client.disconnect();
      if (!up) throw new Error('redis-server did not start');
    },
    async stop() {
      const c = child;
      child = null;
      if (!c || c.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGKILL');
      });
    },
  };
  await server.start();
  return server;
}
