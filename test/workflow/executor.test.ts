import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEMO_APPS } from '../../src/apps/demo-apps.ts';
import { AppError } from '../../src/domain/errors.ts';
import { workflowMessage, type BishengMessage } from '../../src/domain/bisheng-messages.ts';
import type { LlmProvider, Tool } from '../../src/domain/llm.ts';
import type { WorkflowGraph } from '../../src/domain/types.ts';
import { DemoProvider } from '../../src/providers/demo-provider.ts';
import { OpenAiCompatibleProvider } from '../../src/providers/openai-compatible-provider.ts';
import { requestOf, WorkflowExecutor, type WorkflowContext, type WorkflowRunState } from '../../src/runtimes/workflow/executor.ts';
import { createCalculatorTool } from '../../src/tools/calculator-tool.ts';
import { MockLlm } from '../fixtures/mock-llm.ts';

/** an event as Bisheng frames it, and the message id the core gave it */
type Frame = BishengMessage & { messageId?: number | string | null | undefined };
type Msg = Record<string, any>;

let mock: MockLlm;
let provider: OpenAiCompatibleProvider;
const executor = new WorkflowExecutor();

beforeAll(async () => {
  mock = await MockLlm.start();
  provider = new OpenAiCompatibleProvider({ name: 'default', baseUrl: mock.url, requestTimeoutMs: 10_000, stallTimeoutMs: 10_000, maxRetries: 0 });
});
afterAll(() => mock.close());
beforeEach(() => mock.reset());

interface Harness {
  ctx: WorkflowContext;
  frames: Frame[];
  controller: AbortController;
  /** `category/type node_id`, consecutive stream frames of one node shown once */
  trace(): string[];
  msgs(category: string, type?: string): Msg[];
}

function harness(overrides: Partial<WorkflowContext> & { onFrame?: (f: Frame, h: Harness) => void } = {}): Harness {
  const frames: Frame[] = [];
  const controller = new AbortController();
  let rowId = 100;
  const { onFrame, ...rest } = overrides;
  const tools = new Map<string, Tool>([['calculator', createCalculatorTool()]]);
  const h: Harness = {
    frames,
    controller,
    ctx: {
      async emit(body) {
        // the events the chat core persists as message rows (it fills messageId on them)
        if (body.kind === 'input_request' || body.kind === 'output' || body.kind === 'node_answer') body.messageId = ++rowId;
        const frame: Frame = { ...workflowMessage(body), messageId: 'messageId' in body ? body.messageId : undefined };
        frames.push(frame);
        onFrame?.(frame, h);
      },
      signal: controller.signal,
      providers: { get: (name: string): LlmProvider | undefined => (name === 'default' ? provider : undefined) },
      defaultModel: { provider: 'default', name: 'mock-gpt', temperature: 0.5 },
      tools,
      maxSteps: 50,
      chatId: 'c'.repeat(32),
      ...rest,
    },
    trace: () => {
      const out: string[] = [];
      for (const f of frames) {
        const line = `${f.category}/${f.type} ${(f.message as Msg).node_id}`;
        if (f.type === 'stream' && out.at(-1) === line) continue;
        out.push(line);
      }
      return out;
    },
    msgs: (category, type) => frames.filter((f) => f.category === category && (type === undefined || f.type === type)).map((f) => f.message as Msg),
  };
  return h;
}

/** Simulates the durable store: what is kept while a run waits is JSON text. */
const roundTrip = (state: WorkflowRunState): WorkflowRunState => JSON.parse(JSON.stringify(state)) as WorkflowRunState;

const demoGraph = (): WorkflowGraph => DEMO_APPS.find((a) => a.kind === 'workflow')!.spec.graph!;

type Node = WorkflowGraph['nodes'][number];
const node = (id: string, type: string, data: Record<string, unknown> = {}): Node => ({ id, type, data });
const edge = (source: string, target: string, sourceHandle?: string) => ({ source, target, ...(sourceHandle !== undefined && { sourceHandle }) });
const start = node('start', 'start');
const end = node('end', 'end');
/** start → the nodes in a line → end */
const chain = (...nodes: Node[]): WorkflowGraph => {
  const all = [start, ...nodes, end];
  return { nodes: all, edges: all.slice(1).map((n, i) => edge(all[i]!.id, n.id)) };
};

