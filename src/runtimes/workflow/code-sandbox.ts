/**
 * The sandbox of workflow `code` nodes: QuickJS compiled to WebAssembly (quickjs-emscripten), run
 * in worker threads. User code never runs in the server's realm: no eval, vm or Function here.
 *
 * Each run gets a fresh QuickJS runtime and context with a heap limit, a stack limit and an
 * interrupt handler that ends it at its deadline. Nothing of the host is exposed: the code sees
 * `inputs` (JSON in) and its return value comes back as JSON (out) — no process, require, import(),
 * fetch, timers or file system exist in there.
 *
 * Why a worker, when QuickJS already limits time and memory: a run that loops until its deadline
 * would otherwise block the server's event loop for that long; deep native recursion can exhaust
 * the host thread's stack (a worker has its own, larger one); and a WebAssembly module that hit a
 * fatal error is thrown away with its worker instead of staying in the server. The host keeps a
 * backstop: a worker that does not answer shortly after the deadline is terminated.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { JsonValue } from '../../domain/types.ts';

/** Why a run failed: `syntax` is a problem of the node's code; the rest happened while it ran. */
export type SandboxFailure = 'syntax' | 'error' | 'timeout' | 'memory' | 'output' | 'stopped' | 'crashed';

export class SandboxError extends Error {
  constructor(readonly reason: SandboxFailure, message: string) {
    super(message);
    this.name = 'SandboxError';
  }
}

export interface SandboxOptions {
  /** QuickJS heap limit per run (default 16 MiB) */
  memoryBytes?: number;
  /** QuickJS stack limit per run (default 256 KiB) */
  stackBytes?: number;
  /** largest result, in characters of JSON (default 1 Mi) */
  maxOutputChars?: number;
  /** worker threads at most; runs beyond wait for a free one (default 2) */
  maxWorkers?: number;
  /** an idle worker exits after this long (default 60 s) */
  idleMs?: number;
  /** a worker has this long to load QuickJS and take a job (default 15 s) */
  startupMs?: number;
  /** how long after its deadline a silent worker is terminated (default 1 s) */
  graceMs?: number;
}

export interface RunOptions {
  timeoutMs: number;
  /** aborting ends the run at once (the worker is terminated) */
  signal?: AbortSignal | undefined;
}

interface Job {
  id: number;
  code: string;
  inputs: string;
  timeoutMs: number;
  memoryBytes: number;
  stackBytes: number;
  maxOutputChars: number;
}

type WorkerMessage =
  | { id: number; type: 'started' }
  | { id: number; type: 'done'; ok: true; json: string; fatal: boolean }
  | { id: number; type: 'done'; ok: false; reason: SandboxFailure; message: string; fatal: boolean };

/**
 * The worker's program (plain JavaScript: workers cannot load our TypeScript). It loads QuickJS
 * once and runs one job at a time, each in a fresh runtime; `fatal` asks the host to discard it.
 */
