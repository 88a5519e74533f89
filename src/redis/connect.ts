import { Cluster, Redis, type RedisOptions } from 'ioredis';

/** A Redis client of any topology: a standalone server, a Sentinel-managed primary or a Cluster. */
export type RedisClient = Redis | Cluster;

export interface RedisTarget {
  kind: 'standalone' | 'sentinel' | 'cluster';
  /** what ioredis is given: a URL (standalone), or nodes and options */
  url?: string;
  nodes?: Array<{ host: string; port: number }>;
  /** sentinel: the primary's name */
  name?: string;
  options: RedisOptions;
}

const hostsOf = (list: string, defaultPort: number) => list.split(',').filter(Boolean).map((h) => {
  const at = h.lastIndexOf(':');
  return at > 0 ? { host: h.slice(0, at), port: Number(h.slice(at + 1)) || defaultPort } : { host: h, port: defaultPort };
});

/**
 * What a `server.redis_url` names:
 * - `redis://[user:password@]host:port[/db]` and `rediss://…` (TLS): one server;
 * - `redis+sentinel://[user:password@]host:port,host:port/<primary name>[/db]`: the primary that Sentinel names;
 * - `redis+cluster://[user:password@]host:port,host:port`: a Cluster (its other nodes are discovered).
 */
export function parseRedisUrl(url: string): RedisTarget {
  const m = /^(redis|rediss|redis\+sentinel|redis\+cluster):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?]+)(?:\/([^?]*))?/.exec(url);
  if (!m) throw new Error(`not a Redis URL: ${url.replace(/\/\/[^@]*@/, '//***@')}`);
  const [, scheme, user, password, hosts, path] = m;
  const auth: RedisOptions = {
    ...(user ? { username: decodeURIComponent(user) } : {}),
    ...(password !== undefined ? { password: decodeURIComponent(password) } : {}),
  };
  if (scheme === 'redis' || scheme === 'rediss') return { kind: 'standalone', url, options: {} };
  const parts = (path ?? '').split('/').filter(Boolean);
  if (scheme === 'redis+cluster') return { kind: 'cluster', nodes: hostsOf(hosts!, 6379), options: auth };
  if (!parts[0]) throw new Error('a redis+sentinel:// URL names the primary after the hosts: redis+sentinel://host:26379/mymaster');
  const db = parts[1] !== undefined ? Number(parts[1]) : undefined;
  return { kind: 'sentinel', nodes: hostsOf(hosts!, 26379), name: decodeURIComponent(parts[0]), options: { ...auth, ...(db !== undefined && Number.isInteger(db) ? { db } : {}) } };
}

/** how long a command waits for Redis's answer */
const COMMAND_TIMEOUT_MS = 2000;

/**
 * A client for `url`. Commands fail at once while the server is unreachable instead of queueing
 * (the callers fall back to what this instance knows), and the client keeps reconnecting.
 */
export function connectRedis(url: string, options: RedisOptions = {}, onError: (err: Error) => void = () => undefined): RedisClient {
  const client = create(url, options);
  // connection errors are expected while Redis is away (the client reconnects): the caller decides what to log
  client.on('error', onError);
  return client;
}

function create(url: string, options: RedisOptions): RedisClient {
  const target = parseRedisUrl(url);
  const common: RedisOptions = {
    enableOfflineQueue: false, maxRetriesPerRequest: 1, enableAutoPipelining: true,
    // a server that stops answering without closing the connection (its host died) fails commands too
    commandTimeout: COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    ...options,
  };
  switch (target.kind) {
    case 'standalone':
      return new Redis(target.url!, common);
    case 'sentinel':
      return new Redis({ ...common, ...target.options, sentinels: target.nodes!, name: target.name! });
    case 'cluster':
      return new Cluster(target.nodes!, { redisOptions: { ...common, ...target.options }, enableOfflineQueue: false, enableAutoPipelining: true });
  }
}

/** Resolves once `client` is connected, or after `timeoutMs` (false: Redis is not reachable yet; the client keeps trying). */
export function whenReady(client: RedisClient, timeoutMs: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    client.on('ready', onReady);
  });
}