const expectAppError = async (p: Promise<unknown>, code: string, statusCode: number): Promise<AppError> => {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(AppError);
  expect(err).toMatchObject({ code, statusCode });
  return err as AppError;
};

describe('the demo workflow', () => {
  it('runs start → input (form) → llm → condition → output (choice) → end, pausing twice, state surviving JSON', async () => {
    mock.enqueue({ text: 'Tea is a calm drink with a long history.', reasoning: ['Think', ' briefly'] });
    const h = harness();

    let state = await executor.start(demoGraph(), h.ctx);
    expect(state.status).toBe('input');
    expect(h.trace()).toEqual([
      'node_run/start start', 'guide_word/over start', 'guide_question/over start', 'node_run/end start',
      'node_run/start ask', 'input/over ask',
    ]);
    expect(h.msgs('guide_word')[0]).toMatchObject({ node_id: 'start', name: 'Start', guide_word: 'Welcome to the demo workflow.' });
    expect(h.msgs('guide_question')[0]).toMatchObject({ guide_question: ['Try a long note about tea.'] });
    const request = h.msgs('input')[0]!;
    expect(request).toMatchObject({
      node_id: 'ask', name: 'Topic', msg: 'What should I write about?',
      input_schema: {
        input_type: 'form_input', tab: 'form_input',
        value: [
          { key: 'topic', type: 'text', label: 'Topic', value: 'Topic', required: true, multiple: false, options: [] },
          { key: 'length', type: 'select', label: 'Length', value: 'Length', required: true, multiple: false, options: ['short', 'long'] },
        ],
      },
    });
    // what the store keeps: the request as sent (for check_status), with the row id the core gave it
    expect(state.pending).toMatchObject({ node_id: 'ask', kind: 'form', message_id: 101, name: 'Topic', text: 'What should I write about?' });
    expect(workflowMessage(requestOf(state.pending!))).toEqual({ category: 'input', type: 'over', message: request });

    // a state kept before requests were kept by name and text carries the request as its frame: read the same
    const { name: _name, text: _text, ...older } = roundTrip(state).pending!;
    const legacy = WorkflowExecutor.readState(JSON.stringify({ ...state, pending: { ...older, frame: { category: 'input', type: 'over', message: request } } }));
    expect(legacy.pending).toEqual(roundTrip(state).pending);
    expect(state.pending!.unique_id).toBe(h.msgs('node_run', 'start')[1]!.unique_id);

    state = roundTrip(state);
    h.frames.length = 0;
    const stored = JSON.stringify(state);
    state = await executor.resume(state, { node_id: 'ask', data: { topic: 'tea', length: 'long' } }, h.ctx);
    expect(JSON.stringify(JSON.parse(stored))).toBe(stored); // the caller's state is not touched
    expect(state.status).toBe('input');
    expect(h.trace()).toEqual([
      'node_run/end ask',
      'node_run/start write', 'stream_msg/stream write', 'stream_msg/end write', 'node_run/end write',
      'node_run/start check', 'node_run/end check',
      'node_run/start choose', 'output_with_choose_msg/over choose',
    ]);
    // the model got the rendered prompts and the app's model settings
    expect(mock.requests).toHaveLength(1);
    expect(mock.requests[0]).toMatchObject({
      model: 'mock-gpt', temperature: 0.5,
      messages: [{ role: 'system', content: 'You write clear, friendly notes.' }, { role: 'user', content: 'Write a long note about tea.' }],
    });
    const deltas = h.msgs('stream_msg', 'stream');
    expect(deltas.map((d) => d.msg).join('')).toBe('Tea is a calm drink with a long history.');
    expect(deltas.map((d) => d.reasoning_content).join('')).toBe('Think briefly');
    expect(deltas.every((d) => d.output_key === 'output' && d.node_id === 'write' && d.unique_id === deltas[0]!.unique_id)).toBe(true);
    expect(h.msgs('stream_msg', 'end')[0]).toMatchObject({ msg: 'Tea is a calm drink with a long history.', reasoning_content: 'Think briefly', output_key: 'output' });
    expect(h.msgs('node_run', 'end')[0]).toMatchObject({ node_id: 'ask', input_data: { topic: 'tea', length: 'long' }, output: { topic: 'tea', length: 'long' } });
    expect(h.msgs('node_run', 'end')[1]).toMatchObject({
      node_id: 'write', node_type: 'llm', output: { output: 'Tea is a calm drink with a long history.' },
      input_data: { prompt: 'Write a long note about tea.', system_prompt: 'You write clear, friendly notes.', model: { provider: 'default', name: 'mock-gpt' } },
    });
    expect(h.msgs('node_run', 'end')[2]).toMatchObject({ node_id: 'check', output: { branch: 'long' } });
    expect(h.msgs('output_with_choose_msg')[0]).toMatchObject({ node_id: 'choose', msg: 'That was a long note about tea. What next?', key: 'output_result', options: ['Again', 'Finish'] });
    expect(state.pending).toMatchObject({ node_id: 'choose', kind: 'choose', schema: { kind: 'choose', options: ['Again', 'Finish'] } });
    expect(state.usage.total_tokens).toBeGreaterThan(0);

    state = roundTrip(state);
    h.frames.length = 0;
    state = await executor.resume(state, { node_id: 'choose', data: { output_result: 'Finish' } }, h.ctx);
    expect(state.status).toBe('success');
    expect(h.trace()).toEqual(['node_run/end choose', 'node_run/start end', 'node_run/end end']);
    expect(state.variables.choose).toEqual({ message: 'That was a long note about tea. What next?', output_result: 'Finish' });
    expect(state.variables.ask).toEqual({ topic: 'tea', length: 'long' });
    expect(state.steps).toEqual({ start: 1, ask: 1, write: 1, check: 1, choose: 1, end: 1 });
    expect(state).toMatchObject({ pending: null, queue: [], error: null });
    for (const m of h.msgs('node_run', 'end')) expect(m.duration_ms).toEqual(expect.any(Number));
  });

  it('takes the else branch for a short note, streaming from the offline demo model', async () => {
    const h = harness({ providers: { get: () => new DemoProvider({ name: 'default', tokenDelayMs: 0 }) } });
    const state = await executor.start(demoGraph(), h.ctx);
    const done = await executor.resume(state, { node_id: 'ask', data: { topic: 'tea', length: 'short' } }, h.ctx);
    expect(done.status).toBe('success');
    expect(h.trace().slice(-7)).toEqual([
      'node_run/start check', 'node_run/end check', 'node_run/start short_note', 'output_msg/over short_note', 'node_run/end short_note', 'node_run/start end', 'node_run/end end',
    ]);
    expect(h.msgs('stream_msg', 'end')[0]!.msg).toContain('Write a short note about tea.');
    expect(h.msgs('output_msg')[0]).toMatchObject({ msg: 'A short note about tea was written.', output_key: '' });
    expect(done.variables.check).toEqual({ branch: 'else' });
  });
});

