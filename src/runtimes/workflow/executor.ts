/**
 * The workflow engine: runs a graph (workflow-graph.ts) node by node, emitting Bisheng's workflow
 * frames, until the run waits for the user, ends, fails or is stopped. Pure: no storage, no wire.
 * Everything a run needs to go on later is in its `WorkflowRunState`, a JSON-safe value the chat
 * core stores while the run waits (so an answer may come after a restart, to another instance).
 *
 *   const executor = new WorkflowExecutor();
 *   let state = await executor.start(graph, ctx);          // status 'input' | 'success' | 'stopped'
 *   state = await executor.resume(state, answer, ctx);     // the same, once more
 *   state = executor.stop(state);                          // a waiting run ends as 'stopped'
 *
 * Failures are thrown, never returned: an AppError with `workflow_max_steps` (10528),
 * `workflow_node_invalid` (10531: bad parameters, unknown variable, provider or tool, a code
 * syntax error), `workflow_failed` (10541: anything else, e.g. the model or a tool failed) or
 * `workflow_input_timeout` (10527); `data` names the node. The run is then over: the caller sends
 * the error frame and may keep `WorkflowExecutor.failed(state, err)`. An answer that does not fit the
 * request throws `invalid_request` (10400, every problem in `data.errors`) and the run keeps waiting.
 * `start`/`resume` never change the state they are given; they work on a copy.
 *
 * Frames (ChatEventBody `{kind: 'frame', category, type, message}`), each message carrying
 * `unique_id` (one node run), `node_id` and `name`:
 *   node_run/start {node_type} · node_run/end {node_type, input_data, output, log_data, duration_ms, reason?}
 *   guide_word/over {guide_word} · guide_question/over {guide_question: string[]}   (start node)
 *   stream_msg/stream {msg: delta, reasoning_content, output_key} · stream_msg/end {msg: full text,
 *     reasoning_content, output_key, interrupted?}                                   (llm node)
 *   output_msg/over {msg, output_key: ''} · output_with_choose_msg/over {msg, key: 'output_result', options}
 *     · output_with_input_msg/over {msg, key: 'output_result', input_msg}             (output node)
 *   input/over {msg, input_schema: {input_type, tab, value: [...]}}                 (input node)
 * A frame that asks (input, output_with_*) is the last of its call: the run then waits. `emit` is
 * awaited; the core may set `messageId` on the body it persisted and the run keeps it with the
 * request (`pending.message_id`). processing/begin and processing/close are the core's.
 */
import { randomUUID } from 'node:crypto';
import { AppError, ERROR_TABLE, type ErrorCode } from '../../domain/errors.ts';
import type { ChatEventBody } from '../../domain/events.ts';
import type { LlmMessage, LlmProvider, LlmUsage, Tool } from '../../domain/llm.ts';
import type { ModelSettings, WorkflowGraph } from '../../domain/types.ts';
import { SandboxError, sharedSandbox, type CodeSandbox } from './code-sandbox.ts';
import { validateGraph } from './graph-validate.ts';
import { checkAnswer, dialogSchema, formSchema, type AnswerSchema, type InputKind } from './input-requests.ts';
import { render, resolve, toText, type Variables } from './template.ts';
import {
  CODE_TIMEOUT_DEFAULT_MS, CODE_TIMEOUT_MAX_MS, DEFAULT_OUTPUT_KEY, ELSE_HANDLE, UNARY_OPS, isRecord, nodeName,
  type ConditionOp, type JsonValue, type NodeDataOf, type NodeType, type WorkflowNode,
} from './workflow-graph.ts';

/** waiting → running → input ⇄ running → success | failed | stopped (PROTOCOL.md §3.2) */
export type RunStatus = 'waiting' | 'running' | 'input' | 'success' | 'failed' | 'stopped';

/** What a waiting run asked; kept in the state so the answer can be checked, and the request re-sent. */
export interface PendingInput {
  node_id: string;
  kind: InputKind;
  /** what the answer is checked against */
  schema: AnswerSchema;
  /** the request frame as it was sent: `check_status` sends it again */
  frame: { category: string; type: string; message: Record<string, JsonValue> };
  /** the stored message row of the request, when the core persisted it */
  message_id: number | string | null;
  /** epoch ms */
  requested_at: number;
  /** the node run that asked: the answer ends it (node_run/end with this unique_id) */
  unique_id: string;
  started_at: number;
  /** variables the node already set (an output node's `message`) */
  outputs: Record<string, JsonValue>;
}

