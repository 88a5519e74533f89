import { createHash, randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { ChatEvent } from '../domain/events.ts';
import { isRecord } from '../domain/types.ts';
import type { Bus, ControlMessage, Unsubscribe } from './bus.ts';
import { MemoryBus } from './memory-bus.ts';

type Client = Redis | Cluster;

/** The shape the bus relies on (what another instance sent) */
function isChatEvent(v: unknown): v is ChatEvent {
  return isRecord(v) && typeof v.key === 'string' && typeof v.seq === 'number' && typeof v.turnId === 'string' && isRecord(v.body) && typeof v.body.kind === 'string';
}

/** events kept per conversation log at most (approximately: Redis trims whole nodes of the stream) */
const LOG_MAX = 10_000;
/** how much longer than the replay ttl a finished turn's log lives in Redis (the ttl itself is checked against the clock) */
const LOG_SLACK_MS = 60_000;
/** how long a conversation's log metadata (its last seq) outlives its last turn */
const META_TTL_MS = 86_400_000;

/**
 * What one event-loop iteration published, in order, in one script (so a token costs no command of
 * its own, and turn starts and ends stay in order with the events). Per op three keys (the
 * conversation's log, meta and channel) and:
 * - `x seq json`: an event — appended to the log (XADD, the seq as its id), then published on the
 *   channel (a watcher whose subscription is confirmed after the PUBLISH finds it by replaying);
 * - `n firstSeq`: a new turn's log starts — the last finished turn is kept while its replay ttl lasts
 *   (checked against the clock), anything older is trimmed; the log then covers every seq from `floor` on.
 *   Sent again mid-turn after a batch was lost (Redis was away): the log restarts there. Until the turn
 *   ends, the log lives as long as the metadata (should its end never reach Redis);
 * - `e expires lastSeq logTtl`: the turn ended — its log is kept for the replay ttl (Redis drops it a
 *   while later), the conversation's last seq for a day.
 * ARGV before the ops: now (ms), meta ttl (ms), log max length, this instance's id.
 */
const FLUSH = `
local now, metaTtl, logMax, origin = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local a, k = 5, 1
local fresh = {}
while a <= #ARGV do
  local op, log, meta, channel = ARGV[a], KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  if op == 'x' then
    redis.pcall('XADD', log, 'MAXLEN', '~', logMax, ARGV[a + 1] .. '-0', 'e', ARGV[a + 2])
    if fresh[log] then
      redis.call('PEXPIRE', log, metaTtl)
      fresh[log] = nil
    end
    redis.call('PUBLISH', channel, origin .. '|' .. ARGV[a + 2])
    a = a + 3
  elseif op == 'n' then
    local m = redis.call('HMGET', meta, 'first', 'ended', 'expires')
    local prev, ended, expires = tonumber(m[1]), m[2], tonumber(m[3])
    local floor
    if prev and ended == '1' and expires and expires > now then
      redis.call('XTRIM', log, 'MINID', prev .. '-0')
      redis.call('PEXPIRE', log, metaTtl)
      floor = prev - 1
    else
      redis.call('DEL', log)
      fresh[log] = true
      floor = tonumber(ARGV[a + 1]) - 1
    end
    redis.call('HSET', meta, 'first', ARGV[a + 1], 'ended', '0', 'floor', floor)
    redis.call('HDEL', meta, 'expires')
    redis.call('PEXPIRE', meta, metaTtl)
    a = a + 2
  else
    redis.call('HSET', meta, 'ended', '1', 'expires', ARGV[a + 1], 'last', ARGV[a + 2])
    redis.call('PEXPIRE', meta, metaTtl)
    redis.call('PEXPIRE', log, ARGV[a + 3])
    a = a + 4
  end
end`;
const FLUSH_SHA = createHash('sha1').update(FLUSH).digest('hex');

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
 * token costs no command of its own: what one iteration of the event loop published goes to Redis in
 * one script. Keys carry the conversation in a hash tag, so one conversation lives in one cluster slot.
 *
 * Unstored turns (debug mode, stateless calls) stay on this instance: only their socket or request
 * watches them. While Redis is unreachable the instance serves what it knows (its own turns, replays
 * from its own log) and mirrors nothing; it rejoins when Redis is back.
 */
export class RedisBus implements Bus {
  readonly instanceId: string;
  private sampled = 0;
  /** what this iteration published, by conversation: keys and script arguments, in order */
  private pending = new Map<string, { keys: string[]; args: Array<string | number>; events: number; own: string[] }>();
  private flushScheduled = false;
  private readonly local: MemoryBus;
  /** the turn each conversation this instance publishes is in, its last seq, and whether its log must restart (a batch was lost) */
  private readonly publishing = new Map<string, { turnId: string; lastSeq: number; restart: boolean }>();
  /** conversations this instance watches, with their subscriptions' confirmation */
  private readonly watched = new Map<string, { count: number; ready: Promise<void> }>();
  /** channels whose unsubscribe failed (Redis was away): ioredis subscribes them again on reconnecting */
  private readonly stale = new Set<string>();
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
    /** a Redis Cluster: each conversation's writes go in a script of their own (one slot each) */
    cluster?: boolean;
    /** which keys are conversations other instances may watch (the others, scratch keys of unstored turns, stay here); default: all */
    shared?: (key: string) => boolean;
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
      for (const channel of this.stale) this.unlisten(channel);
      void sub.subscribe(this.controlChannel).catch((err: unknown) => this.fail(err));
    });
    void sub.subscribe(this.controlChannel).catch((err: unknown) => this.fail(err));
    // loaded before any EVALSHA on this connection, also after Redis restarted (its script cache empty)
    const load = () => void (redis as Redis).script('LOAD', FLUSH).catch((err: unknown) => this.fail(err));
    redis.on('ready', load);
    if (redis.status === 'ready') load();
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
    const current = this.publishing.get(event.key);
    if (current?.turnId !== event.turnId) {
      this.publishing.set(event.key, { turnId: event.turnId, lastSeq: event.seq, restart: false });
      this.queue(event.key, ['n', event.seq]);
    } else {
      if (current.restart) {
        current.restart = false;
        this.queue(event.key, ['n', event.seq]);
      }
      current.lastSeq = event.seq;
    }
    this.queue(event.key, ['x', event.seq, JSON.stringify(event)], true);
  }

  /** Adds an op to this iteration's script; it is sent when the event loop comes round (or before a replay). */
  private queue(key: string, op: Array<string | number>, isEvent = false): void {
    let batch = this.pending.get(key);
    if (!batch) {
      const { log, meta, channel } = this.keys(key);
      batch = { keys: [], args: [], events: 0, own: [log, meta, channel] };
      this.pending.set(key, batch);
    }
    batch.keys.push(...batch.own);
    batch.args.push(...op);
    if (isEvent) batch.events++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends what was queued: one script for all conversations (a Cluster: one per conversation). */
  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.size === 0 || this.closed) return;
    const batches = [...this.pending.entries()];
    this.pending = new Map();
    const head = [this.now(), META_TTL_MS, LOG_MAX, this.instanceId];
    const groups = this.opts.cluster
      ? batches.map(([key, b]) => ({ ...b, convs: [key] }))
      : [{ keys: batches.flatMap(([, b]) => b.keys), args: batches.flatMap(([, b]) => b.args), events: batches.reduce((n, [, b]) => n + b.events, 0), convs: batches.map(([key]) => key) }];
    for (const g of groups) {
      const started = performance.now();
      const sent = this.send(g.keys, [...head, ...g.args]);
      const onStored = this.opts.onStored;
      // one event in 16 is timed: the time to stored of a batch is each of its events'
      const timed = onStored && (this.sampled += g.events) >= 16;
      if (timed) this.sampled = 0;
      sent.then(() => { if (timed) onStored((performance.now() - started) / 1000); }, (err: unknown) => {
        // the shared logs of these conversations now miss events: each restarts at its next event (replays before it fall back)
        for (const key of g.convs) {
          const p = this.publishing.get(key);
          if (p) p.restart = true;
        }
        this.fail(err);
      });
    }
  }

  private send(keys: string[], args: Array<string | number>): Promise<unknown> {
    const r = this.redis as Redis;
    return r.evalsha(FLUSH_SHA, keys.length, ...keys, ...args).catch((err: unknown) => {
      // the script fell out of Redis's cache after all: sent whole (this once, maybe out of order with what followed)
      if (String((err as Error)?.message).startsWith('NOSCRIPT')) return r.eval(FLUSH, keys.length, ...keys, ...args);
      throw err;
    });
  }

  subscribe(key: string, listener: (event: ChatEvent) => void): Unsubscribe {
    const off = this.local.subscribe(key, listener);
    if (this.opts.shared && !this.opts.shared(key)) return off;
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
        this.unlisten(this.keys(key).channel);
      }
    };
  }

  /** Subscribes to a watched conversation's channel; replays of it wait for the confirmation. */
  private listen(key: string): void {
    const entry = this.watched.get(key);
    if (!entry || this.closed) return;
    this.stale.delete(this.keys(key).channel);
    // an unreachable Redis fails at once: the watcher is served from this instance alone, and `ready` lets replays go on
    entry.ready = this.sub.subscribe(this.keys(key).channel).then(() => undefined, (err: unknown) => this.fail(err));
  }

  /** Unsubscribes from a channel nobody here watches any more; one that fails is retried once Redis is back. */
  private unlisten(channel: string): void {
    if (this.closed) return;
    this.stale.add(channel);
    this.sub.unsubscribe(channel).then(() => this.stale.delete(channel), () => undefined);
  }

  /** Resolves once this instance receives the live events of `key` from every instance (or Redis is unreachable). */
  async whenSubscribed(key: string): Promise<void> {
    await this.watched.get(key)?.ready;
  }

  private receive(channel: string, message: string): void {
    const bar = message.indexOf('|');
    if (bar < 0 || message.slice(0, bar) === this.instanceId) return;
    // a message this version cannot read (another version's, during a rolling deploy) is dropped, not thrown into ioredis
    let parsed: unknown;
    try {
      parsed = JSON.parse(message.slice(bar + 1));
    } catch (err) {
      this.fail(err);
      return;
    }
    if (channel === this.controlChannel) {
      if (isRecord(parsed) && parsed.type === 'stop' && typeof parsed.key === 'string') {
        for (const listener of this.controls) listener(parsed as unknown as ControlMessage);
      }
      return;
    }
    if (!isChatEvent(parsed)) return;
    this.local.publish(parsed);
    // another instance's turn ended: this instance's copy of it is kept as its own would be
    if (parsed.body.kind === 'close') this.local.endTurn(parsed.key, this.opts.replayTtl);
  }

  async replay(key: string, afterSeq: number): Promise<ChatEvent[] | null> {
    if (this.opts.shared && !this.opts.shared(key)) return this.local.replay(key, afterSeq);
    // what was published but not sent yet goes first (the same connection keeps the order)
    this.flush();
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
    const ttlMs = ttlSeconds * 1000;
    this.queue(key, ['e', this.now() + ttlMs, current.lastSeq, ttlMs + LOG_SLACK_MS]);
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
    this.flush();
    this.closed = true;
    this.controls.clear();
    this.watched.clear();
    await this.local.close();
  }
}