describe('answers', () => {
  it('checks a form answer and lists every problem; the run keeps waiting', async () => {
    const h = harness();
    const state = await executor.start(demoGraph(), h.ctx);
    const err = await expectAppError(executor.resume(state, { node_id: 'ask', data: { length: 'medium', color: 'red' } }, h.ctx), 'invalid_request', 10400);
    expect((err.data as Msg).errors).toEqual([
      { path: 'data/color', message: 'is not a field of this form' },
      { path: 'data/topic', message: 'is required (Topic)' },
      { path: 'data/length', message: 'must be one of: short, long' },
    ]);
    expect(state.status).toBe('input');
    await expectAppError(executor.resume(state, { node_id: 'ask', data: 'tea' as never }, h.ctx), 'invalid_request', 10400);
    await expectAppError(executor.resume(state, { node_id: 'write', data: {} }, h.ctx), 'invalid_request', 10400);
    expect(mock.requests).toHaveLength(0);
  });

  it('types form values: numbers, multiple selects, files, optional fields', async () => {
    const graph = chain(
      node('f', 'input', { mode: 'form', fields: [
        { key: 'n', type: 'number', label: 'N', required: true },
        { key: 'tags', type: 'select', label: 'Tags', options: ['a', 'b', 'c'], multiple: true },
        { key: 'doc', type: 'file', label: 'Doc' },
        { key: 'note', type: 'text', label: 'Note' },
      ] }),
      node('o', 'output', { message: '{{f.n}} {{f.tags}} [{{f.doc}}] [{{f.note}}]' }),
    );
    const h = harness();
    const state = await executor.start(graph, h.ctx);
    const err = await expectAppError(executor.resume(state, { node_id: 'f', data: { n: 'x', tags: 'a', doc: 5 } }, h.ctx), 'invalid_request', 10400);
    expect((err.data as Msg).errors.map((e: Msg) => e.path)).toEqual(['data/n', 'data/tags', 'data/doc']);
    const done = await executor.resume(state, { node_id: 'f', data: { n: '42', tags: ['a', 'c'], doc: 'https://files/x.pdf' } }, h.ctx);
    expect(done.variables.f).toEqual({ n: 42, tags: ['a', 'c'], doc: 'https://files/x.pdf', note: '' });
    expect(h.msgs('output_msg')[0]!.msg).toBe('42 ["a","c"] [https://files/x.pdf] []');
  });

  it('dialog input: user_input becomes a variable', async () => {
    const graph = chain(node('talk', 'input', { mode: 'dialog', prompt: 'Say hi' }), node('o', 'output', { message: 'You said {{#talk.user_input#}}!' }));
    const h = harness();
    const state = await executor.start(graph, h.ctx);
    expect(h.msgs('input')[0]).toMatchObject({ msg: 'Say hi', input_schema: { input_type: 'dialog_input', value: [{ key: 'user_input', type: 'dialog' }] } });
    await expectAppError(executor.resume(state, { node_id: 'talk', data: { user_input: 3 } }, h.ctx), 'invalid_request', 10400);
    const done = await executor.resume(state, { node_id: 'talk', data: { user_input: 'hello' }, message: 'hello' }, h.ctx);
    expect(h.msgs('output_msg')[0]!.msg).toBe('You said hello!');
    expect(done.variables.talk).toEqual({ user_input: 'hello', dialog_files_content: [] });
  });

  it('an editable output waits for the edited text', async () => {
    const graph = chain(node('draft', 'output', { message: 'Dear Sir', editable: true }), node('o', 'output', { message: 'Sent: {{draft.output_result}}' }));
    const h = harness();
    const state = await executor.start(graph, h.ctx);
    expect(h.msgs('output_with_input_msg')[0]).toMatchObject({ msg: 'Dear Sir', input_msg: 'Dear Sir', key: 'output_result' });
    expect(state.pending).toMatchObject({ kind: 'edit', message_id: 101 });
    await executor.resume(state, { node_id: 'draft', data: { output_result: 'Dear Madam' } }, h.ctx);
    expect(h.msgs('output_msg')[0]!.msg).toBe('Sent: Dear Madam');
  });

  it('a choice must be one of the options', async () => {
    const graph = chain(node('pick', 'output', { message: 'Pick', options: ['x', 'y'] }));
    const h = harness();
    const state = await executor.start(graph, h.ctx);
    const err = await expectAppError(executor.resume(state, { node_id: 'pick', data: { output_result: 'z' } }, h.ctx), 'invalid_request', 10400);
    expect((err.data as Msg).errors).toEqual([{ path: 'data/output_result', message: 'must be one of: x, y' }]);
  });

  it('an answer after workflow.input_timeout fails the run with 10527', async () => {
    let now = 1_000_000;
    const h = harness({ now: () => now, inputTimeoutMs: 60_000 });
    const state = await executor.start(demoGraph(), h.ctx);
    expect(WorkflowExecutor.expired(state, 60_000, now + 60_001)).toBe(true);
    expect(WorkflowExecutor.expired(state, 60_000, now + 1000)).toBe(false);
    now += 60_001;
    const err = await expectAppError(executor.resume(roundTrip(state), { node_id: 'ask', data: { topic: 'tea', length: 'long' } }, h.ctx), 'workflow_input_timeout', 10527);
    expect(err.data).toMatchObject({ node_id: 'ask' });
    expect(h.frames.at(-1)).toMatchObject({ category: 'node_run', type: 'end', message: { node_id: 'ask', reason: expect.stringContaining('waited for input') } });
    expect(WorkflowExecutor.failed(state, err, now)).toMatchObject({ status: 'failed', pending: null, error: { code: 'workflow_input_timeout', status_code: 10527, node_id: 'ask' } });
  });

  it('start variables: declared defaults, overridden by the given inputs', async () => {
    const graph = chain(node('o', 'output', { message: '{{start.lang}}-{{start.n}}' }));
    graph.nodes[0] = node('start', 'start', { variables: { lang: 'en', n: 1 } });
    const h = harness();
    const done = await executor.start(graph, h.ctx, { n: 7, other: 'ignored' });
    expect(h.msgs('output_msg')[0]!.msg).toBe('en-7');
    expect(done.variables.start).toMatchObject({ lang: 'en', n: 7, chat_id: 'c'.repeat(32), current_time: expect.any(String) });
    expect(done.variables.start).not.toHaveProperty('other');
  });
});

