/**
 * Code nodes run user JavaScript in QuickJS (WebAssembly) inside worker threads. These tests try
 * to escape, to run forever and to eat memory, and check after each that the sandbox (and so the
 * server process) still runs a normal node.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { AppError } from '../../src/domain/errors.ts';
import type { WorkflowEventBody } from '../../src/domain/events.ts';
import type { WorkflowGraph } from '../../src/domain/types.ts';
import { CodeSandbox, SandboxError } from '../../src/runtimes/workflow/code-sandbox.ts';
import { WorkflowExecutor, type WorkflowContext } from '../../src/runtimes/workflow/executor.ts';

const sandbox = new CodeSandbox({ maxWorkers: 2 });
const executor = new WorkflowExecutor({ sandbox });
afterAll(() => sandbox.close());

type Frame = WorkflowEventBody;

function context(signal = new AbortController().signal): { ctx: WorkflowContext; frames: Frame[] } {
  const frames: Frame[] = [];
  return {
    frames,
    ctx: {
      emit: (body) => void frames.push(body),
      signal,
      providers: { get: () => undefined },
      defaultModel: { provider: 'default' },
      tools: { get: () => undefined },
      maxSteps: 50,
    },
  };
}

/** start (variables a = 41) → code → end */
const codeGraph = (code: string, extra: Record<string, unknown> = {}): WorkflowGraph => ({
  nodes: [
    { id: 'start', type: 'start', data: { variables: { a: 41, words: ['x', 'y'] } } },
    { id: 'k', type: 'code', data: { code, inputs: { a: '{{start.a}}', words: '{{start.words}}', text: 'a is {{start.a}}' }, ...extra } },
    { id: 'end', type: 'end', data: {} },
  ],
  edges: [{ source: 'start', target: 'k' }, { source: 'k', target: 'end' }],
});

const runCode = async (code: string, extra: Record<string, unknown> = {}) => (await executor.start(codeGraph(code, extra), context().ctx)).variables.k;

/** what a node threw */
const failure = async (code: string, extra: Record<string, unknown> = {}): Promise<AppError> => {
  const err = await executor.start(codeGraph(code, extra), context().ctx).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
};

/** the sandbox still works: a plain node runs and returns */
const expectHealthy = async () => expect(await runCode('inputs.a + 1')).toEqual({ result: 42 });

