// Shared helpers of the bench: monotonic clock, percentiles, an SSE parser, /proc sampling of the
// server under test, and small HTTP helpers. No dependencies beyond Node itself.
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** CLOCK_MONOTONIC in ms: the same clock in every process of the host (the mock stamps tokens with it). */
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

export function pct(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

const r3 = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 1000);

/** {n, mean, p50, p90, p99, max} of an array of numbers */
export function summarize(arr) {
  if (!arr.length) return { n: 0, mean: null, p50: null, p90: null, p99: null, max: null };
  const s = Float64Array.from(arr).sort();
  let sum = 0;
  for (const x of s) sum += x;
  return { n: s.length, mean: r3(sum / s.length), p50: r3(pct(s, 50)), p90: r3(pct(s, 90)), p99: r3(pct(s, 99)), max: r3(s[s.length - 1]) };
}

export function median(xs) {
  const s = xs.filter((x) => x !== null && x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A bounded uniform sample, so millions of latency samples do not blow up the load generator. */
export class Reservoir {
  constructor(cap = 200_000) {
    this.cap = cap;
    this.a = [];
    this.seen = 0;
  }
  push(x) {
    this.seen++;
    if (this.a.length < this.cap) this.a.push(x);
    else {
      const j = Math.floor(Math.random() * this.seen);
      if (j < this.cap) this.a[j] = x;
    }
  }
}

/** Incremental SSE parser (WHATWG rules, enough for benchmarking): feed() strings, get {event, data}. */
export class SSEParser {
  constructor(onEvent) {
    this.buf = '';
    this.onEvent = onEvent;
    this.data = [];
    this.event = '';
  }
  feed(chunk) {
    this.buf += chunk;
    let start = 0;
    let nl;
    while ((nl = this.buf.indexOf('\n', start)) !== -1) {
      let line = this.buf.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (this.data.length || this.event) this.onEvent({ event: this.event || 'message', data: this.data.join('\n') });
        this.data = [];
        this.event = '';
        continue;
      }
      if (line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c === -1 ? line : line.slice(0, c);
      let val = c === -1 ? '' : line.slice(c + 1);
      if (val[0] === ' ') val = val.slice(1);
      if (field === 'data') this.data.push(val);
      else if (field === 'event') this.event = val;
    }
    this.buf = this.buf.slice(start);
  }
}

// ---- /proc sampling of server PIDs (Linux) ----
const CLK_TCK = 100;
export function procSample(pid) {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const cpuMs = ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK; // utime + stime
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number((status.match(/VmRSS:\s+(\d+)/) || [])[1] || 0) * 1024;
    return { cpuMs, rss };
  } catch {
    return null;
  }
}

/** Samples a PID's RSS and CPU time; stop() → {rssStartMiB, rssPeakMiB, rssEndMiB, cpuMs, cpuPct} */
export function procWatcher(pid, intervalMs = 100) {
  let first = null;
  let last = null;
  let peak = 0;
  let timer;
  let t0;
  const pids = Array.isArray(pid) ? pid : [pid];
  const tick = () => {
    if (!pids[0]) return;
    const all = pids.map((p) => procSample(p));
    if (all.some((x) => !x)) return;
    // several processes (instances): their CPU summed, the first one's memory
    const s = { ...all[0], cpuMs: all.reduce((n, x) => n + x.cpuMs, 0) };
    if (!first) first = s;
    last = s;
    if (s.rss > peak) peak = s.rss;
  };
  return {
    start() {
      t0 = nowMs();
      tick();
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      tick();
      if (!first) return null;
      const dt = nowMs() - t0;
      const mib = (b) => Math.round((b / 1048576) * 10) / 10;
      const cpu = last.cpuMs - first.cpuMs;
      return { rssStartMiB: mib(first.rss), rssPeakMiB: mib(peak), rssEndMiB: mib(last.rss), cpuMs: Math.round(cpu), cpuPct: Math.round((cpu / dt) * 1000) / 10 };
    },
  };
}

/** Resolves once something accepts TCP connections on host:port (or rejects after timeoutMs). */
export async function waitPort(port, host = '127.0.0.1', timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const ok = await new Promise((resolve) => {
      const s = net.connect({ port, host }, () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** JSON over HTTP (fetch); throws on a non-2xx status. */
export async function jsonRequest(url, { method = 'GET', body, headers = {} } = {}) {
  const res = await fetch(url, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    signal: globalThis.AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

export const hex32 = () => crypto.randomUUID().replaceAll('-', '');

/** Only loopback targets: the bench never sends load anywhere else. */
export function assertLoopback(url) {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (!(host === 'localhost' || host === '::1' || /^127\./.test(host))) throw new Error(`refusing non-loopback target ${host}`);
}
