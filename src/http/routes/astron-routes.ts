import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError, type ErrorCode } from '../../domain/errors.ts';
import type { Principal } from '../../domain/types.ts';
import { errorHandler, type App } from '../app.ts';
import { startCompletion } from '../completions/completion.ts';
import { CompletionEncoder, type Chunk } from '../completions/encoder.ts';
import { apiKeyPrincipal, chatIdOf, describeInvalid, detailOf, splitMessages, workflowInputOf } from '../completions/request.ts';
import { ChatCompletionSchema, ChatMessageIn } from '../completions/schemas.ts';
import { drainCompletion, streamCompletion, type StreamDialect } from '../completions/writers.ts';
import { dataEvent } from '../sse.ts';
import type { Services } from '../services.ts';
import { HexId } from '../schemas.ts';

/**
 * The Astron-compatible agent API (PROTOCOL.md §4, §8.8): `POST /agent/v1/chat/completions`.
 * Same turns as the OpenAI API (`bot_id` = app id, stateless unless `chat_id` / `X-Chat-Id`), every
 * chunk an OpenAI chunk plus `code` (0) and `message` ("success"); the last content chunk carries the
 * usage; keep-alive `data: {"ping": "pong"}`; the stream ends with `data: [DONE]`.
 * - Before streaming: HTTP 400 `{code: 1001}` validation (also an unknown bot), 401 `{code: 1002}`
 *   authentication, 429 `{code: 1003}` rate limit.
 * - While streaming: a last chunk with `code` 1004 (workflow), 1005 (timeout: upstream timeouts), 1006
 *   (anything else, upstream errors included), then `[DONE]`. `stream: false` answers such failures
 *   with HTTP 504 (1005) / 502 or 500 (1006).
 * - Workflow apps as over the OpenAI API: the outputs are the content; a run that waits for input ends
 *   the response with `parley_input_request` on the finish chunk (or the completion); the next call
 *   with the same chat id answers it with `parameters.input` / the last message, a form with
 *   `parameters.workflow_input` (an object, or its JSON encoding) or a JSON object as the text.
 * - Auth: an API key (`Authorization: Bearer`). `x-consumer-username` names the user only when
 *   `astron.trust_consumer_header` is on (a gateway in front authenticated it); an API key, when
 *   present, wins. With the flag off the header alone is refused (1002).
 */

const AstronBody = Type.Object({
  bot_id: Type.String({ minLength: 1, maxLength: 200, description: 'the app id' }),
  uid: Type.String({ minLength: 1, maxLength: 256, description: "the caller's end user" }),
  stream: Type.Optional(Type.Boolean({ default: true })),
  parameters: Type.Object({
    messages: Type.Optional(Type.Array(ChatMessageIn, { minItems: 1, maxItems: 10_000, description: 'OpenAI-style messages; the last is the question' })),
    input: Type.Optional(Type.String({ description: 'the question, when there are no messages' })),
    workflow_input: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.String()], { description: "[parley] workflow apps: a form's answer (object or JSON text)" })),
  }, { additionalProperties: true }),
  meta_data: Type.Optional(Type.Object({
    caller: Type.Optional(Type.String({ maxLength: 256 })),
    caller_sid: Type.Optional(Type.String({ maxLength: 256 })),
    timestamp: Type.Optional(Type.Union([Type.Integer(), Type.String({ maxLength: 64 })])),
  }, { additionalProperties: true })),
  chat_id: Type.Optional(Type.Union([HexId, Type.Literal('')], { description: '[parley] append to this stored conversation' })),
}, { additionalProperties: true });

const AstronError = Type.Object({ code: Type.Integer({ description: '1001 validation, 1002 authentication, 1003 rate limit, 1004 workflow, 1005 timeout, 1006 unknown' }), message: Type.String() });

const ASTRON = { ok: 0, invalid: 1001, auth: 1002, rate: 1003, workflow: 1004, timeout: 1005, unknown: 1006 } as const;

/** Each code as Astron says it: before streaming (HTTP status and code), and inside a turn (the code of the last chunk). */
const ASTRON_ERRORS: Record<ErrorCode, { status: number; code: number; inTurn: number }> = {
  invalid_request: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  unauthorized: { status: 401, code: ASTRON.auth, inTurn: ASTRON.unknown },
  forbidden: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  app_kind_mismatch: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  conversation_denied: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  not_found: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  conflict: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  too_large: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  rate_limited: { status: 429, code: ASTRON.rate, inTurn: ASTRON.unknown },
  app_deleted: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  app_offline: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  app_unbuildable: { status: 400, code: ASTRON.invalid, inTurn: ASTRON.unknown },
  busy: { status: 503, code: ASTRON.unknown, inTurn: ASTRON.unknown },
  upstream_error: { status: 502, code: ASTRON.unknown, inTurn: ASTRON.unknown },
  upstream_timeout: { status: 504, code: ASTRON.timeout, inTurn: ASTRON.timeout },
  workflow_input_timeout: { status: 408, code: ASTRON.timeout, inTurn: ASTRON.timeout },
  workflow_max_steps: { status: 422, code: ASTRON.workflow, inTurn: ASTRON.workflow },
  workflow_node_invalid: { status: 422, code: ASTRON.workflow, inTurn: ASTRON.workflow },
  workflow_failed: { status: 500, code: ASTRON.workflow, inTurn: ASTRON.workflow },
  internal: { status: 500, code: ASTRON.unknown, inTurn: ASTRON.unknown },
};

