#!/usr/bin/env node
// Mock OpenAI-compatible LLM server (no dependencies, Node >= 18).
//
//   POST /v1/chat/completions   stream:true  -> SSE `data: {chat.completion.chunk}` ... `data: [DONE]`
//                               stream:false -> one chat.completion JSON
//   POST /v1/completions        (legacy, same knobs, for clients that still use it)
//   GET  /v1/models, GET /v1/models/:id, GET /healthz
//
// Env knobs (defaults in brackets):
//   MOCK_HOST [127.0.0.1]   MOCK_PORT [8100]
//   MOCK_TOKENS [200]        tokens per reply
//   MOCK_DELAY_MS [0]        delay between tokens (0 = write as fast as the socket takes them,
//                            yielding to the event loop every MOCK_BATCH tokens)
//   MOCK_TTFT_MS [0]         delay before the first content token (after the role chunk)
//   MOCK_BATCH [16]          with DELAY 0: tokens written per event-loop turn
//   MOCK_TOKEN [" tok"]      text of one token (each chunk carries exactly one token)
//   MOCK_MODEL [mock-gpt]    model id reported by /v1/models and in responses
//   MOCK_QUIET [0]           1 = no startup log line
// Per-request overrides (handy for benchmarks, ignored by real APIs): request body fields
//   mock_tokens, mock_delay_ms, mock_ttft_ms, or headers x-mock-tokens / x-mock-delay-ms / x-mock-ttft-ms.
//   `max_tokens` / `max_completion_tokens`, when given and smaller, cap the token count.
//
// Each token chunk carries a `mock_ts` field: CLOCK_MONOTONIC in ms (float, process.hrtime-based), which is
// the same clock in every process of the host, so a load generator on the same host can compute the
// end-to-end per-token latency through a relay (recv_time - mock_ts).
// Set MOCK_TS=0 to drop it and keep the chunk byte-for-byte OpenAI-shaped.
//
// Edge timing for relays that do not pass `mock_ts` through (Parley): when the last user message holds
// `[bench:TAG]`, the mock also keeps the mock_ts of each token of that reply under TAG;
// `POST /mock/ts {"tags":[...]}` answers {"ts": {TAG: [mock_ts, ...]}, "req": {TAG: arrival}} and forgets
// them (arrival: the same clock when the request reached the mock's handler). A load generator tags a
// sample of its turns and pairs its receive time of token i with mock_ts[i]; with the arrival it splits
// the time to first token into the way in, the mock's own time and the way back.
// At most MOCK_TAG_CAP [20000] tagged replies are kept (oldest dropped first).
import http from 'node:http';
import { setImmediate } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';

const env = process.env;
const HOST = env.MOCK_HOST || '127.0.0.1';
const PORT = Number(env.MOCK_PORT || 8100);
const TOKENS = Number(env.MOCK_TOKENS ?? 200);
const DELAY = Number(env.MOCK_DELAY_MS ?? 0);
const TTFT = Number(env.MOCK_TTFT_MS ?? 0);
const BATCH = Math.max(1, Number(env.MOCK_BATCH ?? 16));
const TOKEN = env.MOCK_TOKEN ?? ' tok';
const MODEL = env.MOCK_MODEL || 'mock-gpt';
const WITH_TS = env.MOCK_TS !== '0';

const now = () => Number(process.hrtime.bigint()) / 1e6; // monotonic ms, host-wide clock
let seq = 0;
const TAG_CAP = Number(env.MOCK_TAG_CAP || 20000);
const tagTs = new Map(); // tag -> [mock_ts of token 0, 1, ...]
const tagReq = new Map(); // tag -> when its request reached the handler (same clock)
const TAG_RE = /\[bench:([A-Za-z0-9_.-]{1,80})\]/;
function tagOf(body) {
  const msgs = Array.isArray(body.messages) ? body.messages : [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    const m = msgs[i];
    if (m && m.role === 'user') {
      const text = typeof m.content === 'string' ? m.content : Array.isArray(m.content) ? m.content.map((p) => p.text || '').join('\n') : '';
      const hit = TAG_RE.exec(text);
      return hit ? hit[1] : null;
    }
  }
  return typeof body.prompt === 'string' ? (TAG_RE.exec(body.prompt) || [])[1] || null : null;
}
const stats = { requests: 0, streams: 0, tokens: 0, active: 0 };