const WORKER_SOURCE = String.raw`
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';

const QuickJS = await createRequire(workerData.entry)(workerData.entry).getQuickJS();

const asExpression = (code) => '(function (inputs) { "use strict"; return (\n' + code.replace(/;\s*$/, '') + '\n); })';
const asBody = (code) => '(function (inputs) { "use strict";\n' + code + '\n})';
const clip = (s) => (s.length > 500 ? s.slice(0, 500) + '…' : s);

function allocated(rt) {
  const m = /memory allocated\s+\d+\s+(\d+)/.exec(rt.dumpMemoryUsage());
  return m ? Number(m[1]) : 0;
}

function run(job) {
  const rt = QuickJS.newRuntime();
  let vm;
  const handles = [];
  const keep = (h) => (handles.push(h), h);
  const deadline = Date.now() + job.timeoutMs;
  let interrupted = false;
  let fatal = false;
  const failure = (errorHandle, hint) => {
    let dumped;
    try { dumped = vm.dump(errorHandle); } catch { dumped = undefined; }
    errorHandle.dispose();
    const message = dumped && typeof dumped === 'object' && typeof dumped.message === 'string' ? dumped.message : undefined;
    if (interrupted || message === 'interrupted') return { ok: false, reason: 'timeout', message: 'the code ran past its time limit of ' + job.timeoutMs + ' ms' };
    const limit = 'the code ran out of memory (limit ' + Math.round(job.memoryBytes / 1048576) + ' MiB)';
    if (message === 'out of memory' || (!message && allocated(rt) >= job.memoryBytes * 0.9)) return { ok: false, reason: 'memory', message: limit };
    // Out of memory, QuickJS may fail to build its error and throw null instead; by then the
    // unwound frames have freed the memory, so a null is most likely that, rarely a 'throw null'.
    if (dumped === null || dumped === undefined || dumped === '') return { ok: false, reason: 'memory', message: limit + ', or threw ' + JSON.stringify(dumped ?? null) };
    const text = message !== undefined ? (dumped.name ? dumped.name + ': ' : '') + message : 'threw ' + clip(JSON.stringify(dumped) ?? String(dumped));
    return { ok: false, reason: hint ?? 'error', message: clip(text) };
  };
  const body = () => {
    rt.setMemoryLimit(job.memoryBytes);
    rt.setMaxStackSize(job.stackBytes);
    rt.setInterruptHandler(() => (interrupted = interrupted || Date.now() > deadline));
    vm = rt.newContext();
    // taken before the user's code runs, so it cannot replace them
    const json = keep(vm.getProp(vm.global, 'JSON'));
    const parse = keep(vm.getProp(json, 'parse'));
    const stringify = keep(vm.getProp(json, 'stringify'));

    let compiled = vm.evalCode(asExpression(job.code), 'code.js');
    if (compiled.error) {
      compiled.error.dispose();
      compiled = vm.evalCode(asBody(job.code), 'code.js');
      if (compiled.error) return failure(compiled.error, 'syntax');
    }
    const fn = keep(compiled.value);
    const parsed = vm.callFunction(parse, vm.undefined, keep(vm.newString(job.inputs)));
    if (parsed.error) return failure(parsed.error);
    const called = vm.callFunction(fn, vm.undefined, keep(parsed.value));
    if (called.error) return failure(called.error);
    let value = keep(called.value);

    // an async function: let its jobs run, under the same limits
    let state = vm.getPromiseState(value);
    if (state.type === 'pending') {
      const jobs = rt.executePendingJobs();
      if (jobs.error) return failure(jobs.error);
      state = vm.getPromiseState(value);
    }
    if (state.type === 'pending') return { ok: false, reason: 'error', message: 'the code returned a promise that never settled' };
    if (state.type === 'rejected') return failure(state.error);
    if (!state.notAPromise) value = keep(state.value);

    const out = vm.callFunction(stringify, vm.undefined, value);
    if (out.error) return failure(out.error);
    const text = keep(out.value);
    if (vm.typeof(text) !== 'string') return { ok: true, json: 'null' };
    const length = vm.getNumber(keep(vm.getProp(text, 'length')));
    if (length > job.maxOutputChars) return { ok: false, reason: 'output', message: 'the result is too large (' + length + ' characters of JSON; at most ' + job.maxOutputChars + ')' };
    return { ok: true, json: vm.getString(text) };
  };
  let result;
  try {
    result = body();
  } catch (err) {
    // not an error of the user's code: the module itself is in trouble
    fatal = true;
    result = { ok: false, reason: 'crashed', message: 'the sandbox failed: ' + clip(String(err && err.message || err)) };
  }
  try {
    for (const h of handles.reverse()) if (h.alive) h.dispose();
    vm?.dispose();
    rt.dispose();
  } catch {
    fatal = true;
  }
  return { ...result, fatal };
}

parentPort.on('message', (job) => {
  parentPort.postMessage({ id: job.id, type: 'started' });
  parentPort.postMessage({ id: job.id, type: 'done', ...run(job) });
});
`;

const WORKER_URL = new URL(`data:text/javascript,${encodeURIComponent(WORKER_SOURCE)}`);

interface Slot {
  worker: Worker;
  busy: boolean;
  idleTimer?: NodeJS.Timeout | undefined;
}

export class CodeSandbox {
  private readonly memoryBytes: number;
  private readonly stackBytes: number;
  private readonly maxOutputChars: number;
  private readonly maxWorkers: number;
  private readonly idleMs: number;
  private readonly startupMs: number;
  private readonly graceMs: number;
  private readonly entry: string;
  private readonly slots = new Set<Slot>();
  private readonly waiting: Array<() => void> = [];
  private nextId = 1;
  private closed = false;

  constructor(options: SandboxOptions = {}) {
    this.memoryBytes = options.memoryBytes ?? 16 * 1024 * 1024;
    this.stackBytes = options.stackBytes ?? 256 * 1024;
    this.maxOutputChars = options.maxOutputChars ?? 1024 * 1024;
    this.maxWorkers = Math.max(1, options.maxWorkers ?? 2);
    this.idleMs = options.idleMs ?? 60_000;
    this.startupMs = options.startupMs ?? 15_000;
    this.graceMs = options.graceMs ?? 1000;
    // the CommonJS build: the worker loads it with require, which works the same under tsx, vitest and node
    this.entry = createRequire(import.meta.url).resolve('quickjs-emscripten');
  }

