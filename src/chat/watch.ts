import type { Bus, Unsubscribe } from '../bus/bus.ts';
import type { ChatEvent } from '../domain/events.ts';

export interface ResumeOptions {
  /**
   * `exact` (an explicit resume): every event after `afterSeq`, even ones this watch delivered before.
   * `unseen` (a repeated question): only what this watch has not delivered yet.
   */
  mode?: 'exact' | 'unseen';
  /**
   * Called with the replayed events (null: the log no longer reaches back to `afterSeq`) before any
   * of them is delivered; live events keep waiting while it runs (an announcement goes first).
   */
  before?: (events: ChatEvent[] | null) => void | Promise<void>;
}

/**
 * One watcher of a conversation's events — a socket, an SSE response: the live events of its bus
 * key, and on resume the replay log first. Every event is delivered at most once, in seq order, with
 * no gap between the replayed and the live ones (also when the turn runs on another instance).
 */
export class EventWatch {
  /** the highest seq delivered: nothing at or below it is delivered again */
  lastSent = -1;
  /** a turn began and has not closed yet, as far as this watch has seen (also one on another instance) */
  inFlight = false;
  /** while held or resuming, live events wait here */
  private buffer: ChatEvent[] | null;
  private readonly unsubscribe: Unsubscribe;
  private closed = false;

  private readonly accept: (event: ChatEvent) => boolean;

  /**
   * @param opts.hold keep live events until `release` or `resume` (subscribe before a turn starts, decide later where to start)
   * @param opts.userId deliver only this user's turns: a chat_id watched before its conversation existed may
   *   then be created by someone else
   */
  constructor(private readonly bus: Bus, readonly key: string, private readonly deliver: (event: ChatEvent) => void, opts: { hold?: boolean; userId?: number } = {}) {
    this.buffer = opts.hold ? [] : null;
    const { userId } = opts;
    this.accept = userId === undefined ? () => true : (e) => e.userId === userId;
    this.unsubscribe = bus.subscribe(key, (e) => {
      if (this.closed || !this.accept(e)) return;
      this.inFlight = e.body.kind !== 'close';
      if (this.buffer) this.buffer.push(e);
      else this.offer(e);
    });
  }

  private offer(e: ChatEvent): void {
    if (this.closed || e.seq <= this.lastSent) return;
    this.lastSent = e.seq;
    this.deliver(e);
  }

  /** Delivers the held live events after `afterSeq`, then keeps delivering live. */
  release(afterSeq: number): void {
    const held = this.buffer ?? [];
    this.buffer = null;
    this.lastSent = Math.max(this.lastSent, afterSeq);
    for (const e of held) this.offer(e);
  }

  /**
   * Replays every event after `afterSeq` from the log, then continues live — no gap, no duplicate.
   * @returns false when the log no longer reaches back to `afterSeq` (the client reloads the history)
   */
  async resume(afterSeq: number, opts: ResumeOptions = {}): Promise<boolean> {
    const held = this.buffer ?? [];
    this.buffer = held;
    try {
      const events = await this.bus.replay(this.key, afterSeq);
      await opts.before?.(events);
      this.lastSent = opts.mode === 'unseen' ? Math.max(this.lastSent, afterSeq) : afterSeq;
      for (const e of [...(events ?? []).filter(this.accept), ...held]) {
        this.inFlight = e.body.kind !== 'close';
        this.offer(e);
      }
      return events !== null;
    } finally {
      this.buffer = null;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.buffer = null;
    this.unsubscribe();
  }
}

/**
 * Whether a turn is still running after the event numbered `seq`: the log holds that event and it is
 * not a turn's `processing/close`. False when the turn ended there, or the log does not hold it.
 */
export async function turnOpenAt(bus: Bus, key: string, seq: number): Promise<boolean> {
  if (seq < 1) return false;
  const tail = await bus.replay(key, seq - 1);
  const at = tail?.find((e) => e.seq === seq);
  return at !== undefined && at.body.kind !== 'close';
}

/**
 * The events of one turn, handed to a callback as they are published, through the turn's `close` —
 * for transports that encode a turn at a time (OpenAI, Astron). Built on EventWatch: subscribe
 * before the turn starts (`hold`), then `start(fromSeq)` once the chat core said where it starts.
 * The callback runs synchronously in the publish: no promise per event (docs/decisions.md).
 */
export class TurnEvents {
  private readonly watch: EventWatch;
  /** events that came before `each` */
  private readonly early: ChatEvent[] = [];
  private handler: ((e: ChatEvent) => void) | null = null;
  private ended = false;
  private failure: unknown = null;
  private resolve: () => void = () => undefined;
  private readonly finished = new Promise<void>((resolve) => {
    this.resolve = resolve;
  });

  constructor(bus: Bus, key: string, userId: number) {
    this.watch = new EventWatch(bus, key, (e) => {
      if (this.ended) return;
      if (this.handler) this.deliver(e);
      else this.early.push(e);
      if (e.body.kind === 'close') this.finish();
    }, { hold: true, userId });
  }

  /** Starts delivering the events after `fromSeq` (the turn's first event is fromSeq + 1). */
  start(fromSeq: number): void {
    this.watch.release(fromSeq);
  }

  /** Ends the delivery early (the client went away); pending events are dropped. */
  abort(): void {
    this.early.length = 0;
    this.finish();
  }

  /**
   * Hands every event of the turn to `fn`, in order, through its `close`; resolves then (or on
   * `abort`). If `fn` throws, delivery stops and the promise rejects with that error.
   */
  async each(fn: (e: ChatEvent) => void): Promise<void> {
    this.handler = fn;
    for (const e of this.early.splice(0)) this.deliver(e);
    await this.finished;
    if (this.failure !== null) throw this.failure;
  }

  private deliver(e: ChatEvent): void {
    if (this.failure !== null) return;
    try {
      this.handler!(e);
    } catch (err) {
      this.failure = err;
      this.finish();
    }
  }

  private finish(): void {
    this.ended = true;
    this.watch.close();
    this.resolve();
  }
}
