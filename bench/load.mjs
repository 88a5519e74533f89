#!/usr/bin/env node
// Bounded load generator for the bench (loopback targets only). One JSON config as the argument:
//   node bench/load.mjs '{"proto":"ws","url":"ws://127.0.0.1:8200","format":"relay","concurrency":100,"requests":200}'
// Prints one line `RESULT {json}` at the end.
//
// Stream mode: `concurrency` clients, `requests` turns in total in the measured phase (after
// `warmup` turns), each turn read to its end and VERIFIED (see Check below): the right text, the
// right number of tokens, in order, no duplicates, no error. WebSocket clients keep one socket and
// one conversation (chat_id) each and send the next question only after the turn closed; SSE clients
// send one request per turn over keep-alive connections.
// Idle mode (`idle: N`): opens N WebSocket connections, holds them `holdS` seconds, and reports the
// server's RSS delta per connection (and how many pings the clients saw: heartbeats are on).
//
// Config keys
//   proto        'ws' | 'sse'
//   url          ws:// URL ({{chat}} → a fresh 32-hex chat_id per connection) or the SSE POST URL
//   format       'parley-ws' (Bisheng frames) | 'openai' (chat.completion.chunk) | 'relay' (baseline relays)
//   body         SSE body kind: 'openai' (the mock) | 'parley' (model = app id, metadata.chat_id per client) | 'relay'
//   message      WS message kind: 'parley' ({"inputs":{"input":..}}) | 'relay' ({"content":..})
//   model, headers, concurrency, requests, warmup, durationS [120], timeoutS [60]
//   expectTokens [200], token [" tok"]   what every answer must be: token × expectTokens
//   pid          server PID to sample (RSS, CPU time) during the measured phase; `pids`: several (their CPU is summed, RSS is the first's)
//   urls         WS only: several URLs, client w asks through urls[w % n] (several instances)
//   watchUrls    WS only: client w also watches its conversation through watchUrls[w % n] (another instance): every
//                turn must reach the watcher whole; `busLatencyMs` is when the watcher got each token minus when the asker did
//   mockUrl      the mock's base URL: tagged turns' token timestamps are fetched from it (POST /mock/ts)
//   sampleTurns  [300] turns tagged for per-token latency
//   idle, holdS [10], ramp [500], warmIdle [100]   idle mode
import http from 'node:http';
import WebSocket from 'ws';
import { setTimeout as sleep } from 'node:timers/promises';
import { setMaxListeners } from 'node:events';
import { assertLoopback, hex32, jsonRequest, nowMs, procSample, procWatcher, Reservoir, SSEParser, summarize } from './lib.mjs';

const cfg = {
  durationS: 120, timeoutS: 60, expectTokens: 200, token: ' tok', sampleTurns: 300, holdS: 10, ramp: 500, warmIdle: 100, headers: {},
  ...JSON.parse(process.argv[2] || '{}'),
};
for (const u of [cfg.url, ...(cfg.urls ?? []), ...(cfg.watchUrls ?? [])]) assertLoopback(u.replace(/^ws/, 'http'));
const C = Number(cfg.concurrency || 1);
const N = Number(cfg.requests ?? 3 * C);
const W = Number(cfg.warmup ?? Math.min(C, 10));
const TL = cfg.token.length;
const EXPECT = cfg.token.repeat(cfg.expectTokens);
const RUN = Math.random().toString(36).slice(2, 8);
const hardStop = setTimeout(() => { console.error('load: hard stop reached'); process.exit(3); }, (cfg.durationS * 2 + 120) * 1000);
hardStop.unref();

