import type { AuthService } from '../../auth/auth-service.ts';
import { AppError, type ErrorCode, type FieldError } from '../../domain/errors.ts';
import type { LlmMessage, LlmToolCall } from '../../domain/llm.ts';
import { isHexId, isRecord, type Principal } from '../../domain/types.ts';
import type { ChatMessageIn } from './schemas.ts';

/** Decoding a completion request (OpenAI- or Astron-compatible): its caller, question, context and chat id. */

/** The text of a message: a string, or its text parts joined by newlines. */
export function textOf(content: ChatMessageIn['content']): string {
  if (content === undefined || content === null) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text).join('\n');
}

function parseArgs(raw: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(raw);
    return isRecord(v) ? v : {};
  } catch {
    return {};
  }
}

const invalidAt = (param: string, message: string) => AppError.invalid([{ path: param, message }], `${param}: ${message}`);

/** An error of a completion request that names what was wrong (`param`) and why (`reason`, OpenAI's `code`). */
export const refused = (code: ErrorCode, message: string, param: string, reason: string) => new AppError(code, message, { data: { param, reason } });

/**
 * The question (the last message, which must be the user's) and the context before it.
 * @param path how the messages are named in errors (`messages`, `parameters.messages`)
 */
export function splitMessages(messages: ChatMessageIn[], path: string): { question: string; history: LlmMessage[] } {
  const lastIndex = messages.length - 1;
  const last = messages[lastIndex]!;
  if (last.role !== 'user') throw invalidAt(`${path}[${lastIndex}].role`, 'the last message must be the user\'s question');
  const question = textOf(last.content);
  if (!question.trim()) throw invalidAt(`${path}[${lastIndex}].content`, 'must not be empty');

  const answered = new Set(messages.filter((m) => m.role === 'tool' && m.tool_call_id).map((m) => m.tool_call_id!));
  const callNames = new Map<string, string>();
  const history: LlmMessage[] = [];
  messages.slice(0, lastIndex).forEach((m, i) => {
    const content = textOf(m.content);
    switch (m.role) {
      case 'system':
      case 'developer':
        history.push({ role: 'system', content });
        break;
      case 'user':
        history.push({ role: 'user', content });
        break;
      case 'assistant': {
        // calls without a tool result are Parley's informational ones coming back: only the text is context
        const calls: LlmToolCall[] = (m.tool_calls ?? []).filter((c) => answered.has(c.id))
          .map((c) => ({ id: c.id, name: c.function.name, args: parseArgs(c.function.arguments) }));
        for (const c of calls) callNames.set(c.id, c.name);
        if (calls.length) history.push({ role: 'assistant', content, toolCalls: calls });
        else if (content) history.push({ role: 'assistant', content });
        break;
      }
      case 'tool': {
        const name = callNames.get(m.tool_call_id ?? '');
        if (!name) throw invalidAt(`${path}[${i}].tool_call_id`, 'must answer a tool call of an earlier assistant message');
        history.push({ role: 'tool', toolCallId: m.tool_call_id!, toolName: name, content });
        break;
      }
    }
  });
  return { question, history };
}

/** A workflow form's answer: a JSON object, or its JSON encoding (metadata values are strings). */
export function workflowInputOf(value: unknown, param: string): Record<string, unknown> | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  let parsed = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch {
      throw invalidAt(param, 'must be a JSON-encoded object (the answer fields)');
    }
  }
  if (!isRecord(parsed)) throw invalidAt(param, 'must be an object (the answer fields)');
  return parsed;
}

/** The chat id of the body (`bodyParam`) and the `X-Chat-Id` header: both must agree; either must be 32 hex. */
export function chatIdOf(fromBody: string | undefined, fromHeader: string | string[] | undefined, bodyParam: string): string | null {
  const header = Array.isArray(fromHeader) ? fromHeader[0] : fromHeader;
  for (const [value, param] of [[fromBody, bodyParam], [header, 'X-Chat-Id']] as const) {
    if (value !== undefined && value !== '' && !isHexId(value)) throw invalidAt(param, 'must be 32 hex characters');
  }
  if (fromBody && header && fromBody !== header) throw invalidAt(bodyParam, 'differs from the X-Chat-Id header');
  return fromBody || header || null;
}

/** The caller of an API-key request (`Authorization: Bearer <api key>`). */
export async function apiKeyPrincipal(auth: AuthService, header: string | undefined): Promise<Principal> {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) throw new AppError('unauthorized', 'Missing API key: send Authorization: Bearer <api key>');
  const p = await auth.authenticateApiKey(m[1]!);
  if (!p) throw new AppError('unauthorized', 'Invalid or revoked API key');
  return p;
}

/** `body/messages/0/content` → `messages[0].content` */
function toParam(path: string): string {
  return path.replace(/^(body|querystring|headers|params)\/?/, '').replace(/\/(\d+)(?=\/|$)/g, '[$1]').replace(/^\//, '').replaceAll('/', '.');
}

/** The first bad field of a refused request, and a message naming every one. */
export function describeInvalid(e: AppError): { param: string | null; message: string } {
  const data = e.data as { errors?: FieldError[]; param?: string } | null;
  if (data?.param) return { param: data.param, message: e.message };
  const errors = data?.errors ?? [];
  if (!errors.length) return { param: null, message: e.message };
  const params = errors.map((f) => ({ param: toParam(f.path), message: f.message }));
  return { param: params[0]!.param || null, message: params.map((f) => (f.param ? `${f.param}: ${f.message}` : f.message)).join('; ') };
}

/** `param` and `reason` of a refused request (refused()), when it says them. */
export const detailOf = (e: AppError): { param?: string; reason?: string } => (e.data as { param?: string; reason?: string } | null) ?? {};
