/**
 * Acceptance tests of "Workflows" over WebSocket (PRODUCT.md §4, PROTOCOL.md §3.1–§3.2, §8.3, §8.6):
 * a real server, a real `ws` client and a mock OpenAI-compatible model over HTTP. Behaviour only:
 * frames and their order, what is stored (history, workflow_runs), what the model was sent.
 *
 * A run advances in segments, each a turn: processing/begin … processing/close. A segment that
 * leaves the run waiting ends with the request (input/over or output_with_*_msg/over) and a close
 * whose extra says `run_status: "input"`; the answer starts the next segment.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEMO_APPS } from '../../src/apps/demo-apps.ts';
import type { WorkflowGraph } from '../../src/domain/types.ts';
import { createServer, listen } from '../../src/server.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId, publishedApp } from '../helpers/apps.ts';
import { ManualClock } from '../helpers/clock.ts';
import { adminAndUser, Api, closeServer, dbTargets, mockConfig, startServer, type TestServer } from '../helpers/server.ts';
import { kinds, WsClient, type Frame } from '../helpers/ws-client.ts';

const BISHENG_FIELDS = ['is_bot', 'message', 'type', 'category', 'intermediate_steps', 'files', 'user_id', 'message_id', 'source', 'sender', 'receiver', 'liked', 'extra', 'flow_id', 'chat_id'];
const extraOf = (f: Frame) => JSON.parse(f.extra) as Record<string, any>;
const isClose = (f: Frame) => f.category === 'processing' && f.type === 'close';
/** `category/type node_id` per frame; consecutive stream frames of one node shown once */
const trace = (frames: Frame[]) => {
  const out: string[] = [];
  for (const f of frames) {
    const line = typeof f.message === 'object' && f.message?.node_id ? `${f.category}/${f.type} ${f.message.node_id}` : `${f.category}/${f.type}`;
    if (f.type === 'stream' && out.at(-1) === line) continue;
    out.push(line);
  }
  return out;
};

const demoGraph = (): WorkflowGraph => structuredClone(DEMO_APPS.find((a) => a.kind === 'workflow')!.spec.graph!);
type Node = WorkflowGraph['nodes'][number];
const node = (id: string, type: string, data: Record<string, unknown> = {}): Node => ({ id, type, data });
const edge = (source: string, target: string, sourceHandle?: string) => ({ source, target, ...(sourceHandle !== undefined && { sourceHandle }) });
/** start → the nodes in a line → end */
const chain = (...nodes: Node[]): WorkflowGraph => {
  const all = [node('start', 'start'), ...nodes, node('end', 'end')];
  return { nodes: all, edges: all.slice(1).map((n, i) => edge(all[i]!.id, n.id)) };
};

/** Every frame of a segment: all Bisheng fields, seq increasing, one turn_id, begin first and close last. */
function expectSegment(frames: Frame[], chatId: string, appId: string): void {
  for (const f of frames) {
    for (const k of BISHENG_FIELDS) expect(f, `${f.category}/${f.type} lacks ${k}`).toHaveProperty(k);
    expect(f.chat_id).toBe(chatId);
    expect(f.flow_id).toBe(appId);
    expect(Number.isSafeInteger(f.seq)).toBe(true);
  }
  for (let i = 1; i < frames.length; i++) expect(frames[i]!.seq!).toBeGreaterThan(frames[i - 1]!.seq!);
  expect(new Set(frames.map((f) => f.turn_id)).size).toBe(1);
  expect(kinds(frames)[0]).toBe('processing/begin');
  expect(kinds(frames).at(-1)).toBe('processing/close');
  expect(frames.filter(isClose)).toHaveLength(1);
}

/** Sends a frame answered by a system/info frame outside any turn. */
async function infoAfter(ws: WsClient, frame: Record<string, unknown>): Promise<Frame> {
  const from = ws.frames.length;
  ws.send(frame);
  await ws.until((f) => f.slice(from).some((x) => x.category === 'system' && x.type === 'info'), 5000, 'system/info');
  const info = ws.frames.slice(from).find((x) => x.category === 'system')!;
  expect(info.seq).toBeUndefined();
  return info;
}

