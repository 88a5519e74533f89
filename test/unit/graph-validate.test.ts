import { describe, expect, it } from 'vitest';
import { DEMO_APPS } from '../../src/apps/demo-apps.ts';
import { validateGraph } from '../../src/runtimes/workflow/graph-validate.ts';

const rules = { maxSteps: 50 };
const codes = (graph: unknown) => validateGraph(graph, rules).map((p) => p.code).sort();

type Node = { id: string; type: string; data?: Record<string, unknown> };
const node = (id: string, type: string, data: Record<string, unknown> = {}): Node => ({ id, type, data });
const edge = (source: string, target: string) => ({ source, target });
const start = node('start', 'start');
const end = node('end', 'end');
const llm = (id: string, prompt = 'hi', extra: Record<string, unknown> = {}) => node(id, 'llm', { prompt, ...extra });

describe('validateGraph', () => {
  it('accepts the demo workflow', () => {
    const demo = DEMO_APPS.find((a) => a.kind === 'workflow')!;
    expect(validateGraph(demo.spec.graph, rules)).toEqual([]);
  });

  it('accepts a minimal graph and a guarded loop', () => {
    expect(codes({ nodes: [start, end], edges: [edge('start', 'end')] })).toEqual([]);
    const loop = { nodes: [start, llm('a', 'x', { max_steps: 3 }), llm('b'), end], edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'end')] };
    expect(codes(loop)).toEqual([]);
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
    const problems = validateGraph({ nodes: [start, end, llm('orphan'), node('orphan_out', 'output')], edges: [edge('start', 'end'), edge('orphan', 'orphan_out')] }, rules);
    expect(problems.map((p) => [p.code, p.node_id])).toEqual([['unreachable_node', 'orphan'], ['unreachable_node', 'orphan_out']]);
  });

  it('dangling edges, with their index; no end reachable', () => {
    const problems = validateGraph({ nodes: [start, llm('a'), end], edges: [edge('start', 'a'), edge('a', 'ghost'), edge('nobody', 'end')] }, rules);
    expect(problems.map((p) => [p.code, p.edge])).toEqual([['dangling_edge', 1], ['dangling_edge', 2], ['unreachable_node', undefined], ['no_end', undefined]]);
  });

  it('unknown variable', () => {
    const graph = {
      nodes: [start, node('ask', 'input', { mode: 'dialog' }), llm('a', 'Use {{ask.text}} and {{ghost.text}} and {{#phantom.x#}}'), node('c', 'condition', { cases: [{ when: { left: '{{ghost.y}}' } }] }), end],
      edges: [edge('start', 'ask'), edge('ask', 'a'), edge('a', 'c'), edge('c', 'end')],
    };
    const problems = validateGraph(graph, rules);
    expect(problems.map((p) => [p.code, p.node_id, p.message.match(/"(\w+)"$/)?.[1]])).toEqual([
      ['unknown_variable', 'a', 'ghost'], ['unknown_variable', 'a', 'phantom'], ['unknown_variable', 'c', 'ghost'],
    ]);
  });

  it('unguarded cycle, also a second loop beside a guarded one', () => {
    expect(codes({ nodes: [start, llm('a'), llm('b'), end], edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'end')] })).toEqual(['unguarded_cycle']);
    expect(codes({ nodes: [start, llm('a'), end], edges: [edge('start', 'a'), edge('a', 'a'), edge('a', 'end')] })).toEqual(['unguarded_cycle']);
    // a is guarded, but b ⇄ c loops without passing through a
    const graph = { nodes: [start, llm('a', 'x', { max_steps: 2 }), llm('b'), llm('c'), end], edges: [edge('start', 'a'), edge('a', 'b'), edge('b', 'a'), edge('b', 'c'), edge('c', 'b'), edge('c', 'end')] };
    expect(validateGraph(graph, rules)).toEqual([expect.objectContaining({ code: 'unguarded_cycle', node_id: 'b' })]);
  });

  it('bad node data, every node listed', () => {
    const graph = {
      nodes: [start, llm('l', 5 as never), node('c', 'condition'), node('i', 'input', { mode: 'chat' }), node('f', 'input', { mode: 'form' }), node('k', 'code', { code: 1 }), node('g', 'output', { max_steps: 500 }), end],
      edges: [edge('start', 'l'), edge('l', 'c'), edge('c', 'i'), edge('i', 'f'), edge('f', 'k'), edge('k', 'g'), edge('g', 'end')],
    };
    const problems = validateGraph(graph, rules);
    expect(problems.map((p) => [p.code, p.node_id])).toEqual(['l', 'c', 'i', 'f', 'k', 'g'].map((id) => ['invalid_node_data', id]));
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
      nodes: [node('s1', 'start'), node('s2', 'start'), llm('a', '{{zz.k}}'), llm('b'), node('c', 'condition'), node('lost', 'output')],
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
