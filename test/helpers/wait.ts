import { vi } from 'vitest';

/**
 * Waits for a behaviour: polls `probe` until it returns a value (anything but undefined), which it
 * resolves with; fails after `timeoutMs` naming `what`.
 */
export function eventually<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  return vi.waitFor(async () => {
    const value = await probe();
    if (value === undefined) throw new Error(`timed out waiting for ${what}`);
    return value;
  }, { timeout: timeoutMs, interval: 25 });
}

/**
 * Real time passing, for the few tests whose subject is wall-clock time itself (a heartbeat timer,
 * rows stamped a moment apart). Anything else waits for a behaviour (`eventually`, a socket's
 * `settle`) or moves a ManualClock.
 */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
