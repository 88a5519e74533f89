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
 * Events (domain/events.ts WorkflowEventBody; their Bisheng frames are in domain/bisheng-messages.ts):
 *   node_start · node_end {input, output, durationMs, reason?}          (every node run)
 *   guide_word · guide_questions                                        (start node)
 *   node_delta (streamed text) · node_answer (the whole text, `interrupted` when stopped)   (llm node)
 *   output (an output node's message)
 *   input_request {text, schema}: an input node's dialog or form, an output node's choice or edit
 * An input_request is the last event of its call: the run then waits. `emit` is awaited; the core
 * may set `messageId` on the events it persists and the run keeps the request's (`pending.message_id`).
 * processing/begin and processing/close are the core's.
 */
import { randomUUID } from 'node:crypto';
import { AppError, ERROR_TABLE, type ErrorCode } from '../../domain/errors.ts';
import type { NodeRun, WorkflowEventBody } from '../../domain/events.ts';
import type { LlmProvider, LlmUsage, Tool } from '../../domain/llm.ts';
import { isRecord, type JsonValue, type ModelSettings, type WorkflowGraph } from '../../domain/types.ts';
import type { AnswerSchema, InputKind } from '../../domain/workflow.ts';
import type { CodeSandbox } from './code-sandbox.ts';
import { validateGraph } from './graph-validate.ts';
import { checkAnswer } from './input-requests.ts';
import { runNode, toWorkflowError, type NodeEnv, type NodeResult } from './nodes.ts';
import type { Variables } from './template.ts';
import { nodeName, type WorkflowNode } from './workflow-graph.ts';

/** waiting → running → input ⇄ running → success | failed | stopped (PROTOCOL.md §3.2) */
export type RunStatus = 'waiting' | 'running' | 'input' | 'success' | 'failed' | 'stopped';

/** What a waiting run asked; kept in the state so the answer can be checked, and the request re-sent. */
export interface PendingInput {
  node_id: string;
  kind: InputKind;
  /** what the answer is checked against */
  schema: AnswerSchema;
  /** the node's name and what it showed the user: `check_status` sends the request again */
  name: string;
  text: string;
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
  /** awaited; the core may fill `messageId` on the events it persists */
  emit(body: WorkflowEventBody): void | Promise<void>;
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

  /**
   * A stored state, as JSON. States kept before the request was stored by name and text carry it
   * as the Bisheng frame that was sent (`pending.frame.message.{name, msg}`).
   */
  static readState(json: string): WorkflowRunState {
    const state = JSON.parse(json) as WorkflowRunState;
    const pending = state.pending as (PendingInput & { frame?: { message?: { name?: unknown; msg?: unknown } } }) | null;
    if (pending && pending.name === undefined) {
      const shown = pending.frame?.message ?? {};
      pending.name = typeof shown.name === 'string' ? shown.name : pending.node_id;
      pending.text = typeof shown.msg === 'string' ? shown.msg : '';
      delete pending.frame;
    }
    return state;
  }
}

/** The request a waiting run asked, as it was sent (check_status sends it again). */
export function requestOf(pending: PendingInput): WorkflowEventBody {
  return {
    kind: 'input_request', node: { runId: pending.unique_id, nodeId: pending.node_id, name: pending.name }, text: pending.text, schema: pending.schema,
    messageId: pending.message_id,
  };
}

/** The error of an answer that came after workflow.input_timeout (10527), naming the node. */
export function inputTimeout(pending: PendingInput, timeoutMs: number): AppError {
  const after = timeoutMs >= 60_000 ? `${Math.round(timeoutMs / 60_000)} min` : `${Math.round(timeoutMs / 1000)} s`;
  return new AppError('workflow_input_timeout', `node "${pending.name}" waited for input longer than ${after}`, { data: { node_id: pending.node_id, node_name: pending.name } });
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
    const run: NodeRun = { runId: pending.unique_id, nodeId: node.id, name: nodeName(node) };
    const timeout = this.ctx.inputTimeoutMs;
    if (timeout !== undefined && this.now() - pending.requested_at > timeout) {
      const error = inputTimeout(pending, timeout);
      await this.endEvent(node, run, pending.started_at, {}, {}, error.message);
      throw error;
    }
    const values = checkAnswer(pending.schema, answer.data);
    if (this.ctx.signal.aborted) return this.finish('stopped');
    const outputs = { ...pending.outputs, ...values };
    s.variables[node.id] = outputs;
    s.pending = null;
    await this.endEvent(node, run, pending.started_at, values, outputs);
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

  private emit(body: WorkflowEventBody): Promise<void> {
    return Promise.resolve(this.ctx.emit(body));
  }

  private endEvent(node: WorkflowNode, run: NodeRun, startedAt: number, input: Record<string, JsonValue>, output: Record<string, JsonValue>, reason?: string) {
    return this.emit({ kind: 'node_end', node: run, nodeType: node.type, input, output, durationMs: Math.max(0, this.now() - startedAt), ...(reason !== undefined && { reason }) });
  }

  /** Runs one node between its node_start and node_end events. */
  private async execute(node: WorkflowNode): Promise<'wait' | 'stopped' | { handle: string | undefined }> {
    const run: NodeRun = { runId: newId(), nodeId: node.id, name: nodeName(node) };
    const startedAt = this.now();
    await this.emit({ kind: 'node_start', node: run, nodeType: node.type });
    let result: NodeResult;
    try {
      result = await runNode(node, run, this.env);
    } catch (err) {
      if (this.ctx.signal.aborted) result = { kind: 'stopped' };
      else {
        const error = toWorkflowError(err, node);
        await this.endEvent(node, run, startedAt, {}, {}, error.message);
        throw error;
      }
    }
    switch (result.kind) {
      case 'stopped':
        await this.endEvent(node, run, startedAt, {}, {}, 'stopped');
        return 'stopped';
      case 'wait': {
        const request: WorkflowEventBody = { kind: 'input_request', node: run, text: result.text, schema: result.schema };
        await this.emit(request);
        this.state.pending = {
          node_id: node.id, kind: result.schema.kind, schema: result.schema, name: run.name, text: result.text,
          message_id: request.messageId ?? null, requested_at: this.now(), unique_id: run.runId, started_at: startedAt, outputs: result.outputs,
        };
        return 'wait';
      }
      case 'done':
        this.state.variables[node.id] = result.outputs;
        await this.endEvent(node, run, startedAt, result.input, result.outputs);
        return { handle: result.handle };
    }
  }

  private get env(): NodeEnv {
    return {
      ctx: this.ctx, variables: this.state.variables, inputs: this.inputs, sandbox: this.sandbox, now: this.now,
      emit: (body) => this.emit(body), addUsage: (u) => this.addUsage(u),
    };
  }

  private addUsage(u: LlmUsage): void {
    const t = this.state.usage;
    this.state.usage = { prompt_tokens: t.prompt_tokens + u.prompt_tokens, completion_tokens: t.completion_tokens + u.completion_tokens, total_tokens: t.total_tokens + u.total_tokens };
  }
}
