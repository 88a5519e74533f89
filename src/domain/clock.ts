/** Time as the core reads it (epoch ms): a port, so tests move time instead of sleeping past it. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
