import { decodeJwt } from 'jose';
import type { WebSocket } from 'ws';
import type { AuthService } from '../auth/auth-service.ts';
import type { Bus } from '../bus/bus.ts';
import { errorFrame } from '../chat/bisheng-frames.ts';
import type { ChatService } from '../chat/chat-service.ts';
import type { Config } from '../config/config.ts';
import { AppError, toAppError } from '../domain/errors.ts';
import type { AppKind } from '../domain/types.ts';
import { WsSession } from './ws-session.ts';

/** What the gateway needs of an upgrade request (the HTTP layer hands it over). */
export interface UpgradeRequest {
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, unknown>;
  cookies: Record<string, string | undefined>;
  appId: string;
  /** the kind a path pins (`/assistant/chat/`, `/workflow/chat/`), if any */
  kind: AppKind | undefined;
}

export const ACCESS_COOKIE = 'access_token_cookie';

/**
 * Accepts WebSocket chats: authenticates, applies connection limits, resolves the app and
 * conversation, then hands frames to a WsSession. Runs heartbeats and idle/expiry checks.
 */
export class WsGateway {
  private readonly sessions = new Set<WsSession>();
  private readonly perUser = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private shuttingDown = false;

  constructor(private readonly deps: { config: Config; auth: AuthService; chat: ChatService; bus: Bus }) {
    this.timer = setInterval(() => this.heartbeat(), deps.config.chat.heartbeat_interval * 1000);
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  async accept(socket: WebSocket, req: UpgradeRequest): Promise<void> {
    const { config } = this.deps;
    // frames that arrive while the connect is checked are kept and handled in order afterwards
    const early: string[] = [];
    const onEarly = (data: Buffer) => early.push(data.toString('utf8'));
    socket.on('message', onEarly);
    const fail = (err: AppError, code: number, reason: string) => {
      socket.send(errorFrame(err));
      socket.close(code, reason);
    };
    if (this.shuttingDown) return fail(new AppError('busy', 'server shutting down'), 1001, 'going away');

    const { token, fromCookie } = this.token(req);
    const origin = req.headers.origin;
    if (fromCookie && typeof origin === 'string' && !config.http.allowed_origins.includes(origin)) {
      return fail(new AppError('unauthorized', 'Origin not allowed'), 1008, 'Unauthorized');
    }
    const principal = token ? await this.deps.auth.authenticate(token) : null;
    if (!principal || !token) return fail(new AppError('unauthorized'), 1008, 'Unauthorized');

    if (this.sessions.size >= config.chat.max_concurrent_sessions) return fail(new AppError('busy', 'server busy'), 1013, 'server busy');
    if ((this.perUser.get(principal.id) ?? 0) >= config.chat.max_connections_per_user) {
      return fail(new AppError('busy', 'too many connections'), 1013, 'too many connections');
    }

    const chatId = typeof req.query.chat_id === 'string' && req.query.chat_id !== '' ? req.query.chat_id : null;
    const versionId = req.query.version_id === undefined ? undefined : Number(req.query.version_id);
    let target;
    try {
      target = await this.deps.chat.resolveTarget(principal, req.appId, { chatId, kind: req.kind, versionId: Number.isSafeInteger(versionId) ? versionId : undefined });
    } catch (err) {
      const e = toAppError(err);
      const [code, reason] = closeFor(e);
      return fail(e, code, reason);
    }
    if (socket.readyState !== 1) return;

    const session = new WsSession(socket, principal, decodeJwt(token).exp ?? 0, target, { chat: this.deps.chat, bus: this.deps.bus, config, kind: req.kind });
    this.sessions.add(session);
    this.perUser.set(principal.id, (this.perUser.get(principal.id) ?? 0) + 1);
    socket.off('message', onEarly);
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) session.send(errorFrame(AppError.invalid([{ path: '', message: 'binary frames are not accepted' }])));
      else session.receive(data.toString('utf8'));
    });
    socket.on('pong', () => { session.lastSeen = Date.now(); });
    socket.on('close', () => {
      this.sessions.delete(session);
      const n = (this.perUser.get(principal.id) ?? 1) - 1;
      if (n > 0) this.perUser.set(principal.id, n);
      else this.perUser.delete(principal.id);
      session.dispose();
    });
    socket.on('error', () => undefined);

    if (target.chatId) {
      const lastSeq = Number(req.query.last_seq);
      if (req.query.last_seq !== undefined && Number.isSafeInteger(lastSeq) && lastSeq >= 0) await session.resume(target.chatId, lastSeq, true);
      else session.watch(target.chatId);
    }
    for (const raw of early) session.receive(raw);
  }

  private token(req: UpgradeRequest): { token: string | null; fromCookie: boolean } {
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && auth.startsWith('Bearer ')) return { token: auth.slice(7).trim(), fromCookie: false };
    if (typeof req.query.t === 'string' && req.query.t) return { token: req.query.t, fromCookie: false };
    const cookie = req.cookies[ACCESS_COOKIE];
    return cookie ? { token: cookie, fromCookie: true } : { token: null, fromCookie: false };
  }

  private heartbeat(): void {
    const { connection_timeout } = this.deps.config.chat;
    const now = Date.now();
    for (const s of this.sessions) {
      if (s.tokenExp * 1000 <= now) {
        s.send(errorFrame(new AppError('unauthorized', 'Token expired')));
        s.close(1008, 'Unauthorized');
      } else if (now - s.lastSeen > connection_timeout * 1000) {
        s.close(1000, 'idle timeout');
      } else if (s.socket.readyState === 1) {
        s.socket.ping();
      }
    }
  }

  /** Stops accepting, lets the chat core persist running turns, then closes every socket with 1001. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    clearInterval(this.timer);
    await this.deps.chat.shutdown();
    for (const s of this.sessions) s.close(1001, 'going away');
  }
}

/** Close code and reason of a connect failure (PROTOCOL.md §3 and §8.2). */
function closeFor(e: AppError): [number, string] {
  switch (e.code) {
    case 'unauthorized': return [1008, 'Unauthorized'];
    case 'not_found': case 'app_deleted': return [1008, 'app deleted'];
    case 'app_offline': return [1008, 'app not online'];
    case 'forbidden': return [1008, e.message === 'app kind mismatch' ? e.message : 'no permission'];
    case 'invalid_request': return [1008, 'invalid chat_id'];
    case 'app_unbuildable': return [1013, 'draft does not build'];
    case 'busy': return [1013, 'server busy'];
    default: return [1011, 'internal error'];
  }
}
