import { randomUUID } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import type { Clock } from '../domain/clock.ts';
import { noTracer, type SpanHandle, type Tracer } from '../domain/tracing.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { ChatEventBody } from '../domain/events.ts';
import type { TurnSeqs } from './turn-seqs.ts';

/** A started turn, as its caller learns it. */
export interface TurnStarted {
  key: string;
  turnId: string;
  /** the seq before the turn's first event: replaying after it yields the whole turn */
  fromSeq: number;
  /** a repeated client_message_id: this is the earlier turn */
  duplicate: boolean;
}

/** Whose events a turn's are (and whose message rows). */
export interface TurnIds {
  /** null: an unstored turn (debug mode, a stateless API call) */
  chatId: string | null;
  flowId: string;
  userId: number;
}

export type TurnEmit = (body: ChatEventBody) => void;
/** What a turn does between begin and close; what it returns goes into the close's `extra`. */
export type TurnWork = (emit: TurnEmit) => Promise<Record<string, unknown> | void>;

/** What a prepared turn runs: whose it is, where its seqs start (known now, or once the question is stored) and its work. */
export interface TurnPlan {
  ids: TurnIds;
  floor: number | Promise<number>;
  work: TurnWork;
}

/** How a turn went, for whoever counts turns (metrics). */
export interface TurnOutcome {
  outcome: 'finished' | 'failed' | 'stopped';
  durationMs: number;
  /** from the turn's begin to its first text delta; null: it streamed none */
  firstDeltaMs: number | null;
  /** text deltas published (a delta may carry several of the model's tokens) */
  deltas: number;
}

export interface TurnObserver {
  started(): void;
  ended(turn: TurnOutcome): void;
}

/** A turn between `begin` and its end, as its preparation and its work see it. */
export interface Turn {
  readonly key: string;
  readonly turnId: string;
  /** aborted by stop, shutdown, or a disconnect where the turn must not outlive its client */
  readonly signal: AbortSignal;
}

interface RunningTurn extends Turn {
  controller: AbortController;
  done: Promise<void>;
  /** a stored conversation's turn whose seqs are reserved: it holds the conversation's lease */
  leased: boolean;
  /** its close is published: a next turn of the key may begin (it waits for this one's settle) */
  closed: boolean;
  /** another instance took the conversation over (this one's lease ran out): nothing more of it is published or stored */
  lost: boolean;
}

/** Why a lost turn was aborted (see `lose`). */
class TurnLost extends Error {
  constructor() {
    super('the turn\'s lease ran out and another instance ended it');
  }
}

/** Whether a turn was aborted because another instance took it over: what it would store now, that instance stored. */
export function isLost(signal: AbortSignal): boolean {
  return signal.reason instanceof TurnLost;
}

/**
 * The turns running in this process, one per conversation (bus key), and the life cycle every turn
 * shares: begin, the work, an error if it threw, close, release. Stop requests for turns that run
 * elsewhere travel on the bus.
 */
export class TurnRegistry {
  private readonly running = new Map<string, RunningTurn>();
  private readonly unsubscribeControl: () => void;
  private closing = false;

  constructor(private readonly deps: {
    bus: Bus;
    seqs: TurnSeqs;
    clock: Clock;
    observer?: TurnObserver | undefined;
    tracer?: Tracer | undefined;
    /** chat.replay_ttl, seconds */
    replayTtl: number;
    log?: { error(obj: object, msg: string): void; debug?(obj: object, msg: string): void } | undefined;
  }) {
    this.unsubscribeControl = deps.bus.onControl((m) => {
      // a stop names the turn it was meant for: a late one leaves a newer turn of the conversation be
      const turn = this.running.get(m.key);
      if (m.type === 'stop' && turn && (m.turnId === undefined || m.turnId === turn.turnId)) turn.controller.abort();
    });
  }

  isRunning(key: string): boolean {
    return this.running.has(key);
  }

