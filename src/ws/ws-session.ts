import { randomUUID } from 'node:crypto';
import type { WebSocket } from 'ws';
import type { Bus } from '../bus/bus.ts';
import { errorFrame, encodeFrame, outsideFrame } from '../chat/bisheng-frames.ts';
import type { ChatService, ChatTarget } from '../chat/chat-service.ts';
import { EventWatch } from '../chat/watch.ts';
import type { Config } from '../config/config.ts';
import { holdWrites, type Corkable } from './hold-writes.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { AppKind, Principal } from '../domain/types.ts';
import { parseClientFrame, type ClientFrame } from './client-frames.ts';

/** One WebSocket: its caller, the conversations it watches, and the frames it receives. */
export class WsSession {
  readonly id = randomUUID();
  readonly debugKey = `debug:${this.id}`;
  /** the peer answered a ping or sent a frame (liveness) */
  lastAlive = Date.now();
  /** the client sent a frame or a watched turn sent one (activity; the idle clock) */
  lastActive = Date.now();
  private readonly watches = new Map<string, EventWatch>();
  /** keys of turns this socket started (stopped on disconnect in debug mode) */
  private readonly started = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    readonly socket: WebSocket,
    readonly principal: Principal,
    /** seconds since epoch when the token expires */
    readonly tokenExp: number,
    private target: ChatTarget,
    private readonly deps: {
      chat: ChatService; bus: Bus; config: Config;
      /** the app kind the socket's path pins, and the app version its query asked for */
      kind: AppKind | undefined; versionId?: number | undefined;
      /** the TCP connection, whose writes are held until the loop comes round */
      transport?: Corkable | undefined;
      onError?: (err: unknown) => void;
    },
  ) {}

  send(text: string): void {
    if (this.closed || this.socket.readyState !== 1) return;
    if (this.deps.transport) holdWrites(this.deps.transport);
    this.socket.send(text);
  }

  /** A frame as `ws` delivers it: only text frames are accepted (PROTOCOL.md §3.1). */
  receiveRaw(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      this.alive();
      this.lastActive = this.lastAlive;
      this.queue = this.queue.then(() => this.reject(AppError.invalid([{ path: '', message: 'binary frames are not accepted; send JSON text' }], 'Binary frame')));
    } else {
      this.receive(data.toString('utf8'));
    }
  }

  /** Frames are handled one at a time, in order, so a `stop` right after a question finds its turn. */
  receive(raw: string): void {
    this.alive();
    this.lastActive = this.lastAlive;
    this.queue = this.queue.then(() => this.handle(raw)).catch((err: unknown) => {
      const e = toAppError(err);
      if (e.code === 'internal') this.deps.onError?.(err);
      this.reject(e);
    });
  }

  /** The peer answered a protocol ping. */
  alive(): void {
    this.lastAlive = Date.now();
  }

  /** Is a turn of a conversation this socket watches running (here or on another instance)? */
  busy(): boolean {
    for (const [key, w] of this.watches) if (w.inFlight || this.deps.chat.isRunning(key)) return true;
    return false;
  }

  ping(): void {
    if (!this.closed && this.socket.readyState === 1) this.socket.ping();
  }

  /** The token expired on a long-lived socket (STYLE.md: long-lived sockets re-check expiry). */
  expire(): void {
    this.reject(new AppError('unauthorized', 'Token expired'));
    this.close(1008, 'Unauthorized');
  }

  /** A dead peer cannot take part in a close handshake: drop the connection. */
  terminate(): void {
    this.closed = true;
    this.socket.terminate();
  }

  private reject(err: AppError, chatId?: string): void {
    this.send(errorFrame(err, { chatId: chatId ?? this.target.chatId ?? '', flowId: this.target.app.id }));
  }

  private async handle(raw: string): Promise<void> {
    if (this.closed) return;
    if (this.tokenExp * 1000 <= Date.now()) return this.expire();
    const frame = parseClientFrame(raw);
    if (frame.kind === 'ping') return this.send(outsideFrame('system', 'pong', '', {}));
    const target = await this.targetFor(frame);
    switch (frame.kind) {
      case 'ask': {
        const key = target.chatId ?? this.debugKey;
        this.watch(key);
        const turn = await this.deps.chat.ask({
          principal: this.principal, target, text: frame.text, inputs: frame.inputs, clientMessageId: frame.clientMessageId, debugKey: this.debugKey,
        });
        this.started.add(turn.key);
        // a repeated client_message_id: send the earlier turn's frames this socket has not seen
        if (turn.duplicate) await this.resume(turn.key, turn.fromSeq, false);
        return;
      }
      case 'stop':
        await this.deps.chat.stop(target.chatId ?? this.debugKey);
        return;
      case 'regenerate': {
        this.watch(target.chatId!);
        const turn = await this.deps.chat.regenerate(this.principal, target);
        this.started.add(turn.key);
        return;
      }
      case 'clear_history':
        await this.deps.chat.clearHistory(this.principal, target);
        return;
      case 'resume':
        await this.resume(target.chatId!, frame.lastSeq, true);
        return;
      case 'switch':
        this.target = target;
        if (target.chatId) this.watch(target.chatId);
        return;
      case 'init_data': {
        this.watch(target.chatId ?? this.debugKey);
        const turn = await this.deps.chat.startWorkflow({ principal: this.principal, target, debugKey: this.debugKey, graph: frame.graph });
        this.started.add(turn.key);
        return;
      }
      case 'input': {
        this.watch(target.chatId ?? this.debugKey);
        const turn = await this.deps.chat.answerWorkflow({
          principal: this.principal, target, debugKey: this.debugKey, nodeId: frame.nodeId, data: frame.data, message: frame.message, messageId: frame.messageId,
        });
        this.started.add(turn.key);
        return;
      }
      case 'check_status': {
        const key = target.chatId ?? this.debugKey;
        this.watch(key);
        const status = await this.deps.chat.checkWorkflow(this.principal, target, this.debugKey);
        if (status.started) this.started.add(status.started.key);
        // nothing to send again: how the run stands, outside any turn (PROTOCOL.md §8.3)
        else this.send(outsideFrame('system', 'info', { run_id: status.run_id, run_status: status.run_status, node_id: status.node_id }, { chatId: target.chatId ?? '', flowId: target.app.id }));
        return;
      }
    }
  }

  /**
   * The conversation a frame is about: its own chat_id (and app) override the socket's. Authorized
   * again for every frame: a chat_id that was free at connect may since belong to another user, and
   * an app may have gone offline or been deleted.
   */
  private async targetFor(frame: ClientFrame): Promise<ChatTarget> {
    const chatId = frame.chatId ?? this.target.chatId;
    const appId = frame.appId ?? this.target.app.id;
    // these act on a stored conversation: debug mode has none
    if ((frame.kind === 'regenerate' || frame.kind === 'resume') && !chatId) throw AppError.invalid([{ path: 'chat_id', message: 'required' }]);
    const versionId = appId === this.target.app.id ? this.deps.versionId : undefined;
    return this.deps.chat.resolveTarget(this.principal, appId, { chatId, kind: this.deps.kind, versionId });
  }

  /** Starts sending the live events of `key` to this socket (idempotent). */
  watch(key: string): EventWatch {
    let w = this.watches.get(key);
    if (!w) {
      // a chat_id watched before its conversation existed may then be created by another user:
      // only the caller's own turns reach this socket
      w = new EventWatch(this.deps.bus, key, (e) => {
        this.lastActive = Date.now();
        this.send(encodeFrame(e));
      }, { userId: this.principal.id });
      this.watches.set(key, w);
    }
    return w;
  }

  /**
   * Replays every event after `afterSeq`, then continues live — no gap, no duplicate. An explicit
   * resume is announced and re-sends from afterSeq; a repeated question only sends what was not seen.
   */
  async resume(key: string, afterSeq: number, announce: boolean): Promise<void> {
    await this.watch(key).resume(afterSeq, {
      mode: announce ? 'exact' : 'unseen',
      before: announce ? (events) => {
        const message = events ? { resumed: true, from_seq: afterSeq } : { resumed: false, reason: 'the replay log no longer covers last_seq; reload the history' };
        this.send(outsideFrame('system', 'info', message, { chatId: key.startsWith('debug:') ? '' : key, flowId: this.target.app.id }));
      } : undefined,
    });
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close(code, reason);
  }

  /** The socket is gone: stop watching; stop turns that must not outlive it. */
  dispose(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
    for (const key of this.started) {
      const debug = key.startsWith('debug:');
      if ((debug || !this.deps.config.chat.run_on_disconnect) && this.deps.chat.isRunning(key)) {
        this.deps.chat.stop(key).catch((err: unknown) => this.deps.onError?.(err));
      }
    }
    // nobody can watch this socket's debug key again: let the chat core forget its seq counter
    this.deps.chat.forgetDebugKey(this.debugKey);
  }
}