  /**
   * Runs `code` (an expression, or a function body that returns) with `inputs` bound.
   * @returns the JSON value it returned (undefined becomes null)
   * @throws SandboxError with the reason
   */
  async run(code: string, inputs: Record<string, JsonValue>, options: RunOptions): Promise<JsonValue> {
    const { signal } = options;
    if (this.closed) throw new SandboxError('crashed', 'the sandbox is closed');
    if (signal?.aborted) throw new SandboxError('stopped', 'stopped');
    const job: Job = {
      id: this.nextId++, code, inputs: JSON.stringify(inputs), timeoutMs: options.timeoutMs,
      memoryBytes: this.memoryBytes, stackBytes: this.stackBytes, maxOutputChars: this.maxOutputChars,
    };
    const slot = await this.acquire(signal);
    let healthy = false;
    try {
      const message = await this.exchange(slot, job, signal);
      healthy = !message.fatal;
      if (!message.ok) throw new SandboxError(message.reason, message.message);
      return JSON.parse(message.json) as JsonValue;
    } finally {
      this.release(slot, healthy);
    }
  }

  /** Ends every worker; runs in flight fail with `crashed`. */
  async close(): Promise<void> {
    this.closed = true;
    const slots = [...this.slots];
    this.slots.clear();
    for (const wake of this.waiting.splice(0)) wake();
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  /** Posts the job and waits for its answer, the deadline's backstop, a stop or the worker's death. */
  private exchange(slot: Slot, job: Job, signal: AbortSignal | undefined): Promise<Extract<WorkerMessage, { type: 'done' }>> {
    const { worker } = slot;
    return new Promise((resolve, reject) => {
      let timer = setTimeout(() => fail('crashed', 'the sandbox did not start in time'), this.startupMs);
      const cleanup = () => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        signal?.removeEventListener('abort', onAbort);
      };
      const fail = (reason: SandboxFailure, message: string) => {
        cleanup();
        // whatever it is doing, this worker is done: terminating it is the only sure stop
        this.discard(slot);
        reject(new SandboxError(reason, message));
      };
      const onMessage = (m: WorkerMessage) => {
        if (m.id !== job.id) return;
        if (m.type === 'started') {
          clearTimeout(timer);
          timer = setTimeout(() => fail('timeout', `the code ran past its time limit of ${job.timeoutMs} ms`), job.timeoutMs + this.graceMs);
          return;
        }
        cleanup();
        resolve(m);
      };
      const onError = (err: Error) => fail('crashed', `the sandbox failed: ${err.message}`);
      const onExit = () => fail('crashed', 'the sandbox exited');
      const onAbort = () => fail('stopped', 'stopped');
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      signal?.addEventListener('abort', onAbort, { once: true });
      worker.postMessage(job);
    });
  }

  private async acquire(signal: AbortSignal | undefined): Promise<Slot> {
    for (;;) {
      if (this.closed) throw new SandboxError('crashed', 'the sandbox is closed');
      if (signal?.aborted) throw new SandboxError('stopped', 'stopped');
      const idle = [...this.slots].find((s) => !s.busy);
      const slot = idle ?? (this.slots.size < this.maxWorkers ? this.spawn() : undefined);
      if (slot) {
        clearTimeout(slot.idleTimer);
        slot.busy = true;
        // a busy worker keeps the process alive (its caller is waiting); an idle one does not
        slot.worker.ref();
        return slot;
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal?.removeEventListener('abort', wake);
          const i = this.waiting.indexOf(wake);
          if (i >= 0) this.waiting.splice(i, 1);
          resolve();
        };
        this.waiting.push(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
  }

  private release(slot: Slot, healthy: boolean): void {
    if (!healthy) this.discard(slot);
    else if (this.slots.has(slot)) {
      slot.busy = false;
      slot.worker.unref();
      slot.idleTimer = setTimeout(() => this.discard(slot), this.idleMs);
      slot.idleTimer.unref();
    }
    this.waiting.shift()?.();
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_URL, {
      workerData: { entry: this.entry },
      // our own code runs there, not the user's; still, it needs none of the server's environment
      env: {},
      execArgv: [],
      // the V8 heap of the worker's glue code (QuickJS's own heap is limited per run)
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 8 },
      // a WebAssembly abort prints to stderr: keep hostile code from writing to the server's logs
      stdout: true,
      stderr: true,
    });
    worker.stdout.resume();
    worker.stderr.resume();
    const slot: Slot = { worker, busy: false };
    // a worker that dies between runs is simply forgotten
    worker.on('error', () => this.discard(slot));
    worker.on('exit', () => this.discard(slot));
    this.slots.add(slot);
    return slot;
  }

  private discard(slot: Slot): void {
    clearTimeout(slot.idleTimer);
    if (!this.slots.delete(slot)) return;
    void slot.worker.terminate();
    this.waiting.shift()?.();
  }
}

let shared: CodeSandbox | undefined;

/** The process's sandbox, made on first use. */
export function sharedSandbox(): CodeSandbox {
  shared ??= new CodeSandbox();
  return shared;
}
