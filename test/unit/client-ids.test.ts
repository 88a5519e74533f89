import { describe, expect, it } from 'vitest';
import { clientIdKey, ClientIds } from '../../src/chat/client-ids.ts';
import { ManualClock } from '../helpers/clock.ts';

describe('ClientIds', () => {
  const turn = { key: 'k', turnId: 't1', fromSeq: 10, duplicate: false };

  it('a repeated id answers the earlier turn until the ttl has passed', () => {
    const clock = new ManualClock();
    const ids = new ClientIds(clock, 1000);
    const key = clientIdKey(7, 'k', 'q-1')!;
    expect(ids.seen(key)).toBeNull();
    ids.remember(key, turn);
    expect(ids.seen(key)).toEqual({ ...turn, duplicate: true });
    // another user's or another conversation's id is another key
    expect(ids.seen(clientIdKey(8, 'k', 'q-1')!)).toBeNull();
    expect(ids.seen(clientIdKey(7, 'k2', 'q-1')!)).toBeNull();
    clock.advance(999);
    expect(ids.seen(key)).not.toBeNull();
    clock.advance(1);
    expect(ids.seen(key)).toBeNull();
    expect(clientIdKey(7, 'k', undefined)).toBeNull();
  });

  it('expired ids are swept out when new ones come in', () => {
    const clock = new ManualClock();
    const ids = new ClientIds(clock, 1000);
    for (let i = 0; i < 100; i++) ids.remember(`old-${i}`, turn);
    clock.advance(61_000);
    ids.remember('new', turn);
    expect((ids as unknown as { turns: Map<string, unknown> }).turns.size).toBe(1);
  });
});
