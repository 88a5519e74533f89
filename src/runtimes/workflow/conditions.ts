import { AppError } from '../../domain/errors.ts';
import type { JsonValue } from '../../domain/types.ts';
import { toText } from './template.ts';
import type { ConditionOp } from './workflow-graph.ts';

/** A condition node's comparisons (PROTOCOL.md §3.2, `workflow.schema`): numbers where both sides read as numbers, else text. */
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

export function compare(caseId: string, left: JsonValue, op: ConditionOp, right: JsonValue): boolean {
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