describe('condition', () => {
  const graph = (): WorkflowGraph => ({
    nodes: [
      node('start', 'start', { variables: { n: 0, tags: [] } }),
      node('check', 'condition', { cases: [
        { id: 'big', when: { left: '{{start.n}}', op: 'gt', right: 10 } },
        { id: 'tagged', when: { left: '{{start.tags}}', op: 'contains', right: 'vip' } },
      ] }),
      node('big_out', 'output', { message: 'big' }),
      node('tagged_out', 'output', { message: 'tagged' }),
      node('other_out', 'output', { message: 'other' }),
      end,
    ],
    edges: [
      edge('start', 'check'), edge('check', 'big_out', 'big'), edge('check', 'tagged_out', 'tagged'), edge('check', 'other_out', 'else'),
      edge('big_out', 'end'), edge('tagged_out', 'end'), edge('other_out', 'end'),
    ],
  });

  it.each([
    ['the first case', { n: 11, tags: ['vip'] }, 'big'],
    ['the second case', { n: '3', tags: ['x', 'vip'] }, 'tagged'],
    ['else', { n: 10, tags: ['x'] }, 'else'],
  ])('takes %s', async (_, inputs, branch) => {
    const h = harness();
    const done = await executor.start(graph(), h.ctx, inputs);
    expect(done.status).toBe('success');
    expect(done.variables.check).toEqual({ branch });
    expect(h.msgs('output_msg').map((m) => m.node_id)).toEqual([`${branch === 'else' ? 'other' : branch}_out`]);
    const ran = h.msgs('node_run', 'end')[1]!;
    expect(ran).toMatchObject({ node_id: 'check', output: { branch } });
    expect(ran.input_data.cases.at(-1)).toMatchObject({ matched: branch !== 'else' });
  });

  it.each([
    ['eq', 'a', 'a', true], ['eq', '2', 2, true], ['eq', 'a', 'b', false], ['ne', 'a', 'b', true],
    ['gt', 3, 2, true], ['gte', '2', 2, true], ['lt', 1.5, '2', true], ['lte', 3, 2, false],
    ['contains', 'hello world', 'lo w', true], ['contains', ['a', 1], '1', true], ['not_contains', ['a'], 'b', true],
    ['empty', '  ', undefined, true], ['empty', [], undefined, true], ['empty', {}, undefined, true], ['not_empty', 'x', undefined, true], ['empty', 0, undefined, false],
  ])('%s(%j, %j) is %s', async (op, left, right, expected) => {
    const when = { left: '{{start.v}}', op, ...(right !== undefined && { right }) };
    const g: WorkflowGraph = {
      nodes: [node('start', 'start', { variables: { v: left as never } }), node('c', 'condition', { cases: [{ id: 'yes', when }] }), end],
      edges: [edge('start', 'c'), edge('c', 'end', 'yes'), edge('c', 'end', 'else')],
    };
    const done = await executor.start(g, harness().ctx);
    expect(done.variables.c!.branch).toBe(expected ? 'yes' : 'else');
  });

  it('a number comparison of something that is no number is a bad parameter (10531)', async () => {
    const g = graph();
    const err = await expectAppError(executor.start(g, harness().ctx, { n: 'many' }), 'workflow_node_invalid', 10531);
    expect(err.message).toContain('gt compares numbers');
  });
});

