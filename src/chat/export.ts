import type { ConversationRow, MessageRow } from '../storage/tables.ts';

const TOOL_CATEGORIES = new Set(['tool', 'flow', 'knowledge', 'tool_call', 'tool_result']);
/** Fields that carry the readable text of a JSON-encoded message (question inputs, workflow outputs). */
const TEXT_FIELDS = ['input', 'question', 'msg', 'message', 'content'] as const;

function parseObject(raw: string): Record<string, unknown> | null {
  if (!raw.trimStart().startsWith('{')) return null;
  try {
    const v: unknown = JSON.parse(raw);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The readable text of a stored message: questions are stored as JSON of the inputs (`{"input": "…"}`). */
export function displayText(raw: string): string {
  const obj = parseObject(raw);
  const field = obj && TEXT_FIELDS.find((k) => typeof obj[k] === 'string');
  return field ? (obj[field] as string) : raw;
}

/** A fenced block whose fence is longer than any backtick run inside, so the text cannot close it. */
function fenced(text: string, lang = ''): string {
  const longest = (text.match(/`+/g) ?? []).reduce((n, run) => Math.max(n, run.length), 2);
  const fence = '`'.repeat(longest + 1);
  return `${fence}${lang}\n${text}\n${fence}`;
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

function section(m: MessageRow): string {
  const obj = parseObject(m.message);
  if (TOOL_CATEGORIES.has(m.category)) {
    const key = typeof obj?.tool_key === 'string' ? ` \`${oneLine(obj.tool_key).replaceAll('`', '')}\`` : '';
    const label = m.category === 'tool_call' ? 'Tool call' : m.category === 'tool_result' ? 'Tool result' : 'Tool';
    return `**${label}**${key}:\n\n${fenced(obj ? JSON.stringify(obj, null, 2) : m.message, obj ? 'json' : '')}`;
  }
  const who = m.is_bot ? 'Assistant' : 'User';
  const label = m.category === (m.is_bot ? 'answer' : 'question') ? `**${who}**` : `**${who}** (${m.category})`;
  const text = displayText(m.message);
  // A JSON object without a readable text field (a workflow form, say) is shown as data, not prose.
  const body = text === m.message && obj ? fenced(JSON.stringify(obj, null, 2), 'json') : text;
  const note = m.remark === 'break_answer' ? '\n\n_(interrupted)_' : '';
  return `${label}:\n\n${body}${note}`;
}

/** One conversation as a Markdown transcript: the title, then one section per stored message. */
export function toMarkdown(c: ConversationRow, messages: MessageRow[]): string {
  const head = `# ${oneLine(c.name) || 'Untitled conversation'}\n\n_${oneLine(c.flow_name)} · ${c.chat_id} · ${c.create_time}_`;
  return [head, ...messages.map(section)].join('\n\n') + '\n';
}
