import { Type } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import { encodeFrame, outsideFrame } from '../../wire/bisheng-frames.ts';
import { EventWatch, turnOpenAt } from '../../chat/watch.ts';
import { AppError } from '../../domain/errors.ts';
import type { ChatEvent } from '../../domain/events.ts';
import type { Principal } from '../../domain/types.ts';
import type { App } from '../app.ts';
import { SseStream, PING_COMMENT } from '../sse.ts';
import type { Services } from '../services.ts';
import { HexId, Nullable } from '../schemas.ts';

/**
 * Native SSE (PROTOCOL.md §4, §8.7): the WebSocket question frame in, the §3.2 frames out as
 * `event: message` / `id: <seq>` / `data: <frame>`, ending right after the turn's processing/close.
 *
 * Resume: a request that carries `Last-Event-ID` (and a chat_id) asks for nothing new — it gets every
 * frame after that seq exactly once, then the live ones, until the turn's processing/close:
 *  - POST with the same body (the question is ignored; fetch-based SSE clients retry this way), or
 *  - GET on the same path with `?chat_id=` (what a browser EventSource does on reconnect; its first
 *    request may pass `last_event_id` in the query, since EventSource cannot set headers).
 * First comes `system/info` `{resumed: true, from_seq}` — or `{resumed: false, reason}` when the replay
 * log no longer covers the seq, and the stream ends (reload the history over REST). When the turn had
 * ended at that seq there is nothing to send: 204, which also stops an EventSource from reconnecting.
 *
 * Workflow apps: a question starts a run, or answers the request the conversation's run waits for
 * (the text answers a dialog input or a choice; a form takes its fields in `inputs.data`, or as a
 * JSON object in the text). The response carries the workflow frames themselves and ends with the
 * segment's processing/close — also when the run then waits: its `input/over` (or
 * `output_with_*_msg/over`) frame is the request, and the close's `extra.run_status` is "input".
 */

const AskBody = Type.Object({
  inputs: Type.Optional(Type.Object({
    input: Type.Optional(Type.String({ description: 'the question' })),
    question: Type.Optional(Type.String({ description: 'accepted instead of `input`' })),
    data: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "workflow apps: the answer to the waiting request (a form's fields)" })),
    variables: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "workflow apps: values of the start node's declared variables, when the question starts a run" })),
  }, { additionalProperties: true, description: 'stored with the question, as Bisheng stores it' })),
  chat_id: Type.Optional(Nullable(Type.Union([HexId, Type.Literal('')], { description: 'client-generated conversation id; absent: debug mode (admins, the draft, nothing stored)' }))),
  client_message_id: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'a repeated id streams the earlier turn instead of asking again' })),
  flow_id: Type.Optional(Type.String({ description: 'ignored: the app is the path parameter' })),
}, { additionalProperties: true });

const Params = Type.Object({ app_id: Type.String({ minLength: 1, maxLength: 64 }) });
const LastEventIdHeader = Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 20 })) });
const SseBody = { content: { 'text/event-stream': { schema: Type.String({ description: 'event: message / id: <seq> / data: <Bisheng frame JSON>, `: ping` comments while silent' }) } } };
const tags = ['chat'];

const frameEvent = (e: ChatEvent) => `event: message\nid: ${e.seq}\ndata: ${encodeFrame(e)}\n\n`;
/** frames outside a turn carry no id, so they do not move the client's Last-Event-ID */
const infoEvent = (frame: string) => `event: message\ndata: ${frame}\n\n`;

function parseLastEventId(raw: string | undefined, path: string): number | null {
  if (raw === undefined || raw.trim() === '') return null;
  const n = Number(raw.trim());
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n)) throw AppError.invalid([{ path, message: 'must be a non-negative integer (a frame seq)' }]);
  return n;
}