export interface WorkflowRunState {
  version: 1;
  run_id: string;
  status: RunStatus;
  /** the graph the run started with: a later publish does not change a run in flight */
  graph: WorkflowGraph;
  /** per node id, the variables it left */
  variables: Variables;
  /** per node id, how often it ran */
  steps: Record<string, number>;
  /** the nodes to run next, in order */
  queue: string[];
  pending: PendingInput | null;
  /** tokens of every llm node so far */
  usage: LlmUsage;
  error: { code: ErrorCode; status_code: number; message: string; node_id: string | null } | null;
  created_at: number;
  updated_at: number;
}

/** A user's answer: `{user_input}` (dialog), `{<field key>: value}` (form), `{output_result}` (output node). */
export interface WorkflowAnswer {
  node_id: string;
  data: Record<string, unknown>;
  /** the text the client shows for the answer (it becomes the question row); unused by the engine */
  message?: string | undefined;
}

export interface WorkflowContext {
  /** awaited; the core may fill `messageId` on the frames it persists */
  emit(body: ChatEventBody): void | Promise<void>;
  /** stop: aborts a model call, a tool, a code run; the run ends as 'stopped' */
  signal: AbortSignal;
  providers: { get(name: string): LlmProvider | undefined };
  /** the app's model settings: llm nodes use them unless they name their own */
  defaultModel: ModelSettings;
  tools: { get(name: string): Tool | undefined };
  /** workflow.max_steps: how often a node may run, unless it sets data.max_steps */
  maxSteps: number;
  chatId?: string | undefined;
  /** epoch ms (tests) */
  now?: (() => number) | undefined;
  /** workflow.input_timeout in ms: an answer that comes later fails the run (10527) */
  inputTimeoutMs?: number | undefined;
}

export interface ExecutorOptions {
  /** where code nodes run; default: the process's shared sandbox */
  sandbox?: CodeSandbox;
}

type Frame = Extract<ChatEventBody, { kind: 'frame' }>;
type Base = { unique_id: string; node_id: string; name: string };

/** What a node's handler comes back with. */
type NodeResult =
  | { kind: 'done'; input: Record<string, JsonValue>; outputs: Record<string, JsonValue>; handle?: string }
  | { kind: 'wait'; schema: AnswerSchema; category: string; message: Record<string, JsonValue>; outputs: Record<string, JsonValue> }
  | { kind: 'stopped' };

const ZERO_USAGE: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
const newId = () => randomUUID().replaceAll('-', '');
const clone = <T>(v: T): T => structuredClone(v);
const TERMINAL: readonly RunStatus[] = ['success', 'failed', 'stopped'];

export class WorkflowExecutor {
  private readonly sandbox: CodeSandbox | undefined;

  constructor(options: ExecutorOptions = {}) {
    this.sandbox = options.sandbox;
  }

  /**
   * Checks the graph and runs it from its start node. `inputs` fill the start node's declared
   * variables (others are ignored).
   * @throws AppError `workflow_node_invalid` with `data.problems` when the graph does not validate
   */
  async start(graph: WorkflowGraph, ctx: WorkflowContext, inputs: Record<string, JsonValue> = {}): Promise<WorkflowRunState> {
    const problems = validateGraph(graph, { maxSteps: ctx.maxSteps });
    if (problems.length) {
      throw new AppError('workflow_node_invalid', `The workflow has ${problems.length} problem(s): ${problems.map((p) => p.message).join('; ')}`, { data: { problems } });
    }
    const now = (ctx.now ?? Date.now)();
    const copy = clone(graph);
    const state: WorkflowRunState = {
      version: 1, run_id: newId(), status: 'waiting',
      graph: { nodes: copy.nodes.map((n) => ({ ...n, data: n.data ?? {} })), edges: copy.edges },
      variables: {}, steps: {}, queue: [copy.nodes.find((n) => n.type === 'start')!.id], pending: null,
      usage: { ...ZERO_USAGE }, error: null, created_at: now, updated_at: now,
    };
    return new Run(state, ctx, this.sandbox, clone(inputs)).drive();
  }

