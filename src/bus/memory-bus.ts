import type { ChatEvent } from '../domain/events.ts';
import type { Bus, ControlMessage, Unsubscribe } from './bus.ts';

/**
 * A delta as a log keeps it for replay: seq and text, the rest is its turn's (the first event of the
 * turn). Deltas are nearly all of a log; this is a third of the memory of the event, and the event
 * itself is garbage as soon as its watchers have it.
 */
class KeptDelta {
  constructor(readonly seq: number, readonly content: string, readonly reasoning: string, readonly turn: ChatEvent) {}

  event(): ChatEvent {
    const { key, chatId, turnId, flowId, userId } = this.turn;
    return { seq: this.seq, key, chatId, turnId, flowId, userId, body: { kind: 'delta', content: this.content, reasoning: this.reasoning } };
  }
}

type Logged = ChatEvent | KeptDelta;

interface Channel {
  listeners: Set<(event: ChatEvent) => void>;
  /** events of the last finished turn (while its replay_ttl lasts; its deltas kept as KeptDelta) and of the current turn */
  log: Logged[];
  /** index in `log` where the newest turn begins */
  turnStart: number;
  /** the last seq published before `log` began: the log covers every afterSeq ≥ floor */
  floor: number;
  lastSeq: number;
  /** set when the newest turn ended: its events may be replayed until then (ms) */
  expiresAt: number | null;
  /** the newest turn ended; the next publish starts a new one */
  ended: boolean;
}

/** The single-instance bus: everything in process memory. */
export class MemoryBus implements Bus {
  private readonly channels = new Map<string, Channel>();
  private readonly controls = new Set<(m: ControlMessage) => void>();
  private readonly sweeper: NodeJS.Timeout;
  /** channels whose newest turn has ended, oldest end first, with the events their logs hold */
  private readonly finished = new Map<string, number>();
  private retained = 0;

  /**
   * @param maxRetained events kept, in all, for replaying finished turns; beyond it the logs of the
   *   longest-finished turns are dropped (a late resume then gets `resumed: false` and reloads history)
   */
  constructor(private readonly now: () => number = Date.now, private readonly maxRetained = 100_000) {
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  private channel(key: string): Channel {
    let ch = this.channels.get(key);
    if (!ch) {
      ch = { listeners: new Set(), log: [], turnStart: 0, floor: -1, lastSeq: -1, expiresAt: null, ended: false };
      this.channels.set(key, ch);
    }
    return ch;
  }

  publish(event: ChatEvent): void {
    const ch = this.channel(event.key);
    if (ch.lastSeq < 0) {
      ch.floor = event.seq - 1;
    } else if (ch.ended) {
      this.unretain(event.key);
      // a new turn: keep the one that just ended while it may still be replayed (PROTOCOL.md §3.4)
      const keep = this.expired(ch) ? [] : ch.log.slice(ch.turnStart);
      ch.floor = keep.length ? keep[0]!.seq - 1 : ch.lastSeq;
      ch.log = keep;
      ch.turnStart = keep.length;
      ch.ended = false;
      ch.expiresAt = null;
    }
    // a delta is kept as seq + text from the start (the event itself then dies young: no GC work)
    const head = ch.log[ch.turnStart];
    const body = event.body;
    ch.log.push(body.kind === 'delta' && head !== undefined && !(head instanceof KeptDelta) && head.turnId === event.turnId
      ? new KeptDelta(event.seq, body.content, body.reasoning, head)
      : event);
    ch.lastSeq = event.seq;
    for (const listener of ch.listeners) {
      try {
        listener(event);
      } catch {
        // one broken watcher must not stop the others or the turn
      }
    }
  }

  subscribe(key: string, listener: (event: ChatEvent) => void): Unsubscribe {
    const ch = this.channel(key);
    ch.listeners.add(listener);
    return () => {
      ch.listeners.delete(listener);
    };
  }

  async whenSubscribed(): Promise<void> {}

  async replay(key: string, afterSeq: number): Promise<ChatEvent[] | null> {
    const ch = this.channels.get(key);
    if (!ch || ch.lastSeq < 0) return null;
    if (afterSeq >= ch.lastSeq) return [];
    if (this.expired(ch) || afterSeq < ch.floor) return null;
    const out: ChatEvent[] = [];
    for (const e of ch.log) if (e.seq > afterSeq) out.push(e instanceof KeptDelta ? e.event() : e);
    return out;
  }

  endTurn(key: string, ttlSeconds: number): void {
    const ch = this.channels.get(key);
    if (!ch) return;
    ch.ended = true;
    ch.expiresAt = this.now() + ttlSeconds * 1000;
    this.unretain(key);
    this.finished.set(key, ch.log.length);
    this.retained += ch.log.length;
    for (const [oldest] of this.finished) {
      if (this.retained <= this.maxRetained) break;
      this.drop(oldest);
    }
  }

  private unretain(key: string): void {
    const n = this.finished.get(key);
    if (n === undefined) return;
    this.finished.delete(key);
    this.retained -= n;
  }

  /** Forgets a finished turn's events; the channel still knows its last seq. */
  private drop(key: string): void {
    this.unretain(key);
    const ch = this.channels.get(key);
    if (!ch) return;
    if (ch.listeners.size === 0) this.channels.delete(key);
    else {
      ch.floor = ch.lastSeq;
      ch.log = [];
      ch.turnStart = 0;
    }
  }

  sendControl(message: ControlMessage): void {
    for (const listener of this.controls) listener(message);
  }

  onControl(listener: (message: ControlMessage) => void): Unsubscribe {
    this.controls.add(listener);
    return () => {
      this.controls.delete(listener);
    };
  }

  private expired(ch: Channel): boolean {
    return ch.expiresAt !== null && ch.expiresAt <= this.now();
  }

  private sweep(): void {
    for (const [key, ch] of this.channels) if (this.expired(ch)) this.drop(key);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.channels.clear();
    this.controls.clear();
    this.finished.clear();
    this.retained = 0;
  }
}