// ---- verification of one turn, per stream format ----
/** Collects one turn's messages; text pieces carry tokens; finish() → null or the failure. */
class Check {
  constructor(format) {
    this.format = format;
    this.text = '';
    this.done = false;
    this.err = null;
    this.lastSeq = -Infinity;
    this.endCover = null;
    this.messageId = null;
    this.stops = 0;
  }
  /** → the text piece this message adds (tokens), '' when none */
  feed(data) {
    let o;
    if (this.format === 'openai' && data === '[DONE]') {
      if (this.done) this.fail('[DONE] twice');
      this.done = true;
      return '';
    }
    try { o = JSON.parse(data); } catch { this.fail(`not JSON: ${String(data).slice(0, 80)}`); return ''; }
    if (this.done && this.format !== 'openai') this.fail('message after the end of the turn');
    switch (this.format) {
      case 'openai': {
        if (o.error) { this.fail(`error event: ${o.error.message || JSON.stringify(o.error)}`); return ''; }
        const c = o.choices && o.choices[0];
        if (!c) return '';
        if (c.finish_reason) { this.stops++; if (c.finish_reason !== 'stop') this.fail(`finish_reason ${c.finish_reason}`); }
        const t = (c.delta && c.delta.content) || '';
        return this.piece(t);
      }
      case 'relay': {
        if (o.type === 'token') return this.piece(o.content || '');
        if (o.type === 'done') this.done = true;
        else if (o.type === 'error') this.fail(`error: ${o.message}`);
        return '';
      }
      case 'parley-ws': {
        if (o.seq !== undefined && o.seq !== null) {
          if (!(o.seq > this.lastSeq)) this.fail(`seq ${o.seq} after ${this.lastSeq} (duplicate or out of order)`);
          this.lastSeq = o.seq;
        }
        if (o.category === 'error') { this.fail(`error frame: ${o.message?.status_code} ${o.message?.status_message}`); return ''; }
        if (o.category === 'processing' && o.type === 'stream') return this.piece((o.message && o.message.content) || '');
        if (o.category === 'answer' && (o.type === 'end_cover' || o.type === 'end')) { this.endCover = o.message; this.messageId = o.message_id; }
        if (o.category === 'processing' && o.type === 'close') this.done = true;
        return '';
      }
      default: throw new Error(`unknown format ${this.format}`);
    }
  }
  piece(t) {
    if (t) this.text += t;
    return t;
  }
  fail(msg) {
    if (!this.err) this.err = msg;
  }
  finish() {
    if (this.err) return this.err;
    if (!this.done) return 'stream ended without its end marker';
    if (this.text !== EXPECT) {
      const n = this.text.length / TL;
      return this.text.length % TL === 0 && this.text === cfg.token.repeat(n) ? `wrong token count: ${n} (want ${cfg.expectTokens})` : `wrong text (${this.text.length} chars, want ${EXPECT.length})`;
    }
    if (this.format === 'openai' && this.stops !== 1) return `${this.stops} finish_reason chunks`;
    if (this.format === 'parley-ws') {
      if (this.endCover !== EXPECT) return `end_cover text differs from the stream (${String(this.endCover).length} chars)`;
      if (this.messageId === null || this.messageId === undefined) return 'answer not stored (end_cover without message_id)';
    }
    return null;
  }
}

/** Per-turn bookkeeping shared by WS and SSE: TTFT, gaps, receive time of every token of tagged turns. */
function turnState(rec, tag) {
  const s = { t0: nowMs(), ttft: null, last: null, chars: 0, tokens: 0, recv: tag ? [] : null, tag };
  s.onPiece = (piece) => {
    if (!piece) return;
    const t = nowMs();
    const before = Math.floor(s.chars / TL);
    s.chars += piece.length;
    const k = Math.floor(s.chars / TL) - before;
    if (k <= 0) return;
    if (s.ttft === null) s.ttft = t - s.t0;
    else if (rec && s.last !== null) rec.gap.push(t - s.last);
    s.last = t;
    s.tokens += k;
    if (rec) rec.tokens += k;
    if (s.recv) for (let i = 0; i < k; i++) s.recv.push(t);
  };
  return s;
}

function question(i, tag) {
  return `hello ${i}${tag ? ` [bench:${tag}]` : ''}`;
}

// ---- WebSocket ----
const wsOpts = { perMessageDeflate: false, headers: cfg.headers, handshakeTimeout: 30_000, maxPayload: 64 * 1024 * 1024 };
function connect(url = cfg.url.replace('{{chat}}', hex32())) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, wsOpts);
    ws.once('open', () => { ws.off('error', reject); ws.on('error', () => {}); resolve(ws); });
    ws.once('close', (code, reason) => { ws.closeInfo = `${code} ${reason}`; });
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      let b = '';
      res.on('data', (c) => { b += c; });
      res.on('end', () => reject(new Error(`HTTP ${res.statusCode} ${b.slice(0, 120)}`)));
    });
  });
}
async function openMany(n, ramp) {
  const socks = [];
  const errs = {};
  const fail = (e) => { const k = e.code || e.message; errs[k] = (errs[k] || 0) + 1; };
  for (let i = 0; i < n; i += ramp) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + ramp); j++) {
      const chat = hex32();
      const asks = cfg.urls ? cfg.urls[j % cfg.urls.length] : cfg.url;
      batch.push(connect(asks.replace('{{chat}}', chat)).then(async (s) => {
        // a client whose watcher could not connect does not run: every turn it runs is watched
        if (cfg.watchUrls) s.watcher = await settled(await connect(cfg.watchUrls[j % cfg.watchUrls.length].replace('{{chat}}', chat))).catch((e) => { s.terminate(); throw e; });
        socks[j] = s;
      }).catch(fail));
    }
    await Promise.all(batch);
  }
  return { socks: socks.filter(Boolean), errs };
}