  /**
   * Answers the request the run waits for and runs on.
   * @throws AppError `invalid_request` when the run does not wait for this node or the answer does
   *   not fit (the run keeps waiting); `workflow_input_timeout` when the request expired
   */
  async resume(state: WorkflowRunState, answer: WorkflowAnswer, ctx: WorkflowContext): Promise<WorkflowRunState> {
    if (state.status !== 'input' || !state.pending) {
      throw AppError.invalid([{ path: 'data', message: `the run is not waiting for input (status ${state.status})` }], 'The workflow is not waiting for input');
    }
    if (answer.node_id !== state.pending.node_id) {
      throw AppError.invalid([{ path: 'data', message: `the run waits for node "${state.pending.node_id}", not "${answer.node_id}"` }], 'The workflow waits for another node');
    }
    return new Run(clone(state), ctx, this.sandbox, {}).answer(answer);
  }

  /** Ends a run that is not running now (one waiting for input); a finished run is returned as it is. */
  stop(state: WorkflowRunState, now = Date.now()): WorkflowRunState {
    if (TERMINAL.includes(state.status)) return state;
    return { ...clone(state), status: 'stopped', pending: null, queue: [], updated_at: now };
  }

  /** The state to keep for a run that failed with `error` (what `start`/`resume` threw). */
  static failed(state: WorkflowRunState, error: AppError, now = Date.now()): WorkflowRunState {
    const nodeId = isRecord(error.data) && typeof error.data.node_id === 'string' ? error.data.node_id : null;
    return {
      ...clone(state), status: 'failed', pending: null, queue: [], updated_at: now,
      error: { code: error.code, status_code: ERROR_TABLE[error.code].status, message: error.message, node_id: nodeId },
    };
  }

  /** Whether the pending request is older than `timeoutMs` (workflow.input_timeout). */
  static expired(state: WorkflowRunState, timeoutMs: number, now = Date.now()): boolean {
    return state.status === 'input' && state.pending !== null && now - state.pending.requested_at > timeoutMs;
  }
}

/** One call of start/resume: the state it advances and the context it runs in. */
class Run {
  private readonly nodes: Map<string, WorkflowNode>;
  private readonly next = new Map<string, Array<{ target: string; handle: string | undefined }>>();
  private readonly now: () => number;

  constructor(
    private readonly state: WorkflowRunState,
    private readonly ctx: WorkflowContext,
    private readonly sandbox: CodeSandbox | undefined,
    private readonly inputs: Record<string, JsonValue>,
  ) {
    this.nodes = new Map(state.graph.nodes.map((n) => [n.id, n as WorkflowNode]));
    for (const e of state.graph.edges) {
      const list = this.next.get(e.source) ?? [];
      list.push({ target: e.target, handle: e.sourceHandle });
      this.next.set(e.source, list);
    }
    this.now = ctx.now ?? Date.now;
  }

  async drive(): Promise<WorkflowRunState> {
    const s = this.state;
    s.status = 'running';
    while (s.queue.length > 0) {
      if (this.ctx.signal.aborted) return this.finish('stopped');
      const node = this.node(s.queue.shift()!);
      const count = (s.steps[node.id] ?? 0) + 1;
      const limit = node.data.max_steps ?? this.ctx.maxSteps;
      if (count > limit) {
        throw new AppError('workflow_max_steps', `node "${nodeName(node)}" has run more than the maximum number of times (${limit})`, { data: { node_id: node.id, node_name: nodeName(node), max_steps: limit } });
      }
      s.steps[node.id] = count;
      const outcome = await this.execute(node);
      if (outcome === 'wait') return this.finish('input');
      if (outcome === 'stopped') return this.finish('stopped');
      this.follow(node, outcome.handle);
    }
    return this.finish('success');
  }

  async answer(answer: WorkflowAnswer): Promise<WorkflowRunState> {
    const s = this.state;
    const pending = s.pending!;
    const node = this.node(pending.node_id);
    const base: Base = { unique_id: pending.unique_id, node_id: node.id, name: nodeName(node) };
    const timeout = this.ctx.inputTimeoutMs;
    if (timeout !== undefined && this.now() - pending.requested_at > timeout) {
      const error = new AppError('workflow_input_timeout', `node "${base.name}" waited for input longer than ${timeout >= 60_000 ? `${Math.round(timeout / 60_000)} min` : `${Math.round(timeout / 1000)} s`}`, { data: { node_id: node.id, node_name: base.name } });
      await this.endFrame(node, base, pending.started_at, {}, {}, error.message);
      throw error;
    }
    const values = checkAnswer(pending.schema, answer.data);
    if (this.ctx.signal.aborted) return this.finish('stopped');
    const outputs = { ...pending.outputs, ...values };
    s.variables[node.id] = outputs;
    s.pending = null;
    await this.endFrame(node, base, pending.started_at, values, outputs);
    this.follow(node, undefined);
    return this.drive();
  }