export function registerSseRoutes(app: App, { chat, bus, config }: Services): void {
  const heartbeatMs = config.chat.heartbeat_interval * 1000;

  /** An SSE response that writes the caller's events of `key` (held until released) and ends after processing/close. */
  const stream = (reply: FastifyReply, p: Principal, key: string, onFinish?: () => void) => {
    const sse = new SseStream(reply, { ping: PING_COMMENT, heartbeatMs });
    const watch = new EventWatch(bus, key, (e) => {
      sse.write(frameEvent(e));
      if (e.body.kind === 'close') finish();
    }, { hold: true, userId: p.id });
    const finish = () => {
      watch.close();
      sse.end();
      onFinish?.();
    };
    return { sse, watch, finish };
  };

  /** Replays after `afterSeq`, then streams live until the turn's processing/close. */
  const resume = async (reply: FastifyReply, p: Principal, appId: string, chatId: string, afterSeq: number) => {
    const target = await chat.resolveTarget(p, appId, { chatId });
    const { sse, watch, finish } = stream(reply, p, chatId);
    sse.onClientGone(() => watch.close());
    const ids = { chatId, flowId: target.app.id };
    let ended = false;
    const covered = await watch.resume(afterSeq, {
      before: async (events) => {
        if (events !== null && events.length === 0 && !(await turnOpenAt(bus, chatId, afterSeq))) {
          ended = true;
          return;
        }
        const message = events ? { resumed: true, from_seq: afterSeq } : { resumed: false, reason: 'the replay log no longer covers Last-Event-ID; reload the history' };
        sse.write(infoEvent(outsideFrame('system', 'info', message, ids)));
      },
    });
    if (sse.closed) return reply;
    if (ended && !sse.opened) {
      // the client has the whole turn: nothing to send (204 also stops an EventSource's reconnects)
      watch.close();
      sse.abandon();
      return reply.code(204).send();
    }
    if (!covered) finish();
    return reply;
  };

  app.post('/api/v1/chat/:app_id/completions', {
    schema: {
      tags,
      summary: 'Ask over native SSE: the WebSocket question frame in, the §3.2 frames out (text/event-stream); Last-Event-ID resumes instead of asking',
      params: Params, headers: LastEventIdHeader, body: AskBody,
      response: { 200: SseBody, 204: Type.Null({ description: 'resume: the turn had already ended at Last-Event-ID' }) },
    },
  }, async (req, reply) => {
    const p = req.principal!;
    const { app_id: appId } = req.params;
    const chatId = req.body.chat_id || null;
    const lastEventId = parseLastEventId(req.headers['last-event-id'], 'headers/last-event-id');
    if (lastEventId !== null) {
      if (!chatId) throw AppError.invalid([{ path: 'body/chat_id', message: 'required to resume: debug turns are not resumable' }]);
      return resume(reply, p, appId, chatId, lastEventId);
    }
    const inputs = req.body.inputs;
    const text = inputs?.input ?? inputs?.question;
    if (typeof text !== 'string') throw AppError.invalid([{ path: 'body/inputs/input', message: 'required' }]);
    const target = await chat.resolveTarget(p, appId, { chatId });

    const key = chatId ?? chat.newScratchKey();
    const forget = () => {
      if (!chatId) chat.forgetScratch(key);
    };
    const { sse, watch, finish } = stream(reply, p, key, forget);
    let turn;
    try {
      turn = await chat.ask({ principal: p, target, text, inputs: inputs ?? {}, clientMessageId: req.body.client_message_id, scratchKey: key });
    } catch (err) {
      watch.close();
      sse.abandon();
      forget();
      throw err;
    }
    // debug turns exist only for this response; a stored conversation's turn follows chat.run_on_disconnect
    sse.onClientGone(() => {
      watch.close();
      if ((!chatId || !config.chat.run_on_disconnect) && chat.isRunning(key)) void (chatId ? chat.stop(chatId) : chat.stopScratch(key));
      forget();
    });
    sse.open();
    if (turn.duplicate) {
      // a repeated client_message_id: the earlier turn from its start (or what is left of its log)
      const covered = await watch.resume(turn.fromSeq, { mode: 'unseen' });
      if (!covered && !sse.closed) {
        sse.write(infoEvent(outsideFrame('system', 'info', { resumed: false, reason: 'the earlier turn is no longer in the replay log; reload the history' }, { chatId: chatId ?? '', flowId: target.app.id })));
        finish();
      }
    } else {
      watch.release(turn.fromSeq);
    }
    return reply;
  });

  app.get('/api/v1/chat/:app_id/completions', {
    schema: {
      tags,
      summary: 'Resume a native SSE turn (EventSource reconnect): every frame after Last-Event-ID (header, or `last_event_id`), then live until processing/close',
      params: Params, headers: LastEventIdHeader,
      querystring: Type.Object({ chat_id: HexId, last_event_id: Type.Optional(Type.String({ maxLength: 20 })), t: Type.Optional(Type.String()) }),
      response: { 200: SseBody, 204: Type.Null({ description: 'the turn had already ended at Last-Event-ID' }) },
    },
  }, async (req, reply) => {
    const lastEventId = parseLastEventId(req.headers['last-event-id'], 'headers/last-event-id') ?? parseLastEventId(req.query.last_event_id, 'querystring/last_event_id');
    if (lastEventId === null) throw AppError.invalid([{ path: 'headers/last-event-id', message: 'required (or the last_event_id query parameter)' }]);
    return resume(reply, req.principal!, req.params.app_id, req.query.chat_id, lastEventId);
  });
}