describe('code node', () => {
  it('returns values: an object sets its keys, anything else `result`; inputs keep their JSON types', async () => {
    expect(await runCode('({ doubled: inputs.a * 2, n: inputs.words.length, text: inputs.text })')).toEqual({ doubled: 82, n: 2, text: 'a is 41' });
    expect(await runCode('const total = inputs.a + 1;\nreturn { total };')).toEqual({ total: 42 });
    expect(await runCode('inputs.words.map((w) => w.toUpperCase())')).toEqual({ result: ['X', 'Y'] });
    expect(await runCode('inputs.a > 40;')).toEqual({ result: true });
    expect(await runCode('// nothing returned\nlet x = 1')).toEqual({ result: null });
    expect(await runCode('(async () => { await null; return { later: inputs.a } })()')).toEqual({ later: 41 });
  });

  it('shows its inputs and outputs in node_run/end', async () => {
    const { ctx, frames } = context();
    await executor.start(codeGraph('({ b: inputs.a })'), ctx);
    expect(frames.find((f) => f.kind === 'node_end' && f.node.nodeId === 'k')).toMatchObject({
      nodeType: 'code', input: { inputs: { a: 41, words: ['x', 'y'], text: 'a is 41' } }, output: { b: 41 },
    });
  });

  it('a syntax error is a bad parameter (10531); an exception fails the run (10541)', async () => {
    const syntax = await failure('return (');
    expect(syntax).toMatchObject({ code: 'workflow_node_invalid', statusCode: 10531, data: { node_id: 'k', reason: 'syntax' } });
    expect(syntax.message).toContain('SyntaxError');
    const thrown = await failure('throw new RangeError("no way")');
    expect(thrown).toMatchObject({ code: 'workflow_failed', statusCode: 10541, message: 'node "k": RangeError: no way' });
    expect((await failure('null.x')).message).toContain('TypeError');
    expect((await failure('throw { why: "because" }')).message).toBe('node "k": threw {"why":"because"}');
    expect((await failure('const o = {}; o.o = o; return o')).message).toContain('circular');
    expect((await failure('new Promise(() => {})')).message).toContain('never settled');
    await expectHealthy();
  });

  it('an infinite loop is stopped by the time limit, and the event loop of the server keeps turning meanwhile', async () => {
    let ticked = false;
    setTimeout(() => (ticked = true), 1);
    const err = await failure('while (true) {}', { timeout_ms: 300 });
    expect(err).toMatchObject({ code: 'workflow_failed', data: { reason: 'timeout' } });
    expect(err.message).toContain('time limit of 300 ms');
    // the loop ran in a worker: the timer fired while the main thread waited
    expect(ticked).toBe(true);
    await expectHealthy();
    expect(await failure('(async () => { for (;;) {} })()', { timeout_ms: 200 })).toMatchObject({ data: { reason: 'timeout' } });
    expect(await failure('/(a+)+$/.test("a".repeat(40) + "b")', { timeout_ms: 200 })).toMatchObject({ data: { reason: 'timeout' } });
    await expectHealthy();
  });

  it('unbounded allocation is stopped by the memory limit', async () => {
    for (const code of [
      'const a = []; for (;;) a.push({ i: a.length, s: "v" + a.length })',
      '"x".repeat(1 << 26)',
      'new ArrayBuffer(1e9)',
      'const m = new Map(); for (let i = 0; ; i++) m.set(i, [i])',
    ]) {
      const err = await failure(code, { timeout_ms: 5000 });
      expect(err, code).toMatchObject({ code: 'workflow_failed', data: { reason: 'memory' } });
      expect(err.message).toContain('out of memory (limit 16 MiB)');
      await expectHealthy();
    }
  });

  it('deep recursion hits the stack limit, not the host', async () => {
    for (const code of ['function f() { return f() + 1 } return f()', 'JSON.parse("[".repeat(100000))', 'return String(Array(1e5).fill(0).reduce((x) => [x], 0))']) {
      const err = await failure(code);
      expect(err.message, code).toContain('stack overflow');
      await expectHealthy();
    }
  });

  it('a huge result is refused', async () => {
    expect(await failure('"x".repeat(2e6)')).toMatchObject({ code: 'workflow_failed', data: { reason: 'output' } });
  });

  it('cannot reach the host: no process, require, import(), fetch, timers or Function escape', async () => {
    expect(await runCode('[typeof process, typeof require, typeof module, typeof fetch, typeof setTimeout, typeof Buffer, typeof WebAssembly, typeof std, typeof os]'))
      .toEqual({ result: Array(9).fill('undefined') });
    expect(await runCode('Object.getOwnPropertyNames(globalThis).filter((k) => /process|require|fetch|import|module|console|Deno|Bun/.test(k))')).toEqual({ result: [] });
    for (const [code, message] of [
      ['process.exit(1)', "'process' is not defined"],
      ['require("fs").readFileSync("/etc/passwd", "utf8")', "'require' is not defined"],
      ['fetch("http://127.0.0.1/")', "'fetch' is not defined"],
      ['globalThis.constructor.constructor("return process")()', "'process' is not defined"],
      ['(function () { return this })().process.mainModule', 'cannot read property'],
      ['import("fs")', "could not load module 'fs'"],
      ['import("node:child_process").then((cp) => cp.execSync("id"))', "could not load module 'node:child_process'"],
      ['(async () => (await import("https://example.com/x.js")).default)()', 'could not load module'],
    ] as const) {
      const err = await failure(code);
      expect(err.code, code).toBe('workflow_failed');
      expect(err.message.toLowerCase(), code).toContain(message.toLowerCase());
    }
    // `this` inside the Function constructor's code is QuickJS's own global: nothing of Node's
    expect(await runCode('new Function("return typeof this.process")()')).toEqual({ result: 'undefined' });
    await expectHealthy();
  });

  it('a run gets a fresh context: nothing leaks into the next run', async () => {
    await runCode('globalThis.secret = 1; Object.prototype.polluted = true; JSON.stringify = () => "{}"; return 0');
    expect(await runCode('[typeof globalThis.secret, ({}).polluted === undefined, JSON.stringify({ a: 1 })]')).toEqual({ result: ['undefined', true, '{"a":1}'] });
  });

  it('stop ends a running code node at once; the run is stopped', async () => {
    const controller = new AbortController();
    const { ctx, frames } = context(controller.signal);
    const run = executor.start(codeGraph('while (true) {}', { timeout_ms: 5000 }), { ...ctx, emit: (body) => {
      frames.push(body);
      if (body.kind === 'node_start' && body.node.nodeId === 'k') setTimeout(() => controller.abort(), 50);
    } });
    const state = await run;
    expect(state.status).toBe('stopped');
    expect(frames.at(-1)).toMatchObject({ kind: 'node_end', node: { nodeId: 'k' }, reason: 'stopped' });
    await expectHealthy();
  });
});

describe('CodeSandbox', () => {
  it('a native call that does not heed the interrupt is ended by terminating its worker', async () => {
    // QuickJS's JSON.stringify scans its stack for cycles at every level: seconds for deep nesting
    const strict = new CodeSandbox({ maxWorkers: 1, graceMs: 50 });
    try {
      await expect(strict.run('let o = {}; for (let i = 0; i < 1e5; i++) o = { o }; return JSON.stringify(o).length', {}, { timeoutMs: 100 }))
        .rejects.toMatchObject({ reason: 'timeout' });
      expect(await strict.run('inputs.a + 1', { a: 41 }, { timeoutMs: 1000 })).toBe(42);
    } finally {
      await strict.close();
    }
  });

  it('runs several jobs at once and queues beyond its workers', async () => {
    const small = new CodeSandbox({ maxWorkers: 1 });
    try {
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) => small.run('inputs.i * 2', { i }, { timeoutMs: 1000 })));
      expect(results).toEqual([0, 2, 4, 6, 8]);
    } finally {
      await small.close();
    }
  });

  it('a stopped job frees its slot for the next one', async () => {
    const small = new CodeSandbox({ maxWorkers: 1 });
    try {
      const controller = new AbortController();
      const spin = small.run('while (true) {}', {}, { timeoutMs: 5000, signal: controller.signal });
      const next = small.run('inputs.x', { x: 'next' }, { timeoutMs: 1000 });
      setTimeout(() => controller.abort(), 20);
      await expect(spin).rejects.toMatchObject({ reason: 'stopped' });
      expect(await next).toBe('next');
    } finally {
      await small.close();
    }
  });

  it('refuses work once closed', async () => {
    const small = new CodeSandbox();
    await small.close();
    await expect(small.run('1', {}, { timeoutMs: 100 })).rejects.toBeInstanceOf(SandboxError);
  });
});