  private finish(status: 'input' | 'success' | 'stopped'): WorkflowRunState {
    const s = this.state;
    s.status = status;
    if (status !== 'input') {
      s.pending = null;
      s.queue = [];
    }
    s.updated_at = this.now();
    return s;
  }

  private node(id: string): WorkflowNode {
    const node = this.nodes.get(id);
    if (!node) throw new AppError('workflow_failed', `the run refers to node "${id}", which is not in its graph`, { data: { node_id: id } });
    return node;
  }

  /** Queues the successors: a condition node's chosen branch, every edge of any other node. */
  private follow(node: WorkflowNode, handle: string | undefined): void {
    for (const e of this.next.get(node.id) ?? []) {
      if (node.type === 'condition' && e.handle !== handle) continue;
      if (!this.state.queue.includes(e.target)) this.state.queue.push(e.target);
    }
  }

  private async emit(category: string, type: string, message: Record<string, JsonValue>): Promise<Frame> {
    const body: Frame = { kind: 'frame', category, type, message };
    await this.ctx.emit(body);
    return body;
  }

  private endFrame(node: WorkflowNode, base: Base, startedAt: number, input: Record<string, JsonValue>, output: Record<string, JsonValue>, reason?: string) {
    return this.emit('node_run', 'end', {
      ...base, node_type: node.type, input_data: input,
      // `log_data` is Bisheng's name for what a node did; Parley's clients read `output`
      output, log_data: output, duration_ms: Math.max(0, this.now() - startedAt), ...(reason !== undefined && { reason }),
    });
  }

  /** Runs one node between its node_run frames. */
  private async execute(node: WorkflowNode): Promise<'wait' | 'stopped' | { handle: string | undefined }> {
    const base: Base = { unique_id: newId(), node_id: node.id, name: nodeName(node) };
    const startedAt = this.now();
    await this.emit('node_run', 'start', { ...base, node_type: node.type });
    let result: NodeResult;
    try {
      result = await this.handle(node, base);
    } catch (err) {
      if (this.ctx.signal.aborted) result = { kind: 'stopped' };
      else {
        const error = toWorkflowError(err, node);
        await this.endFrame(node, base, startedAt, {}, {}, error.message);
        throw error;
      }
    }
    switch (result.kind) {
      case 'stopped':
        await this.endFrame(node, base, startedAt, {}, {}, 'stopped');
        return 'stopped';
      case 'wait': {
        const request = await this.emit(result.category, 'over', result.message);
        this.state.pending = {
          node_id: node.id, kind: result.schema.kind, schema: result.schema,
          frame: { category: result.category, type: 'over', message: result.message },
          message_id: request.messageId ?? null, requested_at: this.now(), unique_id: base.unique_id, started_at: startedAt, outputs: result.outputs,
        };
        return 'wait';
      }
      case 'done':
        this.state.variables[node.id] = result.outputs;
        await this.endFrame(node, base, startedAt, result.input, result.outputs);
        return { handle: result.handle };
    }
  }

  private handle(node: WorkflowNode, base: Base): Promise<NodeResult> {
    switch (node.type) {
      case 'start': return this.startNode(node.data, base);
      case 'input': return Promise.resolve(this.inputNode(node.data, base));
      case 'llm': return this.llmNode(node.data, base);
      case 'condition': return Promise.resolve(this.conditionNode(node.data));
      case 'tool': return this.toolNode(node.data);
      case 'code': return this.codeNode(node.data);
      case 'output': return this.outputNode(node.data, base);
      case 'end': return Promise.resolve({ kind: 'done', input: {}, outputs: {} });
    }
  }

  private get variables(): Variables {
    return this.state.variables;
  }

  private async startNode(data: NodeDataOf['start'], base: Base): Promise<NodeResult> {
    if (data.guide_word) await this.emit('guide_word', 'over', { ...base, guide_word: data.guide_word });
    if (data.guide_questions?.length) await this.emit('guide_question', 'over', { ...base, guide_question: data.guide_questions });
    const declared = data.variables ?? {};
    const given = Object.fromEntries(Object.entries(this.inputs).filter(([k]) => Object.hasOwn(declared, k)));
    return {
      kind: 'done', input: given,
      outputs: { ...declared, ...given, current_time: new Date(this.now()).toISOString(), chat_id: this.ctx.chatId ?? '' },
    };
  }

