import { randomUUID } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import type { AuthService } from '../../auth/auth-service.ts';
import { appListScope } from '../../auth/policy.ts';
import type { ChatTarget, TurnStarted } from '../../chat/chat-service.ts';
import { TurnEvents } from '../../chat/watch.ts';
import { AppError, ERROR_TABLE, type ErrorCode, type FieldError } from '../../domain/errors.ts';
import type { ChatEvent } from '../../domain/events.ts';
import type { LlmMessage, LlmToolCall, LlmUsage } from '../../domain/llm.ts';
import type { Principal } from '../../domain/types.ts';
import { asAppError, type App } from '../app.ts';
import { dataEvent, isClientGone, PING_COMMENT, SseStream } from '../sse.ts';
import type { Services } from '../services.ts';
import { Nullable } from '../schemas.ts';

/**
 * The OpenAI-compatible API (PROTOCOL.md §4): `POST /v1/chat/completions`, `GET /v1/models`.
 * A thin encoder over the chat core's turn events, like every transport. Decisions:
 * - Auth: API keys only (`Authorization: Bearer pk-…`); `model` is an app id the key may use
 *   (online, published, within the key's app_ids); every kind of app is listed.
 * - Stateless by default: the last message (role user) is the question, the earlier ones the context.
 *   The request's system/developer messages are kept in place, after the app's own prompt (which
 *   always comes first). Nothing is stored. With `metadata.chat_id` (or `X-Chat-Id`) the turn is
 *   appended to that stored conversation of the caller and its context comes from the database.
 * - `temperature` overrides the app's; `max_tokens` / `max_completion_tokens` may only lower the app's cap.
 * - Tool calls of an assistant app run on the server. They are shown for visibility as
 *   `delta.tool_calls` (stream) / `message.tool_calls` (non-stream), informational only: the
 *   finish_reason stays "stop" and there is nothing for the client to run. Tool calls that come back in
 *   a later request without tool results are taken as such echoes (only their text is context).
 * - Streams: the status is committed by the first content chunk (or the first keep-alive, `: ping`
 *   after chat.heartbeat_interval), so an upstream failure before any output is an HTTP 502/504; a
 *   failure after it is a last event `data: {"error": {...}}` (the official client throws an APIError),
 *   then `data: [DONE]`.
 * - The client closing the request stops the turn (the upstream request is aborted); with a chat_id
 *   the partial answer is stored, marked `break_answer`.
 * - Workflow apps: one request runs one segment of the run (PROTOCOL.md §3.2). Its outputs
 *   (stream_msg, output_msg, output_with_*_msg and an input request's prompt) are the assistant
 *   content, pieces of different nodes separated by a blank line. When the run then waits for the
 *   user, the response ends normally (finish_reason "stop") and carries the request in the extension
 *   field `parley_input_request: {node_id, kind: dialog|form|choose|edit, message_id, input_schema |
 *   options | input_msg}` — on the final chunk (stream) or the `chat.completion` object. The next
 *   request with the same chat id answers it: the last user message's text answers a dialog input,
 *   a choice (one of `options`) or an edit; a form takes its fields as JSON, in
 *   `metadata.workflow_input` (a JSON-encoded object, as metadata values are strings) or as the user
 *   message itself. With no waiting run a request starts a new run (the text fills the start
 *   node's variable `input` when it declares one). Stateless requests (no chat id) run until the
 *   first input request and end there: the run is not kept, so it cannot be answered.
 */

// ---- request schemas (also used by the Astron API) ----

const TextPart = Type.Object({ type: Type.Literal('text'), text: Type.String() }, { additionalProperties: true });
const MessageContent = Nullable(Type.Union([Type.String(), Type.Array(TextPart, { description: 'text parts only' })]));
const ToolCallIn = Type.Object({
  id: Type.String({ maxLength: 256 }),
  type: Type.Optional(Type.Literal('function')),
  function: Type.Object({ name: Type.String({ maxLength: 256 }), arguments: Type.String() }, { additionalProperties: true }),
}, { additionalProperties: true });
export const ChatMessageIn = Type.Object({
  role: Type.Union([Type.Literal('system'), Type.Literal('developer'), Type.Literal('user'), Type.Literal('assistant'), Type.Literal('tool')]),
  content: Type.Optional(MessageContent),
  name: Type.Optional(Type.String({ maxLength: 256 })),
  tool_calls: Type.Optional(Nullable(Type.Array(ToolCallIn))),
  tool_call_id: Type.Optional(Type.String({ maxLength: 256 })),
}, { additionalProperties: true });
export type ChatMessageIn = Static<typeof ChatMessageIn>;

const ChatCompletionBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 200, description: 'the app id' }),
  messages: Type.Array(ChatMessageIn, { minItems: 1, maxItems: 10_000 }),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(Nullable(Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: true }))),
  metadata: Type.Optional(Nullable(Type.Record(Type.String(), Type.String({ maxLength: 4096 }), {
    description: '`chat_id` (32 hex): append to that stored conversation; `workflow_input` (a JSON-encoded object): a workflow form\'s answer',
  }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
  max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 1, description: 'only 1' }))),
  user: Type.Optional(Type.String({ maxLength: 256 })),
}, { additionalProperties: true, description: 'other OpenAI fields are accepted and ignored' });

// ---- response schemas ----

const Usage = Type.Object({ prompt_tokens: Type.Integer(), completion_tokens: Type.Integer(), total_tokens: Type.Integer() });
const ToolCallOut = Type.Object({
  id: Type.String(), type: Type.Literal('function'),
  function: Type.Object({ name: Type.String(), arguments: Type.String() }),
});
/** [parley] what a waiting workflow run asks for; the next request with the same chat id answers it */
export const InputRequestSchema = Type.Object({
  node_id: Type.String(),
  kind: Type.Union([Type.Literal('dialog'), Type.Literal('form'), Type.Literal('choose'), Type.Literal('edit')]),
  message_id: Nullable(Type.Union([Type.Integer(), Type.String()], { description: 'the stored request message' })),
  input_schema: Type.Optional(Type.Unknown({ description: "dialog and form: Bisheng's input_schema ({input_type, value: [{key, type, label, required, options}]})" })),
  options: Type.Optional(Type.Array(Type.String(), { description: 'choose: answer with one of them' })),
  input_msg: Type.Optional(Type.String({ description: 'edit: the text to edit' })),
}, { description: '[parley] the input request a workflow run waits for' });
export type InputRequest = Static<typeof InputRequestSchema>;

export const ChatCompletionSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('chat.completion'),
  created: Type.Integer(),
  model: Type.String(),
  system_fingerprint: Type.Null(),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({
      role: Type.Literal('assistant'),
      content: Nullable(Type.String()),
      refusal: Type.Null(),
      reasoning_content: Type.Optional(Type.String()),
      tool_calls: Type.Optional(Type.Array(ToolCallOut, { description: 'informational: run on the server' })),
    }),
    logprobs: Type.Null(),
    finish_reason: Type.Union([Type.Literal('stop'), Type.Literal('length')]),
  })),
  usage: Usage,
  parley_input_request: Type.Optional(InputRequestSchema),
}, { additionalProperties: true });
export const OpenAiErrorSchema = Type.Object({
  error: Type.Object({ message: Type.String(), type: Type.String(), param: Nullable(Type.String()), code: Nullable(Type.String()) }),
});
const ModelSchema = Type.Object({
  id: Type.String({ description: 'the app id' }), object: Type.Literal('model'), created: Type.Integer(), owned_by: Type.String(),
  name: Type.String(), kind: Type.String(),
});

// ---- the turn: from a request's messages to the chat core and back ----

/** The text of a message: a string, or its text parts joined by newlines. */
export function textOf(content: ChatMessageIn['content']): string {
  if (content === undefined || content === null) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text).join('\n');
}

