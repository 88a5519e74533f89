import type { ConversationRepo } from '../storage/conversation-repo.ts';

/** seqs a stored conversation's turn reserves: more than any turn publishes */
const SEQ_RESERVE = 10_000;

/**
 * Where each turn's seqs start. A stored conversation reserves a block in the database (one atomic
 * UPDATE … RETURNING), so a crash never reuses a seq; the unused rest is given back when the turn
 * ends, so the next turn's seqs follow on directly. An unstored conversation (a socket's or a
 * request's scratch key) counts in memory until it is forgotten.
 */
export class TurnSeqs {
  private readonly scratch = new Map<string, number>();

  constructor(private readonly conversations: Pick<ConversationRepo, 'reserveSeq' | 'settleSeq'>) {}

  /** The seq before a new turn's first event. */
  async floor(key: string, chatId: string | null): Promise<number> {
    if (chatId === null) return this.scratch.get(key) ?? 0;
    return (await this.conversations.reserveSeq(chatId, SEQ_RESERVE)) ?? 0;
  }

  /** The turn that started after `fromSeq` ended at `lastSeq`. */
  async settle(key: string, chatId: string | null, fromSeq: number, lastSeq: number): Promise<void> {
    if (chatId === null) this.scratch.set(key, lastSeq);
    else await this.conversations.settleSeq(chatId, fromSeq + SEQ_RESERVE, lastSeq);
  }

  /** Nobody can watch this scratch key again. */
  forget(key: string): void {
    this.scratch.delete(key);
  }
}
