import type { Clock } from '../domain/clock.ts';
import type { TurnStarted } from './turn-registry.ts';

/** how often expired ids are swept out (ms) */
const SWEEP_EVERY = 60_000;

/**
 * The turns that client_message_ids started: a repeated id answers the earlier turn instead of
 * asking again, until chat.replay_ttl (the turn can be replayed that long).
 */
export interface ClientIdStore {
  seen(idKey: string): TurnStarted | null | Promise<TurnStarted | null>;
  remember(idKey: string, turn: TurnStarted): void;
}

/** The key of a client's id in one conversation; null without an id. */
export const clientIdKey = (userId: number, key: string, clientMessageId: string | undefined): string | null =>
  (clientMessageId ? `${userId}:${key}:${clientMessageId}` : null);

/** The single-instance store: in process memory. */
export class ClientIds implements ClientIdStore {
  private readonly turns = new Map<string, { turn: TurnStarted; expires: number }>();
  private nextSweep = 0;

  constructor(private readonly clock: Clock, private readonly ttlMs: number) {}

  seen(idKey: string): TurnStarted | null {
    const seen = this.turns.get(idKey);
    return seen && seen.expires > this.clock.now() ? { ...seen.turn, duplicate: true } : null;
  }

  remember(idKey: string, turn: TurnStarted): void {
    const now = this.clock.now();
    if (now >= this.nextSweep) {
      for (const [k, v] of this.turns) if (v.expires <= now) this.turns.delete(k);
      this.nextSweep = now + SWEEP_EVERY;
    }
    this.turns.set(idKey, { turn, expires: now + this.ttlMs });
  }
}