function parseArgs(raw: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

const invalidAt = (param: string, message: string) => AppError.invalid([{ path: param, message }], `${param}: ${message}`);

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

export interface CompletionInput {
  appId: string;
  /** null: stateless (nothing stored) */
  chatId: string | null;
  question: string;
  history: LlmMessage[];
  temperature?: number | null | undefined;
  maxTokens?: number | null | undefined;
  /** how the chat id is named in errors */
  chatIdParam: string;
  /** workflow apps: the structured answer to the waiting request (a form's fields) */
  workflowInput?: Record<string, unknown> | undefined;
}

/** A started turn and its events, for one HTTP response. */
export class Completion {
  readonly created = Math.floor(Date.now() / 1000);
  private settled = false;

  constructor(private readonly services: Services, readonly key: string, readonly turn: TurnStarted, readonly target: ChatTarget, readonly events: TurnEvents, readonly stateless: boolean) {}

  /** The client went away: stop the turn (the upstream request is aborted; a stored conversation keeps the partial answer). */
  cancel(): void {
    this.events.abort();
    if (this.services.chat.isRunning(this.key)) void this.services.chat.stop(this.key);
    this.settle();
  }

  /** The response is done with the turn. */
  settle(): void {
    if (this.settled) return;
    this.settled = true;
    this.events.abort();
    if (this.stateless) this.services.chat.forgetDebugKey(this.key);
  }
}

/** Errors of a completion request that name what was wrong (`param`) and why (`reason`, OpenAI's `code`). */
const refused = (code: ErrorCode, message: string, param: string, reason: string) => new AppError(code, message, { data: { param, reason } });

/** Resolves the app (and conversation), starts the turn and subscribes to its events. */
export async function startCompletion(services: Services, p: Principal, input: CompletionInput): Promise<Completion> {
  const { chat, bus } = services;
  let target: ChatTarget;
  try {
    target = await chat.resolveTarget(p, input.appId, { chatId: input.chatId, stateless: true });
  } catch (err) {
    const e = asAppError(err);
    if (e.code === 'not_found' || e.code === 'app_deleted' || e.code === 'app_offline') {
      throw refused('not_found', `The model '${input.appId.slice(0, 64)}' does not exist or you do not have access to it.`, 'model', 'model_not_found');
    }
    // resolveTarget refuses someone else's conversation; it answers like a missing one (PROTOCOL.md §8.10)
    if (e.code === 'forbidden' && input.chatId !== null) throw refused('not_found', 'Conversation not found', input.chatIdParam, 'chat_not_found');
    throw e;
  }
  const model = { ...target.spec.model };
  if (input.temperature !== undefined && input.temperature !== null) model.temperature = input.temperature;
  if (input.maxTokens !== undefined && input.maxTokens !== null) model.max_tokens = Math.min(model.max_tokens ?? input.maxTokens, input.maxTokens);
  target = { ...target, spec: { ...target.spec, model } };

  const stateless = input.chatId === null;
  const key = input.chatId ?? `debug:api:${randomUUID()}`;
  const events = new TurnEvents(bus, key, p.id);
  let turn: TurnStarted;
  try {
    const data = target.app.kind === 'workflow' && input.workflowInput ? { data: input.workflowInput } : {};
    turn = await chat.ask({
      principal: p, target, text: input.question, inputs: { input: input.question, ...data }, debugKey: key,
      ...(stateless ? { history: input.history } : {}),
    });
  } catch (err) {
    events.abort();
    if (stateless) chat.forgetDebugKey(key);
    throw err;
  }
  events.start(turn.fromSeq);
  return new Completion(services, key, turn, target, events, stateless);
}

export interface ChunkChoice {
  index: number;
  delta: Record<string, unknown>;
  logprobs: null;
  finish_reason: 'stop' | 'length' | null;
}

export interface Chunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  system_fingerprint: null;
  choices: ChunkChoice[];
  usage?: LlmUsage | null;
  parley_input_request?: InputRequest;
}

interface ToolCallOut {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

const ZERO: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

/** Turns a turn's events into OpenAI chunks, and keeps what a non-stream answer needs. */
export class CompletionEncoder {
  /** the text streamed so far */
  streamed = '';
  reasoning = '';
  readonly toolCalls: ToolCallOut[] = [];
  usage: LlmUsage = ZERO;
  /** the final answer (end_cover), unless the turn was stopped */
  answer: string | null = null;
  error: { code: ErrorCode; message: string } | null = null;
  /** a workflow run waits for this (sent with the finish) */
  inputRequest: InputRequest | null = null;
  /** the finish chunk was sent */
  private finished = false;
  /** the workflow node run the last content came from: content of another one starts after a blank line */
  private source: string | null = null;
  /** streamed text per workflow node run */
  private readonly nodeText = new Map<string, string>();

  constructor(readonly id: string, readonly created: number, readonly model: string) {}

  chunk(delta: Record<string, unknown>, finish: ChunkChoice['finish_reason'] = null): Chunk {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, system_fingerprint: null, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
  }

