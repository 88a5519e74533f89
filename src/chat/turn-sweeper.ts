import type { Bus } from '../bus/bus.ts';
import { AppError } from '../domain/errors.ts';
import type { ChatEvent, ChatEventBody } from '../domain/events.ts';
import { FLOW_TYPE } from '../domain/types.ts';
import type { Repos } from '../storage/repos.ts';
import type { ConversationRow } from '../storage/tables.ts';
import { BREAK_ANSWER } from './context.ts';
import { answerRow } from './message-rows.ts';
import type { TurnRegistry } from './turn-registry.ts';
import { SEQ_RESERVE, type TurnOwner, type TurnSeqs } from './turn-seqs.ts';

type StaleTurn = Pick<ConversationRow, 'chat_id' | 'flow_id' | 'flow_type' | 'user_id' | 'last_seq' | 'turn_id' | 'turn_owner' | 'turn_lease'>;

/** turns ended per sweep at most (the next sweep takes the rest) */
const BATCH = 100;

/**
 * Turns whose instance died. The instance that runs a turn holds it by a lease in the database
 * (turn-seqs.ts) and renews it while the turn runs; a lease that ran out is an instance that stopped
 * renewing. A sweep ends such a turn as a stop would: the partial answer (from the replay log) is
 * stored once, its watchers get an error and the close, and the conversation takes questions again;
 * a workflow run it was continuing waits again for its answer. Every instance sweeps every third of
 * chat.turn_lease (one of them gets each turn); an instance on SQLite without Redis (no other process
 * can share its database) sweeps every running turn at start: nothing else can be running one.
 */
export class TurnSweeper {
  private timers: NodeJS.Timeout[] = [];
  private sweeping: Promise<unknown> = Promise.resolve();
  private renewing: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: {
    repos: Repos; bus: Bus; turns: TurnRegistry; seqs: TurnSeqs; owner: TurnOwner;
    /** chat.replay_ttl, seconds */
    replayTtl: number;
    log?: { error(obj: object, msg: string): void; warn?(obj: object, msg: string): void } | undefined;
  }) {}

  /**
   * Sweeps now (every running turn when `all`), then renews and sweeps every third of the lease
   * until `stopSweeping` / `stop`. Renewing runs on its own, so a slow sweep never delays it.
   */
  start(opts: { all: boolean }): void {
    const every = Math.max(1000, Math.floor(this.deps.owner.leaseMs / 3));
    this.sweeping = this.sweep(opts.all);
    // one renewal (one sweep) at a time: a slow one is not joined by the next
    const renew = setInterval(() => {
      this.renewing = this.renewing.then(() => this.renew());
    }, every);
    const sweep = setInterval(() => {
      this.sweeping = this.sweeping.then(() => this.sweep(false));
    }, every);
    renew.unref();
    sweep.unref();
    this.timers = [renew, sweep];
  }

  /** Stops sweeping; leases are still renewed (the turns of a shutdown are still ending). */
  async stopSweeping(): Promise<void> {
    if (this.timers[1]) clearInterval(this.timers[1]);
    await this.sweeping;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await Promise.all([this.sweeping, this.renewing]);
  }

  /**
   * Extends the leases of the turns this instance runs. A turn whose lease another instance took
   * over (it had run out: the database was away too long, or this process stalled) was ended
   * there, and stops here.
   */
  async renew(): Promise<void> {
    const mine = this.deps.turns.leasedTurns();
    if (mine.length === 0) return;
    try {
      const held = await this.deps.repos.conversations.renewTurns(this.deps.owner.id, mine.map((t) => t.key), this.deps.seqs.leaseUntil());
      for (const t of mine) if (!held.has(t.key)) this.deps.turns.lose(t.key, t.turnId);
    } catch (err) {
      this.deps.log?.error({ err }, 'could not renew the leases of running turns');
    }
  }

  /** Ends the turns whose lease ran out (all running turns: `all`). @returns how many it ended */
  async sweep(all: boolean): Promise<number> {
    const now = new Date(this.deps.owner.clock.now()).toISOString();
    let ended = 0;
    try {
      const stale = await this.deps.repos.conversations.staleTurns(all ? '9999' : now, BATCH);
      for (const turn of stale) {
        if (this.deps.turns.isRunning(turn.chat_id)) continue;
        if (!(await this.deps.repos.conversations.claimTurn(turn.chat_id, turn.turn_id!, turn.turn_lease!, this.deps.owner.id, this.deps.seqs.leaseUntil()))) continue;
        await this.end(turn);
        ended++;
      }
    } catch (err) {
      this.deps.log?.error({ err }, 'sweeping the turns of stopped instances failed');
    }
    return ended;
  }

  private async end(turn: StaleTurn): Promise<void> {
    const { repos, bus } = this.deps;
    const chatId = turn.chat_id;
    const turnId = turn.turn_id!;
    const fromSeq = turn.last_seq - SEQ_RESERVE;
    const events = ((await bus.replay(chatId, fromSeq)) ?? []).filter((e) => e.turnId === turnId);
    let seq = events.at(-1)?.seq ?? fromSeq;
    if (!events.some((e) => e.body.kind === 'close')) {
      if (turn.flow_type === FLOW_TYPE.workflow) await repos.workflowRuns.unclaim(chatId);
      else if (!events.some((e) => e.body.kind === 'answer_end')) await this.storePartialAnswer(turn, events);
      const publish = (body: ChatEventBody) => bus.publish({ seq: ++seq, key: chatId, chatId, turnId, flowId: turn.flow_id, userId: turn.user_id, body });
      const e = new AppError('internal', 'The instance that ran this turn stopped before the turn ended; ask again');
      publish({ kind: 'error', code: e.code, message: e.message });
      publish({ kind: 'close' });
      bus.endTurn(chatId, this.deps.replayTtl);
    }
    await this.deps.seqs.settle(chatId, chatId, turnId, seq);
    this.deps.log?.warn?.({ chat_id: chatId, turn_id: turnId, owner: turn.turn_owner }, 'ended a turn whose instance stopped');
  }

  /** The answer as far as it was streamed, marked interrupted (unless the turn stored one). */
  private async storePartialAnswer(turn: StaleTurn, events: ChatEvent[]): Promise<void> {
    const rows = await this.deps.repos.messages.byTurn(turn.chat_id, turn.turn_id!);
    const question = rows.find((r) => r.category === 'question');
    if (!question || rows.some((r) => r.category === 'answer')) return;
    const text = events.map((e) => (e.body.kind === 'delta' ? e.body.content : '')).join('');
    const ids = { chatId: turn.chat_id, flowId: turn.flow_id, userId: turn.user_id };
    await this.deps.repos.messages.insert(answerRow(ids, turn.turn_id!, { text, parent: question.id, usage: null, remark: BREAK_ANSWER, blocked: null, latencyMs: 0 }));
  }
}
