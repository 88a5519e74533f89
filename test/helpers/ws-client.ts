import WebSocket from 'ws';

export interface Frame {
  is_bot: number;
  message: any;
  type: string;
  category: string;
  message_id: number | string | null;
  chat_id: string;
  flow_id: string;
  extra: string;
  seq?: number;
  turn_id?: string;
  [k: string]: unknown;
}

/** A real `ws` client that records every frame and can wait for the ones a test expects. */
export class WsClient {
  readonly frames: Frame[] = [];
  /** the frames as they came, text */
  readonly raw: string[] = [];
  closeCode: number | null = null;
  closeReason = '';
  private waiters: Array<() => void> = [];
  private readonly closed: Promise<void>;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const text = data.toString();
      this.raw.push(text);
      this.frames.push(JSON.parse(text) as Frame);
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      socket.on('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        this.wake();
        resolve();
      });
    });
    socket.on('error', () => undefined);
  }

  /** Opens `path` (e.g. `/api/v1/chat/<app>?chat_id=…`) on the server at `baseUrl`; resolves once open (or closed). */
  static connect(baseUrl: string, path: string, options: { token?: string | null; headers?: Record<string, string> } = {}): Promise<WsClient> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const socket = new WebSocket(baseUrl.replace(/^http/, 'ws') + path, { headers });
    const client = new WsClient(socket);
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve(client));
      socket.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
      socket.once('close', () => resolve(client));
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Waits until `predicate` holds over the frames received so far. */
  async until(predicate: (frames: Frame[]) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.frames)) {
      if (this.closeCode !== null) throw new Error(`socket closed (${this.closeCode} ${this.closeReason}) before ${what}; frames: ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; frames: ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
    return this.frames;
  }

  /** Waits for the n-th (1-based, counted from `from`) `processing/close` frame and returns the frames of that turn. */
  async turn(from = this.frames.length, timeoutMs = 10_000): Promise<Frame[]> {
    await this.until((f) => f.slice(from).some((x) => x.category === 'processing' && x.type === 'close'), timeoutMs, 'processing/close');
    const rest = this.frames.slice(from);
    return rest.slice(0, rest.findIndex((x) => x.category === 'processing' && x.type === 'close') + 1);
  }

  /**
   * Waits until the server has handled every frame sent so far (it handles a socket's frames in
   * order, so a ping sent now is answered after them; what they sent came before the pong), then
   * drops the pong.
   */
  async settle(timeoutMs = 10_000): Promise<this> {
    const pongs = () => this.frames.filter((f) => f.type === 'pong').length;
    const n = pongs();
    this.send({ action: 'ping' });
    await this.until(() => pongs() > n, timeoutMs, 'pong');
    const at = this.frames.findLastIndex((f) => f.type === 'pong');
    this.frames.splice(at, 1);
    this.raw.splice(at, 1);
    return this;
  }

  async waitClose(timeoutMs = 10_000): Promise<{ code: number | null; reason: string }> {
    await Promise.race([this.closed, new Promise((r) => setTimeout(r, timeoutMs))]);
    return { code: this.closeCode, reason: this.closeReason };
  }

  close(): void {
    this.socket.close();
  }

  describe(): string {
    return this.frames.map((f) => `${f.seq ?? '-'}:${f.category}/${f.type}`).join(' ');
  }
}

/** `category/type` of each frame, for order assertions. */
export const kinds = (frames: Frame[]): string[] => frames.map((f) => `${f.category}/${f.type}`);

/** The streamed text of a turn: its processing/stream contents joined. */
export const streamedText = (frames: Frame[]): string =>
  frames.filter((f) => f.category === 'processing' && f.type === 'stream').map((f) => f.message.content as string).join('');

/** Closes every socket a test opened (emptying the list) and waits until they are closed. */
export async function closeAll(sockets: WsClient[]): Promise<void> {
  const open = sockets.splice(0);
  for (const ws of open) ws.close();
  await Promise.all(open.map((ws) => ws.waitClose(2000)));
}