describe('loops and limits', () => {
  /** start → tick → again → tick → …: `again` always loops back */
  const loop = (tickGuard?: number, againGuard?: number): WorkflowGraph => ({
    nodes: [
      start,
      node('tick', 'output', { message: 'tick', ...(tickGuard !== undefined && { max_steps: tickGuard }) }),
      node('again', 'condition', { cases: [{ id: 'yes', when: { left: '{{tick.message}}', op: 'not_empty' } }], ...(againGuard !== undefined && { max_steps: againGuard }) }),
      end,
    ],
    edges: [edge('start', 'tick'), edge('tick', 'again'), edge('again', 'tick', 'yes'), edge('again', 'end', 'else')],
  });

  it('max_steps on a node ends a looping run with 10528', async () => {
    const h = harness();
    const err = await expectAppError(executor.start(loop(3), h.ctx), 'workflow_max_steps', 10528);
    expect(err.data).toMatchObject({ node_id: 'tick', max_steps: 3 });
    expect(err.message).toContain('more than the maximum number of times (3)');
    expect(h.msgs('output_msg')).toHaveLength(3);
  });

  it('workflow.max_steps applies to nodes without a guard of their own', async () => {
    const h = harness({ maxSteps: 2 });
    const err = await expectAppError(executor.start(loop(undefined, 2), h.ctx), 'workflow_max_steps', 10528);
    expect(err.data).toMatchObject({ node_id: 'tick', max_steps: 2 });
    expect(h.msgs('output_msg')).toHaveLength(2);
  });
});

