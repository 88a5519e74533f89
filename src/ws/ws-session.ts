import type { WebSocket } from 'ws';
import type { Bus } from '../bus/bus.ts';
import { errorFrame, encodeFrame, outsideFrame } from '../wire/bisheng-frames.ts';
import type { ChatService } from '../chat/chat-service.ts';
import type { ChatTarget } from '../chat/targets.ts';
import { EventWatch } from '../chat/watch.ts';
import type { Config } from '../config/config.ts';
import type { Clock } from '../domain/clock.ts';
import { holdWrites, type Corkable } from './hold-writes.ts';
import { AppError, ERROR_TABLE, toAppError } from '../domain/errors.ts';
import type { AppKind, Principal } from '../domain/types.ts';
import { parseClientFrame, type ClientFrame } from './client-frames.ts';

/** One WebSocket: its caller, the conversations it watches, and the frames it receives. */
export class WsSession {
  /** the bus key of this socket's unstored turns (debug mode) */
  readonly scratchKey: string;
  /** the peer answered a ping or sent a frame (liveness) */
  lastAlive: number;
  /** the client sent a frame or a watched turn sent one (activity; the idle clock) */
  lastActive: number;
  private readonly watches = new Map<string, EventWatch>();
  /** turns this socket started, by key: whether the turn is stored (an unstored one is stopped on disconnect) */
  private readonly started = new Map<string, boolean>();
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    readonly socket: WebSocket,
    readonly principal: Principal,
    /** seconds since epoch when the token expires */
    readonly tokenExp: number,
    private target: ChatTarget,
    private readonly deps: {
      chat: ChatService; bus: Bus; config: Config; clock: Clock;
      /** the app kind the socket's path pins, and the app version its query asked for */
      kind: AppKind | undefined; versionId?: number | undefined;
      /** the TCP connection, whose writes are held until the loop comes round */
      transport?: Corkable | undefined;
      onError?: (err: unknown) => void;
    },
  ) {
    this.scratchKey = deps.chat.newScratchKey();
    this.lastAlive = this.lastActive = deps.clock.now();
  }

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
    this.lastAlive = this.deps.clock.now();
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
    this.close(...ERROR_TABLE.unauthorized.close);
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
    if (this.tokenExp * 1000 <= this.deps.clock.now()) return this.expire();
    const frame = parseClientFrame(raw);
    if (frame.kind === 'ping') return this.send(outsideFrame('system', 'pong', '', {}));
    const target = await this.targetFor(frame);
    switch (frame.kind) {
      case 'ask': {
        this.watch(this.keyOf(target));
        const turn = await this.deps.chat.ask({
          principal: this.principal, target, text: frame.text, inputs: frame.inputs, clientMessageId: frame.clientMessageId, scratchKey: this.scratchKey,
        });
        this.started.set(turn.key, target.chatId !== null);
        // a repeated client_message_id: send the earlier turn's frames this socket has not seen
        if (turn.duplicate) await this.resume(turn.key, turn.fromSeq, false);
        return;
      }
      case 'stop':
        await (target.chatId === null ? this.deps.chat.stopScratch(this.scratchKey) : this.deps.chat.stop(target.chatId));
        return;
      case 'regenerate': {
        this.watch(target.chatId!);
        const turn = await this.deps.chat.regenerate(this.principal, target);
        this.started.set(turn.key, true);
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
        this.watch(this.keyOf(target));
        const turn = await this.deps.chat.startWorkflow({ principal: this.principal, target, scratchKey: this.scratchKey, graph: frame.graph });
        this.started.set(turn.key, target.chatId !== null);
        return;
      }
      case 'input': {
        this.watch(this.keyOf(target));
        const turn = await this.deps.chat.answerWorkflow({
          principal: this.principal, target, scratchKey: this.scratchKey, nodeId: frame.nodeId, data: frame.data, message: frame.message, messageId: frame.messageId,
        });
        this.started.set(turn.key, target.chatId !== null);
        return;
      }
      case 'check_status': {
        this.watch(this.keyOf(target));
        const status = await this.deps.chat.checkWorkflow(this.principal, target, this.scratchKey);
        if (status.started) this.started.set(status.started.key, target.chatId !== null);
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

  /** The bus key of a target's turns on this socket. */
  private keyOf(target: ChatTarget): string {
    return target.chatId ?? this.scratchKey;
  }

  /** Starts sending the live events of `key` to this socket (idempotent). */
  watch(key: string): EventWatch {
    let w = this.watches.get(key);
    if (!w) {
      // a chat_id watched before its conversation existed may then be created by another user:
      // only the caller's own turns reach this socket
      w = new EventWatch(this.deps.bus, key, (e) => {
        this.lastActive = this.deps.clock.now();
        this.send(encodeFrame(e));
      }, { userId: this.principal.id });
      this.watches.set(key, w);
    }
    return w;
  }

  /**
   * Replays every event after `afterSeq`, then continues live — no gap, no duplicate. An explicit
   * resume (of a stored conversation: `key` is its chat_id) is announced and re-sends from
   * afterSeq; a repeated question only sends what was not seen.
   */
  async resume(key: string, afterSeq: number, announce: boolean): Promise<void> {
    await this.watch(key).resume(afterSeq, {
      mode: announce ? 'exact' : 'unseen',
      before: announce ? (events) => {
        const message = events ? { resumed: true, from_seq: afterSeq } : { resumed: false, reason: 'the replay log no longer covers last_seq; reload the history' };
        this.send(outsideFrame('system', 'info', message, { chatId: key, flowId: this.target.app.id }));
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
    for (const [key, stored] of this.started) {
      if ((!stored || !this.deps.config.chat.run_on_disconnect) && this.deps.chat.isRunning(key)) {
        (stored ? this.deps.chat.stop(key) : this.deps.chat.stopScratch(key)).catch((err: unknown) => this.deps.onError?.(err));
      }
    }
    // nobody can watch this socket's scratch key again: let the chat core forget what it keeps for it
    this.deps.chat.forgetScratch(this.scratchKey);
  }
}
