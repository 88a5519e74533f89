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
