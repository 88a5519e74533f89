import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { ChatEvent } from '../domain/events.ts';
import type { Bus, ControlMessage, Unsubscribe } from './bus.ts';
import { MemoryBus } from './memory-bus.ts';

type Client = Redis | Cluster;

/** events kept per conversation log at most (approximately: Redis trims whole nodes of the stream) */
const LOG_MAX = 10_000;
/** how much longer than the replay ttl a finished turn's log lives in Redis (the ttl itself is checked against the clock) */
const LOG_SLACK_MS = 60_000;
/** how long a conversation's log metadata (its last seq) outlives its last turn */
const META_TTL_MS = 86_400_000;

/**
 * A new turn's log starts: the last finished turn is kept while its replay ttl lasts, anything
 * older is trimmed; the log then covers every seq from `floor` on.
 * KEYS: log, meta. ARGV: first seq of the new turn, now (ms), meta ttl (ms).
 */
const NEW_TURN = `
local meta = redis.call('HMGET', KEYS[2], 'first', 'ended', 'expires')
local prev, ended, expires = tonumber(meta[1]), meta[2], tonumber(meta[3])
local floor
if prev and ended == '1' and expires and expires > tonumber(ARGV[2]) then
  redis.call('XTRIM', KEYS[1], 'MINID', prev .. '-0')
  redis.call('PERSIST', KEYS[1])
  floor = prev - 1
else
  redis.call('DEL', KEYS[1])
  floor = tonumber(ARGV[1]) - 1
end
redis.call('HSET', KEYS[2], 'first', ARGV[1], 'ended', '0', 'floor', floor)
redis.call('HDEL', KEYS[2], 'expires')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return floor`;

/**
 * A turn ended: its log is kept for the replay ttl (checked against the clock; Redis drops it a
 * while later), and the conversation's last seq for a day.
 * KEYS: log, meta. ARGV: expires (ms), last seq, meta ttl (ms), log ttl (ms).
 */
const END_TURN = `
redis.call('HSET', KEYS[2], 'ended', '1', 'expires', ARGV[1], 'last', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])`;

/**
 * The events after a seq, as the memory bus answers: nil when the log does not reach back to it
 * (or never saw the conversation, or its last turn expired), [] when nothing came after it.
 * KEYS: log, meta. ARGV: after seq, now (ms).
 */
const REPLAY = `
local meta = redis.call('HMGET', KEYS[2], 'floor', 'ended', 'expires', 'last')
if not meta[1] then return false end
local after = tonumber(ARGV[1])
local last = tonumber(meta[4]) or -1
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then last = math.max(last, tonumber(string.match(top[1][1], '^(%d+)'))) end
if after >= last then return {} end
if meta[2] == '1' and tonumber(meta[3]) <= tonumber(ARGV[2]) then return false end
local floor = tonumber(meta[1])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if first[1] then floor = math.max(floor, tonumber(string.match(first[1][1], '^(%d+)')) - 1) end
if after < floor then return false end
local out = {}
for i, e in ipairs(redis.call('XRANGE', KEYS[1], (after + 1) .. '-0', '+')) do out[i] = e[2][2] end
return out`;


/**
 * The bus of several instances. Everything published here is delivered to this instance's
 * subscribers at once and kept in its own log (a MemoryBus), and mirrored to Redis: a stream per
 * conversation is the replay log every instance reads (`XADD` with an explicit id, the seq), and a
 * pub/sub channel per conversation carries the events live to the instances that watch it. A
 * token costs no round trip: commands go out auto-pipelined, one batch per iteration of the event
 * loop. Keys carry the conversation in a hash tag, so one conversation lives in one cluster slot.
 *
 * Unstored turns (debug mode, stateless calls) stay on this instance: only their socket or request
 * watches them. While Redis is unreachable the instance serves what it knows (its own turns, replays
 * from its own log) and mirrors nothing; it rejoins when Redis is back.
 */
export class RedisBus implements Bus {
  readonly instanceId: string;
  private sampled = 0;
  private readonly local: MemoryBus;
  /** the turn each conversation this instance publishes is in, and its last seq */
  private readonly publishing = new Map<string, { turnId: string; lastSeq: number }>();
  /** conversations this instance watches, with their subscriptions' confirmation */
  private readonly watched = new Map<string, { count: number; ready: Promise<void> }>();
  private readonly controls = new Set<(m: ControlMessage) => void>();
  private readonly controlChannel: string;
  private readonly sub: Client;
  private closed = false;

  /**
   * @param redis commands; `sub` a second connection, for subscriptions
   * @param opts.prefix of every key and channel (one deployment, or one test, per prefix)
   * @param opts.replayTtl chat.replay_ttl, seconds: how long another instance's finished turn stays in this instance's log
   */
  constructor(private readonly redis: Client, sub: Client, private readonly opts: {
    prefix: string; replayTtl: number; now?: () => number; onError?: (err: unknown) => void;
    /** an event's round trip to the shared log, in seconds (one in 16 is timed) */
    onStored?: (seconds: number) => void;
    /** this instance, as the other instances see it */
    instanceId?: string;
  }) {
    this.instanceId = opts.instanceId ?? randomUUID();
    const now = opts.now ?? Date.now;
    this.local = new MemoryBus(now);
    this.sub = sub;
    this.controlChannel = `${opts.prefix}control`;
    sub.on('message', (channel: string, message: string) => this.receive(channel, message));
    // subscriptions asked for while Redis was away are made once it is back (ioredis renews the confirmed ones itself)
    sub.on('ready', () => {
      for (const key of this.watched.keys()) this.listen(key);
      void sub.subscribe(this.controlChannel).catch((err: unknown) => this.fail(err));
    });
    void sub.subscribe(this.controlChannel).catch((err: unknown) => this.fail(err));
  }