describe('stop', () => {
  it('while an llm node streams: the upstream call is aborted, the partial text kept, the run stopped', async () => {
    mock.enqueue({ text: Array.from({ length: 200 }, (_, i) => ` w${i}`), delayMs: 20 });
    const h = harness({
      onFrame: (f, self) => {
        if (f.category === 'stream_msg' && f.type === 'stream' && self.msgs('stream_msg', 'stream').length === 3) self.controller.abort();
      },
    });
    const state = await executor.start(demoGraph(), h.ctx);
    const stopped = await executor.resume(state, { node_id: 'ask', data: { topic: 'tea', length: 'long' } }, h.ctx);
    await mock.waitForAbort();
    expect(stopped).toMatchObject({ status: 'stopped', pending: null, queue: [] });
    const end = h.msgs('stream_msg', 'end')[0]!;
    expect(end).toMatchObject({ node_id: 'write', interrupted: true });
    expect(end.msg.startsWith(' w0 w1 w2')).toBe(true);
    expect(h.trace().slice(-2)).toEqual(['stream_msg/end write', 'node_run/end write']);
    expect(h.frames.at(-1)!.message).toMatchObject({ node_id: 'write', reason: 'stopped' });
    expect(stopped.variables.write).toBeUndefined();
  });

  it('while waiting for input: the run ends as stopped and takes no answer', async () => {
    const h = harness();
    const state = await executor.start(demoGraph(), h.ctx);
    const stopped = executor.stop(roundTrip(state), 5);
    expect(stopped).toMatchObject({ status: 'stopped', pending: null, queue: [], updated_at: 5 });
    expect(state.status).toBe('input');
    await expectAppError(executor.resume(stopped, { node_id: 'ask', data: { topic: 'tea', length: 'long' } }, h.ctx), 'invalid_request', 10400);
    expect(executor.stop(stopped)).toBe(stopped);
    expect(mock.requests).toHaveLength(0);
  });

  it('an answer that arrives with the stop runs nothing', async () => {
    const h = harness();
    const state = await executor.start(demoGraph(), h.ctx);
    h.controller.abort();
    h.frames.length = 0;
    const stopped = await executor.resume(state, { node_id: 'ask', data: { topic: 'tea', length: 'long' } }, h.ctx);
    expect(stopped.status).toBe('stopped');
    expect(h.frames).toEqual([]);
  });

  it('before the run starts: nothing runs', async () => {
    const h = harness();
    h.controller.abort();
    expect((await executor.start(demoGraph(), h.ctx)).status).toBe('stopped');
    expect(h.frames).toEqual([]);
  });
});

describe('tools', () => {
  it('a tool node calls the tool with rendered arguments; its output is a variable', async () => {
    const graph = chain(
      node('calc', 'tool', { tool: 'calculator', args: { expression: '{{start.a}} * (2 + 3)' } }),
      node('o', 'output', { message: 'result {{calc.output}}' }),
    );
    graph.nodes[0] = node('start', 'start', { variables: { a: 4 } });
    const h = harness();
    const done = await executor.start(graph, h.ctx);
    expect(done.variables.calc).toEqual({ output: '20' });
    expect(h.msgs('node_run', 'end')[1]).toMatchObject({ node_id: 'calc', node_type: 'tool', input_data: { tool: 'calculator', args: { expression: '4 * (2 + 3)' } } });
    expect(h.msgs('output_msg')[0]!.msg).toBe('result 20');
  });

  it('an unknown tool or arguments the tool refuses are bad parameters (10531); a failing tool fails the run (10541)', async () => {
    await expectAppError(executor.start(chain(node('t', 'tool', { tool: 'teleport' })), harness().ctx), 'workflow_node_invalid', 10531);
    await expectAppError(executor.start(chain(node('t', 'tool', { tool: 'calculator', args: { expression: '1 +' } })), harness().ctx), 'workflow_node_invalid', 10531);
    const broken: Tool = { spec: { name: 'broken', description: '', parameters: {} }, run: () => Promise.reject(new Error('socket hang up')) };
    const h = harness({ tools: { get: (n: string) => (n === 'broken' ? broken : undefined) } });
    const err = await expectAppError(executor.start(chain(node('t', 'tool', { tool: 'broken' })), h.ctx), 'workflow_failed', 10541);
    // an unknown error is not shown: only that the node failed
    expect(err.message).toBe('node "t": the tool node failed');
    expect(h.frames.at(-1)!.message).toMatchObject({ node_id: 't', reason: 'node "t": the tool node failed' });
  });
});

