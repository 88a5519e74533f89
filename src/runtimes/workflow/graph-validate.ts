/**
 * Static checks of a workflow graph (the format is in workflow-graph.ts), run before it is
 * published or run. Every problem is reported at once, so an editor can fix them all in one pass.
 */
import { isRecord } from '../../domain/types.ts';
import {
  CODE_TIMEOUT_MAX_MS, CONDITION_OPS, ELSE_HANDLE, FIELD_TYPES, KEY_PATTERN, NODE_TYPES, UNARY_OPS, outputKeys, type NodeType,
} from './workflow-graph.ts';
import { references, stringsIn, type Reference } from './template.ts';

export { NODE_TYPES, type NodeType };

export type ProblemCode =
  | 'invalid_graph' | 'invalid_node' | 'duplicate_node' | 'unknown_node_type' | 'invalid_node_data'
  | 'no_start' | 'multiple_starts' | 'invalid_edge' | 'dangling_edge'
  | 'unreachable_node' | 'no_end' | 'unknown_variable' | 'unguarded_cycle';

export interface Problem {
  code: ProblemCode;
  message: string;
  node_id?: string;
  /** index of the edge in `edges` (edges have no ids) */
  edge?: number;
}

export interface GraphRules {
  /** workflow.max_steps: the largest loop guard a node may declare */
  maxSteps: number;
  /** when given, llm nodes may only name these providers */
  providers?: readonly string[] | undefined;
  /** when given, tool nodes may only name these tools */
  tools?: readonly string[] | undefined;
}

type Data = Record<string, unknown>;

const isString = (v: unknown): v is string => typeof v === 'string';
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
const isKey = (v: unknown): v is string => isString(v) && KEY_PATTERN.test(v);

/** Collects what is wrong with one node's data, as readable messages. */
class Checker {
  readonly messages: string[] = [];
  constructor(readonly data: Data) {}

  need(ok: boolean, message: string): boolean {
    if (!ok) this.messages.push(message);
    return ok;
  }

  /** an optional key of the given kind */
  optional(key: string, ok: (v: unknown) => boolean, what: string): void {
    if (this.data[key] !== undefined) this.need(ok(this.data[key]), `data.${key} must be ${what}`);
  }
}

const KEY_RULE = 'made of letters, digits, _ and - (at most 64)';