  private inputNode(data: NodeDataOf['input'], base: Base): NodeResult {
    const prompt = data.prompt ? render(data.prompt, this.variables) : '';
    const schema: AnswerSchema = data.mode === 'form'
      ? { kind: 'form', input_schema: formSchema(data.fields ?? []) }
      : { kind: 'dialog', input_schema: dialogSchema(prompt) };
    return { kind: 'wait', schema, category: 'input', message: { ...base, msg: prompt, input_schema: schema.input_schema }, outputs: {} };
  }

  private async llmNode(data: NodeDataOf['llm'], base: Base): Promise<NodeResult> {
    const { ctx } = this;
    const defaults = ctx.defaultModel;
    const providerName = data.model?.provider ?? defaults.provider;
    const sameProvider = providerName === defaults.provider;
    const model = data.model?.name ?? (sameProvider ? defaults.name : undefined);
    const system = data.system_prompt ? render(data.system_prompt, this.variables) : '';
    const prompt = render(data.prompt, this.variables);
    let provider: LlmProvider | undefined;
    try {
      provider = ctx.providers.get(providerName);
    } catch {
      provider = undefined;
    }
    if (!provider) throw new AppError('workflow_node_invalid', `model provider "${providerName}" is not configured`);

    const outputKey = data.output_key ?? DEFAULT_OUTPUT_KEY;
    const streamed = data.stream !== false;
    const messages: LlmMessage[] = [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: prompt }];
    let text = '';
    let reasoning = '';
    // a frame's emit may be async: they go out one after another, in chunk order
    let emitted = Promise.resolve();
    try {
      await provider.stream({
        messages, model, temperature: data.model?.temperature ?? defaults.temperature, maxTokens: data.model?.max_tokens ?? defaults.max_tokens, signal: ctx.signal,
      }, (chunk) => {
        if (chunk.type === 'finish') this.addUsage(chunk.usage);
        if (chunk.type !== 'text' && chunk.type !== 'reasoning') return;
        if (chunk.type === 'text') text += chunk.text;
        else reasoning += chunk.text;
        if (streamed) {
          const message = { ...base, msg: chunk.type === 'text' ? chunk.text : '', reasoning_content: chunk.type === 'reasoning' ? chunk.text : '', output_key: outputKey };
          emitted = emitted.then(() => this.emit('stream_msg', 'stream', message).then(() => undefined));
        }
      });
    } catch (err) {
      if (!ctx.signal.aborted) throw err;
    } finally {
      await emitted;
    }
    const full = { ...base, msg: text, reasoning_content: reasoning, output_key: outputKey };
    if (ctx.signal.aborted) {
      // the partial answer is kept, as a stopped chat answer is
      if (text || reasoning) await this.emit('stream_msg', 'end', { ...full, interrupted: true });
      return { kind: 'stopped' };
    }
    await this.emit('stream_msg', 'end', full);
    return {
      kind: 'done',
      input: { ...(system && { system_prompt: system }), prompt, model: { provider: providerName, name: model ?? null } },
      outputs: { [outputKey]: text },
    };
  }

  private conditionNode(data: NodeDataOf['condition']): NodeResult {
    const cases: JsonValue[] = [];
    let branch = ELSE_HANDLE;
    for (const kase of data.cases) {
      const { op } = kase.when;
      const left = resolve(kase.when.left, this.variables);
      const right = UNARY_OPS.includes(op) ? null : resolve(kase.when.right, this.variables);
      const matched = compare(kase.id, left, op, right);
      cases.push({ id: kase.id, left, op, right, matched });
      if (matched) {
        branch = kase.id;
        break;
      }
    }
    return { kind: 'done', input: { cases }, outputs: { branch }, handle: branch };
  }

  private async toolNode(data: NodeDataOf['tool']): Promise<NodeResult> {
    const tool = this.ctx.tools.get(data.tool);
    if (!tool) throw new AppError('workflow_node_invalid', `unknown tool "${data.tool}"`);
    const args = resolve(data.args ?? {}, this.variables) as Record<string, JsonValue>;
    const output = await tool.run(args, this.ctx.signal);
    if (this.ctx.signal.aborted) return { kind: 'stopped' };
    return { kind: 'done', input: { tool: data.tool, args }, outputs: { output } };
  }

  private async codeNode(data: NodeDataOf['code']): Promise<NodeResult> {
    const inputs = resolve(data.inputs ?? {}, this.variables) as Record<string, JsonValue>;
    const timeoutMs = Math.min(data.timeout_ms ?? CODE_TIMEOUT_DEFAULT_MS, CODE_TIMEOUT_MAX_MS);
    let value: JsonValue;
    try {
      value = await (this.sandbox ?? sharedSandbox()).run(data.code, inputs, { timeoutMs, signal: this.ctx.signal });
    } catch (err) {
      if (err instanceof SandboxError && err.reason === 'stopped') return { kind: 'stopped' };
      throw err;
    }
    return { kind: 'done', input: { inputs }, outputs: isRecord(value) ? value : { result: value } };
  }

  private async outputNode(data: NodeDataOf['output'], base: Base): Promise<NodeResult> {
    const message = render(data.message, this.variables);
    const shown = { ...base, msg: message, output_key: '' };
    if (data.options?.length) {
      const options = data.options.map((o) => render(o, this.variables));
      return { kind: 'wait', schema: { kind: 'choose', options }, category: 'output_with_choose_msg', message: { ...shown, key: 'output_result', options }, outputs: { message } };
    }
    if (data.editable) {
      return { kind: 'wait', schema: { kind: 'edit', input_msg: message }, category: 'output_with_input_msg', message: { ...shown, key: 'output_result', input_msg: message }, outputs: { message } };
    }
    await this.emit('output_msg', 'over', shown);
    return { kind: 'done', input: { message }, outputs: { message } };
  }

  private addUsage(u: LlmUsage): void {
    const t = this.state.usage;
    this.state.usage = { prompt_tokens: t.prompt_tokens + u.prompt_tokens, completion_tokens: t.completion_tokens + u.completion_tokens, total_tokens: t.total_tokens + u.total_tokens };
  }
}

