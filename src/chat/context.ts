import type { LlmMessage, LlmToolCall } from '../domain/llm.ts';
import type { ContextRow } from '../storage/message-repo.ts';

export const BREAK_ANSWER = 'break_answer';
export const CLEAR_MARKER = 'clear_history';

/** The text of a stored question: Bisheng stores the whole `inputs` object as JSON. */
export function questionText(message: string): string {
  if (!message.startsWith('{')) return message;
  try {
    const parsed = JSON.parse(message) as { input?: unknown; question?: unknown };
    const text = parsed.input ?? parsed.question;
    return typeof text === 'string' ? text : message;
  } catch {
    return message;
  }
}

/**
 * The model context of a conversation: its last `window` messages, read in as few rows as will do.
 * `read(limit)` gives the newest `limit` rows, oldest first.
 *
 * Rows are what a turn's reads cost (docs/decisions.md), and a plain conversation needs about one row
 * per message: window + 10 rows are read first. Only where those render fewer than `window` messages
 * (tool exchanges, regenerated or blocked answers, interrupted ones) are window × 2 + 10 read. The short
 * read is cut to whole turns (from its first question): turns render independently of each other,
 * so when its turns already give `window` messages, the last `window` are exactly those of the
 * longer read.
 */
export async function readContext(read: (limit: number) => Promise<ContextRow[]>, window: number): Promise<LlmMessage[]> {
  if (window <= 0) return [];
  const short = window + 10;
  const rows = await read(short);
  if (rows.length < short) return buildContext(rows, window);
  const first = rows.findIndex((r) => r.category === 'question');
  if (first >= 0) {
    const messages = renderContext(rows.slice(first));
    if (messages.length >= window) return lastOf(messages, window);
  }
  return buildContext(await read(window * 2 + 10), window);
}

/**
 * The model's context from stored rows (oldest first): everything after the last clear marker,
 * without interrupted answers, and — where a question was regenerated — only its newest turn.
 * A question the input review blocked (its newest answer is the review's reply) is left out with
 * that reply: the model never sees it.
 */
export function buildContext(rows: ContextRow[], limit: number): LlmMessage[] {
  return lastOf(renderContext(rows), limit);
}

/** Every message the rows give the model, oldest first (see buildContext). */
function renderContext(rows: ContextRow[]): LlmMessage[] {
  let start = 0;
  rows.forEach((r, i) => { if (r.category === CLEAR_MARKER) start = i + 1; });
  const kept = rows.slice(start);

  const newestTurn = new Map<number, string | null>();
  for (const r of kept) if (r.parent_message_id !== null && r.is_bot) newestTurn.set(r.parent_message_id, r.turn_id);
  const blocked = new Set<number>();
  for (const r of kept) {
    if (r.category === 'answer' && r.parent_message_id !== null && r.sensitive_status === 2 && newestTurn.get(r.parent_message_id) === r.turn_id
      && parseJson<{ moderation?: string }>(r.extra).moderation === 'input') blocked.add(r.parent_message_id);
  }

  const out: LlmMessage[] = [];
  let pendingCalls: { calls: LlmToolCall[]; results: LlmMessage[] } | null = null;
  const flushTools = () => {
    if (pendingCalls) out.push({ role: 'assistant', content: '', toolCalls: pendingCalls.calls }, ...pendingCalls.results);
    pendingCalls = null;
  };
  for (const r of kept) {
    if (r.is_bot && r.parent_message_id !== null && (newestTurn.get(r.parent_message_id) !== r.turn_id || blocked.has(r.parent_message_id))) continue;
    if (r.category === 'question' && blocked.has(r.id)) continue;
    if (r.category === 'tool') {
      const m = parseJson<{ tool_key?: string; input?: Record<string, unknown>; output?: string }>(r.message);
      const extra = parseJson<{ run_id?: string }>(r.extra);
      const id = extra.run_id ?? String(r.id);
      pendingCalls ??= { calls: [], results: [] };
      pendingCalls.calls.push({ id, name: m.tool_key ?? 'tool', args: m.input ?? {} });
      pendingCalls.results.push({ role: 'tool', toolCallId: id, toolName: m.tool_key ?? 'tool', content: m.output ?? '' });
      continue;
    }
    flushTools();
    if (r.category === 'question') out.push({ role: 'user', content: questionText(r.message) });
    else if (r.category === 'answer' && !isInterrupted(r)) out.push({ role: 'assistant', content: r.message });
  }
  // tool rows of an interrupted turn have no answer after them; keep pairs whole
  flushTools();
  return out;
}

/** The last `limit` messages, not starting inside a tool exchange. */
function lastOf(messages: LlmMessage[], limit: number): LlmMessage[] {
  return messages.length > limit ? trimToWhole(messages.slice(messages.length - limit)) : messages;
}

/** A window must not start inside a tool exchange (a tool result without its call). */
function trimToWhole(messages: LlmMessage[]): LlmMessage[] {
  let i = 0;
  while (i < messages.length && messages[i]!.role === 'tool') i++;
  return messages.slice(i);
}

/** An interrupted answer: marked in `remark` (Bisheng) and in `extra`, which a user comment cannot overwrite. */
function isInterrupted(r: ContextRow): boolean {
  if (r.remark === BREAK_ANSWER) return true;
  // most answers' extra holds only usage: not worth parsing (JSON.stringify writes the key as is)
  return r.extra.includes('"interrupted"') && parseJson<{ interrupted?: boolean }>(r.extra).interrupted === true;
}

function parseJson<T>(text: string): Partial<T> {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v as Partial<T>) : {};
  } catch {
    return {};
  }
}
