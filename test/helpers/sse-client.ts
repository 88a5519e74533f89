/**
 * A small `text/event-stream` client over real fetch for the SSE tests: parses events per the SSE
 * spec (fields, comments, blank-line dispatch), records them, and can wait for what a test expects
 * or drop the connection mid-stream.
 */

export interface SseEvent {
  event: string | null;
  id: string | null;
  data: string;
}

export class SseReader {
  readonly events: SseEvent[] = [];
  readonly comments: string[] = [];
  /** resolves when the server ended the stream (or the reader was aborted) */
  readonly ended: Promise<void>;
  endedByServer = false;
  /** everything received, as text */
  raw = '';
  error: unknown = null;
  private waiters: Array<() => void> = [];

  private constructor(readonly response: Response, private readonly controller: AbortController) {
    this.ended = this.pump();
  }

  /** Sends the request; resolves with the response's reader (whatever the status). */
  static async open(url: string, init: RequestInit = {}): Promise<SseReader> {
    const controller = new AbortController();
    const res = await fetch(url, { ...init, signal: controller.signal });
    return new SseReader(res, controller);
  }

  private async pump(): Promise<void> {
    const body = this.response.body;
    if (!body) return;
    const decoder = new TextDecoder();
    let buffer = '';
    let current: SseEvent = { event: null, id: null, data: '' };
    let hasData = false;
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
        const text = decoder.decode(chunk, { stream: true });
        this.raw += text;
        buffer += text;
        let nl: number;
        while ((nl = buffer.search(/\r\n|\n|\r/)) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
          if (line === '') {
            if (hasData) this.events.push(current);
            current = { event: null, id: null, data: '' };
            hasData = false;
            this.wake();
            continue;
          }
          if (line.startsWith(':')) {
            this.comments.push(line.slice(1).trim());
            this.wake();
            continue;
          }
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') {
            current.data = hasData ? `${current.data}\n${value}` : value;
            hasData = true;
          } else if (field === 'event') current.event = value;
          else if (field === 'id') current.id = value;
        }
      }
      this.endedByServer = true;
    } catch (err) {
      this.error = err;
    } finally {
      this.wake();
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** The `data` of every event parsed as JSON (`[DONE]` and other non-JSON data are skipped). */
  json<T = any>(): T[] {
    return this.events.flatMap((e) => {
      try {
        return [JSON.parse(e.data) as T];
      } catch {
        return [];
      }
    });
  }

  /** The whole body parsed as JSON (error answers), once the response ended. */
  async body<T = any>(): Promise<T> {
    await this.finish();
    return JSON.parse(this.raw) as T;
  }

  /** Waits until `predicate` holds over the events so far; fails if the stream ends first. */
  async until(predicate: (r: SseReader) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let done = false;
    void this.ended.then(() => { done = true; });
    while (!predicate(this)) {
      if (done) throw new Error(`stream ended before ${what}; events: ${this.events.map((e) => e.data.slice(0, 80)).join(' | ')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  /** Waits for the server to end the stream. */
  async finish(timeoutMs = 10_000): Promise<this> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.ended, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('stream did not end')), timeoutMs); })]);
    clearTimeout(timer);
    return this;
  }

  /** Drops the connection (the client going away mid-stream). */
  abort(): void {
    this.controller.abort();
  }
}
