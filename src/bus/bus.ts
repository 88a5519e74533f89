import type { ChatEvent } from '../domain/events.ts';

export type Unsubscribe = () => void;

/** A message for whichever instance runs a conversation's turn. */
export interface ControlMessage {
  type: 'stop';
  key: string;
  /** the turn to stop (a stop that arrives late must not stop a newer turn); absent: whichever runs */
  turnId?: string;
}

/**
 * Live fan-out of a conversation's events to every watcher on every instance, plus a replay log of
 * the in-flight turn (and the last finished one, for `chat.replay_ttl`) used by resume.
 */
export interface Bus {
  /** Appends to the replay log and delivers to live subscribers, in seq order. */
  publish(event: ChatEvent): void;
  subscribe(key: string, listener: (event: ChatEvent) => void): Unsubscribe;
  /** Resolves once the subscriptions of `key` receive what every instance publishes (at once on one instance). */
  whenSubscribed(key: string): Promise<void>;
  /**
   * Events of the log with seq > afterSeq, or null when the log does not reach back to afterSeq
   * (events in between are gone, or this bus never saw the conversation).
   */
  replay(key: string, afterSeq: number): Promise<ChatEvent[] | null>;
  /** The turn of `key` ended: its log expires after `ttlSeconds`; the next turn starts a new log. */
  endTurn(key: string, ttlSeconds: number): void;
  sendControl(message: ControlMessage): void;
  onControl(listener: (message: ControlMessage) => void): Unsubscribe;
  close(): Promise<void>;
}
