import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { appListScope } from '../../auth/policy.ts';
import { AppError, ERROR_TABLE, type ErrorCode } from '../../domain/errors.ts';
import type { Principal } from '../../domain/types.ts';
import { errorHandler, type App } from '../app.ts';
import { startCompletion } from '../completions/completion.ts';
import { CompletionEncoder, type Chunk } from '../completions/encoder.ts';
import { apiKeyPrincipal, chatIdOf, describeInvalid, detailOf, refused, splitMessages, workflowInputOf } from '../completions/request.ts';
import { ChatCompletionSchema, ChatMessageIn } from '../completions/schemas.ts';
import { drainCompletion, streamCompletion, type StreamDialect } from '../completions/writers.ts';
import { dataEvent, PING_COMMENT } from '../sse.ts';
import type { Services } from '../services.ts';
import { Nullable } from '../schemas.ts';

/**
 * The OpenAI-compatible API (PROTOCOL.md §4): `POST /v1/chat/completions`, `GET /v1/models`.
 * Decisions:
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
 * - Workflow apps: one request runs one segment of the run (PROTOCOL.md §3.2). Its outputs are the
 *   assistant content (completions/encoder.ts). When the run then waits for the user, the response
 *   ends normally (finish_reason "stop") and carries the request in the extension field
 *   `parley_input_request: {node_id, kind: dialog|form|choose|edit, message_id, input_schema |
 *   options | input_msg}` — on the final chunk (stream) or the `chat.completion` object. The next
 *   request with the same chat id answers it: the last user message's text answers a dialog input,
 *   a choice (one of `options`) or an edit; a form takes its fields as JSON, in
 *   `metadata.workflow_input` (a JSON-encoded object, as metadata values are strings) or as the user
 *   message itself. With no waiting run a request starts a new run (the text fills the start
 *   node's variable `input` when it declares one). Stateless requests (no chat id) run until the
 *   first input request and end there: the run is not kept, so it cannot be answered.
 */

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

const OpenAiErrorSchema = Type.Object({
  error: Type.Object({ message: Type.String(), type: Type.String(), param: Nullable(Type.String()), code: Nullable(Type.String()) }),
});
const ModelSchema = Type.Object({
  id: Type.String({ description: 'the app id' }), object: Type.Literal('model'), created: Type.Integer(), owned_by: Type.String(),
  name: Type.String(), kind: Type.String(),
});

/** Each code as OpenAI's error: HTTP status, `type`, and `code` (unless the error names its own reason). */
const OPENAI_ERRORS: Record<ErrorCode, [status: number, type: string, code: string]> = {
  invalid_request: [400, 'invalid_request_error', ''],
  too_large: [400, 'invalid_request_error', 'message_too_long'],
  unauthorized: [401, 'authentication_error', 'invalid_api_key'],
  forbidden: [403, 'permission_error', 'forbidden'],
  app_kind_mismatch: [403, 'permission_error', 'forbidden'],
  not_found: [404, 'invalid_request_error', 'not_found'],
  conversation_denied: [404, 'invalid_request_error', 'not_found'],
  app_deleted: [404, 'invalid_request_error', 'not_found'],
  app_offline: [404, 'invalid_request_error', 'not_found'],
  conflict: [409, 'invalid_request_error', 'conversation_busy'],
  rate_limited: [429, 'rate_limit_error', 'rate_limit_exceeded'],
  app_unbuildable: [422, 'invalid_request_error', 'model_not_configured'],
  upstream_error: [502, 'server_error', 'upstream_error'],
  upstream_timeout: [504, 'server_error', 'upstream_timeout'],
  busy: [503, 'server_error', 'server_busy'],
  // a workflow's own code, never a sandbox reason from `data`
  workflow_input_timeout: [ERROR_TABLE.workflow_input_timeout.http, 'invalid_request_error', 'workflow_input_timeout'],
  workflow_max_steps: [ERROR_TABLE.workflow_max_steps.http, 'invalid_request_error', 'workflow_max_steps'],
  workflow_node_invalid: [ERROR_TABLE.workflow_node_invalid.http, 'invalid_request_error', 'workflow_node_invalid'],
  workflow_failed: [ERROR_TABLE.workflow_failed.http, 'server_error', 'workflow_failed'],
  internal: [500, 'server_error', 'internal_error'],
};