/** What each node type requires of its `data`. */
const DATA_RULES: Record<NodeType, (c: Checker, rules: GraphRules) => void> = {
  start: (c) => {
    c.optional('guide_word', isString, 'a string');
    c.optional('guide_questions', isStringArray, 'an array of strings');
    if (c.need(c.data.variables === undefined || isRecord(c.data.variables), 'data.variables must be an object of {key: default value}') && isRecord(c.data.variables)) {
      for (const key of Object.keys(c.data.variables)) c.need(isKey(key), `data.variables key "${key}" must be ${KEY_RULE}`);
    }
  },
  input: (c) => {
    const { mode, fields } = c.data;
    c.optional('prompt', isString, 'a string');
    if (mode === 'dialog') return;
    if (mode !== 'form') {
      c.need(false, "input node data.mode must be 'dialog' or 'form'");
      return;
    }
    if (!c.need(Array.isArray(fields) && fields.length > 0, 'a form input node needs data.fields (a non-empty array)')) return;
    const seen = new Set<string>();
    (fields as unknown[]).forEach((f, i) => {
      const at = `data.fields[${i}]`;
      if (!c.need(isRecord(f), `${at} must be an object`)) return;
      const field = f as Data;
      if (c.need(isKey(field.key), `${at}.key must be ${KEY_RULE}`)) {
        c.need(!seen.has(field.key as string), `${at}.key "${field.key as string}" is used twice`);
        seen.add(field.key as string);
      }
      c.need((FIELD_TYPES as readonly unknown[]).includes(field.type), `${at}.type must be one of ${FIELD_TYPES.join(', ')}`);
      c.need(isString(field.label), `${at}.label must be a string`);
      if (field.required !== undefined) c.need(typeof field.required === 'boolean', `${at}.required must be a boolean`);
      if (field.multiple !== undefined && c.need(typeof field.multiple === 'boolean', `${at}.multiple must be a boolean`)) {
        c.need(!field.multiple || field.type === 'select' || field.type === 'file', `${at}.multiple only applies to select and file fields`);
      }
      if (field.type === 'select') c.need(isStringArray(field.options) && field.options.length > 0, `${at}: a select field needs options (a non-empty array of strings)`);
      else if (field.options !== undefined) c.need(false, `${at}.options only applies to select fields`);
    });
  },
  llm: (c, rules) => {
    c.need(isString(c.data.prompt) && c.data.prompt.trim() !== '', 'llm node needs data.prompt (string)');
    c.optional('system_prompt', isString, 'a string');
    c.optional('output_key', isKey, KEY_RULE);
    c.optional('stream', (v) => typeof v === 'boolean', 'a boolean');
    const model = c.data.model;
    if (model === undefined) return;
    if (!c.need(isRecord(model), 'data.model must be an object')) return;
    const m = model as Data;
    if (m.provider !== undefined && c.need(isString(m.provider) && m.provider !== '', 'data.model.provider must be a non-empty string')) {
      if (rules.providers) c.need(rules.providers.includes(m.provider as string), `data.model.provider "${m.provider as string}" is not configured`);
    }
    if (m.name !== undefined) c.need(isString(m.name), 'data.model.name must be a string');
    if (m.temperature !== undefined) c.need(typeof m.temperature === 'number' && m.temperature >= 0 && m.temperature <= 2, 'data.model.temperature must be a number from 0 to 2');
    if (m.max_tokens !== undefined) c.need(Number.isInteger(m.max_tokens) && (m.max_tokens as number) >= 1, 'data.model.max_tokens must be a positive integer');
  },
  condition: (c) => {
    const { cases } = c.data;
    if (!c.need(Array.isArray(cases) && cases.length > 0, 'condition node needs data.cases (a non-empty array)')) return;
    const seen = new Set<string>();
    (cases as unknown[]).forEach((k, i) => {
      const at = `data.cases[${i}]`;
      if (!c.need(isRecord(k), `${at} must be an object`)) return;
      const kase = k as Data;
      if (c.need(isString(kase.id) && kase.id !== '' && kase.id !== ELSE_HANDLE, `${at}.id must be a non-empty string other than '${ELSE_HANDLE}'`)) {
        c.need(!seen.has(kase.id as string), `${at}.id "${kase.id as string}" is used twice`);
        seen.add(kase.id as string);
      }
      if (!c.need(isRecord(kase.when), `${at}.when must be an object {left, op, right?}`)) return;
      const when = kase.when as Data;
      c.need(when.left !== undefined, `${at}.when.left is required`);
      if (c.need((CONDITION_OPS as readonly unknown[]).includes(when.op), `${at}.when.op must be one of ${CONDITION_OPS.join(', ')}`)) {
        if (!UNARY_OPS.includes(when.op as never)) c.need(when.right !== undefined, `${at}.when.right is required for op ${when.op as string}`);
      }
    });
  },
  tool: (c, rules) => {
    if (c.need(isString(c.data.tool) && c.data.tool !== '', 'tool node needs data.tool (the tool name)') && rules.tools) {
      c.need(rules.tools.includes(c.data.tool as string), `data.tool "${c.data.tool as string}" is not a known tool`);
    }
    c.optional('args', isRecord, 'an object of {argument: template}');
  },
  code: (c) => {
    c.need(isString(c.data.code) && c.data.code.trim() !== '', 'code node needs data.code (string)');
    if (c.need(c.data.inputs === undefined || isRecord(c.data.inputs), 'data.inputs must be an object of {name: template}') && isRecord(c.data.inputs)) {
      for (const key of Object.keys(c.data.inputs)) c.need(isKey(key), `data.inputs key "${key}" must be ${KEY_RULE}`);
    }
    c.optional('timeout_ms', (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= CODE_TIMEOUT_MAX_MS, `an integer from 1 to ${CODE_TIMEOUT_MAX_MS}`);
  },
  output: (c) => {
    c.need(isString(c.data.message), 'output node needs data.message (string)');
    c.optional('options', (v) => isStringArray(v) && v.length > 0, 'a non-empty array of strings');
    c.optional('editable', (v) => typeof v === 'boolean', 'a boolean');
    c.need(!(c.data.options !== undefined && c.data.editable === true), 'an output node asks either to choose (options) or to edit (editable), not both');
  },
  end: () => {},
};

/** The strings of a node's data that are rendered as templates at run time (the code itself is not). */
function templatesOf(type: NodeType, data: Data): unknown[] {
  switch (type) {
    case 'input': return [data.prompt];
    case 'llm': return [data.prompt, data.system_prompt];
    case 'condition': return Array.isArray(data.cases) ? data.cases.map((k) => (isRecord(k) && isRecord(k.when) ? [k.when.left, k.when.right] : [])) : [];
    case 'tool': return [data.args];
    case 'code': return [data.inputs];
    case 'output': return [data.message, data.options];
    default: return [];
  }
}

export function validateGraph(graph: unknown, rules: GraphRules): Problem[] {
  if (!isRecord(graph)) return [{ code: 'invalid_graph', message: 'graph must be an object with nodes and edges arrays' }];
  const problems: Problem[] = [];
  const list = (key: 'nodes' | 'edges'): unknown[] => {
    if (Array.isArray(graph[key])) return graph[key];
    problems.push({ code: 'invalid_graph', message: `graph.${key} must be an array` });
    return [];
  };
  const rawNodes = list('nodes');
  const rawEdges = list('edges');

  const nodes = new Map<string, { type: string; data: Data }>();
  rawNodes.forEach((n, i) => {
    if (!isRecord(n) || typeof n.id !== 'string' || !n.id || typeof n.type !== 'string') {
      const named = isRecord(n) && typeof n.id === 'string' && n.id;
      problems.push({ code: 'invalid_node', message: `nodes[${i}] needs a string id and type`, ...(named && { node_id: named }) });
      return;
    }
    const id = n.id;
    if (nodes.has(id)) {
      problems.push({ code: 'duplicate_node', message: `node id "${id}" is used more than once`, node_id: id });
      return;
    }
    if (n.data !== undefined && !isRecord(n.data)) problems.push({ code: 'invalid_node', message: `node "${id}": data must be an object`, node_id: id });
    const data = isRecord(n.data) ? n.data : {};
    nodes.set(id, { type: n.type, data });
    const known = (NODE_TYPES as readonly string[]).includes(n.type);
    if (!known) problems.push({ code: 'unknown_node_type', message: `node "${id}" has unknown type "${n.type}"`, node_id: id });
    const checker = new Checker(data);
    // data that is not an object was reported above; its rules would only repeat that
    if (known && (n.data === undefined || isRecord(n.data))) DATA_RULES[n.type as NodeType](checker, rules);
    checker.optional('name', isString, 'a string');
    checker.optional('max_steps', (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= rules.maxSteps, `an integer from 1 to ${rules.maxSteps}`);
    for (const message of checker.messages) problems.push({ code: 'invalid_node_data', message: `node "${id}": ${message}`, node_id: id });
  });

  const starts = [...nodes].filter(([, n]) => n.type === 'start').map(([id]) => id);
  if (starts.length === 0) problems.push({ code: 'no_start', message: 'the graph needs a start node' });
  if (starts.length > 1) problems.push({ code: 'multiple_starts', message: `the graph has ${starts.length} start nodes (${starts.join(', ')}); it needs exactly one`, node_id: starts[1]! });

  const next = new Map<string, string[]>([...nodes.keys()].map((id) => [id, []]));
  const prev = new Map<string, string[]>([...nodes.keys()].map((id) => [id, []]));
  rawEdges.forEach((e, i) => {
    if (!isRecord(e) || typeof e.source !== 'string' || typeof e.target !== 'string') {
      problems.push({ code: 'invalid_edge', message: `edges[${i}] needs a string source and target`, edge: i });
      return;
    }
    const missing = [e.source, e.target].filter((id) => !nodes.has(id));
    if (missing.length) {
      problems.push({ code: 'dangling_edge', message: `edges[${i}] (${e.source} → ${e.target}) points to missing node ${missing.join(', ')}`, edge: i });
      return;
    }
    next.get(e.source)!.push(e.target);
    prev.get(e.target)!.push(e.source);
    const source = nodes.get(e.source)!;
    if (source.type === 'condition') {
      // a branch the node can never pick would silently never run
      const cases = Array.isArray(source.data.cases) ? source.data.cases : [];
      const handles = [...cases.map((k) => (isRecord(k) ? k.id : undefined)).filter(isString), ELSE_HANDLE];
      if (!handles.includes(e.sourceHandle as string)) {
        problems.push({ code: 'invalid_edge', message: `edges[${i}] leaves condition node "${e.source}": its sourceHandle must be one of ${handles.join(', ')}`, edge: i, node_id: e.source });
      }
    }
  });

  // Without a start every node would be "unreachable": the no_start problem says it once.
  if (starts.length) {
    const reached = new Set(starts);
    for (const id of reached) for (const t of next.get(id)!) reached.add(t);
    for (const id of nodes.keys()) if (!reached.has(id)) problems.push({ code: 'unreachable_node', message: `node "${id}" cannot be reached from the start`, node_id: id });
    if (![...reached].some((id) => nodes.get(id)!.type === 'end')) problems.push({ code: 'no_end', message: 'no end node can be reached from the start' });
  }

  // A reference must name a node that runs before this one and a variable that node leaves.
  const ancestors = (id: string): Set<string> => {
    const seen = new Set<string>(prev.get(id));
    for (const a of seen) for (const p of prev.get(a)!) seen.add(p);
    return seen;
  };
  for (const [id, { type, data }] of nodes) {
    if (!(NODE_TYPES as readonly string[]).includes(type)) continue;
    const refs = new Map<string, Reference>();
    for (const s of stringsIn(templatesOf(type as NodeType, data))) for (const ref of references(s)) refs.set(ref.text, ref);
    if (!refs.size) continue;
    const before = ancestors(id);
    const reported = new Set<string>();
    for (const ref of refs.values()) {
      const source = nodes.get(ref.node);
      let message: string | null = null;
      if (!source) {
        if (reported.has(ref.node)) continue;
        reported.add(ref.node);
        message = `node "${id}" refers to unknown node "${ref.node}"`;
      } else if (!(NODE_TYPES as readonly string[]).includes(source.type)) {
        continue; // reported as unknown_node_type
      } else {
        const keys = outputKeys(source.type as NodeType, source.data);
        if (keys !== 'any' && !keys.has(ref.key)) {
          message = `node "${id}" refers to ${ref.text}, but node "${ref.node}" has no variable "${ref.key}" (it has: ${[...keys].join(', ') || 'none'})`;
        } else if (!before.has(ref.node)) {
          message = `node "${id}" refers to ${ref.text}, but node "${ref.node}" does not run before it`;
        }
      }
      if (message) problems.push({ code: 'unknown_variable', message, node_id: id });
    }
  }

  // A loop must pass through a guard (a node with data.max_steps): any cycle left once the guards
  // are taken out is unguarded.
  const position = new Map([...nodes.keys()].map((id, i) => [id, i]));
  const unguarded = [...nodes].filter(([, n]) => n.data.max_steps === undefined).map(([id]) => id);
  const keep = new Set(unguarded);
  for (const cycle of cyclicComponents(unguarded, (id) => next.get(id)!.filter((t) => keep.has(t)))) {
    cycle.sort((a, b) => position.get(a)! - position.get(b)!);
    problems.push({ code: 'unguarded_cycle', message: `the cycle through ${cycle.join(', ')} has no loop guard (data.max_steps on one of its nodes)`, node_id: cycle[0]! });
  }
  return problems;
}

/** Strongly connected components that contain a cycle (Tarjan, iterative so deep graphs cannot overflow the stack). */
function cyclicComponents(ids: string[], next: (id: string) => string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (id: string) => {
    index.set(id, index.size);
    low.set(id, index.get(id)!);
    stack.push(id);
    onStack.add(id);
    return { id, succ: next(id), i: 0 };
  };
  for (const root of ids) {
    if (index.has(root)) continue;
    const work = [visit(root)];
    while (work.length) {
      const frame = work[work.length - 1]!;
      if (frame.i < frame.succ.length) {
        const w = frame.succ[frame.i++]!;
        if (!index.has(w)) work.push(visit(w));
        else if (onStack.has(w)) low.set(frame.id, Math.min(low.get(frame.id)!, index.get(w)!));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.id, Math.min(low.get(parent.id)!, low.get(frame.id)!));
      if (low.get(frame.id) !== index.get(frame.id)) continue;
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== frame.id);
      if (component.length > 1 || frame.succ.includes(frame.id)) out.push(component);
    }
  }
  return out;
}
