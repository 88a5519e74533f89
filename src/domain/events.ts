import type { ErrorCode } from './errors.ts';
import type { LlmUsage } from './llm.ts';

/**
 * A turn is a stream of ChatEvents. Runtimes emit the bodies; the chat core stamps them with the
 * conversation's `seq` and publishes them on the bus; transports encode them for their wire.
 */
export type ChatEventBody =
  /** processing/begin: the turn started */
  | { kind: 'begin' }
  /** processing/start: one LLM call starts */
  | { kind: 'llm_start' }
  /** processing/stream: text and reasoning deltas */
  | { kind: 'delta'; content: string; reasoning: string }
  /** processing/end: the LLM call ended */
  | { kind: 'llm_end' }
  | { kind: 'tool_start'; runId: string; toolKey: string; input: unknown }
  | { kind: 'tool_end'; runId: string; toolKey: string; input: unknown; output: string; failed: boolean }
  /** answer/start */
  | { kind: 'answer_start' }
  /** answer/end_cover with the full text, or answer/end (empty message) when the turn was stopped */
  | { kind: 'answer_end'; messageId: number | null; text: string; usage: LlmUsage | null; stopped: boolean }
  /** an error inside the turn; always followed by `close`. `data`: what the client may see of it (a workflow error names its node) */
  | { kind: 'error'; code: ErrorCode; message: string; data?: unknown }
  /**
   * processing/close: always the last event of a turn. A workflow segment says how the run stands
   * in `extra` ({run_id, run_status: input | success | failed | stopped, usage}).
   */
  | { kind: 'close'; extra?: Record<string, unknown> }
  /** any other Bisheng frame (workflow events): category/type/message as on the wire */
  | { kind: 'frame'; category: string; type: string; message: unknown; messageId?: number | string | null; files?: unknown[]; extra?: Record<string, unknown> };

export interface ChatEvent {
  /** strictly increasing per conversation, across turns and restarts */
  seq: number;
  /** the bus key: the chat_id, or a `debug:` key for unstored debug turns */
  key: string;
  /** '' in debug mode */
  chatId: string;
  turnId: string;
  flowId: string;
  userId: number;
  body: ChatEventBody;
}
