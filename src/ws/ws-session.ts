import { randomUUID } from 'node:crypto';
import type { WebSocket } from 'ws';
import type { Bus, Unsubscribe } from '../bus/bus.ts';
import { errorFrame, encodeFrame, outsideFrame } from '../chat/bisheng-frames.ts';
import type { ChatService, ChatTarget } from '../chat/chat-service.ts';
import type { Config } from '../config/config.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { ChatEvent } from '../domain/events.ts';
import type { AppKind, Principal } from '../domain/types.ts';
import { parseClientFrame, type ClientFrame } from './client-frames.ts';

interface Watch {
  unsubscribe: Unsubscribe;
  /** the highest seq sent on this socket: nothing at or below it is sent again */
  lastSent: number;
  /** while a resume replays, live events wait here */
  buffer: ChatEvent[] | null;
}

/** One WebSocket: its caller, the conversations it watches, and the frames it receives. */
export class WsSession {
  readonly id = randomUUID();
  readonly debugKey = `debug:${this.id}`;
  lastSeen = Date.now();
  private readonly watches = new Map<string, Watch>();
  private readonly targets = new Map<string, ChatTarget>();
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
    private readonly deps: { chat: ChatService; bus: Bus; config: Config; kind: AppKind | undefined },
  ) {
    if (target.chatId) this.targets.set(target.chatId, target);
  }

  send(text: string): void {
    if (!this.closed && this.socket.readyState === 1) this.socket.send(text);
  }

  /** Frames are handled one at a time, in order, so a `stop` right after a question finds its turn. */
  receive(raw: string): void {
    this.lastSeen = Date.now();
    this.queue = this.queue.then(() => this.handle(raw)).catch((err: unknown) => this.reject(toAppError(err)));
  }

  private reject(err: AppError, chatId?: string): void {
    this.send(errorFrame(err, { chatId: chatId ?? this.target.chatId ?? '', flowId: this.target.app.id }));
  }

  private async handle(raw: string): Promise<void> {
    if (this.tokenExp * 1000 <= Date.now()) {
      this.reject(new AppError('unauthorized', 'Token expired'));
      this.close(1008, 'Unauthorized');
      return;
    }
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
    }
  }

  /** The conversation a frame is about: its own chat_id (and app) override the socket's. */
  private async targetFor(frame: ClientFrame): Promise<ChatTarget> {
    const chatId = frame.chatId ?? this.target.chatId;
    const appId = frame.appId ?? this.target.app.id;
    if (chatId === this.target.chatId && appId === this.target.app.id) return this.target;
    const cached = chatId ? this.targets.get(chatId) : undefined;
    if (cached && cached.app.id === appId) return cached;
    const target = await this.deps.chat.resolveTarget(this.principal, appId, { chatId, kind: this.deps.kind });
    if (chatId) this.targets.set(chatId, target);
    if ((frame.kind === 'regenerate' || frame.kind === 'resume') && !chatId) throw AppError.invalid([{ path: 'chat_id', message: 'required' }]);
    return target;
  }

  /** Starts sending the live events of `key` to this socket (idempotent). */
  watch(key: string): Watch {
    let w = this.watches.get(key);
    if (w) return w;
    const watch: Watch = { lastSent: -1, buffer: null, unsubscribe: () => undefined };
    watch.unsubscribe = this.deps.bus.subscribe(key, (e) => {
      if (watch.buffer) watch.buffer.push(e);
      else if (e.seq > watch.lastSent) {
        watch.lastSent = e.seq;
        this.send(encodeFrame(e));
      }
    });
    this.watches.set(key, watch);
    w = watch;
    return w;
  }

  /** Replays every event after `afterSeq`, then continues live — no gap, no duplicate. */
  async resume(key: string, afterSeq: number, announce: boolean): Promise<void> {
    const w = this.watch(key);
    w.buffer = [];
    try {
      const events = await this.deps.bus.replay(key, afterSeq);
      if (announce) {
        const message = events ? { resumed: true, from_seq: afterSeq } : { resumed: false, reason: 'the replay log no longer covers last_seq; reload the history' };
        this.send(outsideFrame('system', 'info', message, { chatId: key.startsWith('debug:') ? '' : key, flowId: this.target.app.id }));
      }
      // an explicit resume re-sends from afterSeq; a repeated question only sends what was not seen
      w.lastSent = announce ? afterSeq : Math.max(w.lastSent, afterSeq);
      for (const e of [...(events ?? []), ...w.buffer]) {
        if (e.seq > w.lastSent) {
          w.lastSent = e.seq;
          this.send(encodeFrame(e));
        }
      }
    } finally {
      w.buffer = null;
    }
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close(code, reason);
  }

  /** The socket is gone: stop watching; stop turns that must not outlive it. */
  dispose(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.unsubscribe();
    this.watches.clear();
    for (const key of this.started) {
      const debug = key.startsWith('debug:');
      if ((debug || !this.deps.config.chat.run_on_disconnect) && this.deps.chat.isRunning(key)) void this.deps.chat.stop(key);
    }
  }
}
