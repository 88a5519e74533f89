/**
 * The workflow graph format: what an app's `spec.graph` holds and what the executor runs.
 *
 *   { nodes: [{ id, type, data }], edges: [{ source, target, sourceHandle? }] }
 *
 * Node ids are non-empty strings; templates can name those made of letters, digits, `_` and `-`.
 * Nodes may carry other keys (an editor's `position`, ...); they are kept and ignored.
 * Every node's `data` may hold `name` (shown in frames; default: the id) and `max_steps` (a loop
 * guard: how often this node may run in one run, 1..workflow.max_steps; default workflow.max_steps).
 * A cycle is allowed only when it passes through a node with `data.max_steps`.
 *
 * | type      | data                                                                                         | output variables |
 * | --------- | -------------------------------------------------------------------------------------------- | ---------------- |
 * | start     | guide_word?, guide_questions?: string[], variables?: {key: default}                          | the variables' keys, `current_time`, `chat_id` |
 * | input     | mode: 'dialog' \| 'form', prompt?, fields?: [{key, type: text\|number\|select\|file, label, required?, options?, multiple?}] (form) | dialog: `user_input`, `dialog_files_content`; form: the field keys |
 * | llm       | prompt (template), system_prompt?, model?: {provider?, name?, temperature?, max_tokens?}, output_key? ('output'), stream? (true) | output_key |
 * | condition | cases: [{id, when: {left, op, right?}}]; op: eq ne gt gte lt lte contains not_contains empty not_empty | `branch` (the chosen case id or 'else') |
 * | tool      | tool: name, args?: {k: template}                                                             | `output` |
 * | code      | code (JS: an expression or a function body over `inputs`), inputs?: {k: template}, timeout_ms? (1000, max 5000) | the returned object's keys, else `result` |
 * | output    | message (template), options?: string[] (ask to choose), editable?: boolean (ask to edit)    | `message`; `output_result` when it asks |
 * | end       | —                                                                                            | — |
 *
 * Edges leaving a `condition` node carry `sourceHandle` = a case id or 'else': the first case whose
 * `when` holds picks its edges, else the 'else' edges. Other nodes follow all their edges.
 *
 * Templates: `{{node_id.key}}` (also Bisheng's `{{#node_id.key#}}`), with an optional path into an
 * object or array value (`{{code1.result.items.0}}`). In text, objects and arrays are written as
 * JSON, null as ''. A value that is exactly one reference (tool args, code inputs, condition
 * operands) keeps its JSON type. A reference to a variable that does not exist when the node runs is
 * an error (10531).
 */
import { isRecord, type JsonValue, type WorkflowGraph } from '../../domain/types.ts';

export const NODE_TYPES = ['start', 'input', 'llm', 'condition', 'tool', 'code', 'output', 'end'] as const;
export type NodeType = (typeof NODE_TYPES)[number];

export const FIELD_TYPES = ['text', 'number', 'select', 'file'] as const;
export type FieldType = (typeof FIELD_TYPES)[number];

export const CONDITION_OPS = ['eq', 'ne', 'gt', 'gte', 'lt', 'lte', 'contains', 'not_contains', 'empty', 'not_empty'] as const;
export type ConditionOp = (typeof CONDITION_OPS)[number];
/** the operators that compare with nothing */
export const UNARY_OPS: readonly ConditionOp[] = ['empty', 'not_empty'];

export const ELSE_HANDLE = 'else';
/** a variable key a template can name: letters, digits, `_` and `-` */
export const KEY_PATTERN = /^[\w-]{1,64}$/;
export const DEFAULT_OUTPUT_KEY = 'output';
export const CODE_TIMEOUT_DEFAULT_MS = 1000;
export const CODE_TIMEOUT_MAX_MS = 5000;


interface CommonData {
  name?: string;
  max_steps?: number;
}

export interface StartData extends CommonData {
  guide_word?: string;
  guide_questions?: string[];
  variables?: Record<string, JsonValue>;
}