  get size(): number {
    return this.running.size;
  }

  /** The turns of stored conversations that run here and hold their lease (their chat ids are the keys). */
  leasedTurns(): Array<{ key: string; turnId: string }> {
    const out: Array<{ key: string; turnId: string }> = [];
    for (const t of this.running.values()) if (t.leased && !t.closed) out.push({ key: t.key, turnId: t.turnId });
    return out;
  }

  /**
   * The lease of a turn that runs here was taken over (it ran out: the database was away, or this
   * process stalled), and the instance that took it ended the turn. The turn stops at once and
   * publishes and stores nothing more.
   */
  lose(key: string, turnId: string): void {
    const turn = this.running.get(key);
    if (!turn || turn.turnId !== turnId || turn.closed) return;
    turn.lost = true;
    turn.controller.abort(new TurnLost());
    this.deps.log?.error({ chat_id: key, turn_id: turnId }, 'lost the lease of a running turn: another instance ended it');
  }

  /** 10503 once the server shuts down: no new turn starts. */
  assertOpen(): void {
    if (this.closing) throw new AppError('busy', 'server shutting down');
  }

  /**
   * Begins a turn of `key`: 10409 while one runs. The key is taken before anything is awaited, so two
   * frames can never both take it. `prepare` checks and stores what must come first and plans the
   * work; if it throws, or plans nothing (null), the key is free again. The work starts in a
   * microtask: callers subscribe (held) before they begin, so nothing waits for the event loop to
   * come round. With a floor still to come (the question being stored) the work runs at once and
   * its events wait for it; a floor that fails ends the turn with nothing published, and rejects.
   */
  begin(key: string, prepare: (turn: Turn) => Promise<TurnPlan | null>): Promise<TurnStarted | null> {
    const current = this.running.get(key);
    if (current && !current.closed) return Promise.reject(new AppError('conflict'));
    // the turn's span: what its preparation and its work start (model calls, statements) are its children
    return (this.deps.tracer ?? noTracer).start('parley.turn', { 'parley.key': key }, (span) => this.run(key, prepare, span));
  }

  private async run(key: string, prepare: (turn: Turn) => Promise<TurnPlan | null>, span: SpanHandle): Promise<TurnStarted | null> {
    const controller = new AbortController();
    const turn: RunningTurn = {
      key, turnId: randomUUID().replaceAll('-', ''), signal: controller.signal, controller, done: Promise.resolve(), leased: false, closed: false, lost: false,
    };
    // the previous turn of the key has closed but is still settling: this one starts once the conversation is free
    const previous = this.running.get(key);
    this.running.set(key, turn);
    let plan: TurnPlan | null;
    span.set({ 'parley.turn_id': turn.turnId });
    try {
      await previous?.done.catch(() => undefined);
      plan = await prepare(turn);
    } catch (err) {
      this.running.delete(key);
      await this.deps.seqs.abandon(turn.turnId).catch(() => undefined);
      span.end(err);
      throw err;
    }
    if (!plan) {
      this.running.delete(key);
      span.end();
      return null;
    }
    const run = plan;
    span.set({ 'parley.chat_id': run.ids.chatId ?? '', 'parley.app_id': run.ids.flowId, 'parley.user_id': run.ids.userId });
    turn.done = Promise.resolve().then(() => this.drive(turn, run)).finally(() => span.end());
    try {
      return { key, turnId: turn.turnId, fromSeq: await run.floor, duplicate: false };
    } catch (err) {
      // nothing of the turn was published; it ends (and frees the conversation) once its work has stopped
      controller.abort();
      throw err;
    }
  }

  /** Stops the turn of `key` if it runs here, and waits until it ended. @returns whether it ran here */
  async stopLocal(key: string): Promise<boolean> {
    const turn = this.running.get(key);
    if (!turn) return false;
    turn.controller.abort();
    await turn.done;
    return true;
  }

