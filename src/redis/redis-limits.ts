import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import type { ClientIdStore } from '../chat/client-ids.ts';
import type { ConnectionCounter, RateLimiter } from '../chat/rate-limiter.ts';
import type { TurnStarted } from '../chat/turn-registry.ts';
import { AppError } from '../domain/errors.ts';
import type { RedisClient } from './connect.ts';

/**
 * chat.messages_per_minute across every instance, counted in Redis. While Redis is away each
 * instance counts on its own (an insurance limiter in memory): degraded, not open.
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly limiter: RateLimiterRedis;

  constructor(redis: RedisClient, opts: { perMinute: number; prefix: string }) {
    this.limiter = new RateLimiterRedis({
      storeClient: redis, keyPrefix: `${opts.prefix}rate`, points: opts.perMinute, duration: 60, rejectIfRedisNotReady: true,
      insuranceLimiter: new RateLimiterMemory({ points: opts.perMinute, duration: 60 }),
    });
  }

  async consume(userId: number): Promise<void> {
    try {
      await this.limiter.consume(String(userId));
    } catch (res) {
      if (res instanceof Error) throw res;
      const ms = (res as { msBeforeNext?: number }).msBeforeNext ?? 60_000;
      throw new AppError('rate_limited', 'Too many messages; slow down', { data: { retry_after: Math.ceil(ms / 1000) } });
    }
  }
}

/**
 * The turns client_message_ids started, in Redis (until chat.replay_ttl), so a client retrying
 * through another instance gets the earlier turn. While Redis is away, this instance's own memory.
 */
export class RedisClientIds implements ClientIdStore {
  constructor(private readonly redis: RedisClient, private readonly fallback: ClientIdStore, private readonly opts: { prefix: string; ttlMs: number }) {}

  private key(idKey: string): string {
    return `${this.opts.prefix}client-id:${idKey}`;
  }

  async seen(idKey: string): Promise<TurnStarted | null> {
    try {
      const text = await this.redis.get(this.key(idKey));
      return text ? { ...(JSON.parse(text) as TurnStarted), duplicate: true } : this.fallback.seen(idKey);
    } catch {
      return this.fallback.seen(idKey);
    }
  }

  remember(idKey: string, turn: TurnStarted): void {
    this.fallback.remember(idKey, turn);
    this.redis.set(this.key(idKey), JSON.stringify(turn), 'PX', this.opts.ttlMs).catch(() => undefined);
  }
}

/** Drops the expired connections of a user, then counts the new one unless the user has `max`. KEYS: the user's set. ARGV: now, id, expires, max, key ttl. */
const OPEN_CONNECTION = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`;

/** Extends a connection's expiry and its user's set's. KEYS: the user's set. ARGV: expires, id, key ttl. */
const REFRESH_CONNECTION = `
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])`;

/**
 * Open WebSocket connections per user across every instance: a sorted set per user, each connection
 * scored with when it expires unless refreshed (every heartbeat), so the connections of an instance
 * that died stop counting after a few heartbeats. While Redis is away every connection is allowed
 * here (each instance still applies the cap to its own).
 */
export class RedisConnectionCounter implements ConnectionCounter {
  constructor(private readonly redis: RedisClient, private readonly opts: { prefix: string; ttlMs: number; now: () => number }) {}

  private key(userId: number): string {
    return `${this.opts.prefix}connections:{${userId}}`;
  }

  async open(userId: number, connectionId: string, max: number): Promise<boolean> {
    const now = this.opts.now();
    try {
      return (await this.redis.eval(OPEN_CONNECTION, 1, this.key(userId), now, connectionId, now + this.opts.ttlMs, max, this.opts.ttlMs)) === 1;
    } catch {
      return true;
    }
  }

  close(userId: number, connectionId: string): void {
    this.redis.zrem(this.key(userId), connectionId).catch(() => undefined);
  }

  refresh(open: Array<{ userId: number; connectionId: string }>): void {
    const expires = this.opts.now() + this.opts.ttlMs;
    // counted again if Redis was away when it opened (or lost the set meanwhile); the set outlives its connections' expiry
    for (const c of open) this.redis.eval(REFRESH_CONNECTION, 1, this.key(c.userId), expires, c.connectionId, this.opts.ttlMs).catch(() => undefined);
  }
}