  usageChunk(): Chunk {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, system_fingerprint: null, choices: [], usage: this.usage };
  }

  /** The chunks one event adds to the stream (none for most bookkeeping events). */
  push(e: ChatEvent): Chunk[] {
    const b = e.body;
    switch (b.kind) {
      case 'begin':
        return [this.chunk({ role: 'assistant', content: '' })];
      case 'delta': {
        const delta: Record<string, unknown> = {};
        if (b.content) {
          delta.content = b.content;
          this.streamed += b.content;
        }
        if (b.reasoning) {
          delta.reasoning_content = b.reasoning;
          this.reasoning += b.reasoning;
        }
        return Object.keys(delta).length ? [this.chunk(delta)] : [];
      }
      case 'tool_start': {
        const call: ToolCallOut = { id: b.runId, type: 'function', function: { name: b.toolKey, arguments: JSON.stringify(b.input ?? {}) } };
        const index = this.toolCalls.push(call) - 1;
        return [this.chunk({ tool_calls: [{ index, ...call }] })];
      }
      case 'answer_end': {
        const out: Chunk[] = [];
        if (b.usage) this.usage = b.usage;
        if (!b.stopped) {
          this.answer = b.text;
          // an answer that was not streamed (a moderation reply) or only partly: send the rest
          if (b.text.length > this.streamed.length && b.text.startsWith(this.streamed)) {
            out.push(this.chunk({ content: b.text.slice(this.streamed.length) }));
            this.streamed = b.text;
          }
        }
        out.push(this.chunk({}, 'stop'));
        this.finished = true;
        return out;
      }
      case 'error':
        this.error = { code: b.code, message: b.message };
        return [];
      case 'frame':
        return this.workflowFrame(b.category, b.type, isObject(b.message) ? b.message : {}, b.messageId ?? null);
      case 'close': {
        // a workflow segment ends here (a chat turn finished with its answer)
        const usage = b.extra?.usage;
        if (isObject(usage) && typeof usage.total_tokens === 'number') this.usage = usage as unknown as LlmUsage;
        if (this.finished || this.error) return [];
        this.finished = true;
        const last = this.chunk({}, 'stop');
        if (this.inputRequest) last.parley_input_request = this.inputRequest;
        return [last];
      }
      default:
        return [];
    }
  }

  /** A workflow frame's share of the content, and the request a waiting run asks. */
  private workflowFrame(category: string, type: string, m: Record<string, unknown>, messageId: number | string | null): Chunk[] {
    const source = String(m.unique_id ?? m.node_id ?? '');
    const msg = typeof m.msg === 'string' ? m.msg : '';
    const request = (kind: InputRequest['kind'], fields: Partial<InputRequest>) => {
      this.inputRequest = { node_id: String(m.node_id ?? ''), kind, message_id: messageId, ...fields };
    };
    switch (`${category}/${type}`) {
      case 'stream_msg/stream': {
        const out = this.content(source, msg);
        this.nodeText.set(source, (this.nodeText.get(source) ?? '') + msg);
        const reasoning = typeof m.reasoning_content === 'string' ? m.reasoning_content : '';
        if (reasoning) {
          this.reasoning += reasoning;
          out.push(this.chunk({ reasoning_content: reasoning }));
        }
        return out;
      }
      case 'stream_msg/end': {
        // a node that does not stream sends its text only here
        const seen = this.nodeText.get(source) ?? '';
        return msg.length > seen.length && msg.startsWith(seen) ? this.content(source, msg.slice(seen.length)) : [];
      }
      case 'output_msg/over':
        return this.content(source, msg);
      case 'output_with_choose_msg/over':
        request('choose', { options: Array.isArray(m.options) ? m.options.map(String) : [] });
        return this.content(source, msg);
      case 'output_with_input_msg/over':
        request('edit', { input_msg: typeof m.input_msg === 'string' ? m.input_msg : msg });
        return this.content(source, msg);
      case 'input/over': {
        const schema = isObject(m.input_schema) ? m.input_schema : {};
        request(schema.input_type === 'form_input' ? 'form' : 'dialog', { input_schema: m.input_schema ?? null });
        return this.content(source, msg);
      }
      default:
        return [];
    }
  }

  private content(source: string, text: string): Chunk[] {
    if (!text) return [];
    const piece = this.streamed && this.source !== null && this.source !== source ? `\n\n${text}` : text;
    this.source = source;
    this.streamed += piece;
    return [this.chunk({ content: piece })];
  }