interface OpenAiError {
  status: number;
  body: Static<typeof OpenAiErrorSchema>;
}

/** One AppError as OpenAI's error object with its HTTP status. */
function openAiError(e: AppError, payloadTooLarge = false): OpenAiError {
  const tooLarge = e.code === 'too_large' && payloadTooLarge;
  const [status, type, code]: [number, string, string] = tooLarge ? [413, 'invalid_request_error', 'payload_too_large'] : OPENAI_ERRORS[e.code];
  const { param = null, reason } = detailOf(e);
  const error = {
    message: e.code === 'internal' ? 'Internal error' : e.message, type, param,
    code: e.code.startsWith('workflow_') ? code : (reason ?? (code || null)),
  };
  // the first bad field, and a message naming every one
  if (e.code === 'invalid_request') Object.assign(error, describeInvalid(e));
  return { status, body: { error } };
}

const tags = ['openai'];

export function registerOpenAiRoutes(app: App, services: Services): void {
  const { auth, apps, config, chat, bus } = services;
  const heartbeatMs = config.chat.heartbeat_interval * 1000;

  void app.register(async (instance) => {
    const scope = instance.withTypeProvider<TypeBoxTypeProvider>();
    scope.setErrorHandler(errorHandler(openAiError));
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
      const completion = await startCompletion(chat, bus, req.principal!, {
        appId: body.model, chatId, question, history, chatIdParam: body.metadata?.chat_id ? 'metadata.chat_id' : 'X-Chat-Id',
        temperature: body.temperature, maxTokens: body.max_completion_tokens ?? body.max_tokens,
        workflowInput: workflowInputOf(body.metadata?.workflow_input, 'metadata.workflow_input'),
      });
      const enc = new CompletionEncoder(`chatcmpl-${completion.turn.turnId}`, completion.created, body.model);
      // the question is stored: an automatic retry by the client would store it again
      if (chatId) reply.header('x-should-retry', 'false');
      if (body.stream) return streamCompletion(reply, completion, enc, openAiStream(enc, Boolean(body.stream_options?.include_usage)), heartbeatMs);
      if (!(await drainCompletion(reply, completion, enc))) return reply;
      if (enc.error) throw new AppError(enc.error.code, enc.error.message);
      return reply.type('application/json; charset=utf-8').send(enc.completion());
    });
  }, { prefix: '/v1' });
}

/** OpenAI's stream: `: ping` keep-alives; with include_usage every chunk carries `usage: null` and a last one (`choices: []`) the usage, as OpenAI does. */
function openAiStream(enc: CompletionEncoder, includeUsage: boolean): StreamDialect {
  const line = (c: Chunk) => dataEvent(JSON.stringify(includeUsage ? { ...c, usage: null } : c));
  // a text delta (nearly every event) is spliced into the line of a chunk with a placeholder: the same text, one stringify less
  const [head, tail] = line(enc.chunk({ content: '\u0000' })).split('"\\u0000"') as [string, string];
  return {
    ping: PING_COMMENT,
    openAtOnce: false,
    encode: (chunks, e) => {
      const b = e.body;
      return b.kind === 'delta' && b.content && !b.reasoning ? head + JSON.stringify(b.content) + tail : chunks.map(line).join('');
    },
    failed: (e) => dataEvent(JSON.stringify(openAiError(e).body)),
    done: () => (includeUsage ? dataEvent(JSON.stringify(enc.usageChunk())) : ''),
  };
}
