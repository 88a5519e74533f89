#!/usr/bin/env node
// Minimal node:http SSE relay. POST /chat {"content":"..."} -> one upstream streaming completion,
// re-framed as `data: {"type":"token","content":..,"ts":<mock_ts>}` ... `data: {"type":"done"}`.
// GET /events -> an idle event stream (`: connected` then nothing but a comment every 30 s), for
// memory-per-idle-connection measurements.
// Env: RELAY_HOST [127.0.0.1], RELAY_PORT [8300], UPSTREAM_URL [http://127.0.0.1:8100/v1/chat/completions]
import http from 'node:http';
import { streamCompletion, UPSTREAM } from './upstream.mjs';

const port = Number(process.env.RELAY_PORT || 8300);
const idle = new Set();
setInterval(() => { for (const r of idle) r.write(': ping\n\n'); }, 30_000).unref();
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/events') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write(': connected\n\n');
    idle.add(res); res.on('close', () => idle.delete(res));
    return;
  }
  if (req.method !== 'POST' || req.url !== '/chat') { res.writeHead(404).end(); return; }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { body += c; });
  req.on('end', async () => {
    let content = body;
    try { const o = JSON.parse(body); if (o && o.content !== undefined) content = o.content; } catch { /* plain text */ }
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.socket?.setNoDelay(true);
    try {
      await streamCompletion(content, (t, ts) => {
        res.write(ts === undefined ? `data: ${JSON.stringify({ type: 'token', content: t })}\n\n` : `data: {"type":"token","content":${JSON.stringify(t)},"ts":${ts}}\n\n`);
      }, ac.signal);
      res.end('data: {"type":"done"}\n\n');
    } catch (e) {
      if (!res.writableEnded) res.end(`data: ${JSON.stringify({ type: 'error', message: String(e.message || e) })}\n\n`);
    }
  });
});
server.keepAliveTimeout = 65_000; server.headersTimeout = 66_000; server.requestTimeout = 0;
server.listen(port, process.env.RELAY_HOST || '127.0.0.1', 1 << 12, () => process.env.RELAY_QUIET !== '1' && console.log(`sse-relay on http://127.0.0.1:${port} -> ${UPSTREAM} pid=${process.pid}`));
const stop = () => { server.close(); server.closeAllConnections?.(); setTimeout(() => process.exit(0), 200).unref(); };
process.on('SIGINT', stop); process.on('SIGTERM', stop);