  /** The whole answer as a `chat.completion`. */
  completion(): Static<typeof ChatCompletionSchema> {
    return {
      id: this.id, object: 'chat.completion', created: this.created, model: this.model, system_fingerprint: null,
      choices: [{
        index: 0,
        message: {
          role: 'assistant', content: this.answer ?? this.streamed, refusal: null,
          ...(this.reasoning ? { reasoning_content: this.reasoning } : {}),
          ...(this.toolCalls.length ? { tool_calls: this.toolCalls } : {}),
        },
        logprobs: null, finish_reason: 'stop',
      }],
      usage: this.usage,
      ...(this.inputRequest ? { parley_input_request: this.inputRequest } : {}),
    };
  }
}

// ---- errors ----

/** `body/messages/0/content` → `messages[0].content` */
export function toParam(path: string): string {
  return path.replace(/^(body|querystring|headers|params)\/?/, '').replace(/\/(\d+)(?=\/|$)/g, '[$1]').replace(/^\//, '').replaceAll('/', '.');
}

/** The first bad field and a message naming every one. */
export function describeInvalid(e: AppError): { param: string | null; message: string } {
  const data = e.data as { errors?: FieldError[]; param?: string } | null;
  if (data?.param) return { param: data.param, message: e.message };
  const errors = data?.errors ?? [];
  if (!errors.length) return { param: null, message: e.message };
  const params = errors.map((f) => ({ param: toParam(f.path), message: f.message }));
  return { param: params[0]!.param || null, message: params.map((f) => (f.param ? `${f.param}: ${f.message}` : f.message)).join('; ') };
}

interface OpenAiError {
  status: number;
  body: { error: { message: string; type: string; param: string | null; code: string | null } };
}

/** Fastify refused the body for its size (413), as opposed to a question over chat.max_message_length (400). */
export const isPayloadTooLarge = (err: unknown): boolean => (err as { code?: unknown } | null)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE';

/** One AppError as OpenAI's error object with its HTTP status. */
export function openAiError(e: AppError, payloadTooLarge = false): OpenAiError {
  const data = e.data as { reason?: string; param?: string } | null;
  const make = (status: number, type: string, code: string | null, message = e.message, param: string | null = data?.param ?? null): OpenAiError =>
    ({ status, body: { error: { message, type, param, code: data?.reason ?? code } } });
  switch (e.code) {
    case 'invalid_request': {
      const { param, message } = describeInvalid(e);
      return make(400, 'invalid_request_error', null, message, param);
    }
    case 'too_large':
      return payloadTooLarge ? make(413, 'invalid_request_error', 'payload_too_large') : make(400, 'invalid_request_error', 'message_too_long');
    case 'unauthorized':
      return make(401, 'authentication_error', 'invalid_api_key');
    case 'forbidden':
      return make(403, 'permission_error', 'forbidden');
    case 'not_found':
    case 'app_deleted':
    case 'app_offline':
      return make(404, 'invalid_request_error', 'not_found');
    case 'conflict':
      return make(409, 'invalid_request_error', 'conversation_busy');
    case 'rate_limited':
      return make(429, 'rate_limit_error', 'rate_limit_exceeded');
    case 'app_unbuildable':
      return make(422, 'invalid_request_error', 'model_not_configured');
    case 'upstream_error':
      return make(502, 'server_error', 'upstream_error');
    case 'upstream_timeout':
      return make(504, 'server_error', 'upstream_timeout');
    case 'busy':
      return make(503, 'server_error', 'server_busy');
    case 'workflow_input_timeout':
    case 'workflow_max_steps':
    case 'workflow_node_invalid':
    case 'workflow_failed': {
      // the workflow's own code, not a sandbox reason from `data`
      const err = make(ERROR_TABLE[e.code].http, e.code === 'workflow_failed' ? 'server_error' : 'invalid_request_error', e.code);
      err.body.error.code = e.code;
      return err;
    }
    default:
      return make(500, 'server_error', 'internal_error', 'Internal error');
  }
}

export const retryAfter = (e: AppError): string => String((e.data as { retry_after?: number } | null)?.retry_after ?? 60);

/** The caller of an API-key request (`Authorization: Bearer <api key>`). */
export async function apiKeyPrincipal(auth: AuthService, header: string | undefined): Promise<Principal> {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) throw new AppError('unauthorized', 'Missing API key: send Authorization: Bearer <api key>');
  const p = await auth.authenticateApiKey(m[1]!);
  if (!p) throw new AppError('unauthorized', 'Invalid or revoked API key');
  return p;
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
  if (!isObject(parsed)) throw invalidAt(param, 'must be an object (the answer fields)');
  return parsed;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The chat id of `metadata.chat_id` / `X-Chat-Id`: both must agree; either must be 32 hex. */
export function chatIdOf(fromBody: string | undefined, fromHeader: string | string[] | undefined, bodyParam: string): string | null {
  const header = Array.isArray(fromHeader) ? fromHeader[0] : fromHeader;
  for (const [value, param] of [[fromBody, bodyParam], [header, 'X-Chat-Id']] as const) {
    if (value !== undefined && value !== '' && !/^[0-9a-f]{32}$/.test(value)) throw invalidAt(param, 'must be 32 hex characters');
  }
  if (fromBody && header && fromBody !== header) throw invalidAt(bodyParam, 'differs from the X-Chat-Id header');
  return fromBody || header || null;
}

// ---- routes ----

const SSE_DONE = 'data: [DONE]\n\n';
const tags = ['openai'];

export function registerOpenAiRoutes(app: App, services: Services): void {
  const { auth, apps, config } = services;
  const heartbeatMs = config.chat.heartbeat_interval * 1000;

  void app.register(async (instance) => {
    const scope = instance.withTypeProvider<TypeBoxTypeProvider>();
    // OpenAI's error object here, not Parley's envelope (PROTOCOL.md §8.9)
    scope.setErrorHandler((err, req, reply) => {
      const e = asAppError(err);
      if (e.code === 'internal') req.log.error({ err: e.cause ?? err }, 'unhandled error');
      const { status, body } = openAiError(e, isPayloadTooLarge(err));
      if (e.code === 'rate_limited') reply.header('retry-after', retryAfter(e));
      return reply.status(status).send(body);
    });
    scope.setNotFoundHandler((req, reply) => reply.status(404).send({
      error: { message: `Unknown request URL: ${req.method} ${req.url.split('?')[0]}`, type: 'invalid_request_error', param: null, code: 'unknown_url' },
    }));
    scope.addHook('onRequest', async (req) => {
      if (!req.routeOptions.url) return;
      req.principal = await apiKeyPrincipal(auth, req.headers.authorization);
    });

    const security = [{ bearer: [] }];
    const errors = { '4xx': OpenAiErrorSchema, '5xx': OpenAiErrorSchema };

    const listModels = async (p: Principal) => {
      const out: Array<Static<typeof ModelSchema>> = [];
      const ids = appListScope(p).ids;
      for (let page = 1; ; page++) {
        const found = await apps.listPublished({ page, limit: 100, ids });
        for (const { app: a } of found) {
          out.push({ id: a.id, object: 'model', created: Math.floor(Date.parse(a.create_time) / 1000) || 0, owned_by: 'parley', name: a.name, kind: a.kind });
        }
        if (found.length < 100) return out;
      }
    };

    scope.get('/models', {
      config: { public: true },
      schema: {
        tags, summary: 'The apps this API key may use, as models (`kind`: chat, assistant or workflow)', security,
        response: { 200: Type.Object({ object: Type.Literal('list'), data: Type.Array(ModelSchema) }), ...errors },
      },
    }, async (req) => ({ object: 'list' as const, data: await listModels(req.principal!) }));

    scope.get('/models/:model', {
      config: { public: true },
      schema: { tags, summary: 'One model (app) this API key may use', security, params: Type.Object({ model: Type.String({ maxLength: 200 }) }), response: { 200: ModelSchema, ...errors } },
    }, async (req) => {
      const found = (await listModels(req.principal!)).find((m) => m.id === req.params.model);
      if (!found) throw refused('not_found', `The model '${req.params.model.slice(0, 64)}' does not exist or you do not have access to it.`, 'model', 'model_not_found');
      return found;
    });

    scope.post('/chat/completions', {
      config: { public: true },
      schema: {
        tags, summary: 'Chat completion with an app (`model` = app id); `stream: true` answers text/event-stream of chat.completion.chunk', security,
        headers: Type.Object({ 'x-chat-id': Type.Optional(Type.String({ description: 'append to this stored conversation (32 hex)' })) }),
        body: ChatCompletionBody,
        response: {
          200: { content: { 'application/json': { schema: ChatCompletionSchema }, 'text/event-stream': { schema: Type.String({ description: 'data: <chat.completion.chunk> … data: [DONE]' }) } } },
          ...errors,
        },
      },
    }, async (req, reply) => {
      const body = req.body;
      const chatId = chatIdOf(body.metadata?.chat_id, req.headers['x-chat-id'], 'metadata.chat_id');
      const { question, history } = splitMessages(body.messages, 'messages');
      const completion = await startCompletion(services, req.principal!, {
        appId: body.model, chatId, question, history, chatIdParam: body.metadata?.chat_id ? 'metadata.chat_id' : 'X-Chat-Id',
        temperature: body.temperature, maxTokens: body.max_completion_tokens ?? body.max_tokens,
        workflowInput: workflowInputOf(body.metadata?.workflow_input, 'metadata.workflow_input'),
      });
      const enc = new CompletionEncoder(`chatcmpl-${completion.turn.turnId}`, completion.created, body.model);
      // the question is stored: an automatic retry by the client would store it again
      if (chatId) reply.header('x-should-retry', 'false');
      return body.stream
        ? streamCompletion(reply, completion, enc, Boolean(body.stream_options?.include_usage), heartbeatMs)
        : wholeCompletion(reply, completion, enc);
    });
  }, { prefix: '/v1' });
}

/**
 * Feeds a whole (non-stream) turn into the encoder; a client that goes away stops the turn.
 * @returns false when the client is gone (nothing is to be sent)
 */
export async function drainCompletion(reply: FastifyReply, completion: Completion, enc: CompletionEncoder): Promise<boolean> {
  let finished = false;
  const gone = () => {
    if (!finished) completion.cancel();
  };
  reply.raw.on('close', gone);
  // the client may have gone while the turn was being started
  if (isClientGone(reply)) gone();
  try {
    await completion.events.each((e) => {
      enc.push(e);
    });
  } finally {
    finished = true;
    completion.settle();
  }
  return !isClientGone(reply);
}

async function wholeCompletion(reply: FastifyReply, completion: Completion, enc: CompletionEncoder) {
  if (!(await drainCompletion(reply, completion, enc))) return reply.hijack();
  if (enc.error) throw new AppError(enc.error.code, enc.error.message);
  return reply.type('application/json; charset=utf-8').send(enc.completion());
}

async function streamCompletion(reply: FastifyReply, completion: Completion, enc: CompletionEncoder, includeUsage: boolean, heartbeatMs: number) {
  const sse = new SseStream(reply, { ping: PING_COMMENT, heartbeatMs });
  sse.onClientGone(() => completion.cancel());
  // with include_usage every chunk carries `usage: null`, and a last one `choices: []` the usage (as OpenAI does)
  const line = (c: Chunk) => dataEvent(JSON.stringify(includeUsage ? { ...c, usage: null } : c));
  // a text delta (nearly every event) is spliced into the line of a chunk with a placeholder: the same text, one stringify less
  const [head, tail] = line(enc.chunk({ content: '\u0000' })).split('"\\u0000"') as [string, string];
  // the role chunk waits for the first content: until then a failure can still be an HTTP status
  let held = '';
  try {
    await completion.events.each((e) => {
      const chunks = enc.push(e);
      const b = e.body;
      const text = b.kind === 'delta' && b.content && !b.reasoning ? head + JSON.stringify(b.content) + tail : chunks.map(line).join('');
      if (!text) return;
      if (e.body.kind === 'begin' && !sse.opened) held += text;
      else {
        sse.write(held + text);
        held = '';
      }
    });
  } finally {
    completion.settle();
  }
  if (sse.closed) return reply;
  if (enc.error) {
    const e = new AppError(enc.error.code, enc.error.message);
    if (!sse.opened) {
      sse.abandon();
      throw e;
    }
    sse.end(held + dataEvent(JSON.stringify(openAiError(e).body)) + SSE_DONE);
    return reply;
  }
  sse.end(held + (includeUsage ? dataEvent(JSON.stringify(enc.usageChunk())) : '') + SSE_DONE);
  return reply;
}
