import { RateLimiterMemory } from 'rate-limiter-flexible';
import { AppError } from '../domain/errors.ts';

/** Counts turn-starting requests per user (chat.messages_per_minute, across every transport). */
export interface RateLimiter {
  /** @throws AppError 10429 with `data.retry_after` (seconds) when the user is over the limit */
  consume(userId: number): Promise<void>;
}

/** The single-instance limiter: counts in process memory. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly limiter: RateLimiterMemory;

  constructor(perMinute: number) {
    this.limiter = new RateLimiterMemory({ points: perMinute, duration: 60 });
  }

  async consume(userId: number): Promise<void> {
    try {
      await this.limiter.consume(String(userId));
    } catch (res) {
      const ms = (res as { msBeforeNext?: number }).msBeforeNext ?? 60_000;
      throw new AppError('rate_limited', 'Too many messages; slow down', { data: { retry_after: Math.ceil(ms / 1000) } });
    }
  }
}

/**
 * WebSocket connections per user across every instance (chat.max_connections_per_user), when
 * several instances share them; each instance also counts its own.
 */
export interface ConnectionCounter {
  /** Counts a new connection: false when the user has `max` open already (then nothing is counted). */
  open(userId: number, connectionId: string, max: number): Promise<boolean>;
  close(userId: number, connectionId: string): void;
  /** These connections are still open (a connection that is not refreshed expires: a dead instance's go away). */
  refresh(open: Array<{ userId: number; connectionId: string }>): void;
}
