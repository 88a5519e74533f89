import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { DEMO_APPS } from '../../src/apps/demo-apps.ts';
import { validateGraph } from '../../src/runtimes/workflow/graph-validate.ts';
import { WORKFLOW_GRAPH_SCHEMA } from '../../src/runtimes/workflow/workflow-graph.ts';

const rules = { maxSteps: 50 };
const codes = (graph: unknown, r: Parameters<typeof validateGraph>[1] = rules) => validateGraph(graph, r).map((p) => p.code).sort();
const messagesOf = (graph: unknown, r: Parameters<typeof validateGraph>[1] = rules) => validateGraph(graph, r).map((p) => [p.code, p.node_id, p.message]);

type Node = { id: string; type: string; data?: Record<string, unknown> };
const node = (id: string, type: string, data: Record<string, unknown> = {}): Node => ({ id, type, data });
const edge = (source: string, target: string, sourceHandle?: string) => ({ source, target, ...(sourceHandle !== undefined && { sourceHandle }) });
const start = node('start', 'start');
const end = node('end', 'end');
const llm = (id: string, prompt = 'hi', extra: Record<string, unknown> = {}) => node(id, 'llm', { prompt, ...extra });
const output = (id: string, message = 'done', extra: Record<string, unknown> = {}) => node(id, 'output', { message, ...extra });
const demoGraph = () => DEMO_APPS.find((a) => a.kind === 'workflow')!.spec.graph!;
/** start → the given nodes in a line → end */
const chain = (...nodes: Node[]) => ({
  nodes: [start, ...nodes, end],
  edges: [start, ...nodes, end].slice(1).map((n, i) => edge([start, ...nodes][i]!.id, n.id)),
});

