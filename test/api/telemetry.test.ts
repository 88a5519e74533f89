/**
 * OpenTelemetry traces (issue 13): off by default; with telemetry.otlp_endpoint a turn is a span from
 * the question to its close, with the model call and the database statements as its children,
 * exported over OTLP/HTTP (JSON) to a collector — here a fake one on loopback — and the log lines of
 * a turn carry its trace id.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger, createServer, listen } from '../../src/server.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId } from '../helpers/apps.ts';
import { demoApp } from '../helpers/seed.ts';
import { ADMIN_PASSWORD, Api, mockConfig, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/wait.ts';
import { WsClient } from '../helpers/ws-client.ts';

interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; attributes: Array<{ key: string; value: Record<string, unknown> }> }

describe('traces over OTLP', () => {
  const spans: OtlpSpan[] = [];
  const logLines: Array<Record<string, unknown>> = [];
  let collector: http.Server;
  let mock: MockLlm;
  let dataDir: string;

  beforeAll(async () => {
    collector = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        if (req.url === '/v1/traces') {
          const sent = JSON.parse(body) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }> };
          for (const rs of sent.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    mock = await MockLlm.start();
    dataDir = mkdtempSync(join(tmpdir(), 'parley-otel-'));
  });
  afterAll(async () => {
    await new Promise((r) => collector.close(r));
    await mock.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('a turn is a span with the model call and the statements as children; its log lines carry the trace id', async () => {
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    const overrides = mockConfig(mock, {
      server: { host: '127.0.0.1', port: 0, data_dir: dataDir }, auth: { admin_password: ADMIN_PASSWORD }, log: { level: 'debug' },
      telemetry: { otlp_endpoint: endpoint },
    });
    overrides.llm!.providers = { ...overrides.llm!.providers, default: overrides.llm!.providers!.mock! };
    const { config } = loadConfig({ file: null, env: {}, overrides });
    const sink = new Writable({ write(chunk, _enc, cb) { for (const l of String(chunk).split('\n').filter(Boolean)) logLines.push(JSON.parse(l)); cb(); } });
    const handle = await createServer(config, { logger: createLogger(config, sink) });
    const url = await listen(handle);
    try {
      const token = (await new Api(url).login('admin', ADMIN_PASSWORD)).token!;
      const app = (await demoApp({ handle } as TestServer, 'chat')).id;
      const ws = await WsClient.connect(url, `/api/v1/chat/${app}?chat_id=${newChatId()}`, { token });
      mock.enqueue({ text: 'traced answer' });
      ws.send({ inputs: { input: 'trace me' } });
      await ws.turn(0);
      ws.close();
      await ws.waitClose();
    } finally {
      // shutting down flushes the spans
      await handle.close();
    }
    await eventually(() => (spans.some((s) => s.name === 'parley.turn') ? true : undefined), 'the turn span at the collector');
    const turn = spans.find((s) => s.name === 'parley.turn')!;
    const children = spans.filter((s) => s.parentSpanId === turn.spanId);
    expect(children.map((s) => s.name)).toEqual(expect.arrayContaining(['llm.call', 'db.statement']));
    for (const c of children) expect(c.traceId).toBe(turn.traceId);
    expect(turn.attributes.map((a) => a.key)).toEqual(expect.arrayContaining(['parley.turn_id', 'parley.chat_id', 'parley.app_id']));
    const started = logLines.find((l) => l.msg === 'turn started')!;
    expect(started.trace_id).toBe(turn.traceId);
    // lines outside any turn name no trace
    expect(logLines.find((l) => l.msg === 'request')?.trace_id).toBeUndefined();
  });
});