function num(v, d) {
  const n = Number(v);
  return v === undefined || v === null || v === '' || Number.isNaN(n) ? d : n;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function promptTokens(body) {
  // crude: ~1 token per 4 chars of all message contents
  let chars = 0;
  for (const m of body.messages || []) {
    if (typeof m.content === 'string') chars += m.content.length;
    else if (Array.isArray(m.content)) for (const p of m.content) chars += (p.text || '').length;
  }
  if (typeof body.prompt === 'string') chars += body.prompt.length;
  return Math.max(1, Math.ceil(chars / 4));
}

function knobs(req, body) {
  let n = num(body.mock_tokens ?? req.headers['x-mock-tokens'], TOKENS);
  const cap = body.max_completion_tokens ?? body.max_tokens;
  if (cap !== undefined && cap !== null && Number(cap) > 0) n = Math.min(n, Number(cap));
  return {
    n,
    delay: num(body.mock_delay_ms ?? req.headers['x-mock-delay-ms'], DELAY),
    ttft: num(body.mock_ttft_ms ?? req.headers['x-mock-ttft-ms'], TTFT),
  };
}

async function streamChat(req, res, body, chat, arrived) {
  const { n, delay, ttft } = knobs(req, body);
  const id = (chat ? 'chatcmpl-mock' : 'cmpl-mock') + (++seq).toString(36);
  const created = Math.floor(Date.now() / 1000);
  const model = body.model || MODEL;
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const includeUsage = body.stream_options && body.stream_options.include_usage;
  let closed = false;
  res.on('close', () => { closed = true; });
  const tag = WITH_TS ? tagOf(body) : null;
  let tagged = null;
  if (tag) {
    tagged = [];
    tagTs.set(tag, tagged);
    tagReq.set(tag, arrived);
    if (tagTs.size > TAG_CAP) {
      const oldest = tagTs.keys().next().value;
      tagTs.delete(oldest);
      tagReq.delete(oldest);
    }
  }
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-request-id': id,
  });
  if (res.socket) res.socket.setNoDelay(true);
  stats.streams++; stats.active++;
  const frame = (obj) => 'data: ' + JSON.stringify(obj) + '\n\n';
  const chunk = (delta, finish, i) => {
    const o = chat
      ? { id, object, created, model, system_fingerprint: 'fp_mock',
          choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] }
      : { id, object, created, model, choices: [{ index: 0, text: delta.content ?? '', logprobs: null, finish_reason: finish }] };
    if (includeUsage) o.usage = null;
    if (WITH_TS && i !== undefined) {
      o.mock_ts = now();
      if (tagged) tagged.push(o.mock_ts);
    }
    return frame(o);
  };
  // role chunk first (as OpenAI does)
  if (chat) res.write(chunk({ role: 'assistant', content: '', refusal: null }, null));
  if (ttft > 0) await sleep(ttft);
  try {
    for (let i = 0; i < n && !closed; i++) {
      const ok = res.write(chunk({ content: TOKEN }, null, i));
      stats.tokens++;
      if (delay > 0) await sleep(delay);
      else if (!ok) await new Promise((r) => res.once('drain', r));
      else if ((i + 1) % BATCH === 0) await new Promise((r) => setImmediate(r));
    }
    if (!closed) {
      res.write(chunk({}, 'stop'));
      if (includeUsage) {
        const pt = promptTokens(body);
        res.write(frame({ id, object, created, model, system_fingerprint: 'fp_mock', choices: [],
          usage: { prompt_tokens: pt, completion_tokens: n, total_tokens: pt + n } }));
      }
      res.end('data: [DONE]\n\n');
    }
  } finally {
    stats.active--;
  }
}