describe('workflows over WebSocket (sqlite, mock model over HTTP)', () => {
  let mock: MockLlm;
  let server: TestServer;
  let admin: Api;
  let user: Api;
  let mockApp: string;
  let seededApp: string;
  const sockets: WsClient[] = [];

  const connect = async (appId: string, chatId: string | null, api: Api = user) => {
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${appId}${chatId ? `?chat_id=${chatId}` : ''}`, { token: api.token });
    sockets.push(ws);
    return ws.settle();
  };
  /** Sends a frame and returns the frames of the segment it starts (through processing/close). */
  const segment = async (ws: WsClient, frame: Record<string, unknown>, timeoutMs = 10_000) => {
    const from = ws.frames.length;
    ws.send(frame);
    return ws.turn(from, timeoutMs);
  };
  /** Sends a frame the server rejects outside any turn; returns the error frame. */
  const rejected = async (ws: WsClient, frame: Record<string, unknown>) => {
    const from = ws.frames.length;
    ws.send(frame);
    await ws.until((f) => f.slice(from).some((x) => x.category === 'error'), 5000, 'error frame');
    const err = ws.frames.slice(from).find((x) => x.category === 'error')!;
    expect(err.seq).toBeUndefined();
    return err;
  };
  const answer = (chatId: string | null, nodeId: string, data: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    ({ action: 'input', ...(chatId ? { chat_id: chatId } : {}), data: { [nodeId]: { data, ...extra } } });
  const history = async (chatId: string, appId: string) => {
    const r = await user.get(`/api/v1/chat/history?chat_id=${chatId}&flow_id=${appId}&page_size=100`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body.data as Array<Record<string, any>>).reverse();
  };
  const storedRun = (chatId: string) => server.handle.services.repos.workflowRuns.get(chatId);

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock));
    ({ admin, user } = await adminAndUser(server));
    mockApp = await publishedApp(admin, { kind: 'workflow', name: 'Mock workflow', provider: 'mock', graph: demoGraph() });
    const online = await user.get('/api/v1/chat/online?flow_type=10');
    seededApp = (online.body.data as Array<{ id: string; name: string }>).find((a) => a.name === 'Demo workflow')!.id;
  });
  afterAll(async () => {
    for (const ws of sockets) ws.close();
    await closeServer(server);
    await mock?.close();
  });
  beforeEach(() => mock.reset());
  afterEach(() => {
    for (const ws of sockets.splice(0)) ws.close();
  });

  describe('the demo workflow end to end', () => {
    it('the seeded "Demo workflow" (offline demo model): frames in order, each segment a turn; history holds requests, answers and outputs', async () => {
      const chatId = newChatId();
      const ws = await connect(seededApp, chatId);

      const first = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: seededApp });
      expectSegment(first, chatId, seededApp);
      expect(trace(first)).toEqual([
        'processing/begin', 'node_run/start start', 'guide_word/over start', 'guide_question/over start', 'node_run/end start',
        'node_run/start ask', 'input/over ask', 'processing/close',
      ]);
      const request = first.find((f) => f.category === 'input')!;
      expect(request.message).toMatchObject({ node_id: 'ask', msg: 'What should I write about?', input_schema: { input_type: 'form_input' } });
      expect(request.message_id).toEqual(expect.any(Number));
      expect(extraOf(first.at(-1)!)).toMatchObject({ run_status: 'input', run_id: expect.any(String) });
      const runId = extraOf(first.at(-1)!).run_id as string;

      const second = await segment(ws, answer(chatId, 'ask', { topic: 'tea', length: 'long' }, { message_id: request.message_id }));
      expectSegment(second, chatId, seededApp);
      expect(trace(second)).toEqual([
        'processing/begin', 'node_run/end ask',
        'node_run/start write', 'stream_msg/stream write', 'stream_msg/end write', 'node_run/end write',
        'node_run/start check', 'node_run/end check',
        'node_run/start choose', 'output_with_choose_msg/over choose', 'processing/close',
      ]);
      expect(second[0]!.seq!).toBeGreaterThan(first.at(-1)!.seq!);
      const note = second.find((f) => f.category === 'stream_msg' && f.type === 'end')!;
      expect(note.message.msg).toContain('Write a long note about tea.');
      expect(note.message_id).toEqual(expect.any(Number));
      const choose = second.find((f) => f.category === 'output_with_choose_msg')!;
      expect(choose.message).toMatchObject({ msg: 'That was a long note about tea. What next?', options: ['Again', 'Finish'], key: 'output_result' });
      expect(extraOf(second.at(-1)!)).toMatchObject({ run_status: 'input', run_id: runId });

      const third = await segment(ws, answer(chatId, 'choose', { output_result: 'Finish' }));
      expect(trace(third)).toEqual(['processing/begin', 'node_run/end choose', 'node_run/start end', 'node_run/end end', 'processing/close']);
      expect(extraOf(third.at(-1)!)).toMatchObject({ run_status: 'success', run_id: runId });

      const rows = await history(chatId, seededApp);
      expect(rows.map((r) => `${r.is_bot ? 'bot' : 'user'} ${r.category}/${r.type}`)).toEqual([
        'bot input/over', 'user question/human', 'bot stream_msg/end', 'bot output_with_choose_msg/over', 'user question/human',
      ]);
      expect(rows[0]!.id).toBe(request.message_id);
      expect(JSON.parse(rows[0]!.message)).toMatchObject({ node_id: 'ask', input_schema: { input_type: 'form_input' } });
      expect(rows[1]).toMatchObject({ is_bot: 0, message: 'Topic: tea\nLength: long' });
      expect(rows[2]!.id).toBe(note.message_id);
      expect(JSON.parse(rows[2]!.message).msg).toBe(note.message.msg);
      expect(rows[3]!.id).toBe(choose.message_id);
      expect(rows[4]).toMatchObject({ is_bot: 0, message: 'Finish' });
      expect(await storedRun(chatId)).toMatchObject({ status: 'success', run_id: runId, node_id: null, app_id: seededApp });
    });

    it('the same graph on the mock provider: the model gets the rendered prompts; the else branch for a short note', async () => {
      mock.enqueue({ text: 'Tea is a calm drink.', reasoning: ['Think'] });
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      const run = await segment(ws, answer(chatId, 'ask', { topic: 'tea', length: 'short' }));
      expect(trace(run)).toEqual([
        'processing/begin', 'node_run/end ask',
        'node_run/start write', 'stream_msg/stream write', 'stream_msg/end write', 'node_run/end write',
        'node_run/start check', 'node_run/end check',
        'node_run/start short_note', 'output_msg/over short_note', 'node_run/end short_note',
        'node_run/start end', 'node_run/end end', 'processing/close',
      ]);
      const streamed = run.filter((f) => f.category === 'stream_msg' && f.type === 'stream');
      expect(streamed.map((f) => f.message.msg).join('')).toBe('Tea is a calm drink.');
      expect(streamed.map((f) => f.message.reasoning_content).join('')).toBe('Think');
      expect(mock.requests).toHaveLength(1);
      expect(mock.requests[0]!.messages).toEqual([
        { role: 'system', content: 'You write clear, friendly notes.' }, { role: 'user', content: 'Write a short note about tea.' },
      ]);
      expect(extraOf(run.at(-1)!)).toMatchObject({ run_status: 'success', usage: { total_tokens: expect.any(Number) } });
      expect(extraOf(run.at(-1)!).usage.total_tokens).toBeGreaterThan(0);
      const rows = await history(chatId, mockApp);
      expect(rows.map((r) => r.category)).toEqual(['input', 'question', 'stream_msg', 'output_msg']);
      expect(JSON.parse(rows[3]!.message)).toMatchObject({ msg: 'A short note about tea was written.' });
    });

    it('a bad answer lists every problem (10400, outside the turn) and the run keeps waiting; a wrong node too', async () => {
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      const bad = await rejected(ws, answer(chatId, 'ask', { length: 'medium', color: 'red' }));
      expect(bad.message).toMatchObject({ status_code: 10400 });
      expect(bad.message.data.errors).toEqual([
        { path: 'data/color', message: 'is not a field of this form' },
        { path: 'data/topic', message: 'is required (Topic)' },
        { path: 'data/length', message: 'must be one of: short, long' },
      ]);
      expect((await rejected(ws, answer(chatId, 'write', { x: 1 }))).message.status_code).toBe(10400);
      expect(await storedRun(chatId)).toMatchObject({ status: 'input', node_id: 'ask' });
      const done = await segment(ws, answer(chatId, 'ask', { topic: 'tea', length: 'short' }));
      expect(extraOf(done.at(-1)!).run_status).toBe('success');
      // only the accepted answer is stored
      expect((await history(chatId, mockApp)).filter((r) => r.category === 'question')).toHaveLength(1);
    });

    it('workflow frames are validated with every problem listed (10400) and the socket stays open', async () => {
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      const e1 = await rejected(ws, { action: 'input', chat_id: chatId, data: { ask: { data: 'tea', message: 5, message_id: {} } } });
      expect(e1.message.data.errors.map((e: { path: string }) => e.path)).toEqual(['data/ask/data', 'data/ask/message', 'data/ask/message_id']);
      const e2 = await rejected(ws, { action: 'input', chat_id: 'nope', data: { a: { data: {} }, b: { data: {} } } });
      expect(e2.message.data.errors.map((e: { path: string }) => e.path)).toEqual(['chat_id', 'data']);
      const e3 = await rejected(ws, { action: 'input', chat_id: chatId });
      expect(e3.message.data.errors[0].path).toBe('data');
      // an input with no run waiting
      expect((await rejected(ws, answer(chatId, 'ask', { topic: 'x', length: 'short' }))).message.status_code).toBe(10400);
      expect(ws.closeCode).toBeNull();
      // workflow actions on a chat app
      const chatApp = await publishedApp(admin, { kind: 'chat', provider: 'mock' });
      const cws = await connect(chatApp, newChatId());
      expect((await rejected(cws, { action: 'init_data' })).message.status_code).toBe(10400);
    });

    it('a question frame answers a dialog input (and a choice); with no run it starts one', async () => {
      const graph = chain(node('name', 'input', { mode: 'dialog', prompt: 'Your name?' }), node('pick', 'output', { message: 'Hi {{name.user_input}}, pick one', options: ['A', 'B'] }),
        node('bye', 'output', { message: 'You picked {{pick.output_result}}' }));
      const app = await publishedApp(admin, { kind: 'workflow', provider: 'mock', graph });
      const chatId = newChatId();
      const ws = await connect(app, chatId);
      const started = await segment(ws, { inputs: { input: 'hello' }, chat_id: chatId });
      expect(trace(started).slice(-2)).toEqual(['input/over name', 'processing/close']);
      expect(started.find((f) => f.category === 'input')!.message.input_schema).toMatchObject({ input_type: 'dialog_input' });
      const named = await segment(ws, { inputs: { input: 'Ada' }, chat_id: chatId });
      expect(named.find((f) => f.category === 'output_with_choose_msg')!.message.msg).toBe('Hi Ada, pick one');
      const done = await segment(ws, { inputs: { input: 'B' }, chat_id: chatId });
      expect(done.find((f) => f.category === 'output_msg')!.message.msg).toBe('You picked B');
      expect(extraOf(done.at(-1)!).run_status).toBe('success');
      const rows = await history(chatId, app);
      expect(rows.filter((r) => !r.is_bot).map((r) => r.message)).toEqual([JSON.stringify({ input: 'hello' }), 'Ada', 'B']);
      // with the run over, the next question starts a new run
      const again = await segment(ws, { inputs: { input: 'again' }, chat_id: chatId });
      expect(trace(again).slice(-2)).toEqual(['input/over name', 'processing/close']);
      expect(extraOf(again.at(-1)!).run_id).not.toBe(extraOf(done.at(-1)!).run_id);
    });

    it('init_data while a run waits for input: 10409 (stop it first); the waiting run is untouched', async () => {
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      expect((await rejected(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp })).message.status_code).toBe(10409);
      expect(await storedRun(chatId)).toMatchObject({ status: 'input', node_id: 'ask' });
    });
  });

  describe('stop', () => {
    it('while an llm node streams: the upstream call is aborted, the run ends stopped, processing/close; a new init_data works', async () => {
      mock.enqueue({ text: Array<string>(200).fill(' tok'), delayMs: 20 });
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      const from = ws.frames.length;
      ws.send(answer(chatId, 'ask', { topic: 'tea', length: 'long' }));
      await ws.until((f) => f.slice(from).filter((x) => x.category === 'stream_msg' && x.type === 'stream').length >= 3, 5000, 'streaming');
      ws.send({ action: 'stop', chat_id: chatId });
      await mock.waitForAbort();
      const frames = await ws.turn(from);
      expect(trace(frames).slice(-4)).toEqual(['stream_msg/stream write', 'stream_msg/end write', 'node_run/end write', 'processing/close']);
      expect(kinds(frames)).not.toContain('error/end');
      const end = frames.find((f) => f.category === 'stream_msg' && f.type === 'end')!;
      expect(end.message).toMatchObject({ interrupted: true });
      expect(frames.find((f) => f.category === 'node_run' && f.type === 'end' && f.message.node_id === 'write')!.message.reason).toBe('stopped');
      expect(extraOf(frames.at(-1)!)).toMatchObject({ run_status: 'stopped' });
      expect(await storedRun(chatId)).toMatchObject({ status: 'stopped', node_id: null });
      expect(server.handle.services.chat.isRunning(chatId)).toBe(false);
      const kept = (await history(chatId, mockApp)).find((r) => r.category === 'stream_msg')!;
      expect(kept).toMatchObject({ id: end.message_id, remark: 'break_answer' });
      expect(JSON.parse(kept.extra)).toMatchObject({ interrupted: true });

      const again = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      expect(extraOf(again.at(-1)!).run_status).toBe('input');
    });

    it('while waiting for input: the run is stored as stopped, processing/close; answering then is refused; a new init_data works', async () => {
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      const stopped = await segment(ws, { action: 'stop', chat_id: chatId });
      expectSegment(stopped, chatId, mockApp);
      expect(kinds(stopped)).toEqual(['processing/begin', 'processing/close']);
      expect(extraOf(stopped.at(-1)!)).toMatchObject({ run_status: 'stopped' });
      expect(await storedRun(chatId)).toMatchObject({ status: 'stopped', node_id: null, expires_at: null });
      expect((await rejected(ws, answer(chatId, 'ask', { topic: 'tea', length: 'short' }))).message.status_code).toBe(10400);
      const again = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      expect(extraOf(again.at(-1)!).run_status).toBe('input');
      // POST /chat/interrupt stops a waiting run too
      const r = await user.post('/api/v1/chat/interrupt', { chat_id: chatId });
      expect(r.body.data).toEqual({ stopped: true });
      expect(await storedRun(chatId)).toMatchObject({ status: 'stopped' });
    });
  });

  describe('code nodes and limits', () => {
    it('code that loops, allocates without bound or reaches for process/require/import/fetch fails the run (10541/10531); the server stays healthy', async () => {
      const draft = await admin.post('/api/v1/apps', { name: 'Debug workflow', kind: 'workflow', model: { provider: 'mock' }, graph: demoGraph() });
      const appId = draft.body.data.id as string;
      const ws = await connect(appId, null, admin);
      const codes = [
        'while (true) {}',
        'const a = []; while (true) a.push("x".repeat(1e6));',
        'process.exit(1)',
        'require("fs").readFileSync("/etc/passwd", "utf8")',
        'import("fs")',
        'fetch("http://127.0.0.1/")',
      ];
      for (const code of codes) {
        const graph = chain(node('k', 'code', { code, timeout_ms: 500 }), node('o', 'output', { message: '{{k.result}}' }));
        const frames = await segment(ws, { action: 'init_data', flow_id: appId, data: graph });
        const k = kinds(frames);
        expect(k.slice(-2), `${code}: ${k.join(' ')}`).toEqual(['error/end', 'processing/close']);
        const err = frames.at(-2)!;
        expect([10541, 10531], code).toContain(err.message.status_code);
        expect(err.message.status_message).toContain('node "k"');
        expect(err.message.data).toMatchObject({ node_id: 'k' });
        expect(extraOf(frames.at(-1)!).run_status).toBe('failed');
        expect((await fetch(`${server.url}/health`)).status).toBe(200);
      }
      // a normal run still works, in debug mode on the client's graph
      const ok = await segment(ws, { action: 'init_data', flow_id: appId, data: chain(node('k', 'code', { code: '({ n: 41 + 1 })' }), node('o', 'output', { message: 'n={{k.n}}' })) });
      expect(ok.find((f) => f.category === 'output_msg')!.message.msg).toBe('n=42');
      expect(ok.every((f) => f.chat_id === '')).toBe(true);
    });

    it('a client graph is ignored outside debug mode; a broken debug graph fails with every problem (10531)', async () => {
      const chatId = newChatId();
      const ws = await connect(mockApp, chatId);
      const run = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp, data: chain(node('o', 'output', { message: 'injected' })) });
      expect(trace(run)).toContain('input/over ask');
      expect(kinds(run)).not.toContain('output_msg/over');

      const draft = await admin.post('/api/v1/apps', { name: 'Debug broken', kind: 'workflow', model: { provider: 'mock' } });
      const dws = await connect(draft.body.data.id, null, admin);
      const broken = await segment(dws, { action: 'init_data', data: { nodes: [node('a', 'output', {})], edges: [edge('a', 'zz')] } });
      expect(kinds(broken)).toEqual(['processing/begin', 'error/end', 'processing/close']);
      expect(broken[1]!.message.status_code).toBe(10531);
      expect(broken[1]!.message.data.problems.map((p: { code: string }) => p.code)).toEqual(expect.arrayContaining(['no_start', 'dangling_edge']));
    });

    it('a condition takes each branch (two runs with different answers)', async () => {
      const outputs: string[] = [];
      for (const length of ['long', 'short']) {
        const chatId = newChatId();
        const ws = await connect(mockApp, chatId);
        await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
        const run = await segment(ws, answer(chatId, 'ask', { topic: 'tea', length }));
        const check = run.find((f) => f.category === 'node_run' && f.type === 'end' && f.message.node_id === 'check')!;
        outputs.push(`${check.message.output.branch} → ${trace(run).at(-2)}`);
      }
      expect(outputs).toEqual(['long → output_with_choose_msg/over choose', 'else → node_run/end end']);
    });

    it('max_steps ends a looping run with 10528 (error frame, then processing/close)', async () => {
      const graph: WorkflowGraph = {
        nodes: [
          node('start', 'start'), node('tick', 'output', { message: 'tick', max_steps: 3 }),
          node('again', 'condition', { cases: [{ id: 'yes', when: { left: '{{tick.message}}', op: 'not_empty' } }] }), node('end', 'end'),
        ],
        edges: [edge('start', 'tick'), edge('tick', 'again'), edge('again', 'tick', 'yes'), edge('again', 'end', 'else')],
      };
      const app = await publishedApp(admin, { kind: 'workflow', provider: 'mock', graph });
      const chatId = newChatId();
      const ws = await connect(app, chatId);
      const run = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: app });
      expect(run.filter((f) => f.category === 'output_msg')).toHaveLength(3);
      expect(kinds(run).slice(-2)).toEqual(['error/end', 'processing/close']);
      expect(run.at(-2)!.message).toMatchObject({ status_code: 10528, data: { node_id: 'tick', max_steps: 3 } });
      expect(await storedRun(chatId)).toMatchObject({ status: 'failed' });
      expect(JSON.parse((await storedRun(chatId))!.state).error).toMatchObject({ code: 'workflow_max_steps', status_code: 10528, node_id: 'tick' });
    });
  });

  describe('validation before publish', () => {
    it('each broken graph gets all of its problems from /validate; publish refuses it and nothing is published', async () => {
      const broken: Array<[string, unknown, string[]]> = [
        ['no start', { nodes: [node('o', 'output', { message: 'x' }), node('end', 'end')], edges: [edge('o', 'end')] }, ['no_start']],
        ['two starts', { nodes: [node('s1', 'start'), node('s2', 'start'), node('end', 'end')], edges: [edge('s1', 'end'), edge('s2', 'end')] }, ['multiple_starts']],
        ['unreachable node', { ...chain(), nodes: [...chain().nodes, node('lost', 'output', { message: 'x' })] }, ['unreachable_node']],
        ['dangling edge', { ...chain(), edges: [...chain().edges, edge('start', 'ghost')] }, ['dangling_edge']],
        ['unknown variable', chain(node('o', 'output', { message: '{{nobody.text}}' })), ['unknown_variable']],
        ['unguarded cycle', {
          nodes: [node('start', 'start'), node('a', 'output', { message: 'a' }), node('c', 'condition', { cases: [{ id: 'y', when: { left: '{{a.message}}', op: 'not_empty' } }] }), node('end', 'end')],
          edges: [edge('start', 'a'), edge('a', 'c'), edge('c', 'a', 'y'), edge('c', 'end', 'else')],
        }, ['unguarded_cycle']],
        ['bad node data and an unknown tool', chain(node('i', 'input', { mode: 'telepathy' }), node('t', 'tool', { tool: 'no_such_tool' })), ['invalid_node_data', 'invalid_node_data']],
        ['several at once', { nodes: [node('o', 'output', {}), node('end', 'end')], edges: [edge('o', 'nowhere')] }, ['no_start', 'dangling_edge', 'invalid_node_data']],
      ];
      for (const [what, graph, codes] of broken) {
        const created = await admin.post('/api/v1/apps', { name: `Broken: ${what}`, kind: 'workflow', model: { provider: 'mock' }, graph });
        expect(created.status, what).toBe(200);
        const id = created.body.data.id as string;
        const v = await admin.post(`/api/v1/apps/${id}/validate`, {});
        expect(v.body.data.ok, what).toBe(false);
        expect(v.body.data.problems.map((p: { code: string }) => p.code), what).toEqual(expect.arrayContaining(codes));
        const published = await admin.post(`/api/v1/apps/${id}/publish`, {});
        expect({ what, status: published.status, code: published.body.status_code }).toEqual({ what, status: 400, code: 10400 });
        expect(published.body.data.problems.length, what).toBe(v.body.data.problems.length);
        expect((await admin.get(`/api/v1/apps/${id}/versions`)).body.data, what).toEqual([]);
      }
    });

    it('GET /api/v1/workflow/schema publishes the graph schema', async () => {
      const r = await user.get('/api/v1/workflow/schema');
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({ type: 'object', required: ['nodes', 'edges'] });
      expect(r.body.data.properties.nodes.items.properties.type.enum).toEqual(['start', 'input', 'llm', 'condition', 'tool', 'code', 'output', 'end']);
      const doc = (await user.get('/openapi.json')).body;
      expect(doc.paths['/api/v1/workflow/schema'].get.responses['200']).toBeDefined();
    });
  });

});

describe('workflow input timeout (workflow.input_timeout in minutes, fractions allowed)', () => {
  const clock = new ManualClock();
  let mock: MockLlm;
  let server: TestServer;
  let user: Api;
  let app: string;
  const sockets: WsClient[] = [];

  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer({ name: 'sqlite' }, mockConfig(mock, { workflow: { input_timeout: 0.01 } }), { clock });
    const both = await adminAndUser(server);
    user = both.user;
    app = await publishedApp(both.admin, { kind: 'workflow', provider: 'mock', graph: demoGraph() });
  });
  afterAll(async () => {
    for (const ws of sockets) ws.close();
    await closeServer(server);
    await mock?.close();
  });

  const open = async (chatId: string) => {
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${app}?chat_id=${chatId}`, { token: user.token });
    sockets.push(ws);
    return ws.settle();
  };
  const segment = async (ws: WsClient, frame: Record<string, unknown>) => {
    const from = ws.frames.length;
    ws.send(frame);
    return ws.turn(from);
  };

  it('an answer after the timeout fails the run with 10527', async () => {
    const chatId = newChatId();
    const ws = await open(chatId);
    const first = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: app });
    const run = await server.handle.services.repos.workflowRuns.get(chatId);
    expect(run).toMatchObject({ status: 'input', node_id: 'ask' });
    expect(Date.parse(run!.expires_at!) - clock.now()).toBeLessThanOrEqual(600);
    expect(first.at(-1)!.category).toBe('processing');
    clock.advance(601);
    const late = await segment(ws, { action: 'input', chat_id: chatId, data: { ask: { data: { topic: 'tea', length: 'short' } } } });
    expect(trace(late)).toEqual(['processing/begin', 'node_run/end ask', 'error/end', 'processing/close']);
    expect(late[1]!.message.reason).toContain('waited for input');
    expect(late.at(-2)!.message).toMatchObject({ status_code: 10527, data: { node_id: 'ask' } });
    expect(extraOf(late.at(-1)!).run_status).toBe('failed');
    expect(await server.handle.services.repos.workflowRuns.get(chatId)).toMatchObject({ status: 'failed' });
    expect(mock.requests).toHaveLength(0);
    // nothing of the late answer was stored
    const rows = (await user.get(`/api/v1/chat/history?chat_id=${chatId}&flow_id=${app}`)).body.data as Array<{ category: string }>;
    expect(rows.map((r) => r.category)).toEqual(['input']);
  });

  it('check_status after the timeout fails the run with 10527', async () => {
    const chatId = newChatId();
    const ws = await open(chatId);
    await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: app });
    clock.advance(601);
    const late = await segment(ws, { action: 'check_status', chat_id: chatId });
    expect(kinds(late)).toEqual(['processing/begin', 'error/end', 'processing/close']);
    expect(late[1]!.message).toMatchObject({ status_code: 10527 });
    expect(await server.handle.services.repos.workflowRuns.get(chatId)).toMatchObject({ status: 'failed' });
    // the run is over: a new one may start
    const again = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: app });
    expect(extraOf(again.at(-1)!).run_status).toBe('input');
  });
});