  /** Asks whichever instance runs turn `turnId` of `key` to stop it. */
  stopElsewhere(key: string, turnId: string): void {
    this.deps.bus.sendControl({ type: 'stop', key, turnId });
  }

  /** Resolves once the turn of `key` (if one runs) has ended. */
  async settled(key: string): Promise<void> {
    await this.running.get(key)?.done;
  }

  /** Stops accepting turns, stops the running ones (their partial answers are stored) and waits for them. */
  async shutdown(): Promise<void> {
    this.closing = true;
    const turns = [...this.running.values()];
    for (const t of turns) t.controller.abort();
    await Promise.allSettled(turns.map((t) => t.done));
    this.unsubscribeControl();
  }

  /** begin, the work, an error if it threw, close; then the seqs are settled and the key released. */
  private async drive(turn: RunningTurn, plan: TurnPlan): Promise<void> {
    const { bus, seqs, clock, observer } = this.deps;
    const { ids, floor, work } = plan;
    let seq = typeof floor === 'number' ? floor : 0;
    let held: ChatEventBody[] | null = typeof floor === 'number' ? null : [];
    const startedAt = clock.now();
    let firstDeltaAt = 0;
    let deltas = 0;
    let failed = false;
    const publish = (body: ChatEventBody) => {
      if (turn.lost) return;
      if (body.kind === 'delta' || body.kind === 'node_delta') {
        if (deltas++ === 0) firstDeltaAt = clock.now();
      } else if (body.kind === 'error') failed = true;
      bus.publish({ seq: ++seq, key: turn.key, chatId: ids.chatId ?? '', turnId: turn.turnId, flowId: ids.flowId, userId: ids.userId, body });
    };
    observer?.started();
    this.deps.log?.debug?.({ chat_id: ids.chatId, turn_id: turn.turnId }, 'turn started');
    const emit: TurnEmit = (body) => {
      if (held) held.push(body);
      else publish(body);
    };
    const known = Promise.resolve(floor).then((fromSeq) => {
      if (ids.chatId !== null) turn.leased = true;
      if (held) {
        seq = fromSeq;
        const early = held;
        held = null;
        for (const body of early) publish(body);
      }
      return fromSeq;
    });
    known.catch(() => undefined);
    let extra: Record<string, unknown> | void = undefined;
    emit({ kind: 'begin' });
    try {
      extra = await work(emit);
    } catch (err) {
      const e = toAppError(err);
      if (e.code === 'internal' && !(err instanceof AppError)) this.deps.log?.error({ err, chat_id: ids.chatId, turn_id: turn.turnId }, 'turn failed');
      emit({ kind: 'error', code: e.code, message: e.message });
    } finally {
      const fromSeq = await known.catch(() => null);
      if (fromSeq !== null) emit(extra ? { kind: 'close', extra } : { kind: 'close' });
      turn.closed = true;
      if (fromSeq !== null) {
        bus.endTurn(turn.key, this.deps.replayTtl);
        // a settle that fails leaves the conversation taken: the sweeper (turn-sweeper.ts) frees it once its lease ran out.
        // A lost turn's conversation was settled by the instance that ended it.
        if (!turn.lost) await seqs.settle(turn.key, ids.chatId, turn.turnId, seq).catch(() => undefined);
      } else {
        await seqs.abandon(turn.turnId).catch(() => undefined);
      }
      if (this.running.get(turn.key) === turn) this.running.delete(turn.key);
      const outcome = { outcome: failed ? 'failed' as const : turn.signal.aborted ? 'stopped' as const : 'finished' as const, durationMs: clock.now() - startedAt, firstDeltaMs: deltas ? firstDeltaAt - startedAt : null, deltas };
      observer?.ended(outcome);
      this.deps.log?.debug?.({ chat_id: ids.chatId, turn_id: turn.turnId, ...outcome }, 'turn ended');
    }
  }
}
