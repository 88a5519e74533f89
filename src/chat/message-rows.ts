/**
 * The message rows a turn stores, in Bisheng's schema (PROTOCOL.md §3.2): one row per logical
 * message — the question, each tool call, the answer, a workflow's requests, outputs and answers.
 */
import { workflowMessage } from '../domain/bisheng-messages.ts';
import type { WorkflowEventBody } from '../domain/events.ts';
import type { LlmUsage } from '../domain/llm.ts';
import type { NewMessageInput } from '../storage/message-repo.ts';
import { BREAK_ANSWER, CLEAR_MARKER } from './context.ts';
import type { TurnIds } from './turn-registry.ts';

/** Which review blocked an answer: the question (input) or the model's text (output). */
export type Blocked = 'input' | 'output';

type Row = NewMessageInput;

function base(ids: TurnIds, turnId: string | null) {
  return {
    chat_id: ids.chatId!, flow_id: ids.flowId, user_id: ids.userId, intermediate_steps: '', files: '[]', extra: '{}',
    source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: turnId,
  } satisfies Partial<Row>;
}

/** A user's message: a question (its `inputs` as JSON), a workflow's start or an answer to its request. */
export function questionRow(ids: TurnIds, turnId: string, message: string, fields: Partial<Row> = {}): Row {
  return { ...base(ids, turnId), is_bot: 0, type: 'human', category: 'question', message, ...fields };
}

/** The marker of a fresh context: the next turn sees nothing before it. */
export function clearRow(ids: TurnIds): Row {
  return { ...base(ids, null), is_bot: 1, type: 'info', category: CLEAR_MARKER, message: '' };
}

/** One tool call of an assistant's answer; `step`: the LLM call that asked for it. */
export function toolRow(ids: TurnIds, turnId: string, call: { runId: string; toolKey: string; input: unknown; output: string; failed: boolean }, step: number): Row {
  return {
    ...base(ids, turnId), is_bot: 1, type: 'end', category: 'tool',
    message: JSON.stringify({ tool_key: call.toolKey, input: call.input, output: call.output }),
    intermediate_steps: `Tool output: \n\n${call.output}`, extra: JSON.stringify({ run_id: call.runId, step, failed: call.failed }),
  };
}

/**
 * The answer. A blocked one is recorded (sensitive_status 2; `extra.moderation` says which review
 * blocked it, so the context can leave out a blocked question); a stopped or failed one is marked
 * `break_answer` and `extra.interrupted`.
 */
export function answerRow(ids: TurnIds, turnId: string, answer: { text: string; parent: number | null; usage: LlmUsage | null; remark: string; blocked: Blocked | null; latencyMs: number }): Row {
  const { usage, blocked, remark } = answer;
  return {
    ...base(ids, turnId), is_bot: 1, type: 'bot', category: 'answer', message: answer.text,
    parent_message_id: answer.parent, remark, sensitive_status: blocked ? 2 : 1,
    extra: JSON.stringify({ ...(usage ? { usage } : {}), ...(blocked ? { moderation: blocked } : {}), ...(remark === BREAK_ANSWER ? { interrupted: true } : {}) }),
    tokens: usage?.total_tokens ?? 0, latency_ms: answer.latencyMs,
  };
}

/** The workflow events that become rows: requests, outputs and an llm node's whole text. */
export type PersistedEvent = Extract<WorkflowEventBody, { kind: 'input_request' | 'output' | 'node_answer' }>;

export const isPersisted = (body: { kind: string }): body is PersistedEvent =>
  body.kind === 'input_request' || body.kind === 'output' || body.kind === 'node_answer';

/** A workflow event's row: the message its frame carries, as JSON; a stopped llm node's partial text is `break_answer`. */
export function workflowRow(ids: TurnIds, turnId: string, body: PersistedEvent): Row {
  const { category, type, message } = workflowMessage(body);
  const interrupted = body.kind === 'node_answer' && body.interrupted;
  return {
    ...base(ids, turnId), is_bot: 1, type, category, message: JSON.stringify(message),
    remark: interrupted ? BREAK_ANSWER : '', extra: JSON.stringify(interrupted ? { interrupted: true } : {}),
  };
}