/** A watcher is ready once its ping is answered: its instance watches the conversation from then on. */
function settled(ws) {
  return new Promise((resolve, reject) => {
    const to = setTimeout(() => reject(new Error('watcher: no pong')), 10_000);
    const onMsg = (d) => {
      if (!d.toString().includes('"pong"')) return;
      ws.off('message', onMsg); clearTimeout(to); resolve(ws);
    };
    ws.on('message', onMsg);
    ws.send(JSON.stringify({ action: 'ping' }));
  });
}

/** What a watcher gets of one turn: verified like the asker's, with every token's receive time. */
function watchTurn(ws) {
  return new Promise((resolve) => {
    const chk = new Check('parley-ws');
    const recv = [];
    const onMsg = (data) => {
      const piece = chk.feed(data.toString());
      const t = nowMs();
      for (let k = 0; k < piece.length / TL; k++) recv.push(t);
      if (chk.done || chk.err) finish(null);
    };
    const finish = (err) => {
      ws.off('message', onMsg); clearTimeout(to);
      resolve({ err: err || chk.finish(), recv });
    };
    const to = setTimeout(() => finish('watcher: turn timeout'), cfg.timeoutS * 1000);
    ws.on('message', onMsg);
  });
}
function wsMessage(i, tag) {
  const q = question(i, tag);
  return cfg.message === 'parley' ? JSON.stringify({ inputs: { input: q } }) : JSON.stringify({ content: q });
}
async function wsTurn(ws, i, rec, tag, signal) {
  if (!ws.watcher) return askTurn(ws, i, rec, tag, signal);
  const watched = watchTurn(ws.watcher);
  const r = await askTurn(ws, i, rec, tag, signal, true);
  const w = await watched;
  if (r.ok && w.err) return { ...r, ok: false, err: `watcher: ${w.err}` };
  if (rec && r.ok) for (let k = 0; k < Math.min(w.recv.length, r.recv.length); k++) rec.bus.push(w.recv[k] - r.recv[k]);
  return r;
}

function askTurn(ws, i, rec, tag, signal, keepRecv = false) {
  return new Promise((resolve) => {
    const chk = new Check(cfg.format);
    const s = turnState(rec, tag || keepRecv);
    let settled = false;
    const finish = (err) => {
      if (settled) return;
      settled = true;
      ws.off('message', onMsg); ws.off('close', onClose); clearTimeout(to); signal.removeEventListener('abort', onAbort);
      const e = err || chk.finish();
      resolve({ ok: !e, err: e, t0: s.t0, ttft: s.ttft, dur: nowMs() - s.t0, tokens: s.tokens, recv: s.recv, tag });
    };
    const onMsg = (data, isBinary) => {
      s.onPiece(chk.feed(isBinary ? '' : data.toString()));
      if (chk.done || chk.err) finish(null);
    };
    const onClose = (code, reason) => finish(`socket closed ${code} ${reason}`);
    const onAbort = () => finish('aborted at the deadline');
    const to = setTimeout(() => finish('turn timeout'), cfg.timeoutS * 1000);
    ws.on('message', onMsg);
    ws.once('close', onClose);
    signal.addEventListener('abort', onAbort, { once: true });
    ws.send(wsMessage(i, tag));
  });
}

// ---- SSE (node:http, keep-alive) ----
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 8192 });
function sseBody(i, w, tag) {
  const q = question(i, tag);
  if (cfg.body === 'relay') return JSON.stringify({ content: q });
  const b = { model: cfg.model || 'mock-gpt', stream: true, messages: [{ role: 'user', content: q }] };
  if (cfg.body === 'parley') b.metadata = { chat_id: workerChat[w] };
  return JSON.stringify(b);
}
const workerChat = [];
function sseTurn(i, w, rec, tag, signal) {
  return new Promise((resolve) => {
    const chk = new Check(cfg.format);
    const s = turnState(rec, tag);
    let settled = false;
    let req;
    const finish = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(to); signal.removeEventListener('abort', onAbort);
      const e = err || chk.finish();
      if (err && req) req.destroy();
      resolve({ ok: !e, err: e, t0: s.t0, ttft: s.ttft, dur: nowMs() - s.t0, tokens: s.tokens, recv: s.recv, tag });
    };
    const onAbort = () => finish('aborted at the deadline');
    const to = setTimeout(() => finish('turn timeout'), cfg.timeoutS * 1000);
    signal.addEventListener('abort', onAbort, { once: true });
    const body = sseBody(i, w, tag);
    req = http.request(cfg.url, {
      method: 'POST', agent,
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'content-length': Buffer.byteLength(body), ...cfg.headers },
    }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let t = '';
        res.on('data', (c) => { t += c; });
        res.on('end', () => finish(`HTTP ${res.statusCode}: ${t.slice(0, 160)}`));
        return;
      }
      const sse = new SSEParser((ev) => s.onPiece(chk.feed(ev.data)));
      res.on('data', (c) => sse.feed(c));
      res.on('end', () => finish(null));
      res.on('error', (e) => finish(`response error: ${e.message}`));
      res.on('aborted', () => finish('response aborted'));
    });
    // a reset on a kept-alive socket (the server closed it between two requests) or on a new one (connect / accept overflow)
    req.on('error', (e) => finish(`request error: ${e.code || e.message} (${req.reusedSocket ? 'reused keep-alive socket' : 'new connection'}${s.ttft === null ? ', before the first token' : ''})`));
    req.end(body);
  });
}