/** An error before streaming: HTTP status and Astron's body. */
function astronError(e: AppError, payloadTooLarge: boolean): { status: number; body: { code: number; message: string } } {
  const { status, code } = ASTRON_ERRORS[e.code];
  let message = e.message;
  if (e.code === 'invalid_request') message = describeInvalid(e).message;
  else if (e.code === 'internal') message = 'Internal error';
  else if (detailOf(e).reason === 'model_not_found') message = 'bot_id: no such bot, or this caller may not use it';
  return { status: payloadTooLarge ? 413 : status, body: { code, message } };
}

export function registerAstronRoutes(app: App, services: Services): void {
  const { auth, repos, config, chat, bus } = services;
  const heartbeatMs = config.chat.heartbeat_interval * 1000;

  /** An API key; else, behind a trusted gateway, the user named by x-consumer-username. */
  const principalOf = async (headers: Record<string, string | string[] | undefined>): Promise<Principal> => {
    const consumer = headers['x-consumer-username'];
    if (headers.authorization || typeof consumer !== 'string' || !consumer) return apiKeyPrincipal(auth, headers.authorization as string | undefined);
    if (!config.astron.trust_consumer_header) throw new AppError('unauthorized', 'x-consumer-username is not trusted here; send Authorization: Bearer <api key>');
    const user = await repos.users.findByName(consumer);
    if (!user) throw new AppError('unauthorized', 'Unknown consumer');
    return { id: user.id, user_name: user.user_name, role: user.role };
  };

  void app.register(async (instance) => {
    const scope = instance.withTypeProvider<TypeBoxTypeProvider>();
    scope.setErrorHandler(errorHandler(astronError));
    scope.setNotFoundHandler((req, reply) => reply.status(404).send({ code: ASTRON.invalid, message: `No route ${req.method} ${req.url.split('?')[0]}` }));
    scope.addHook('onRequest', async (req) => {
      if (!req.routeOptions.url) return;
      req.principal = await principalOf(req.headers);
    });

    scope.post('/chat/completions', {
      config: { public: true },
      schema: {
        tags: ['astron'],
        summary: 'Astron-compatible agent chat (`bot_id` = app id): OpenAI chunks with code/message, `data: {"ping": "pong"}` keep-alives, then [DONE]',
        security: [{ bearer: [] }],
        headers: Type.Object({
          'x-consumer-username': Type.Optional(Type.String({ description: 'trusted only with astron.trust_consumer_header' })),
          'x-chat-id': Type.Optional(Type.String()),
        }),
        body: AstronBody,
        response: {
          200: { content: {
            'application/json': { schema: Type.Composite([Type.Object({ code: Type.Integer(), message: Type.String() }), ChatCompletionSchema], { additionalProperties: true }) },
            'text/event-stream': { schema: Type.String({ description: 'data: <chunk with code/message> … data: [DONE]' }) },
          } },
          '4xx': AstronError, '5xx': AstronError,
        },
      },
    }, async (req, reply) => {
      const body = req.body;
      const chatId = chatIdOf(body.chat_id, req.headers['x-chat-id'], 'chat_id');
      const { messages, input } = body.parameters;
      let question: string;
      let history: ReturnType<typeof splitMessages>['history'] = [];
      if (messages) ({ question, history } = splitMessages(messages, 'parameters.messages'));
      else if (input !== undefined && input.trim()) question = input;
      else throw AppError.invalid([{ path: 'body/parameters', message: 'needs `messages` or a non-empty `input`' }], 'parameters: needs `messages` or a non-empty `input`');
      const completion = await startCompletion(chat, bus, req.principal!, {
        appId: body.bot_id, chatId, question, history, chatIdParam: body.chat_id ? 'chat_id' : 'X-Chat-Id',
        workflowInput: workflowInputOf(body.parameters.workflow_input, 'parameters.workflow_input'),
      });
      const enc = new CompletionEncoder(`chatcmpl-${completion.turn.turnId}`, completion.created, body.bot_id);
      if (body.stream !== false) return streamCompletion(reply, completion, enc, astronStream(enc), heartbeatMs);
      if (!(await drainCompletion(reply, completion, enc))) return reply;
      if (enc.error) {
        const code = ASTRON_ERRORS[enc.error.code].inTurn;
        const status = code === ASTRON.timeout ? 504 : enc.error.code === 'upstream_error' ? 502 : 500;
        return reply.status(status).send({ code, message: enc.error.message });
      }
      return reply.type('application/json; charset=utf-8').send(ok(enc.completion()));
    });
  }, { prefix: '/agent/v1' });
}

const ok = (c: object) => ({ code: ASTRON.ok, message: 'success', ...c });

/** Astron's stream: opened at once, `{"ping": "pong"}` keep-alives; the finish chunk carries the usage (Astron has no stream_options). */
function astronStream(enc: CompletionEncoder): StreamDialect {
  return {
    ping: dataEvent(JSON.stringify({ ping: 'pong' })),
    openAtOnce: true,
    encode: (chunks) => {
      const last = chunks.at(-1);
      if (last?.choices[0]?.finish_reason) last.usage = enc.usage;
      return chunks.map((c: Chunk) => dataEvent(JSON.stringify(ok(c)))).join('');
    },
    failed: (e) => dataEvent(JSON.stringify({
      code: ASTRON_ERRORS[e.code].inTurn, message: e.message, id: enc.id, object: 'chat.completion.chunk', created: enc.created, model: enc.model, choices: [],
    })),
    done: () => '',
  };
}
