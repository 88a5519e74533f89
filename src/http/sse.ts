import type { FastifyReply } from 'fastify';
import { holdWrites } from '../ws/hold-writes.ts';

export interface SseOptions {
  /** what a keep-alive writes after `heartbeatMs` of silence (a comment, or Astron's ping event) */
  ping: string;
  heartbeatMs: number;
}

/** The client closed the connection (the socket is gone). */
export const isClientGone = (reply: FastifyReply): boolean => reply.raw.destroyed || reply.request.raw.socket?.destroyed === true;

/** `: ping` — a comment line; every SSE parser skips it. */
export const PING_COMMENT = ': ping\n\n';

/** One `data:` event; `data` must not hold a newline (JSON.stringify output never does). */
export const dataEvent = (data: string): string => `data: ${data}\n\n`;

/**
 * One `text/event-stream` response. The status and headers are committed by the first write (or
 * the first keep-alive), so a route may still answer with an HTTP error until it has something to
 * send. Keep-alives are written whenever the stream was silent for `heartbeatMs`.
 *
 * Events go straight to the raw response (the reply is hijacked when it opens, with the headers the
 * hooks set on it, the request id among them; the response hooks and the request log still run):
 * a stream handed to `reply.send()` costs a pipe and a Buffer per event (docs/decisions.md).
 */
/** Streams of this process now open (the /metrics gauge of SSE connections). */
export const sseStreams = { open: 0 };

export class SseStream {
  private isOpen = false;
  private timer: NodeJS.Timeout | undefined;
  private lastWrite = Date.now();
  private done = false;
  private clientGone = false;
  private gone: Array<() => void> = [];

  constructor(private readonly reply: FastifyReply, private readonly opts: SseOptions) {
    // `close` also follows a normal end; only a close before `end()` means the client went away
    reply.raw.on('close', () => this.lost());
    // it may have gone while the route was still awaiting something
    if (isClientGone(reply)) this.lost();
    this.arm(opts.heartbeatMs);
    sseStreams.open++;
  }

  private lost(): void {
    if (this.done) return;
    this.stop();
    this.clientGone = true;
    // nothing was sent: whatever the route does later must not try to answer a closed socket
    if (!this.isOpen) this.reply.hijack();
    for (const fn of this.gone.splice(0)) fn();
  }

  /** true once the status and headers were sent */
  get opened(): boolean {
    return this.isOpen;
  }

  /** true after `end()`, `abandon()` or the client going away: writes are dropped */
  get closed(): boolean {
    return this.done;
  }

  /** Runs `fn` when the client goes away before the stream ended (at once if it is gone already). */
  onClientGone(fn: () => void): void {
    if (this.clientGone) queueMicrotask(fn);
    else if (!this.done) this.gone.push(fn);
  }

  /** Commits status 200 and the SSE headers (idempotent). */
  open(): void {
    if (this.isOpen || this.done) return;
    this.isOpen = true;
    this.reply.hijack();
    const set = Object.entries(this.reply.getHeaders()).filter((h): h is [string, string | number | string[]] => h[1] !== undefined);
    this.reply.raw.writeHead(200, {
      ...Object.fromEntries(set),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // nginx and similar proxies buffer responses unless told not to
      'x-accel-buffering': 'no',
    });
  }

  write(text: string): void {
    if (this.done) return;
    this.open();
    if (this.reply.raw.destroyed) return;
    holdWrites(this.reply.raw);
    this.reply.raw.write(text);
    this.lastWrite = Date.now();
  }

  /** Writes `last` (if any) and ends the response. */
  end(last?: string): void {
    if (this.done) return;
    if (last) this.write(last);
    this.open();
    this.stop();
    this.reply.raw.end();
  }

  /** Gives the reply back unopened (the route answers with an error or another status instead). */
  abandon(): void {
    this.stop();
  }

  private stop(): void {
    if (!this.done) sseStreams.open--;
    this.done = true;
    clearTimeout(this.timer);
  }

  /** One timer, re-armed lazily: writes only stamp `lastWrite`. */
  private arm(ms: number): void {
    this.timer = setTimeout(() => {
      if (this.done) return;
      const due = this.lastWrite + this.opts.heartbeatMs;
      const now = Date.now();
      if (now >= due) {
        this.write(this.opts.ping);
        this.arm(this.opts.heartbeatMs);
      } else {
        this.arm(due - now);
      }
    }, ms);
    this.timer.unref();
  }
}
