import { workflowMessage } from '../domain/bisheng-messages.ts';
import { ERROR_TABLE, type AppError } from '../domain/errors.ts';
import type { ChatEvent, ChatEventBody } from '../domain/events.ts';

/**
 * The Bisheng frame codec, for the transports that speak it (WebSocket, native SSE): chat events
 * as Bisheng's message schema frames them (PROTOCOL.md §3.2). Every frame carries every field.
 * `files` and `extra` are JSON-encoded strings, a tool frame's `message` too (its web client
 * depends on that).
 */
export interface BishengFrame {
  is_bot: number;
  message: unknown;
  type: string;
  category: string;
  intermediate_steps: string;
  files: string;
  user_id: number | null;
  message_id: number | string | null;
  source: number;
  sender: string;
  receiver: null;
  liked: number;
  extra: string;
  flow_id: string;
  chat_id: string;
  seq?: number;
  turn_id?: string;
}

const blank = (category: string, type: string, message: unknown): BishengFrame => ({
  is_bot: 1, message, type, category, intermediate_steps: '', files: '[]', user_id: null, message_id: null,
  source: 0, sender: '', receiver: null, liked: 0, extra: '{}', flow_id: '', chat_id: '',
});

function shape(body: ChatEventBody): BishengFrame {
  switch (body.kind) {
    case 'begin': return blank('processing', 'begin', '');
    case 'llm_start': return blank('processing', 'start', '');
    case 'delta': return blank('processing', 'stream', { content: body.content, reasoning_content: body.reasoning });
    case 'llm_end': return blank('processing', 'end', '');
    case 'tool_start': {
      const f = blank('tool', 'start', JSON.stringify({ tool_key: body.toolKey, input: body.input }));
      f.intermediate_steps = `Tool input: \n\n${typeof body.input === 'string' ? body.input : JSON.stringify(body.input)}\n\n`;
      f.extra = JSON.stringify({ run_id: body.runId });
      return f;
    }
    case 'tool_end': {
      const f = blank('tool', 'end', JSON.stringify({ tool_key: body.toolKey, input: body.input, output: body.output }));
      f.intermediate_steps = `Tool output: \n\n${body.output}`;
      f.extra = JSON.stringify({ run_id: body.runId, failed: body.failed });
      return f;
    }
    case 'answer_start': return blank('answer', 'start', '');
    case 'answer_end': {
      // a stop sends `end` with an empty message: the text was streamed already and `end` appends
      const f = blank('answer', body.stopped ? 'end' : 'end_cover', body.stopped ? '' : body.text);
      f.message_id = body.messageId;
      f.extra = JSON.stringify(body.usage ? { usage: body.usage } : {});
      return f;
    }
    case 'error': {
      const entry = ERROR_TABLE[body.code];
      return blank('error', 'end', { status_code: entry.status, status_message: body.message, data: body.data ?? null });
    }
    case 'close': {
      const f = blank('processing', 'close', '');
      if (body.extra) f.extra = JSON.stringify(body.extra);
      return f;
    }
    default: {
      const { category, type, message } = workflowMessage(body);
      const f = blank(category, type, message);
      if ('messageId' in body) f.message_id = body.messageId ?? null;
      return f;
    }
  }
}

export function toFrame(event: ChatEvent): BishengFrame {
  const f = shape(event.body);
  f.user_id = event.userId;
  f.flow_id = event.flowId;
  f.chat_id = event.chatId;
  f.seq = event.seq;
  f.turn_id = event.turnId;
  return f;
}

const encoded = new WeakMap<ChatEvent, string>();

/** The parts of a delta frame that are the same for a whole turn: after the message up to `"seq":`, and after the seq. */
interface DeltaParts {
  middle: string;
  tail: string;
}
const deltaParts = new Map<string, DeltaParts>();

function partsOf(event: ChatEvent): DeltaParts {
  let parts = deltaParts.get(event.turnId);
  if (parts === undefined) {
    parts = {
      middle: `"type":"stream","category":"processing","intermediate_steps":"","files":"[]","user_id":${JSON.stringify(event.userId)},"message_id":null,`
        + `"source":0,"sender":"","receiver":null,"liked":0,"extra":"{}","flow_id":${JSON.stringify(event.flowId)},"chat_id":${JSON.stringify(event.chatId)},"seq":`,
      tail: `,"turn_id":${JSON.stringify(event.turnId)}}`,
    };
    // turns run for seconds: the newest few thousand are all that can be streaming now
    if (deltaParts.size >= 4096) deltaParts.clear();
    deltaParts.set(event.turnId, parts);
  }
  return parts;
}

/**
 * The frame as JSON text, encoded once however many sockets and streams watch it. A delta — most
 * frames of a turn — is spliced from its two strings, its seq and the turn's constant parts
 * (exactly what JSON.stringify of its frame gives, without building the 17-field object); other
 * frames are cached per event.
 */
export function encodeFrame(event: ChatEvent): string {
  const body = event.body;
  if (body.kind === 'delta') {
    const { middle, tail } = partsOf(event);
    return `{"is_bot":1,"message":{"content":${JSON.stringify(body.content)},"reasoning_content":${JSON.stringify(body.reasoning)}},${middle}${event.seq}${tail}`;
  }
  let text = encoded.get(event);
  if (text === undefined) {
    text = JSON.stringify(toFrame(event));
    encoded.set(event, text);
  }
  return text;
}

/** A frame outside any turn (no seq): rejections of a client frame, pong, system info. */
export function outsideFrame(category: string, type: string, message: unknown, ids: { chatId?: string; flowId?: string } = {}): string {
  const f = blank(category, type, message);
  f.chat_id = ids.chatId ?? '';
  f.flow_id = ids.flowId ?? '';
  return JSON.stringify(f);
}

export function errorFrame(err: AppError, ids: { chatId?: string; flowId?: string } = {}): string {
  return outsideFrame('error', 'end', { status_code: err.statusCode, status_message: err.message, data: err.data }, ids);
}
