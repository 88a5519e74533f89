import type { Clock } from '../domain/clock.ts';
import { AppError } from '../domain/errors.ts';
import type { ConversationRepo } from '../storage/conversation-repo.ts';

/** seqs a stored conversation's turn reserves: more than any turn publishes */
export const SEQ_RESERVE = 10_000;

/** This instance, as the owner of the turns it runs. */
export interface TurnOwner {
  id: string;
  /** chat.turn_lease in ms: how long a running turn is held without being renewed */
  leaseMs: number;
  clock: Clock;
}

/**
 * Where each turn's seqs start, and whose a stored conversation's turn is. A stored conversation's
 * turn takes the conversation in the database and reserves a block of seqs in one atomic step, so
 * of two instances only one runs it, and a crash never reuses a seq; when the turn ends the unused
 * rest is given back (the next turn's seqs follow on directly) and the conversation is free. An
 * unstored conversation (a socket's or a request's scratch key) counts in memory until forgotten.
 */
export class TurnSeqs {
  private readonly scratch = new Map<string, number>();
  /** reservations of turns that have not settled yet, by turn id */
  private readonly held = new Map<string, { chatId: string; mark: number }>();

  constructor(private readonly conversations: Pick<ConversationRepo, 'reserveSeq' | 'settleSeq' | 'get'>, private readonly owner: TurnOwner) {}

  /** The lease a turn holds from now on. */
  leaseUntil(): string {
    return new Date(this.owner.clock.now() + this.owner.leaseMs).toISOString();
  }

  /**
   * The seq before a new turn's first event.
   * @throws AppError 10409 when another instance runs a turn of the conversation
   */
  async floor(key: string, chatId: string | null, turnId: string): Promise<number> {
    if (chatId === null) return this.scratch.get(key) ?? 0;
    const mark = await this.conversations.reserveSeq(chatId, SEQ_RESERVE, { id: turnId, owner: this.owner.id, lease: this.leaseUntil() });
    if (mark !== undefined) {
      this.held.set(turnId, { chatId, mark });
      return mark;
    }
    if (await this.conversations.get(chatId)) throw new AppError('conflict');
    // no conversation (yet): nothing to reserve in
    return 0;
  }

  /** The turn that started after `fromSeq` ended at `lastSeq`. */
  async settle(key: string, chatId: string | null, turnId: string, lastSeq: number): Promise<void> {
    this.held.delete(turnId);
    if (chatId === null) this.scratch.set(key, lastSeq);
    else await this.conversations.settleSeq(chatId, turnId, lastSeq);
  }

  /** A turn that took its conversation but never ran (what came after failed): the conversation is free again, its seqs unused. */
  async abandon(turnId: string): Promise<void> {
    const h = this.held.get(turnId);
    if (h) await this.settle(h.chatId, h.chatId, turnId, h.mark);
  }

  /** Nobody can watch this scratch key again. */
  forget(key: string): void {
    this.scratch.delete(key);
  }
}
