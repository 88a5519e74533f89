import type { FastifyReply } from 'fastify';
import type { ChatEvent } from '../../domain/events.ts';
import { AppError } from '../../domain/errors.ts';
import { isClientGone, SseStream } from '../sse.ts';
import type { Completion } from './completion.ts';
import type { Chunk, CompletionEncoder } from './encoder.ts';

/** The end of every completion stream. */
export const SSE_DONE = 'data: [DONE]\n\n';

/** How one completion API frames a stream (OpenAI's chunks, Astron's chunks with code/message). */
export interface StreamDialect {
  /** the keep-alive written while the stream is silent */
  ping: string;
  /** commit the status at once; else with the first content, so that a failure before it is still an HTTP error */
  openAtOnce: boolean;
  /** the text of the chunks one event adds */
  encode(chunks: Chunk[], event: ChatEvent): string;
  /** what ends the stream before `[DONE]`: after a failure inside the turn, or after a whole answer */
  failed(e: AppError): string;
  done(): string;
}

/**
 * Writes a turn as a `text/event-stream` of chunks, `[DONE]` last. A client that goes away stops
 * the turn. A failure before the stream opened is thrown, for the route's error handler.
 */
export async function streamCompletion(reply: FastifyReply, completion: Completion, enc: CompletionEncoder, dialect: StreamDialect, heartbeatMs: number): Promise<FastifyReply> {
  const sse = new SseStream(reply, { ping: dialect.ping, heartbeatMs });
  sse.onClientGone(() => completion.cancel());
  if (dialect.openAtOnce) sse.open();
  // the role chunk waits for the first content: until then a failure can still be an HTTP status
  let held = '';
  try {
    await completion.events.each((e) => {
      const text = dialect.encode(enc.push(e), e);
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
    sse.end(held + dialect.failed(e) + SSE_DONE);
    return reply;
  }
  sse.end(held + dialect.done() + SSE_DONE);
  return reply;
}

/**
 * Feeds a whole (non-stream) turn into the encoder; a client that goes away stops the turn.
 * @returns false when the client is gone (the reply is given up: nothing is to be sent)
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
  if (isClientGone(reply)) {
    reply.hijack();
    return false;
  }
  return true;
}
