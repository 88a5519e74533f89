/**
 * What each kind of node does when it runs: the handlers of the workflow engine (executor.ts),
 * which runs them one at a time between their node_start and node_end events.
 */
import { AppError, type ErrorCode } from '../../domain/errors.ts';
import type { NodeRun, WorkflowEventBody } from '../../domain/events.ts';
import type { LlmMessage, LlmProvider, LlmUsage } from '../../domain/llm.ts';
import { isRecord, type JsonValue } from '../../domain/types.ts';
import type { AnswerSchema } from '../../domain/workflow.ts';
import { SandboxError, sharedSandbox, type CodeSandbox } from './code-sandbox.ts';
import { compare } from './conditions.ts';
import type { WorkflowContext } from './executor.ts';
import { dialogSchema, formSchema } from './input-requests.ts';
import { render, resolve, type Variables } from './template.ts';
import {
  CODE_TIMEOUT_DEFAULT_MS, CODE_TIMEOUT_MAX_MS, DEFAULT_OUTPUT_KEY, ELSE_HANDLE, UNARY_OPS, nodeName,
  type NodeDataOf, type NodeType, type WorkflowNode,
} from './workflow-graph.ts';

/** What a node's handler comes back with. */
export type NodeResult =
  | { kind: 'done'; input: Record<string, JsonValue>; outputs: Record<string, JsonValue>; handle?: string }
  /** the node asks the user: the run waits for the answer */
  | { kind: 'wait'; schema: AnswerSchema; text: string; outputs: Record<string, JsonValue> }
  | { kind: 'stopped' };

/** What a handler may use of the run it is part of. */
export interface NodeEnv {
  ctx: WorkflowContext;
  /** per node id, the variables it left */
  variables: Variables;
  /** values for the start node's declared variables */
  inputs: Record<string, JsonValue>;
  sandbox: CodeSandbox | undefined;
  now(): number;
  /** awaited: events go out one after another */
  emit(body: WorkflowEventBody): Promise<void>;
  addUsage(usage: LlmUsage): void;
}

export function runNode(node: WorkflowNode, run: NodeRun, env: NodeEnv): Promise<NodeResult> {
  switch (node.type) {
    case 'start': return startNode(node.data, run, env);
    case 'input': return Promise.resolve(inputNode(node.data, env));
    case 'llm': return llmNode(node.data, run, env);
    case 'condition': return Promise.resolve(conditionNode(node.data, env));
    case 'tool': return toolNode(node.data, env);
    case 'code': return codeNode(node.data, env);
    case 'output': return outputNode(node.data, run, env);
    case 'end': return Promise.resolve({ kind: 'done', input: {}, outputs: {} });
  }
}

async function startNode(data: NodeDataOf['start'], node: NodeRun, env: NodeEnv): Promise<NodeResult> {
  if (data.guide_word) await env.emit({ kind: 'guide_word', node, text: data.guide_word });
  if (data.guide_questions?.length) await env.emit({ kind: 'guide_questions', node, questions: data.guide_questions });
  const declared = data.variables ?? {};
  const given = Object.fromEntries(Object.entries(env.inputs).filter(([k]) => Object.hasOwn(declared, k)));
  return {
    kind: 'done', input: given,
    outputs: { ...declared, ...given, current_time: new Date(env.now()).toISOString(), chat_id: env.ctx.chatId ?? '' },
  };
}

function inputNode(data: NodeDataOf['input'], env: NodeEnv): NodeResult {
  const prompt = data.prompt ? render(data.prompt, env.variables) : '';
  const schema: AnswerSchema = data.mode === 'form'
    ? { kind: 'form', input_schema: formSchema(data.fields ?? []) }
    : { kind: 'dialog', input_schema: dialogSchema(prompt) };
  return { kind: 'wait', schema, text: prompt, outputs: {} };
}