export interface FormField {
  key: string;
  type: FieldType;
  label: string;
  required?: boolean;
  /** select: the choices */
  options?: string[];
  /** select and file: an array of values */
  multiple?: boolean;
}

export interface InputData extends CommonData {
  mode: 'dialog' | 'form';
  prompt?: string;
  fields?: FormField[];
}

export interface LlmData extends CommonData {
  prompt: string;
  system_prompt?: string;
  model?: { provider?: string; name?: string; temperature?: number; max_tokens?: number };
  output_key?: string;
  stream?: boolean;
}

export interface ConditionCase {
  id: string;
  when: { left: JsonValue; op: ConditionOp; right?: JsonValue };
}

export interface ConditionData extends CommonData {
  cases: ConditionCase[];
}

export interface ToolData extends CommonData {
  tool: string;
  args?: Record<string, JsonValue>;
}

export interface CodeData extends CommonData {
  code: string;
  inputs?: Record<string, JsonValue>;
  timeout_ms?: number;
}

export interface OutputData extends CommonData {
  message: string;
  options?: string[];
  editable?: boolean;
}

export type EndData = CommonData;

export interface NodeDataOf {
  start: StartData;
  input: InputData;
  llm: LlmData;
  condition: ConditionData;
  tool: ToolData;
  code: CodeData;
  output: OutputData;
  end: EndData;
}

/** A node once the graph validated: `data` has the shape of its type. */
export type WorkflowNode = { [T in NodeType]: { id: string; type: T; data: NodeDataOf[T] } }[NodeType];

export const nodeName = (node: { id: string; data?: Record<string, unknown> | CommonData }): string => {
  const name = (node.data as CommonData | undefined)?.name;
  return typeof name === 'string' && name ? name : node.id;
};

/**
 * The variables a node leaves behind, for the validator's reference check; `'any'` when they are
 * only known at run time (a code node returns what it likes).
 */
export function outputKeys(type: NodeType, data: Record<string, unknown>): Set<string> | 'any' {
  const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  switch (type) {
    case 'start':
      return new Set([...Object.keys(isRecord(data.variables) ? data.variables : {}), 'current_time', 'chat_id']);
    case 'input':
      return data.mode === 'form'
        ? new Set(Array.isArray(data.fields) ? data.fields.map((f) => (isRecord(f) && typeof f.key === 'string' ? f.key : '')).filter(Boolean) : [])
        : new Set(['user_input', 'dialog_files_content']);
    case 'llm':
      return new Set([typeof data.output_key === 'string' && data.output_key ? data.output_key : DEFAULT_OUTPUT_KEY]);
    case 'condition':
      return new Set(['branch']);
    case 'tool':
      return new Set(['output']);
    case 'code':
      return 'any';
    case 'output':
      return new Set(strings(data.options).length || data.editable === true ? ['message', 'output_result'] : ['message']);
    case 'end':
      return new Set();
  }
}


export type { WorkflowGraph };

// ---------------------------------------------------------------------------------------------
// JSON Schema (draft-07, as Ajv and the OpenAPI document use it) of the graph, for the API to
// publish. The validator (graph-validate.ts) checks the same rules and more (reachability, cycles,
// references) and says what is wrong in words; this schema is for editors and clients.

const templateish = { description: 'text; may hold {{node_id.key}} references' };
const anyJson = {};
const identifier = { type: 'string', pattern: KEY_PATTERN.source };
const common = {
  name: { type: 'string', description: 'shown in frames; default: the node id' },
  max_steps: { type: 'integer', minimum: 1, description: 'loop guard: how often this node may run in one run (at most workflow.max_steps)' },
};

