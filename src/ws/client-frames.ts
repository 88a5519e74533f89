import { AppError, type FieldError } from '../domain/errors.ts';

/** A validated client → server frame (PROTOCOL.md §3.1). */
export type ClientFrame = { chatId: string | null | undefined; appId: string | undefined } & (
  | { kind: 'ask'; text: string; inputs: Record<string, unknown>; clientMessageId: string | undefined }
  | { kind: 'stop' }
  | { kind: 'regenerate' }
  | { kind: 'clear_history' }
  | { kind: 'resume'; lastSeq: number }
  | { kind: 'ping' }
  | { kind: 'switch' }
  /** start a workflow run; `graph`: a client-sent graph (used only in debug mode on the draft) */
  | { kind: 'init_data'; graph: unknown }
  | { kind: 'check_status' }
  /** answer the request a workflow run waits for */
  | { kind: 'input'; nodeId: string; data: Record<string, unknown>; message: string | undefined; messageId: number | string | undefined }
);

type Obj = Record<string, unknown>;
type Answer = { nodeId: string; data: Record<string, unknown>; message: string | undefined; messageId: number | string | undefined };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const HEX32 = /^[0-9a-f]{32}$/;

/**
 * Parses and validates one text frame. Double-encoded JSON is accepted, as Bisheng does.
 * Every problem is reported at once as 10400 with `data.errors`.
 */
export function parseClientFrame(raw: string): ClientFrame {
  let value: unknown;
  try {
    value = JSON.parse(raw);
    if (typeof value === 'string') value = JSON.parse(value);
  } catch {
    throw AppError.invalid([{ path: '', message: 'not valid JSON' }], 'Invalid JSON');
  }
  if (!isObj(value)) throw AppError.invalid([{ path: '', message: 'must be a JSON object' }]);
  const errors: FieldError[] = [];
  const str = (path: string, v: unknown, opts: { hex?: boolean; max?: number } = {}): string | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') errors.push({ path, message: 'must be a string' });
    else if (opts.hex && !HEX32.test(v)) errors.push({ path, message: 'must be 32 hex characters' });
    else if (opts.max && v.length > opts.max) errors.push({ path, message: `must be at most ${opts.max} characters` });
    else return v;
    return undefined;
  };
  const chatIdRaw = value.chat_id;
  const chatId = chatIdRaw === '' ? undefined : str('chat_id', chatIdRaw, { hex: true });
  const appId = str('flow_id', value.flow_id === '' ? undefined : value.flow_id, { hex: true });
  const base = { chatId, appId };
  const done = <T extends ClientFrame>(frame: T): T => {
    if (errors.length) throw AppError.invalid(errors);
    return frame;
  };

  const action = value.action;
  if (action !== undefined) {
    switch (action) {
      case 'ping': return done({ ...base, kind: 'ping' });
      case 'stop': return done({ ...base, kind: 'stop' });
      case 'regenerate': return done({ ...base, kind: 'regenerate' });
      case 'resume': {
        const lastSeq = value.last_seq;
        if (!Number.isSafeInteger(lastSeq) || (lastSeq as number) < 0) errors.push({ path: 'last_seq', message: 'must be a non-negative integer' });
        return done({ ...base, kind: 'resume', lastSeq: lastSeq as number });
      }
      // Bisheng's init_data carries the graph in `data`
      case 'init_data': return done({ ...base, kind: 'init_data', graph: value.data });
      case 'check_status': return done({ ...base, kind: 'check_status' });
      case 'input': return done({ ...base, kind: 'input', ...parseAnswer(value.data, errors) });
      default:
        throw AppError.invalid([{ path: 'action', message: `unknown action ${JSON.stringify(action).slice(0, 64)}` }], 'Unknown action');
    }
  }
  if (value.clear_history === true && value.inputs === undefined) return done({ ...base, kind: 'clear_history' });
  const inputs = value.inputs;
  if (!isObj(inputs)) throw AppError.invalid([{ path: 'inputs', message: 'must be an object with `input`' }]);
  const text = inputs.input ?? inputs.question;
  if (text === undefined) {
    // Bisheng's assistant client: {inputs: {data: {id, chatId}}} switches the conversation
    const data = inputs.data;
    if (isObj(data)) {
      const switchChat = str('inputs/data/chatId', data.chatId, { hex: true });
      const switchApp = str('inputs/data/id', data.id, { hex: true });
      return done({ chatId: switchChat ?? chatId, appId: switchApp ?? appId, kind: 'switch' });
    }
    throw AppError.invalid([{ path: 'inputs/input', message: 'required' }]);
  }
  if (typeof text !== 'string') errors.push({ path: 'inputs/input', message: 'must be a string' });
  const clientMessageId = str('client_message_id', value.client_message_id, { max: 128 });
  return done({ ...base, kind: 'ask', text: text as string, inputs, clientMessageId });
}

/** `data: {<node_id>: {data: {...}, message?, message_id?}}` — one node's answer (Bisheng's `input` action). */
function parseAnswer(value: unknown, errors: FieldError[]): Answer {
  const none: Answer = { nodeId: '', data: {}, message: undefined, messageId: undefined };
  if (!isObj(value)) {
    errors.push({ path: 'data', message: 'must be an object {<node_id>: {data: {...}, message?, message_id?}}' });
    return none;
  }
  const entries = Object.entries(value);
  if (entries.length !== 1) {
    errors.push({ path: 'data', message: `must answer exactly one node (got ${entries.length})` });
    return none;
  }
  const [nodeId, answer] = entries[0]!;
  const at = `data/${nodeId}`;
  if (!nodeId || nodeId.length > 128) errors.push({ path: 'data', message: 'the node id must be 1 to 128 characters' });
  if (!isObj(answer)) {
    errors.push({ path: at, message: 'must be an object {data: {...}, message?, message_id?}' });
    return none;
  }
  const { data, message, message_id: messageId } = answer;
  if (!isObj(data)) errors.push({ path: `${at}/data`, message: 'must be an object' });
  if (message !== undefined && message !== null && typeof message !== 'string') errors.push({ path: `${at}/message`, message: 'must be a string' });
  else if (typeof message === 'string' && message.length > 10_000) errors.push({ path: `${at}/message`, message: 'must be at most 10000 characters' });
  const idOk = messageId === undefined || messageId === null || Number.isSafeInteger(messageId) || (typeof messageId === 'string' && messageId.length <= 64);
  if (!idOk) errors.push({ path: `${at}/message_id`, message: 'must be a message id (integer or string)' });
  return {
    nodeId, data: isObj(data) ? data : {}, message: typeof message === 'string' ? message : undefined,
    messageId: idOk && messageId !== null ? (messageId as number | string | undefined) : undefined,
  };
}