async function llmNode(data: NodeDataOf['llm'], node: NodeRun, env: NodeEnv): Promise<NodeResult> {
  const { ctx } = env;
  const defaults = ctx.defaultModel;
  const providerName = data.model?.provider ?? defaults.provider;
  const sameProvider = providerName === defaults.provider;
  const model = data.model?.name ?? (sameProvider ? defaults.name : undefined);
  const system = data.system_prompt ? render(data.system_prompt, env.variables) : '';
  const prompt = render(data.prompt, env.variables);
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
  // an event's emit may be async: they go out one after another, in chunk order
  let emitted = Promise.resolve();
  try {
    await provider.stream({
      messages, model, temperature: data.model?.temperature ?? defaults.temperature, maxTokens: data.model?.max_tokens ?? defaults.max_tokens, signal: ctx.signal,
    }, (chunk) => {
      if (chunk.type === 'finish') env.addUsage(chunk.usage);
      if (chunk.type !== 'text' && chunk.type !== 'reasoning') return;
      if (chunk.type === 'text') text += chunk.text;
      else reasoning += chunk.text;
      if (streamed) {
        const delta: WorkflowEventBody = {
          kind: 'node_delta', node, content: chunk.type === 'text' ? chunk.text : '', reasoning: chunk.type === 'reasoning' ? chunk.text : '', outputKey,
        };
        emitted = emitted.then(() => env.emit(delta));
      }
    });
  } catch (err) {
    if (!ctx.signal.aborted) throw err;
  } finally {
    await emitted;
  }
  const answer = { kind: 'node_answer', node, content: text, reasoning, outputKey } as const;
  if (ctx.signal.aborted) {
    // the partial answer is kept, as a stopped chat answer is
    if (text || reasoning) await env.emit({ ...answer, interrupted: true });
    return { kind: 'stopped' };
  }
  await env.emit({ ...answer, interrupted: false });
  return {
    kind: 'done',
    input: { ...(system && { system_prompt: system }), prompt, model: { provider: providerName, name: model ?? null } },
    outputs: { [outputKey]: text },
  };
}

function conditionNode(data: NodeDataOf['condition'], env: NodeEnv): NodeResult {
  const cases: JsonValue[] = [];
  let branch = ELSE_HANDLE;
  for (const kase of data.cases) {
    const { op } = kase.when;
    const left = resolve(kase.when.left, env.variables);
    const right = UNARY_OPS.includes(op) ? null : resolve(kase.when.right, env.variables);
    const matched = compare(kase.id, left, op, right);
    cases.push({ id: kase.id, left, op, right, matched });
    if (matched) {
      branch = kase.id;
      break;
    }
  }
  return { kind: 'done', input: { cases }, outputs: { branch }, handle: branch };
}

async function toolNode(data: NodeDataOf['tool'], env: NodeEnv): Promise<NodeResult> {
  const tool = env.ctx.tools.get(data.tool);
  if (!tool) throw new AppError('workflow_node_invalid', `unknown tool "${data.tool}"`);
  const args = resolve(data.args ?? {}, env.variables) as Record<string, JsonValue>;
  const output = await tool.run(args, env.ctx.signal);
  if (env.ctx.signal.aborted) return { kind: 'stopped' };
  return { kind: 'done', input: { tool: data.tool, args }, outputs: { output } };
}

async function codeNode(data: NodeDataOf['code'], env: NodeEnv): Promise<NodeResult> {
  const inputs = resolve(data.inputs ?? {}, env.variables) as Record<string, JsonValue>;
  const timeoutMs = Math.min(data.timeout_ms ?? CODE_TIMEOUT_DEFAULT_MS, CODE_TIMEOUT_MAX_MS);
  let value: JsonValue;
  try {
    value = await (env.sandbox ?? sharedSandbox()).run(data.code, inputs, { timeoutMs, signal: env.ctx.signal });
  } catch (err) {
    if (err instanceof SandboxError && err.reason === 'stopped') return { kind: 'stopped' };
    throw err;
  }
  return { kind: 'done', input: { inputs }, outputs: isRecord(value) ? value : { result: value } };
}

async function outputNode(data: NodeDataOf['output'], node: NodeRun, env: NodeEnv): Promise<NodeResult> {
  const message = render(data.message, env.variables);
  if (data.options?.length) {
    const options = data.options.map((o) => render(o, env.variables));
    return { kind: 'wait', schema: { kind: 'choose', options }, text: message, outputs: { message } };
  }
  if (data.editable) return { kind: 'wait', schema: { kind: 'edit', input_msg: message }, text: message, outputs: { message } };
  await env.emit({ kind: 'output', node, text: message });
  return { kind: 'done', input: { message }, outputs: { message } };
}

/** Maps what a node threw to the workflow codes, naming the node; unknown errors keep their cause for the log only. */
export function toWorkflowError(err: unknown, node: { id: string; type: NodeType; data: object }): AppError {
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