// ---- phases ----
async function runPhase(total, conc, rec, socks, sampleEvery) {
  let next = 0;
  const results = [];
  const ac = new AbortController();
  setMaxListeners(0, ac.signal);
  const timer = setTimeout(() => ac.abort(), cfg.durationS * 1000);
  const t0 = nowMs();
  await Promise.all(Array.from({ length: conc }, async (_, w) => {
    while (!ac.signal.aborted) {
      const i = next++;
      if (i >= total) break;
      const tag = rec && sampleEvery && i % sampleEvery === 0 ? `${RUN}-${i}` : null;
      let r;
      if (cfg.proto === 'ws') {
        const ws = socks[w];
        if (!ws || ws.readyState !== 1) { results.push({ ok: false, err: `socket not open${ws?.closeInfo ? ` (closed ${ws.closeInfo})` : ''}` }); break; }
        r = await wsTurn(ws, i, rec, tag, ac.signal);
      } else {
        r = await sseTurn(i, w, rec, tag, ac.signal);
      }
      results.push(r);
    }
  }));
  clearTimeout(timer);
  return { results, wall: nowMs() - t0, hitDeadline: ac.signal.aborted };
}

/**
 * Pairs the receive time of token i of each tagged turn with the mock's mock_ts of token i, and splits
 * its time to first token at the edges: the way in (question sent → request at the mock), the mock's
 * own time (request → first token) and the way back (first token → received); `edge` is in + back.
 */
async function tokenLatencies(results) {
  const tagged = results.filter((r) => r.ok && r.tag && r.recv);
  const out = { lat: [], first: [], inbound: [], mockOwn: [], edge: [] };
  if (!cfg.mockUrl || !tagged.length) return out;
  for (let i = 0; i < tagged.length; i += 500) {
    const part = tagged.slice(i, i + 500);
    const { ts, req = {} } = await jsonRequest(`${cfg.mockUrl}/mock/ts`, { method: 'POST', body: { tags: part.map((r) => r.tag) } });
    for (const r of part) {
      const m = ts[r.tag];
      if (!m) continue;
      const n = Math.min(m.length, r.recv.length);
      for (let k = 0; k < n; k++) out.lat.push(r.recv[k] - m[k]);
      if (!n) continue;
      out.first.push(r.recv[0] - m[0]);
      const arrived = req[r.tag];
      if (typeof arrived !== 'number') continue;
      out.inbound.push(arrived - r.t0);
      out.mockOwn.push(m[0] - arrived);
      out.edge.push(arrived - r.t0 + (r.recv[0] - m[0]));
    }
  }
  return out;
}