const DATA_SCHEMAS: Record<NodeType, Record<string, unknown>> = {
  start: {
    type: 'object',
    properties: {
      ...common,
      guide_word: { type: 'string' },
      guide_questions: { type: 'array', items: { type: 'string' } },
      variables: { type: 'object', propertyNames: identifier, additionalProperties: anyJson, description: 'global variables with their defaults: {{start.key}}' },
    },
  },
  input: {
    type: 'object',
    required: ['mode'],
    properties: {
      ...common,
      mode: { enum: ['dialog', 'form'] },
      prompt: { type: 'string', ...templateish },
      fields: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          required: ['key', 'type', 'label'],
          properties: {
            key: identifier,
            type: { enum: [...FIELD_TYPES] },
            label: { type: 'string' },
            required: { type: 'boolean' },
            options: { type: 'array', items: { type: 'string' }, minItems: 1 },
            multiple: { type: 'boolean' },
          },
        },
      },
    },
    if: { properties: { mode: { const: 'form' } } },
    then: { required: ['fields'] },
  },
  llm: {
    type: 'object',
    required: ['prompt'],
    properties: {
      ...common,
      prompt: { type: 'string', minLength: 1, ...templateish },
      system_prompt: { type: 'string', ...templateish },
      model: {
        type: 'object',
        properties: {
          provider: { type: 'string' },
          name: { type: 'string' },
          temperature: { type: 'number', minimum: 0, maximum: 2 },
          max_tokens: { type: 'integer', minimum: 1 },
        },
      },
      output_key: identifier,
      stream: { type: 'boolean', default: true },
    },
  },
  condition: {
    type: 'object',
    required: ['cases'],
    properties: {
      ...common,
      cases: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          required: ['id', 'when'],
          properties: {
            id: { type: 'string', minLength: 1, not: { const: ELSE_HANDLE } },
            when: {
              type: 'object',
              required: ['left', 'op'],
              properties: { left: anyJson, op: { enum: [...CONDITION_OPS] }, right: anyJson },
            },
          },
        },
      },
    },
  },
  tool: {
    type: 'object',
    required: ['tool'],
    properties: { ...common, tool: { type: 'string', minLength: 1 }, args: { type: 'object', additionalProperties: anyJson } },
  },
  code: {
    type: 'object',
    required: ['code'],
    properties: {
      ...common,
      code: { type: 'string', minLength: 1, description: 'JavaScript: an expression or a function body over `inputs`, returning a JSON value; runs in a QuickJS sandbox' },
      inputs: { type: 'object', propertyNames: identifier, additionalProperties: anyJson },
      timeout_ms: { type: 'integer', minimum: 1, maximum: CODE_TIMEOUT_MAX_MS, default: CODE_TIMEOUT_DEFAULT_MS },
    },
  },
  output: {
    type: 'object',
    required: ['message'],
    properties: {
      ...common,
      message: { type: 'string', ...templateish },
      options: { type: 'array', items: { type: 'string' }, minItems: 1, description: 'ask the user to choose one (answer key output_result)' },
      editable: { type: 'boolean', description: 'ask the user to edit the message (answer key output_result)' },
    },
  },
  end: { type: 'object', properties: { ...common } },
};

export const WORKFLOW_GRAPH_SCHEMA = {
  title: 'Workflow graph',
  type: 'object',
  required: ['nodes', 'edges'],
  properties: {
    nodes: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'type'],
        properties: {
          id: { type: 'string', minLength: 1 },
          type: { enum: [...NODE_TYPES] },
          data: { type: 'object' },
        },
        allOf: NODE_TYPES.map((type) => ({
          if: { properties: { type: { const: type } }, required: ['type'] },
          then: { properties: { data: DATA_SCHEMAS[type] }, ...(type === 'end' || type === 'start' ? {} : { required: ['data'] }) },
        })),
      },
    },
    edges: {
      type: 'array',
      items: {
        type: 'object',
        required: ['source', 'target'],
        properties: {
          source: { type: 'string' },
          target: { type: 'string' },
          sourceHandle: { type: 'string', description: "condition nodes: a case id or 'else'" },
        },
      },
    },
  },
} as const;
