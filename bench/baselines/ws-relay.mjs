#!/usr/bin/env node
// Minimal raw `ws` relay: each client text message {"content":"..."} (or any text) triggers one upstream
// streaming completion; each token goes back as {"type":"token","content":..,"ts":<mock_ts>}, then {"type":"done"}.
// Env: RELAY_HOST [127.0.0.1], RELAY_PORT [8200], UPSTREAM_URL [http://127.0.0.1:8100/v1/chat/completions]
import { WebSocketServer } from 'ws';
import { streamCompletion, UPSTREAM } from './upstream.mjs';

const port = Number(process.env.RELAY_PORT || 8200);
const wss = new WebSocketServer({ host: process.env.RELAY_HOST || '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', async (data) => {
    let content = data.toString();
    try { const o = JSON.parse(content); if (o && o.content !== undefined) content = o.content; } catch { /* plain text */ }
    const ac = new AbortController();
    const onClose = () => ac.abort();
    ws.once('close', onClose);
    try {
      await streamCompletion(content, (t, ts) => {
        if (ws.readyState === 1) ws.send(ts === undefined ? JSON.stringify({ type: 'token', content: t }) : `{"type":"token","content":${JSON.stringify(t)},"ts":${ts}}`);
      }, ac.signal);
      if (ws.readyState === 1) ws.send('{"type":"done"}');
    } catch (e) {
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: 'error', message: String(e.message || e) }));
    } finally { ws.off('close', onClose); }
  });
});
wss.on('listening', () => process.env.RELAY_QUIET !== '1' && console.log(`ws-relay on ws://127.0.0.1:${port} -> ${UPSTREAM} pid=${process.pid}`));
const stop = () => { wss.close(); for (const c of wss.clients) c.terminate(); setTimeout(() => process.exit(0), 200).unref(); };
process.on('SIGINT', stop); process.on('SIGTERM', stop);