async function streamMode() {
  let socks = [];
  let connectErrors = {};
  const tc = nowMs();
  if (cfg.proto === 'ws') ({ socks, errs: connectErrors } = await openMany(C, Number(cfg.ramp)));
  for (let w = 0; w < C; w++) workerChat.push(hex32());
  const connectS = Math.round(nowMs() - tc) / 1000;
  const warm = W > 0 ? await runPhase(W, Math.min(C, W), null, socks, 0) : { results: [] };
  const warmupOk = warm.results.filter((r) => r.ok).length;
  const warmupErrors = {};
  for (const r of warm.results) if (!r.ok) warmupErrors[r.err] = (warmupErrors[r.err] || 0) + 1;
  const rec = { tokens: 0, gap: new Reservoir(), bus: new Reservoir() };
  const watch = procWatcher(cfg.pids ?? cfg.pid);
  watch.start();
  const sampleEvery = Math.max(1, Math.ceil(N / cfg.sampleTurns));
  const monoStart = nowMs();
  const { results, wall, hitDeadline } = await runPhase(N, C, rec, socks, sampleEvery);
  const monoEnd = nowMs();
  const server = watch.stop();
  const { lat, first, inbound, mockOwn, edge } = await tokenLatencies(results).catch((e) => { console.error(`load: token timestamps: ${e.message}`); return { lat: [], first: [], inbound: [], mockOwn: [], edge: [] }; });
  const ok = results.filter((r) => r.ok);
  const errors = {};
  for (const r of results) if (!r.ok) errors[r.err] = (errors[r.err] || 0) + 1;
  const notRun = N - results.length;
  if (notRun > 0) errors['not run (deadline or closed socket)'] = notRun;
  const out = {
    mode: 'stream', label: cfg.label || null, proto: cfg.proto, format: cfg.format, concurrency: C, connected: cfg.proto === 'ws' ? socks.length : C, connectErrors, connectS,
    warmup: W, warmupOk, warmupErrors,
    requests: N, completed: ok.length, failed: N - ok.length, errors, hitDeadline,
    wallS: Math.round(wall) / 1000,
    tokens: rec.tokens,
    tokensPerS: Math.round((rec.tokens / wall) * 1000),
    turnsPerS: Math.round((ok.length / wall) * 1000 * 100) / 100,
    ttftMs: summarize(ok.map((r) => r.ttft)),
    durationMs: summarize(ok.map((r) => r.dur)),
    interTokenGapMs: summarize(rec.gap.a),
    tokenLatencyMs: summarize(lat),
    busLatencyMs: cfg.watchUrls ? summarize(rec.bus.a) : null,
    firstTokenLatencyMs: summarize(first),
    // time to first token at the edges (tagged turns): way in, the mock's own time, way in + way back
    inboundMs: summarize(inbound),
    mockFirstMs: summarize(mockOwn),
    edgeTtftMs: summarize(edge),
    server,
    cpuMsPer1kTokens: server && rec.tokens ? Math.round((server.cpuMs / rec.tokens) * 1000 * 10) / 10 : null,
    monoStart, monoEnd, // CLOCK_MONOTONIC ms of the measured phase (to cut a server's CPU profile to it)
    when: new Date().toISOString(),
  };
  for (const s of socks) { s.watcher?.terminate(); s.terminate(); }
  agent.destroy();
  return out;
}

async function idleMode() {
  const n = Number(cfg.idle);
  // a few connections first, so lazily loaded code and first-use caches are not counted per connection
  if (cfg.warmIdle > 0) {
    const { socks } = await openMany(Number(cfg.warmIdle), Number(cfg.ramp));
    for (const s of socks) s.close();
    await sleep(1500);
  }
  const before = cfg.pid ? procSample(cfg.pid) : null;
  const t0 = nowMs();
  const { socks, errs } = await openMany(n, Number(cfg.ramp));
  const openS = Math.round(nowMs() - t0) / 1000;
  let pings = 0;
  let closed = 0;
  const closeCodes = {};
  for (const s of socks) {
    s.on('ping', () => { pings++; });
    s.once('close', (code) => { closed++; closeCodes[code] = (closeCodes[code] || 0) + 1; });
  }
  const watch = procWatcher(cfg.pid, 500);
  watch.start();
  await sleep(Number(cfg.holdS) * 1000);
  const server = watch.stop();
  const after = cfg.pid ? procSample(cfg.pid) : null;
  const per = before && after && socks.length ? (after.rss - before.rss) / socks.length : null;
  const mib = (b) => Math.round((b / 1048576) * 10) / 10;
  const out = {
    mode: 'idle', label: cfg.label || null, requested: n, opened: socks.length, failed: n - socks.length, errors: errs, openS,
    closedDuringHold: closed, closeCodes, pingsReceived: pings, holdS: Number(cfg.holdS),
    serverRssBeforeMiB: before ? mib(before.rss) : null, serverRssAfterMiB: after ? mib(after.rss) : null, serverRssPeakMiB: server?.rssPeakMiB ?? null,
    serverBytesPerConn: per === null ? null : Math.round(per),
    serverCpuPctHold: server?.cpuPct ?? null,
    clientRssMiB: Math.round(process.memoryUsage().rss / 1048576),
    when: new Date().toISOString(),
  };
  for (const s of socks) s.terminate();
  return out;
}

const result = await (cfg.idle ? idleMode() : streamMode());
console.log(`RESULT ${JSON.stringify(result)}`);
await sleep(50);
process.exit(0);
