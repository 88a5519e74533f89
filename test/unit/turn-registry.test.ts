/**
 * The life cycle every turn shares (TurnRegistry), without a server or a database: the bus is the
 * in-process one, the seq store a map.
 */
import { describe, expect, it } from 'vitest';
import { MemoryBus } from '../../src/bus/memory-bus.ts';
import { isLost, TurnRegistry, type Turn, type TurnOutcome, type TurnPlan } from '../../src/chat/turn-registry.ts';
import { TurnSeqs } from '../../src/chat/turn-seqs.ts';
import { AppError } from '../../src/domain/errors.ts';
import type { ChatEvent } from '../../src/domain/events.ts';
import { eventually } from '../helpers/wait.ts';

const CHAT = 'c'.repeat(32);
const ids = { chatId: CHAT, flowId: 'app', userId: 7 };

/** `settling`: what each settle waits for first (a slow database) */
function setup(settling: Promise<void> = Promise.resolve()) {
  const bus = new MemoryBus();
  const reserved = new Map<string, { last: number; turn: string | null }>();
  const settled: Array<[string, string, number]> = [];
  // the database's seq and turn columns, as ConversationRepo keeps them: one turn at a time, a block reserved per turn
  const seqs = new TurnSeqs({
    async reserveSeq(chatId, block, turn) {
      const row = reserved.get(chatId) ?? { last: 0, turn: null };
      if (row.turn !== null) return undefined;
      reserved.set(chatId, { last: row.last + block, turn: turn.id });
      return row.last;
    },
    async settleSeq(chatId, turnId, actual) {
      await settling;
      settled.push([chatId, turnId, actual]);
      if (reserved.get(chatId)?.turn === turnId) reserved.set(chatId, { last: actual, turn: null });
    },
    async get(chatId) {
      return reserved.has(chatId) ? ({ chat_id: chatId } as never) : undefined;
    },
  }, { id: 'instance', leaseMs: 30_000, clock: { now: () => 0 } });
  const outcomes: TurnOutcome[] = [];
  const turns = new TurnRegistry({ bus, seqs, clock: { now: () => 0 }, observer: { started: () => undefined, ended: (t) => outcomes.push(t) }, replayTtl: 60 });
  const events: ChatEvent[] = [];
  bus.subscribe(CHAT, (e) => events.push(e));
  const kinds = () => events.map((e) => e.body.kind);
  return { bus, seqs, turns, events, kinds, settled, outcomes };
}

/** A plan whose work emits one delta and waits for `release` (or the turn's stop). */
function gatedPlan(turnSignal: AbortSignal, floor: number | Promise<number>) {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
    turnSignal.addEventListener('abort', () => resolve());
  });
  const plan: TurnPlan = {
    ids, floor,
    work: async (emit) => {
      emit({ kind: 'delta', content: 'hi', reasoning: '' });
      await gate;
      return turnSignal.aborted ? { stopped: true } : undefined;
    },
  };
  return { plan, release: () => release() };
}

