import { decodeJwt } from 'jose';
import type { WebSocket } from 'ws';
import type { AuthService } from '../auth/auth-service.ts';
import type { Bus } from '../bus/bus.ts';
import { errorFrame } from '../wire/bisheng-frames.ts';
import { randomUUID } from 'node:crypto';
import type { ChatService } from '../chat/chat-service.ts';
import type { ConnectionCounter } from '../chat/rate-limiter.ts';
import type { ChatTarget } from '../chat/targets.ts';
import type { Config } from '../config/config.ts';
import type { Clock } from '../domain/clock.ts';
import { AppError, ERROR_TABLE, toAppError } from '../domain/errors.ts';
import type { AppKind, Principal } from '../domain/types.ts';
import type { Corkable } from './hold-writes.ts';
import { WsSession } from './ws-session.ts';

/** What the gateway needs of an upgrade request (the HTTP layer hands it over). */
export interface UpgradeRequest {
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, unknown>;
  cookies: Record<string, string | undefined>;
  appId: string;
  /** the kind a path pins (`/assistant/chat/`, `/workflow/chat/`), if any */
  kind: AppKind | undefined;
  /** the connection under the WebSocket: the session holds its writes until the loop comes round (hold-writes.ts) */
  transport?: Corkable | undefined;
}

export const ACCESS_COOKIE = 'access_token_cookie';

const OPEN = 1;

/** A connect failure: the error frame to send and the close code and reason (PROTOCOL.md §3, §8.2). */
class Refusal extends Error {
  readonly code: number;
  readonly reason: string;

  /** @param close the close code and reason; by default, what the error catalogue says for its code */
  constructor(readonly error: AppError, close: readonly [number, string] = ERROR_TABLE[error.code].close) {
    super(close[1]);
    [this.code, this.reason] = close;
  }
}

const goingAway = () => new Refusal(new AppError('busy', 'server shutting down'), [1001, 'going away']);

/**
 * Accepts WebSocket chats: authenticates, applies connection limits, resolves the app and
 * conversation, then hands frames to a WsSession. Runs heartbeats and idle/expiry checks.
 */
export class WsGateway {
  /** open sessions and their connection ids */
  private readonly sessions = new Map<WsSession, string>();
  /** sockets admitted or being admitted, in total and per user: a slot is held from the cap check on, so a burst of connects cannot overshoot */
  private slots = 0;
  private readonly perUser = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private shutdownDone: Promise<void> | null = null;

  constructor(private readonly deps: {
    config: Config; auth: AuthService; chat: ChatService; bus: Bus; clock: Clock;
    /** connections per user across instances, when several share them */
    connections?: ConnectionCounter | undefined;
    /** where unexpected errors are logged (their cause never reaches the client) */
    log?: { error(obj: object, msg: string): void };
  }) {
    this.timer = setInterval(() => this.heartbeat(), deps.config.chat.heartbeat_interval * 1000);
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Never rejects: an unexpected failure closes the socket with 1011 and is logged. */
  async accept(socket: WebSocket, req: UpgradeRequest): Promise<void> {
    this.explainOversizedFrames(socket);
    // frames that arrive while the connect is checked are kept and handled in order afterwards
    const early: Array<{ data: Buffer; isBinary: boolean }> = [];
    const onEarly = (data: Buffer, isBinary: boolean) => early.push({ data, isBinary });
    socket.on('message', onEarly);
    socket.on('error', () => undefined);
    let slot: Principal | null = null;
    const connectionId = randomUUID();
    try {
      const { principal, tokenExp } = await this.authenticate(req);
      this.reserve(principal);
      slot = principal;
      const shared = this.deps.connections;
      if (shared && !(await shared.open(principal.id, connectionId, this.deps.config.chat.max_connections_per_user))) {
        throw new Refusal(new AppError('busy', 'too many connections'), [1013, 'too many connections']);
      }
      const target = await this.resolve(principal, req);
      if (this.shutdownDone) throw goingAway();
      if (socket.readyState !== OPEN) {
        slot = null;
        this.release(principal, connectionId);
        return;
      }
      slot = null; // from here the socket's close releases it
      const session = this.open(socket, principal, tokenExp, target, req, connectionId);
      if (target.chatId) {
        const lastSeq = Number(req.query.last_seq);
        if (req.query.last_seq !== undefined && Number.isSafeInteger(lastSeq) && lastSeq >= 0) await session.resume(target.chatId, lastSeq, true);
        else {
          session.watch(target.chatId);
          // its first frame is handled once the socket gets the turns other instances run
          await this.deps.bus.whenSubscribed(target.chatId);
        }
      }
      // the early frames first, then the live ones (nothing can arrive in between: no await from here)
      socket.off('message', onEarly);
      for (const { data, isBinary } of early) session.receiveRaw(data, isBinary);
      socket.on('message', (data: Buffer, isBinary: boolean) => session.receiveRaw(data, isBinary));
    } catch (err) {
      if (slot) this.release(slot, connectionId);
      const refusal = err instanceof Refusal ? err : this.unexpected(err);
      if (socket.readyState === OPEN) {
        socket.send(errorFrame(refusal.error));
        socket.close(refusal.code, refusal.reason);
      }
    }
  }

  private unexpected(err: unknown): Refusal {
    // a connect still checked while the server shuts down may find the database closed
    if (this.shutdownDone) return goingAway();
    const e = toAppError(err);
    if (e.code === 'internal') this.logError(err, 'websocket connect failed');
    return new Refusal(e, ERROR_TABLE.internal.close);
  }

  private logError(err: unknown, msg: string): void {
    if (this.deps.log) this.deps.log.error({ err }, msg);
    else console.error(msg, err);
  }

  /**
   * `ws` answers a frame over maxPayload with a bare 1009; give the client the documented error
   * frame and reason (PROTOCOL.md §3) before the close frame goes out.
   */
  private explainOversizedFrames(socket: WebSocket): void {
    const close = socket.close.bind(socket);
    const limit = this.deps.config.chat.max_frame_bytes;
    socket.close = (code?: number, reason?: string | Buffer) => {
      if (code === 1009 && reason === undefined && socket.readyState === OPEN) {
        socket.send(errorFrame(new AppError('too_large', `Frame larger than ${limit} bytes`)));
        close(...ERROR_TABLE.too_large.close);
        return;
      }
      close(code, reason);
    };
  }

  /** The first valid token of the header, `t` and the cookie (PROTOCOL.md §3: any valid one). */
  private async authenticate(req: UpgradeRequest): Promise<{ principal: Principal; tokenExp: number }> {
    if (this.shutdownDone) throw goingAway();
    const candidates: string[] = [];
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && auth.startsWith('Bearer ')) candidates.push(auth.slice(7).trim());
    if (typeof req.query.t === 'string' && req.query.t) candidates.push(req.query.t);
    const cookie = req.cookies[ACCESS_COOKIE];
    // a cookie is sent by the browser whatever page opens the socket: only an allowed page may use it
    // (cross-site WebSocket hijacking); browsers always send Origin, so a missing one is refused too
    const origin = req.headers.origin;
    if (cookie && typeof origin === 'string' && this.deps.config.http.allowed_origins.includes(origin)) candidates.push(cookie);
    for (const token of candidates) {
      const principal = await this.deps.auth.authenticate(token);
      if (principal) return { principal, tokenExp: decodeJwt(token).exp ?? 0 };
    }
    const message = cookie && candidates.length === 0 ? 'Origin not allowed for cookie authentication' : undefined;
    throw new Refusal(new AppError('unauthorized', message));
  }

