import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import { AppError, type ErrorCode } from '../../domain/errors.ts';
import type { Principal } from '../../domain/types.ts';
import { asAppError, type App } from '../app.ts';
import { dataEvent, SseStream } from '../sse.ts';
import type { Services } from '../services.ts';
import { HexId } from '../schemas.ts';
import {
  apiKeyPrincipal, ChatCompletionSchema, ChatMessageIn, chatIdOf, CompletionEncoder, describeInvalid, drainCompletion, isPayloadTooLarge, retryAfter, splitMessages, startCompletion, workflowInputOf,
  type Chunk, type Completion,
} from './openai-routes.ts';

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

export const ASTRON = { ok: 0, invalid: 1001, auth: 1002, rate: 1003, workflow: 1004, timeout: 1005, unknown: 1006 } as const;
const PING = dataEvent(JSON.stringify({ ping: 'pong' }));
const SSE_DONE = 'data: [DONE]\n\n';

/** The Astron code of an error inside a turn. */
function turnCode(code: ErrorCode): number {
  if (code === 'upstream_timeout' || code === 'workflow_input_timeout') return ASTRON.timeout;
  if (code.startsWith('workflow_')) return ASTRON.workflow;
  return ASTRON.unknown;
}

/** An error before streaming: HTTP status and Astron code. */
function astronError(e: AppError, payloadTooLarge: boolean): { status: number; code: number; message: string } {
  const reason = (e.data as { reason?: string } | null)?.reason;
  switch (e.code) {
    case 'unauthorized': return { status: 401, code: ASTRON.auth, message: e.message };
    case 'rate_limited': return { status: 429, code: ASTRON.rate, message: e.message };
    case 'invalid_request':
      return { status: 400, code: ASTRON.invalid, message: describeInvalid(e).message };
    case 'not_found': case 'app_deleted': case 'app_offline': case 'forbidden': case 'conflict': case 'too_large': case 'app_unbuildable':
      return { status: payloadTooLarge ? 413 : 400, code: ASTRON.invalid, message: reason === 'model_not_found' ? `bot_id: no such bot, or this caller may not use it` : e.message };
    case 'upstream_timeout': return { status: 504, code: ASTRON.timeout, message: e.message };
    case 'upstream_error': return { status: 502, code: ASTRON.unknown, message: e.message };
    case 'busy': return { status: 503, code: ASTRON.unknown, message: e.message };
    case 'workflow_input_timeout': case 'workflow_max_steps': case 'workflow_node_invalid': case 'workflow_failed':
      return { status: e.httpStatus, code: turnCode(e.code), message: e.message };
    default: return { status: 500, code: ASTRON.unknown, message: 'Internal error' };
  }
}

export function registerAstronRoutes(app: App, services: Services): void {
  const { auth, repos, config } = services;
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
    scope.setErrorHandler((err, req, reply) => {
      const e = asAppError(err);
      if (e.code === 'internal') req.log.error({ err: e.cause ?? err }, 'unhandled error');
      const { status, code, message } = astronError(e, isPayloadTooLarge(err));
      if (e.code === 'rate_limited') reply.header('retry-after', retryAfter(e));
      return reply.status(status).send({ code, message });
    });
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
      const completion = await startCompletion(services, req.principal!, {
        appId: body.bot_id, chatId, question, history, chatIdParam: body.chat_id ? 'chat_id' : 'X-Chat-Id',
        workflowInput: workflowInputOf(body.parameters.workflow_input, 'parameters.workflow_input'),
      });
      const enc = new CompletionEncoder(`chatcmpl-${completion.turn.turnId}`, completion.created, body.bot_id);
      return body.stream === false ? whole(reply, completion, enc) : stream(reply, completion, enc, heartbeatMs);
    });
  }, { prefix: '/agent/v1' });
}

const ok = (c: object) => ({ code: ASTRON.ok, message: 'success', ...c });

async function stream(reply: FastifyReply, completion: Completion, enc: CompletionEncoder, heartbeatMs: number) {
  const sse = new SseStream(reply, { ping: PING, heartbeatMs });
  sse.onClientGone(() => completion.cancel());
  sse.open();
  try {
    await completion.events.each((e) => {
      const chunks = enc.push(e);
      // the finish chunk carries the usage (Astron has no stream_options)
      const last = chunks.at(-1);
      if (last?.choices[0]?.finish_reason) last.usage = enc.usage;
      if (chunks.length) sse.write(chunks.map((c: Chunk) => dataEvent(JSON.stringify(ok(c)))).join(''));
    });
  } finally {
    completion.settle();
  }
  if (sse.closed) return reply;
  if (enc.error) {
    const failed = { code: turnCode(enc.error.code), message: enc.error.message, id: enc.id, object: 'chat.completion.chunk', created: enc.created, model: enc.model, choices: [] };
    sse.end(dataEvent(JSON.stringify(failed)) + SSE_DONE);
  } else {
    sse.end(SSE_DONE);
  }
  return reply;
}

async function whole(reply: FastifyReply, completion: Completion, enc: CompletionEncoder) {
  if (!(await drainCompletion(reply, completion, enc))) return reply.hijack();
  if (enc.error) {
    const code = turnCode(enc.error.code);
    const status = code === ASTRON.timeout ? 504 : enc.error.code === 'upstream_error' ? 502 : 500;
    return reply.status(status).send({ code, message: enc.error.message });
  }
  return reply.type('application/json; charset=utf-8').send(ok(enc.completion()));
}