/** Maps what a node threw to the workflow codes, naming the node; unknown errors keep their cause for the log only. */
function toWorkflowError(err: unknown, node: { id: string; type: NodeType; data: object }): AppError {
  const name = nodeName(node);
  const where = { node_id: node.id, node_name: name };
  const wrap = (code: ErrorCode, message: string, data?: unknown) =>
    new AppError(code, `node "${name}": ${message}`, { data: { ...where, ...(isRecord(data) ? data : {}) }, cause: err });
  if (err instanceof SandboxError) return wrap(err.reason === 'syntax' ? 'workflow_node_invalid' : 'workflow_failed', err.message, { reason: err.reason });
  if (err instanceof AppError) {
    if (err.code === 'workflow_max_steps' || err.code === 'workflow_node_invalid' || err.code === 'workflow_failed' || err.code === 'workflow_input_timeout') {
      return wrap(err.code, err.message, err.data);
    }
    // a tool that refused its arguments was given bad parameters
    if (err.code === 'invalid_request') return wrap('workflow_node_invalid', err.message, err.data);
    return wrap('workflow_failed', err.message, { cause_code: err.code });
  }
  return wrap('workflow_failed', `the ${node.type} node failed`);
}

const NUMERIC = /^\s*-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i;

function asNumber(v: JsonValue): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && NUMERIC.test(v)) return Number(v);
  return null;
}

function isEmpty(v: JsonValue): boolean {
  if (v === null) return true;
  if (typeof v === 'string') return v.trim() === '';
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v).length === 0;
  return false;
}

/** Equal as numbers when both read as numbers, else as text (`"2"` eq 2, `"yes"` eq "yes"). */
function same(a: JsonValue, b: JsonValue): boolean {
  const x = asNumber(a);
  const y = asNumber(b);
  if (x !== null && y !== null) return x === y;
  return toText(a) === toText(b);
}

function compare(caseId: string, left: JsonValue, op: ConditionOp, right: JsonValue): boolean {
  switch (op) {
    case 'eq': return same(left, right);
    case 'ne': return !same(left, right);
    case 'contains': return Array.isArray(left) ? left.some((x) => same(x, right)) : toText(left).includes(toText(right));
    case 'not_contains': return !compare(caseId, left, 'contains', right);
    case 'empty': return isEmpty(left);
    case 'not_empty': return !isEmpty(left);
    default: {
      const x = asNumber(left);
      const y = asNumber(right);
      if (x === null || y === null) {
        throw new AppError('workflow_node_invalid', `case "${caseId}": ${op} compares numbers, got ${JSON.stringify(x === null ? left : right)}`);
      }
      return op === 'gt' ? x > y : op === 'gte' ? x >= y : op === 'lt' ? x < y : x <= y;
    }
  }
}
