/**
 * Static checks of a workflow graph, run before it is published or built. Every problem is
 * reported at once, so an editor can fix them all in one pass.
 */
export const NODE_TYPES = ['start', 'input', 'llm', 'condition', 'tool', 'code', 'output', 'end'] as const;
export type NodeType = (typeof NODE_TYPES)[number];

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
}

type Data = Record<string, unknown>;

const isObject = (v: unknown): v is Data => typeof v === 'object' && v !== null && !Array.isArray(v);
const need = (ok: boolean, message: string): string[] => (ok ? [] : [message]);

/** What each node type requires of its `data`; a rule returns what is wrong. */
const DATA_RULES: Record<NodeType, (d: Data) => string[]> = {
  start: () => [],
  input: (d) => d.mode === 'form'
    ? need(Array.isArray(d.fields), 'a form input node needs data.fields (array)')
    : need(d.mode === 'dialog', "input node data.mode must be 'dialog' or 'form'"),
  llm: (d) => need(typeof d.prompt === 'string', 'llm node needs data.prompt (string)'),
  condition: (d) => need(Array.isArray(d.cases), 'condition node needs data.cases (array)'),
  tool: () => [],
  code: (d) => need(typeof d.code === 'string', 'code node needs data.code (string)'),
  output: () => [],
  end: () => [],
};

/** `{{node_id.key}}`, also in Bisheng's `{{#node_id.key#}}` spelling. */
const VARIABLE = /\{\{\s*#?([\w-]+)\.[\w.-]+#?\s*\}\}/g;

function* stringsIn(v: unknown): Generator<string> {
  if (typeof v === 'string') yield v;
  else if (Array.isArray(v)) for (const x of v) yield* stringsIn(x);
  else if (isObject(v)) for (const x of Object.values(v)) yield* stringsIn(x);
}

export function validateGraph(graph: unknown, rules: GraphRules): Problem[] {
  if (!isObject(graph)) return [{ code: 'invalid_graph', message: 'graph must be an object with nodes and edges arrays' }];
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
    if (!isObject(n) || typeof n.id !== 'string' || !n.id || typeof n.type !== 'string') {
      const named = isObject(n) && typeof n.id === 'string' && n.id;
      problems.push({ code: 'invalid_node', message: `nodes[${i}] needs a string id and type`, ...(named && { node_id: named }) });
      return;
    }
    const id = n.id;
    if (nodes.has(id)) {
      problems.push({ code: 'duplicate_node', message: `node id "${id}" is used more than once`, node_id: id });
      return;
    }
    if (n.data !== undefined && !isObject(n.data)) problems.push({ code: 'invalid_node', message: `node "${id}": data must be an object`, node_id: id });
    const data = isObject(n.data) ? n.data : {};
    nodes.set(id, { type: n.type, data });
    const known = (NODE_TYPES as readonly string[]).includes(n.type);
    if (!known) problems.push({ code: 'unknown_node_type', message: `node "${id}" has unknown type "${n.type}"`, node_id: id });
    const messages = known ? DATA_RULES[n.type as NodeType](data) : [];
    const guard = data.max_steps;
    if (guard !== undefined && !(Number.isInteger(guard) && (guard as number) >= 1 && (guard as number) <= rules.maxSteps)) {
      messages.push(`data.max_steps must be an integer from 1 to ${rules.maxSteps}`);
    }
    for (const message of messages) problems.push({ code: 'invalid_node_data', message: `node "${id}": ${message}`, node_id: id });
  });

  const starts = [...nodes].filter(([, n]) => n.type === 'start').map(([id]) => id);
  if (starts.length === 0) problems.push({ code: 'no_start', message: 'the graph needs a start node' });
  if (starts.length > 1) problems.push({ code: 'multiple_starts', message: `the graph has ${starts.length} start nodes (${starts.join(', ')}); it needs exactly one`, node_id: starts[1]! });

  const next = new Map<string, string[]>([...nodes.keys()].map((id) => [id, []]));
  rawEdges.forEach((e, i) => {
    if (!isObject(e) || typeof e.source !== 'string' || typeof e.target !== 'string') {
      problems.push({ code: 'invalid_edge', message: `edges[${i}] needs a string source and target`, edge: i });
      return;
    }
    const missing = [e.source, e.target].filter((id) => !nodes.has(id));
    if (missing.length) problems.push({ code: 'dangling_edge', message: `edges[${i}] (${e.source} → ${e.target}) points to missing node ${missing.join(', ')}`, edge: i });
    else next.get(e.source)!.push(e.target);
  });

  // Without a start every node would be "unreachable": the no_start problem says it once.
  if (starts.length) {
    const reached = new Set(starts);
    for (const id of reached) for (const t of next.get(id)!) reached.add(t);
    for (const id of nodes.keys()) if (!reached.has(id)) problems.push({ code: 'unreachable_node', message: `node "${id}" cannot be reached from the start`, node_id: id });
    if (![...reached].some((id) => nodes.get(id)!.type === 'end')) problems.push({ code: 'no_end', message: 'no end node can be reached from the start' });
  }

  for (const [id, { data }] of nodes) {
    const unknown = new Set<string>();
    for (const s of stringsIn(data)) for (const m of s.matchAll(VARIABLE)) if (!nodes.has(m[1]!)) unknown.add(m[1]!);
    for (const ref of unknown) problems.push({ code: 'unknown_variable', message: `node "${id}" refers to unknown node "${ref}"`, node_id: id });
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