describe('failures', () => {
  it('a graph that does not validate is refused with every problem (10531)', async () => {
    const err = await expectAppError(executor.start({ nodes: [node('a', 'llm')], edges: [] }, harness().ctx), 'workflow_node_invalid', 10531);
    expect((err.data as Msg).problems.map((p: Msg) => p.code).sort()).toEqual(['invalid_node_data', 'no_start']);
  });

  it('a variable missing at run time (a branch that did not run) is 10531', async () => {
    const graph: WorkflowGraph = {
      nodes: [
        node('start', 'start', { variables: { go: 'no' } }),
        node('c', 'condition', { cases: [{ id: 'yes', when: { left: '{{start.go}}', op: 'eq', right: 'yes' } }] }),
        node('a', 'output', { message: 'took a' }),
        node('join', 'output', { message: 'after {{a.message}}' }),
        end,
      ],
      edges: [edge('start', 'c'), edge('c', 'a', 'yes'), edge('c', 'join', 'else'), edge('a', 'join'), edge('join', 'end')],
    };
    const h = harness();
    const err = await expectAppError(executor.start(graph, h.ctx), 'workflow_node_invalid', 10531);
    expect(err.message).toBe('node "join": unknown variable {{a.message}}');
    expect(err.data).toMatchObject({ node_id: 'join', variables: ['{{a.message}}'] });
    expect(h.frames.at(-1)).toMatchObject({ category: 'node_run', type: 'end', message: { node_id: 'join', reason: err.message } });
  });

  it('an upstream model error fails the run with 10541, naming the node', async () => {
    mock.enqueue({ status: 500 });
    const h = harness();
    const err = await expectAppError(executor.start(chain(node('w', 'llm', { prompt: 'hi', name: 'Writer' })), h.ctx), 'workflow_failed', 10541);
    expect(err.message).toMatch(/^node "Writer": default: upstream HTTP 500/);
    expect(err.data).toMatchObject({ node_id: 'w', node_name: 'Writer', cause_code: 'upstream_error' });
  });

  it('an llm node naming a provider that is not configured is 10531', async () => {
    const err = await expectAppError(executor.start(chain(node('w', 'llm', { prompt: 'hi', model: { provider: 'nowhere' } })), harness().ctx), 'workflow_node_invalid', 10531);
    expect(err.message).toBe('node "w": model provider "nowhere" is not configured');
  });

  it('an llm node may name its own model; stream: false sends only the final message', async () => {
    mock.enqueue({ text: 'short answer' });
    const h = harness();
    const done = await executor.start(chain(node('w', 'llm', { prompt: 'hi', model: { name: 'other-model', temperature: 0, max_tokens: 5 }, output_key: 'answer', stream: false })), h.ctx);
    expect(mock.requests[0]).toMatchObject({ model: 'other-model', temperature: 0, max_tokens: 5 });
    expect(h.msgs('stream_msg', 'stream')).toEqual([]);
    expect(h.msgs('stream_msg', 'end')[0]).toMatchObject({ msg: 'short answer', output_key: 'answer' });
    expect(done.variables.w).toEqual({ answer: 'short answer' });
  });

  it('resuming a run that does not wait is refused', async () => {
    const done = await executor.start(chain(node('o', 'output', { message: 'x' })), harness().ctx);
    expect(done.status).toBe('success');
    await expectAppError(executor.resume(done, { node_id: 'o', data: {} }, harness().ctx), 'invalid_request', 10400);
  });
});