describe('validateGraph', () => {
  it('accepts the demo workflow', () => {
    expect(validateGraph(demoGraph(), rules)).toEqual([]);
  });

  it('accepts a minimal graph and a guarded loop', () => {
    expect(codes({ nodes: [start, end], edges: [edge('start', 'end')] })).toEqual([]);
    const loop = { nodes: [start, llm('a', 'x', { max_steps: 3 }), llm('b'), end], edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'end')] };
    expect(codes(loop)).toEqual([]);
  });

  it('accepts every node type with full data', () => {
    const graph = {
      nodes: [
        node('start', 'start', { name: 'Begin', guide_word: 'hi', guide_questions: ['q'], variables: { lang: 'en', n: 3 } }),
        node('talk', 'input', { mode: 'dialog', prompt: 'Say something in {{start.lang}}' }),
        node('form', 'input', { mode: 'form', fields: [
          { key: 'title', type: 'text', label: 'Title', required: true },
          { key: 'count', type: 'number', label: 'Count' },
          { key: 'tags', type: 'select', label: 'Tags', options: ['a', 'b'], multiple: true },
          { key: 'doc', type: 'file', label: 'Document' },
        ] }),
        llm('write', '{{talk.user_input}} {{form.title}} {{form.tags}}', { system_prompt: 'Be brief, {{start.current_time}}', model: { provider: 'default', name: 'm', temperature: 0.2, max_tokens: 100 }, output_key: 'text', stream: false }),
        node('branch', 'condition', { cases: [{ id: 'many', when: { left: '{{form.count}}', op: 'gt', right: 2 } }, { id: 'none', when: { left: '{{write.text}}', op: 'empty' } }] }),
        node('calc', 'tool', { tool: 'calculator', args: { expression: '{{form.count}} * 2' } }),
        node('shape', 'code', { code: 'return { n: inputs.x + 1 }', inputs: { x: '{{calc.output}}' }, timeout_ms: 500 }),
        output('show', 'n = {{shape.n}}, anything = {{shape.whatever}}'),
        output('pick', 'Pick one', { options: ['x', 'y'] }),
        output('edit', 'Edit {{pick.output_result}}', { editable: true }),
        end,
      ],
      edges: [
        edge('start', 'talk'), edge('talk', 'form'), edge('form', 'write'), edge('write', 'branch'),
        edge('branch', 'calc', 'many'), edge('branch', 'end', 'none'), edge('branch', 'end', 'else'),
        edge('calc', 'shape'), edge('shape', 'show'), edge('show', 'pick'), edge('pick', 'edit'), edge('edit', 'end'),
      ],
    };
    expect(validateGraph(graph, { ...rules, providers: ['default'], tools: ['calculator'] })).toEqual([]);
  });

  it('rejects what is not a graph', () => {
    expect(codes(null)).toEqual(['invalid_graph']);
    expect(codes([])).toEqual(['invalid_graph']);
    expect(codes({})).toEqual(['invalid_graph', 'invalid_graph', 'no_start']);
    expect(codes({ nodes: [start, end], edges: 'x' })).toEqual(['invalid_graph', 'no_end', 'unreachable_node']);
  });

  it('no start', () => {
    expect(codes({ nodes: [llm('a'), end], edges: [edge('a', 'end')] })).toEqual(['no_start']);
  });

  it('two starts', () => {
    const problems = validateGraph({ nodes: [start, node('start2', 'start'), end], edges: [edge('start', 'end'), edge('start2', 'end')] }, rules);
    expect(problems).toEqual([expect.objectContaining({ code: 'multiple_starts', node_id: 'start2' })]);
  });

  it('unreachable node, reported with its id', () => {
    const problems = validateGraph({ nodes: [start, end, llm('orphan'), output('orphan_out')], edges: [edge('start', 'end'), edge('orphan', 'orphan_out')] }, rules);
    expect(problems.map((p) => [p.code, p.node_id])).toEqual([['unreachable_node', 'orphan'], ['unreachable_node', 'orphan_out']]);
  });

  it('dangling edges, with their index; no end reachable', () => {
    const problems = validateGraph({ nodes: [start, llm('a'), end], edges: [edge('start', 'a'), edge('a', 'ghost'), edge('nobody', 'end')] }, rules);
    expect(problems.map((p) => [p.code, p.edge])).toEqual([['dangling_edge', 1], ['dangling_edge', 2], ['unreachable_node', undefined], ['no_end', undefined]]);
  });

  it('unknown variable: an unknown node, in every templated field', () => {
    const graph = {
      nodes: [start, node('ask', 'input', { mode: 'dialog' }), llm('a', 'Use {{ask.user_input}} and {{ghost.text}} and {{#phantom.x#}}'), node('c', 'condition', { cases: [{ id: 'k', when: { left: '{{ghost.y}}', op: 'not_empty' } }] }), end],
      edges: [edge('start', 'ask'), edge('ask', 'a'), edge('a', 'c'), edge('c', 'end', 'k'), edge('c', 'end', 'else')],
    };
    const problems = validateGraph(graph, rules);
    expect(problems.map((p) => [p.code, p.node_id, p.message.match(/"(\w+)"$/)?.[1]])).toEqual([
      ['unknown_variable', 'a', 'ghost'], ['unknown_variable', 'a', 'phantom'], ['unknown_variable', 'c', 'ghost'],
    ]);
  });

  it('unknown variable: a key the node does not set, or a node that does not run before', () => {
    const graph = {
      nodes: [start, node('ask', 'input', { mode: 'dialog' }), llm('a', '{{ask.text}} {{a2.output}}'), llm('a2', 'x', { output_key: 'draft' }), output('o', '{{a2.output}} {{a2.draft}} {{o.output_result}} {{side.output}}'), llm('side', 'y'), end],
      edges: [edge('start', 'ask'), edge('ask', 'a'), edge('a', 'a2'), edge('a2', 'o'), edge('o', 'end'), edge('start', 'side'), edge('side', 'end')],
    };
    expect(messagesOf(graph)).toEqual([
      ['unknown_variable', 'a', 'node "a" refers to {{ask.text}}, but node "ask" has no variable "text" (it has: user_input, dialog_files_content)'],
      ['unknown_variable', 'a', 'node "a" refers to {{a2.output}}, but node "a2" has no variable "output" (it has: draft)'],
      ['unknown_variable', 'o', 'node "o" refers to {{a2.output}}, but node "a2" has no variable "output" (it has: draft)'],
      ['unknown_variable', 'o', 'node "o" refers to {{o.output_result}}, but node "o" has no variable "output_result" (it has: message)'],
      ['unknown_variable', 'o', 'node "o" refers to {{side.output}}, but node "side" does not run before it'],
    ]);
  });

  it('a node in a loop may refer to itself and to nodes later in the loop', () => {
    const graph = {
      nodes: [start, llm('a', '{{a.output}} {{b.output}}', { max_steps: 3 }), llm('b'), end],
      edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'end')],
    };
    expect(codes(graph)).toEqual([]);
  });

  it('code nodes may leave any variable; the code itself is no template', () => {
    const graph = chain(node('k', 'code', { code: 'return {{x.y}}' }), output('o', '{{k.anything}} {{k.result}}'));
    expect(codes(graph)).toEqual([]);
  });

  it('unguarded cycle, also a second loop beside a guarded one', () => {
    expect(codes({ nodes: [start, llm('a'), llm('b'), end], edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'end')] })).toEqual(['unguarded_cycle']);
    expect(codes({ nodes: [start, llm('a'), end], edges: [edge('start', 'a'), edge('a', 'a'), edge('a', 'end')] })).toEqual(['unguarded_cycle']);
    // a is guarded, but b ⇄ c loops without passing through a
    const graph = { nodes: [start, llm('a', 'x', { max_steps: 2 }), llm('b'), llm('c'), end], edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'c'), edge('c', 'b'), edge('c', 'end')] };
    expect(validateGraph(graph, rules)).toEqual([expect.objectContaining({ code: 'unguarded_cycle', node_id: 'b' })]);
  });

  it('bad node data, every node listed', () => {
    const graph = chain(llm('l', 5 as never), node('c', 'condition'), node('i', 'input', { mode: 'chat' }), node('f', 'input', { mode: 'form' }), node('k', 'code', { code: 1 }), output('g', 'x', { max_steps: 500 }), node('t', 'tool'), node('o', 'output'));
    graph.edges = graph.edges.map((e) => (e.source === 'c' ? { ...e, sourceHandle: 'else' } : e));
    const problems = validateGraph(graph, rules);
    expect(problems.map((p) => [p.code, p.node_id])).toEqual(['l', 'c', 'i', 'f', 'k', 'g', 't', 'o'].map((id) => ['invalid_node_data', id]));
  });

  it('bad node data: every problem of every field', () => {
    const graph = chain(
      node('s2', 'input', { mode: 'form', prompt: 3, fields: [
        { key: 'a b', type: 'date', label: 1 },
        { key: 'x', type: 'select', label: 'X' },
        { key: 'x', type: 'text', label: 'X2', options: ['o'], multiple: true, required: 'yes' },
      ] }),
      llm('l', ' ', { system_prompt: 1, output_key: 'no.dots', stream: 'yes', model: { provider: 'nowhere', name: 2, temperature: 3, max_tokens: 0 } }),
      node('c', 'condition', { cases: [{ id: 'else', when: { op: 'between' } }, { id: 'k', when: { left: 'x', op: 'eq' } }, { id: 'k', when: 'x' }, 'nope'] }),
      node('t', 'tool', { tool: 'teleport', args: 'x' }),
      node('k', 'code', { code: ' ', inputs: { 'a.b': 1 }, timeout_ms: 60_000 }),
      output('o', 'x', { options: [], editable: 'no' }),
      output('both', 'x', { options: ['a'], editable: true }),
      node('e', 'end', { name: 7, max_steps: 0 }),
    );
    graph.edges = graph.edges.map((e) => (e.source === 'c' ? { ...e, sourceHandle: 'k' } : e));
    const problems = validateGraph(graph, { ...rules, providers: ['default'], tools: ['calculator'] });
    expect(problems.every((p) => p.code === 'invalid_node_data')).toBe(true);
    expect(problems.map((p) => p.message)).toEqual([
      'node "s2": data.prompt must be a string',
      'node "s2": data.fields[0].key must be made of letters, digits, _ and - (at most 64)',
      'node "s2": data.fields[0].type must be one of text, number, select, file',
      'node "s2": data.fields[0].label must be a string',
      'node "s2": data.fields[1]: a select field needs options (a non-empty array of strings)',
      'node "s2": data.fields[2].key "x" is used twice',
      'node "s2": data.fields[2].required must be a boolean',
      'node "s2": data.fields[2].multiple only applies to select and file fields',
      'node "s2": data.fields[2].options only applies to select fields',
      'node "l": llm node needs data.prompt (string)',
      'node "l": data.system_prompt must be a string',
      'node "l": data.output_key must be made of letters, digits, _ and - (at most 64)',
      'node "l": data.stream must be a boolean',
      'node "l": data.model.provider "nowhere" is not configured',
      'node "l": data.model.name must be a string',
      'node "l": data.model.temperature must be a number from 0 to 2',
      'node "l": data.model.max_tokens must be a positive integer',
      "node \"c\": data.cases[0].id must be a non-empty string other than 'else'",
      'node "c": data.cases[0].when.left is required',
      'node "c": data.cases[0].when.op must be one of eq, ne, gt, gte, lt, lte, contains, not_contains, empty, not_empty',
      'node "c": data.cases[1].when.right is required for op eq',
      'node "c": data.cases[2].id "k" is used twice',
      'node "c": data.cases[2].when must be an object {left, op, right?}',
      'node "c": data.cases[3] must be an object',
      'node "t": data.tool "teleport" is not a known tool',
      'node "t": data.args must be an object of {argument: template}',
      'node "k": code node needs data.code (string)',
      'node "k": data.inputs key "a.b" must be made of letters, digits, _ and - (at most 64)',
      'node "k": data.timeout_ms must be an integer from 1 to 5000',
      'node "o": data.options must be a non-empty array of strings',
      'node "o": data.editable must be a boolean',
      'node "both": an output node asks either to choose (options) or to edit (editable), not both',
      'node "e": data.name must be a string',
      'node "e": data.max_steps must be an integer from 1 to 50',
    ]);
  });

  it('edges leaving a condition name one of its cases or else', () => {
    const graph = {
      nodes: [start, node('c', 'condition', { cases: [{ id: 'yes', when: { left: 'a', op: 'eq', right: 'a' } }] }), end],
      edges: [edge('start', 'c'), edge('c', 'end', 'yes'), edge('c', 'end', 'maybe'), edge('c', 'end')],
    };
    expect(validateGraph(graph, rules).map((p) => [p.code, p.edge, p.node_id])).toEqual([['invalid_edge', 2, 'c'], ['invalid_edge', 3, 'c']]);
  });

  it('bad nodes: missing id or type, duplicate ids, unknown type, data not an object', () => {
    const graph = {
      nodes: [start, { type: 'llm' }, { id: 'x' }, 'nope', llm('a'), llm('a'), node('w', 'webhook'), { id: 'd', type: 'output', data: [] }, end],
      edges: [edge('start', 'a'), edge('a', 'w'), edge('w', 'd'), edge('d', 'end'), { source: 1 }],
    };
    expect(codes(graph)).toEqual(['duplicate_node', 'invalid_edge', 'invalid_node', 'invalid_node', 'invalid_node', 'invalid_node', 'unknown_node_type']);
  });

  it('reports every problem of a broken graph at once', () => {
    const graph = {
      nodes: [node('s1', 'start'), node('s2', 'start'), llm('a', '{{zz.k}}'), llm('b'), node('c', 'condition'), output('lost')],
      edges: [edge('s1', 'a'), edge('a', 'b'), edge('b', 'a'), edge('s2', 'c'), edge('c', 'void')],
    };
    expect(codes(graph)).toEqual(['dangling_edge', 'invalid_node_data', 'multiple_starts', 'no_end', 'unguarded_cycle', 'unknown_variable', 'unreachable_node']);
  });

  it('handles a very deep graph without overflowing the stack', () => {
    const n = 50_000;
    const nodes = [start, ...Array.from({ length: n }, (_, i) => llm(`n${i}`)), end];
    const edges = [edge('start', 'n0'), ...Array.from({ length: n - 1 }, (_, i) => edge(`n${i}`, `n${i + 1}`)), edge(`n${n - 1}`, 'n0'), edge(`n${n - 1}`, 'end')];
    expect(codes({ nodes, edges })).toEqual(['unguarded_cycle']);
  });
});

describe('WORKFLOW_GRAPH_SCHEMA', () => {
  const validate = new Ajv({ strict: false }).compile(WORKFLOW_GRAPH_SCHEMA);

  it('is a JSON Schema that accepts the demo workflow', () => {
    expect(validate(demoGraph()), JSON.stringify(validate.errors)).toBe(true);
  });

  it('rejects bad node data as the validator does', () => {
    for (const bad of [
      chain(node('l', 'llm', {})),
      chain(node('i', 'input', { mode: 'form' })),
      chain(node('c', 'condition', { cases: [{ id: 'else', when: { left: 'a', op: 'eq' } }] })),
      chain(node('k', 'code', { code: 'x', timeout_ms: 10_000 })),
      chain(node('o', 'output', { message: 'x', options: [] })),
      chain(node('w', 'webhook')),
      { nodes: [start], edges: [{ source: 'start' }] },
    ]) {
      expect(validate(bad)).toBe(false);
      expect(validateGraph(bad, rules).length).toBeGreaterThan(0);
    }
  });
});
