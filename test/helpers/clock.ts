import type { Clock } from '../../src/domain/clock.ts';

/** A clock that moves only when a test moves it (it starts at the real time, so stamps look as usual). */
export class ManualClock implements Clock {
  private ms = Date.now();

  now(): number {
    return this.ms;
  }

  advance(ms: number): void {
    this.ms += ms;
  }
}