  private reserve(p: Principal): void {
    const { config } = this.deps;
    if (this.slots >= config.chat.max_concurrent_sessions) throw new Refusal(new AppError('busy', 'server busy'));
    const mine = this.perUser.get(p.id) ?? 0;
    if (mine >= config.chat.max_connections_per_user) throw new Refusal(new AppError('busy', 'too many connections'), [1013, 'too many connections']);
    this.slots++;
    this.perUser.set(p.id, mine + 1);
  }

  private release(p: Principal, connectionId: string): void {
    this.deps.connections?.close(p.id, connectionId);
    this.slots--;
    const n = (this.perUser.get(p.id) ?? 1) - 1;
    if (n > 0) this.perUser.set(p.id, n);
    else this.perUser.delete(p.id);
  }

  private async resolve(principal: Principal, req: UpgradeRequest): Promise<ChatTarget> {
    const chatId = typeof req.query.chat_id === 'string' && req.query.chat_id !== '' ? req.query.chat_id : null;
    try {
      return await this.deps.chat.resolveTarget(principal, req.appId, { chatId, kind: req.kind, versionId: versionOf(req) });
    } catch (err) {
      if (!(err instanceof AppError) || err.code === 'internal') throw this.unexpected(err);
      throw new Refusal(err);
    }
  }

  private open(socket: WebSocket, principal: Principal, tokenExp: number, target: ChatTarget, req: UpgradeRequest, connectionId: string): WsSession {
    const session = new WsSession(socket, principal, tokenExp, target, {
      chat: this.deps.chat, bus: this.deps.bus, config: this.deps.config, clock: this.deps.clock, kind: req.kind, versionId: versionOf(req), transport: req.transport, onError: (err) => this.logError(err, 'websocket frame failed'),
    });
    this.sessions.set(session, connectionId);
    socket.on('pong', () => session.alive());
    socket.on('close', () => {
      this.sessions.delete(session);
      this.release(principal, connectionId);
      session.dispose();
    });
    return session;
  }

  /**
   * Every heartbeat_interval: close sockets whose token expired (10401, 1008); terminate dead peers
   * (no pong and no frame for two intervals); close idle sockets (no client frame and no turn
   * activity for connection_timeout, 1000 "idle timeout"); ping the rest. Protocol pongs prove the
   * peer is there, not that anyone uses the socket, so they do not count as activity.
   */
  private heartbeat(): void {
    const { connection_timeout, heartbeat_interval } = this.deps.config.chat;
    const now = this.deps.clock.now();
    for (const s of this.sessions.keys()) {
      if (s.tokenExp * 1000 <= now) {
        s.expire();
      } else if (now - s.lastAlive > 2 * heartbeat_interval * 1000) {
        s.terminate();
      } else if (s.busy()) {
        // a socket watching a running turn is never dropped mid-answer; its idle clock starts after the turn
        s.lastActive = now;
        s.ping();
      } else if (now - s.lastActive > connection_timeout * 1000) {
        s.close(1000, 'idle timeout');
      } else {
        s.ping();
      }
    }
    this.deps.connections?.refresh([...this.sessions].map(([s, connectionId]) => ({ userId: s.principal.id, connectionId })));
  }

  /**
   * Stops accepting, lets the chat core stop and persist running turns (their stop frames reach
   * the sockets), then closes every socket with 1001. Idempotent.
   */
  shutdown(): Promise<void> {
    this.shutdownDone ??= (async () => {
      clearInterval(this.timer);
      await this.deps.chat.shutdown();
      for (const s of this.sessions.keys()) s.close(1001, 'going away');
    })();
    return this.shutdownDone;
  }
}

function versionOf(req: UpgradeRequest): number | undefined {
  const v = req.query.version_id === undefined ? undefined : Number(req.query.version_id);
  return Number.isSafeInteger(v) ? v : undefined;
}
