// Upstream client shared by the baseline relays: one streaming POST to an OpenAI-compatible
// /v1/chat/completions per user message (node:http, keep-alive); calls onToken(content, mock_ts) per
// content delta. The relays are the physical limit a Node gateway reaches on this machine.
import http from 'node:http';
import { SSEParser } from '../lib.mjs';

export const UPSTREAM = process.env.UPSTREAM_URL || 'http://127.0.0.1:8100/v1/chat/completions';
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 4096 });

export function streamCompletion(content, onToken, signal) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ model: process.env.UPSTREAM_MODEL || 'mock-gpt', stream: true, messages: [{ role: 'user', content: String(content) }] });
    const req = http.request(UPSTREAM, {
      method: 'POST', agent, signal,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: 'Bearer sk-mock' },
    }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let t = '';
        res.on('data', (c) => { t += c; });
        res.on('end', () => reject(new Error(`upstream HTTP ${res.statusCode}: ${t.slice(0, 200)}`)));
        return;
      }
      const sse = new SSEParser((ev) => {
        if (ev.data === '[DONE]') return;
        const o = JSON.parse(ev.data);
        const t = o.choices?.[0]?.delta?.content;
        if (t) onToken(t, o.mock_ts);
      });
      res.on('data', (c) => sse.feed(c));
      res.on('end', resolve);
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('upstream aborted')));
    });
    req.on('error', reject);
    req.end(body);
  });
}
