import type { ErrorCode } from './errors.ts';
import type { LlmUsage } from './llm.ts';
import type { JsonValue } from './types.ts';
import type { AnswerSchema } from './workflow.ts';

/** One run of a workflow node (a node may run several times in one run of its workflow). */
export interface NodeRun {
  /** this run of the node */
  runId: string;
  nodeId: string;
  name: string;
}

/** The message row a persisted event became, as the core fills it in before publishing. */
type Stored = { messageId?: number | string | null };

/** What a workflow run emits between a segment's begin and close (runtimes/workflow/executor.ts). */
export type WorkflowEventBody =
  | { kind: 'node_start'; node: NodeRun; nodeType: string }
  | {
    kind: 'node_end'; node: NodeRun; nodeType: string; input: Record<string, JsonValue>; output: Record<string, JsonValue>; durationMs: number;
    /** why the node ended early: stopped, or the error's message */
    reason?: string;
  }
  /** the start node's greeting */
  | { kind: 'guide_word'; node: NodeRun; text: string }
  | { kind: 'guide_questions'; node: NodeRun; questions: string[] }
  /** an llm node's streamed text */
  | { kind: 'node_delta'; node: NodeRun; content: string; reasoning: string; outputKey: string }
  /** an llm node's whole text (a stopped node's partial one is `interrupted`); stored */
  | ({ kind: 'node_answer'; node: NodeRun; content: string; reasoning: string; outputKey: string; interrupted: boolean } & Stored)
  /** an output node's message; stored */
  | ({ kind: 'output'; node: NodeRun; text: string } & Stored)
  /** the run waits for the user: an input node's dialog or form, an output node's choice or edit; stored */
  | ({ kind: 'input_request'; node: NodeRun; text: string; schema: AnswerSchema } & Stored);

/**
 * A turn is a stream of ChatEvents. Runtimes emit the bodies; the chat core stamps them with the
 * conversation's `seq` and publishes them on the bus; transports encode them for their wire.
 */
export type ChatEventBody =
  /** the turn started */
  | { kind: 'begin' }
  /** one LLM call starts */
  | { kind: 'llm_start' }
  /** text and reasoning deltas */
  | { kind: 'delta'; content: string; reasoning: string }
  /** the LLM call ended */
  | { kind: 'llm_end' }
  | { kind: 'tool_start'; runId: string; toolKey: string; input: unknown }
  | { kind: 'tool_end'; runId: string; toolKey: string; input: unknown; output: string; failed: boolean }
  | { kind: 'answer_start' }
  /** the stored answer with its full text; `stopped`: the turn was stopped (the text was streamed) */
  | { kind: 'answer_end'; messageId: number | null; text: string; usage: LlmUsage | null; stopped: boolean }
  /** an error inside the turn; always followed by `close`. `data`: what the client may see of it (a workflow error names its node) */
  | { kind: 'error'; code: ErrorCode; message: string; data?: unknown }
  /**
   * always the last event of a turn. A workflow segment says how the run stands in `extra`
   * ({run_id, run_status: input | success | failed | stopped, usage}).
   */
  | { kind: 'close'; extra?: Record<string, unknown> }
  | WorkflowEventBody;

export interface ChatEvent {
  /** strictly increasing per conversation, across turns and restarts */
  seq: number;
  /** the bus key: the chat_id, or the scratch key of unstored turns (debug mode, stateless API calls) */
  key: string;
  /** '' for unstored turns */
  chatId: string;
  turnId: string;
  flowId: string;
  userId: number;
  body: ChatEventBody;
}