  private keys(key: string) {
    const base = `${this.opts.prefix}{${key}}`;
    return { log: `${base}:log`, meta: `${base}:meta`, channel: `${base}:ev` };
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private fail(err: unknown): void {
    if (!this.closed) this.opts.onError?.(err);
  }

  publish(event: ChatEvent): void {
    this.local.publish(event);
    if (event.chatId === '' || this.closed) return;
    const { log, meta, channel } = this.keys(event.key);
    const current = this.publishing.get(event.key);
    if (current?.turnId !== event.turnId) {
      this.publishing.set(event.key, { turnId: event.turnId, lastSeq: event.seq });
      // EVAL, not EVALSHA: a script missing from Redis's cache (after its restart) would be retried later, out of order
      this.redis.eval(NEW_TURN, 2, log, meta, event.seq, this.now(), META_TTL_MS).catch((err: unknown) => this.fail(err));
    } else {
      current.lastSeq = event.seq;
    }
    const text = JSON.stringify(event);
    // the log first: a watcher whose subscription is confirmed after this PUBLISH finds the event by replaying
    const stored = this.redis.xadd(log, 'MAXLEN', '~', LOG_MAX, `${event.seq}-0`, 'e', text);
    const onStored = this.opts.onStored;
    if (onStored && (++this.sampled & 15) === 0) {
      const started = performance.now();
      stored.then(() => onStored((performance.now() - started) / 1000), (err: unknown) => this.fail(err));
    } else {
      stored.catch((err: unknown) => this.fail(err));
    }
    this.redis.publish(channel, `${this.instanceId}|${text}`).catch((err: unknown) => this.fail(err));
  }

  subscribe(key: string, listener: (event: ChatEvent) => void): Unsubscribe {
    const off = this.local.subscribe(key, listener);
    const w = this.watched.get(key);
    if (w) w.count++;
    else {
      this.watched.set(key, { count: 1, ready: Promise.resolve() });
      this.listen(key);
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      off();
      const entry = this.watched.get(key);
      if (entry && --entry.count === 0) {
        this.watched.delete(key);
        if (!this.closed) void this.sub.unsubscribe(this.keys(key).channel).catch(() => undefined);
      }
    };
  }

  /** Subscribes to a watched conversation's channel; replays of it wait for the confirmation. */
  private listen(key: string): void {
    const entry = this.watched.get(key);
    if (!entry || this.closed) return;
    // an unreachable Redis fails at once: the watcher is served from this instance alone, and `ready` lets replays go on
    entry.ready = this.sub.subscribe(this.keys(key).channel).then(() => undefined, (err: unknown) => this.fail(err));
  }

  /** Resolves once this instance receives the live events of `key` from every instance (or Redis is unreachable). */
  async whenSubscribed(key: string): Promise<void> {
    await this.watched.get(key)?.ready;
  }

  private receive(channel: string, message: string): void {
    const bar = message.indexOf('|');
    if (bar < 0 || message.slice(0, bar) === this.instanceId) return;
    if (channel === this.controlChannel) {
      const m = JSON.parse(message.slice(bar + 1)) as ControlMessage;
      for (const listener of this.controls) listener(m);
      return;
    }
    const event = JSON.parse(message.slice(bar + 1)) as ChatEvent;
    this.local.publish(event);
    // another instance's turn ended: this instance's copy of it is kept as its own would be
    if (event.body.kind === 'close') this.local.endTurn(event.key, this.opts.replayTtl);
  }

  async replay(key: string, afterSeq: number): Promise<ChatEvent[] | null> {
    await this.whenSubscribed(key);
    const { log, meta } = this.keys(key);
    try {
      const texts = (await this.redis.eval(REPLAY, 2, log, meta, afterSeq, this.now())) as string[] | null;
      // what Redis does not cover, this instance may (its unstored turns are only here)
      return texts === null ? this.local.replay(key, afterSeq) : texts.map((t) => JSON.parse(t) as ChatEvent);
    } catch (err) {
      this.fail(err);
      return this.local.replay(key, afterSeq);
    }
  }

  endTurn(key: string, ttlSeconds: number): void {
    this.local.endTurn(key, ttlSeconds);
    const current = this.publishing.get(key);
    if (!current || this.closed) return;
    this.publishing.delete(key);
    const { log, meta } = this.keys(key);
    const ttlMs = ttlSeconds * 1000;
    // one command, in order with the publishes before it (a MULTI would be sent ahead of the auto-pipelined batch)
    this.redis.eval(END_TURN, 2, log, meta, this.now() + ttlMs, current.lastSeq, META_TTL_MS, ttlMs + LOG_SLACK_MS).catch((err: unknown) => this.fail(err));
  }

  sendControl(message: ControlMessage): void {
    for (const listener of this.controls) listener(message);
    if (!this.closed) this.redis.publish(this.controlChannel, `${this.instanceId}|${JSON.stringify(message)}`).catch((err: unknown) => this.fail(err));
  }

  onControl(listener: (message: ControlMessage) => void): Unsubscribe {
    this.controls.add(listener);
    return () => {
      this.controls.delete(listener);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.controls.clear();
    this.watched.clear();
    await this.local.close();
  }
}