describe('TurnRegistry', () => {
  it('runs begin, the work and close with seqs after the floor, then releases the key and settles the seqs', async () => {
    const { turns, events, kinds, settled } = setup();
    let release = () => undefined as void;
    const started = await turns.begin(CHAT, async (turn) => {
      const gated = gatedPlan(turn.signal, 0);
      release = gated.release;
      return gated.plan;
    });
    expect(started).toMatchObject({ key: CHAT, fromSeq: 0, duplicate: false });
    expect(turns.isRunning(CHAT)).toBe(true);
    await expect(turns.begin(CHAT, async () => null)).rejects.toMatchObject({ code: 'conflict' });
    release();
    await turns.settled(CHAT);
    expect(kinds()).toEqual(['begin', 'delta', 'close']);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(new Set(events.map((e) => e.turnId))).toEqual(new Set([started!.turnId]));
    expect(turns.isRunning(CHAT)).toBe(false);
    expect(settled).toEqual([[CHAT, started!.turnId, 3]]);
    // the next turn's seqs follow on directly
    const next = await turns.begin(CHAT, async () => ({ ids, floor: 3, work: async () => undefined }));
    await turns.settled(CHAT);
    expect(next!.fromSeq).toBe(3);
    expect(events.at(-1)!.seq).toBe(5);
  });

  it('a preparation that fails or plans nothing frees the key, and nothing is published', async () => {
    const { turns, events } = setup();
    await expect(turns.begin(CHAT, async () => { throw new AppError('rate_limited'); })).rejects.toMatchObject({ code: 'rate_limited' });
    expect(turns.isRunning(CHAT)).toBe(false);
    expect(await turns.begin(CHAT, async () => null)).toBeNull();
    expect(turns.isRunning(CHAT)).toBe(false);
    expect(events).toEqual([]);
  });

  it('events emitted before the floor is known wait for it; a floor that fails publishes nothing and rejects', async () => {
    const { turns, events } = setup();
    let resolveFloor: (n: number) => void = () => undefined;
    const floor = new Promise<number>((resolve) => { resolveFloor = resolve; });
    const started = turns.begin(CHAT, async () => ({ ids, floor, work: async (emit) => emit({ kind: 'delta', content: 'early', reasoning: '' }) }));
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual([]);
    resolveFloor(40);
    expect((await started)!.fromSeq).toBe(40);
    await turns.settled(CHAT);
    expect(events.map((e) => [e.seq, e.body.kind])).toEqual([[41, 'begin'], [42, 'delta'], [43, 'close']]);

    const failing = turns.begin(CHAT, async (turn) => gatedPlan(turn.signal, Promise.reject(new AppError('conversation_denied'))).plan);
    await expect(failing).rejects.toMatchObject({ code: 'conversation_denied' });
    await turns.settled(CHAT);
    expect(events).toHaveLength(3);
    expect(turns.isRunning(CHAT)).toBe(false);
  });

  it('stopLocal aborts the work and waits for the close; a stop on the bus (another instance) does the same', async () => {
    const { bus, turns, events } = setup();
    await turns.begin(CHAT, async (turn) => gatedPlan(turn.signal, 0).plan);
    expect(await turns.stopLocal(CHAT)).toBe(true);
    expect(events.at(-1)!.body).toEqual({ kind: 'close', extra: { stopped: true } });
    expect(await turns.stopLocal(CHAT)).toBe(false);

    await turns.begin(CHAT, async (turn) => gatedPlan(turn.signal, 10).plan);
    bus.sendControl({ type: 'stop', key: CHAT });
    await turns.settled(CHAT);
    expect(events.at(-1)!.body).toEqual({ kind: 'close', extra: { stopped: true } });
  });

  it('a stop that names an earlier turn (it arrived late) leaves the turn running now be', async () => {
    const { bus, turns, kinds } = setup();
    const first = await turns.begin(CHAT, async () => ({ ids, floor: 0, work: async () => undefined }));
    await turns.settled(CHAT);
    let release = () => undefined as void;
    const second = await turns.begin(CHAT, async (turn) => {
      const gated = gatedPlan(turn.signal, 2);
      release = gated.release;
      return gated.plan;
    });
    bus.sendControl({ type: 'stop', key: CHAT, turnId: first!.turnId });
    expect(turns.isRunning(CHAT)).toBe(true);
    bus.sendControl({ type: 'stop', key: CHAT, turnId: second!.turnId });
    await turns.settled(CHAT);
    expect(kinds().slice(2)).toEqual(['begin', 'delta', 'close']);
    release();
  });

  it('a question sent as soon as the close arrived waits for the turn to settle instead of getting 10409', async () => {
    let settle = () => undefined as void;
    const { turns, seqs, events, settled } = setup(new Promise<void>((resolve) => { settle = resolve; }));
    const reserving = async (turn: Turn): Promise<TurnPlan> => ({ ids, floor: await seqs.floor(CHAT, CHAT, turn.turnId), work: async () => undefined });
    const first = await turns.begin(CHAT, reserving);
    await eventually(() => (events.at(-1)?.body.kind === 'close' ? true : undefined), 'the close');
    const next = turns.begin(CHAT, reserving);
    // a third is refused: the second has the key
    await expect(turns.begin(CHAT, async () => null)).rejects.toMatchObject({ code: 'conflict' });
    expect(settled).toEqual([]);
    settle();
    expect(await next).toMatchObject({ fromSeq: 2 });
    await turns.settled(CHAT);
    expect(settled).toEqual([[CHAT, first!.turnId, 2], [CHAT, (await next)!.turnId, 4]]);
  });

  it('a turn whose lease another instance took over stops at once, and publishes and settles nothing more', async () => {
    const { turns, kinds, settled } = setup();
    let signal: AbortSignal | null = null;
    const started = await turns.begin(CHAT, async (turn) => {
      signal = turn.signal;
      return gatedPlan(turn.signal, 0).plan;
    });
    await eventually(() => (turns.leasedTurns().length === 1 ? true : undefined), 'the lease to be held');
    expect(turns.leasedTurns()).toEqual([{ key: CHAT, turnId: started!.turnId }]);
    turns.lose(CHAT, 'another turn');
    expect(turns.isRunning(CHAT)).toBe(true);
    turns.lose(CHAT, started!.turnId);
    await turns.settled(CHAT);
    expect(isLost(signal!)).toBe(true);
    expect(kinds()).toEqual(['begin', 'delta']);
    expect(settled).toEqual([]);
    expect(turns.isRunning(CHAT)).toBe(false);
  });

  it('a work that throws ends with an error event, then close; the observer counts each outcome once', async () => {
    const { turns, kinds, events, outcomes } = setup();
    await turns.begin(CHAT, async () => ({ ids, floor: 0, work: async () => { throw new AppError('upstream_timeout', 'slow model'); } }));
    await turns.settled(CHAT);
    expect(kinds()).toEqual(['begin', 'error', 'close']);
    expect(events[1]!.body).toMatchObject({ code: 'upstream_timeout', message: 'slow model' });
    await turns.begin(CHAT, async (turn) => gatedPlan(turn.signal, 10).plan);
    await turns.stopLocal(CHAT);
    await turns.begin(CHAT, async () => ({ ids, floor: 20, work: async (emit) => emit({ kind: 'delta', content: 'x', reasoning: '' }) }));
    await turns.settled(CHAT);
    expect(outcomes.map((o) => [o.outcome, o.deltas, o.firstDeltaMs])).toEqual([['failed', 0, null], ['stopped', 1, 0], ['finished', 1, 0]]);
  });

  it('shutdown stops the running turns and refuses new ones (10503)', async () => {
    const { turns, kinds } = setup();
    await turns.begin(CHAT, async (turn) => gatedPlan(turn.signal, 0).plan);
    await turns.shutdown();
    expect(kinds()).toEqual(['begin', 'delta', 'close']);
    expect(() => turns.assertOpen()).toThrow(expect.objectContaining({ code: 'busy' }));
  });

  it('unstored turns count their seqs in memory until their scratch key is forgotten', async () => {
    const { turns, seqs, bus } = setup();
    const key = 'scratch:1';
    const seen: number[] = [];
    bus.subscribe(key, (e) => seen.push(e.seq));
    const scratchIds = { ...ids, chatId: null };
    for (let i = 0; i < 2; i++) {
      await turns.begin(key, async () => ({ ids: scratchIds, floor: await seqs.floor(key, null, 't'), work: async () => undefined }));
      await turns.settled(key);
    }
    expect(seen).toEqual([1, 2, 3, 4]);
    seqs.forget(key);
    expect(await seqs.floor(key, null, 't')).toBe(0);
  });

  it('a stored conversation is taken in the database: a turn on another instance gets 10409 until the first one settled', async () => {
    const { seqs } = setup();
    expect(await seqs.floor(CHAT, CHAT, 'turn-a')).toBe(0);
    await expect(seqs.floor(CHAT, CHAT, 'turn-b')).rejects.toMatchObject({ code: 'conflict' });
    await seqs.settle(CHAT, CHAT, 'turn-a', 4);
    expect(await seqs.floor(CHAT, CHAT, 'turn-b')).toBe(4);
    // a conversation that does not exist has nothing to take
    expect(await seqs.floor('d'.repeat(32), 'd'.repeat(32), 'turn-c')).toBe(0);
  });
});