describe.each(dbTargets())('workflow durability on $name', (target) => {
  let mock: MockLlm;
  let server: TestServer;
  let user: Api;
  let mockApp: string;
  const sockets: WsClient[] = [];
  const connect = async (appId: string, chatId: string) => {
    const ws = await WsClient.connect(server.url, `/api/v1/chat/${appId}?chat_id=${chatId}`, { token: user.token });
    sockets.push(ws);
    return ws.settle();
  };
  const segment = async (ws: WsClient, frame: Record<string, unknown>) => {
    const from = ws.frames.length;
    ws.send(frame);
    return ws.turn(from);
  };
  const history = async (chatId: string, appId: string) => {
    const r = await user.get(`/api/v1/chat/history?chat_id=${chatId}&flow_id=${appId}&page_size=100`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body.data as Array<Record<string, any>>).reverse();
  };
  const storedRun = (chatId: string) => server.handle.services.repos.workflowRuns.get(chatId);

  beforeEach(() => mock.reset());
  beforeAll(async () => {
    mock = await MockLlm.start();
    server = await startServer(target, mockConfig(mock));
    const both = await adminAndUser(server);
    user = both.user;
    mockApp = await publishedApp(both.admin, { kind: 'workflow', name: 'Mock workflow', provider: 'mock', graph: demoGraph() });
  });
  afterAll(async () => {
    for (const ws of sockets) ws.close();
    await closeServer(server);
    await mock?.close();
  });

  it('pause at an input node, restart the server, check_status re-sends the request; answering completes the run', async () => {
    const chatId = newChatId();
    let ws = await connect(mockApp, chatId);
    const first = await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
    const request = first.find((f) => f.category === 'input')!;

    await server.restart();
    await ws.waitClose();
    expect(ws.closeCode).toBe(1001);
    // the same data, a new process
    user = await new Api(server.url).login('alice', 'alice-password');
    ws = await connect(mockApp, chatId);

    const resent = await segment(ws, { action: 'check_status', chat_id: chatId });
    expectSegment(resent, chatId, mockApp);
    expect(kinds(resent)).toEqual(['processing/begin', 'input/over', 'processing/close']);
    expect(resent[1]!.message_id).toBe(request.message_id);
    expect(resent[1]!.message).toEqual(request.message);
    expect(resent[0]!.seq!).toBeGreaterThan(first.at(-1)!.seq!);
    expect(extraOf(resent.at(-1)!)).toMatchObject({ run_status: 'input', run_id: extraOf(first.at(-1)!).run_id });

    const done = await segment(ws, { action: 'input', chat_id: chatId, data: { ask: { data: { topic: 'tea', length: 'short' }, message_id: request.message_id } } });
    expect(trace(done)).toContain('output_msg/over short_note');
    expect(extraOf(done.at(-1)!).run_status).toBe('success');
    expect(await storedRun(chatId)).toMatchObject({ status: 'success' });
    // nothing else was stored by check_status
    expect((await history(chatId, mockApp)).map((r) => r.category)).toEqual(['input', 'question', 'stream_msg', 'output_msg']);
  });

  it('two instances get the same answer at once: exactly one continues the run (claim), the other is refused', async () => {
    const other = await createServer(server.config);
    const otherUrl = await listen(other);
    try {
      const chatId = newChatId();
      const a = await connect(mockApp, chatId);
      await segment(a, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
      const b = await (await WsClient.connect(otherUrl, `/api/v1/chat/${mockApp}?chat_id=${chatId}`, { token: user.token })).settle();
      sockets.push(b);
      const frame = { action: 'input', chat_id: chatId, data: { ask: { data: { topic: 'tea', length: 'short' } } } };
      a.send(frame);
      b.send(frame);
      const outcome = async (ws: WsClient) => {
        await ws.until((f) => f.some((x) => isClose(x) && extraOf(x).run_status === 'success') || f.some((x) => x.category === 'error' && x.seq === undefined), 10_000, 'an outcome');
        return ws.frames.some((x) => x.category === 'error' && x.seq === undefined) ? 'refused' : 'ran';
      };
      expect((await Promise.all([outcome(a), outcome(b)])).sort()).toEqual(['ran', 'refused']);
      const refusal = [...a.frames, ...b.frames].find((x) => x.category === 'error')!;
      expect(refusal.message).toMatchObject({ status_code: 10409, status_message: 'The workflow run is being continued elsewhere' });
      expect(mock.requests).toHaveLength(1);
      expect((await history(chatId, mockApp)).filter((r) => r.category === 'question')).toHaveLength(1);
      expect(await storedRun(chatId)).toMatchObject({ status: 'success' });
    } finally {
      other.app.server.closeAllConnections();
      await other.close();
    }
  });

  it('check_status with nothing to re-send answers how the run stands (system/info, outside any turn)', async () => {
    const chatId = newChatId();
    const ws = await connect(mockApp, chatId);
    const none = await infoAfter(ws, { action: 'check_status', chat_id: chatId });
    expect(none.message).toEqual({ run_id: null, run_status: null, node_id: null });
    await segment(ws, { action: 'init_data', chat_id: chatId, flow_id: mockApp });
    await segment(ws, { action: 'input', chat_id: chatId, data: { ask: { data: { topic: 'tea', length: 'short' } } } });
    const done = await infoAfter(ws, { action: 'check_status', chat_id: chatId });
    expect(done.message).toMatchObject({ run_status: 'success', run_id: expect.any(String) });
  });
});