async function completeChat(req, res, body, chat) {
  const { n, delay, ttft } = knobs(req, body);
  // non-stream: total generation time is what a client would wait for
  const total = ttft + delay * n;
  if (total > 0) await sleep(total);
  const text = TOKEN.repeat(n);
  const pt = promptTokens(body);
  stats.tokens += n;
  const id = (chat ? 'chatcmpl-mock' : 'cmpl-mock') + (++seq).toString(36);
  const base = { id, created: Math.floor(Date.now() / 1000), model: body.model || MODEL,
    usage: { prompt_tokens: pt, completion_tokens: n, total_tokens: pt + n } };
  if (chat) {
    sendJson(res, 200, { ...base, object: 'chat.completion', system_fingerprint: 'fp_mock',
      choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null },
        logprobs: null, finish_reason: 'stop' }] });
  } else {
    sendJson(res, 200, { ...base, object: 'text_completion',
      choices: [{ index: 0, text, logprobs: null, finish_reason: 'stop' }] });
  }
}

const modelObj = (id) => ({ id, object: 'model', created: 1700000000, owned_by: 'mock' });

const server = http.createServer(async (req, res) => {
  const arrived = now();
  stats.requests++;
  const url = req.url.split('?')[0].replace(/^\/+/, '/');
  try {
    if (req.method === 'GET' && (url === '/healthz' || url === '/health')) return sendJson(res, 200, { ok: true, ...stats });
    if (req.method === 'POST' && url === '/mock/ts') {
      const { tags = [] } = JSON.parse((await readBody(req)) || '{}');
      const ts = {};
      const arrivals = {};
      for (const t of tags) {
        if (!tagTs.has(t)) continue;
        ts[t] = tagTs.get(t);
        arrivals[t] = tagReq.get(t);
        tagTs.delete(t);
        tagReq.delete(t);
      }
      return sendJson(res, 200, { ts, req: arrivals });
    }
    if (req.method === 'GET' && url === '/v1/models') return sendJson(res, 200, { object: 'list', data: [modelObj(MODEL)] });
    if (req.method === 'GET' && url.startsWith('/v1/models/')) return sendJson(res, 200, modelObj(decodeURIComponent(url.slice(11))));
    if (req.method === 'POST' && (url === '/v1/chat/completions' || url === '/chat/completions' || url === '/v1/completions' || url === '/completions')) {
      const raw = await readBody(req);
      let body;
      try { body = raw ? JSON.parse(raw) : {}; } catch {
        return sendJson(res, 400, { error: { message: 'invalid JSON body', type: 'invalid_request_error', param: null, code: null } });
      }
      const chat = url.endsWith('/chat/completions');
      if (chat && !Array.isArray(body.messages)) {
        return sendJson(res, 400, { error: { message: "'messages' is required", type: 'invalid_request_error', param: 'messages', code: null } });
      }
      return body.stream ? streamChat(req, res, body, chat, arrived) : completeChat(req, res, body, chat);
    }
    sendJson(res, 404, { error: { message: `Unknown route ${req.method} ${url}`, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
  } catch (e) {
    if (!res.headersSent) sendJson(res, 500, { error: { message: String(e), type: 'server_error', param: null, code: null } });
    else res.destroy(e);
  }
});
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;
server.maxConnections = 1 << 20;
server.listen(PORT, HOST, () => {
  if (env.MOCK_QUIET !== '1') {
    console.log(`mock-llm listening on http://${HOST}:${server.address().port} tokens=${TOKENS} delay_ms=${DELAY} ttft_ms=${TTFT} pid=${process.pid}`);
  }
});
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref();
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
