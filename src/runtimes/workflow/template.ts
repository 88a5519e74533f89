/**
 * Templates over a run's variables: `{{node_id.key}}` and Bisheng's `{{#node_id.key#}}`, with an
 * optional path into the value (`{{code1.result.items.0}}`). See workflow-graph.ts for the rules.
 */
import { AppError } from '../../domain/errors.ts';
import { isRecord, type JsonValue } from '../../domain/types.ts';

/** The variables of a run: per node id, the values it left behind. */
export type Variables = Record<string, Record<string, JsonValue>>;

export interface Reference {
  /** the text as written, e.g. `{{ask.topic}}` */
  text: string;
  node: string;
  key: string;
  /** further steps into an object or array value */
  path: string[];
}

const REFERENCE = /\{\{\s*#?([\w-]+)\.([\w-]+(?:\.[\w-]+)*)#?\s*\}\}/g;
const WHOLE_REFERENCE = new RegExp(`^\\s*${REFERENCE.source}\\s*$`);

export function references(template: string): Reference[] {
  return [...template.matchAll(REFERENCE)].map(toReference);
}

function toReference(m: RegExpMatchArray): Reference {
  const [key, ...path] = m[2]!.split('.');
  return { text: m[0], node: m[1]!, key: key!, path };
}

/** Every string inside a JSON value (object values and array items, deep). */
export function* stringsIn(value: unknown): Generator<string> {
  if (typeof value === 'string') yield value;
  else if (Array.isArray(value)) for (const v of value) yield* stringsIn(v);
  else if (isRecord(value)) for (const v of Object.values(value)) yield* stringsIn(v);
}

/** Own properties only: `{{a.constructor}}` or `{{a.__proto__}}` never reach a prototype. */
function lookup(variables: Variables, ref: Reference): { found: true; value: JsonValue } | { found: false } {
  const scope = Object.hasOwn(variables, ref.node) ? variables[ref.node]! : undefined;
  if (!scope || !Object.hasOwn(scope, ref.key)) return { found: false };
  let value: JsonValue = scope[ref.key]!;
  for (const step of ref.path) {
    if (Array.isArray(value) && /^\d+$/.test(step) && Number(step) < value.length) value = value[Number(step)]!;
    else if (isRecord(value) && Object.hasOwn(value, step)) value = value[step]!;
    else return { found: false };
  }
  return { found: true, value };
}

/** How a value reads inside text. */
export function toText(value: JsonValue | undefined): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function missing(refs: string[]): AppError {
  const list = [...new Set(refs)];
  return new AppError('workflow_node_invalid', `unknown variable${list.length > 1 ? 's' : ''} ${list.join(', ')}`, { data: { variables: list } });
}

/**
 * Fills in every reference. @throws AppError `workflow_node_invalid` (10531) naming every
 * variable that does not exist (yet).
 */
export function render(template: string, variables: Variables): string {
  const absent: string[] = [];
  const out = template.replace(REFERENCE, (...m: unknown[]) => {
    const ref = toReference(m as unknown as RegExpMatchArray);
    const hit = lookup(variables, ref);
    if (!hit.found) {
      absent.push(ref.text);
      return '';
    }
    return toText(hit.value);
  });
  if (absent.length) throw missing(absent);
  return out;
}

/**
 * Resolves a JSON value whose strings are templates: a string that is exactly one reference takes
 * the variable's value with its type; other strings are rendered; arrays and objects deep.
 * @throws AppError `workflow_node_invalid` (10531) naming every unknown variable
 */
export function resolve(value: JsonValue | undefined, variables: Variables): JsonValue {
  const absent: string[] = [];
  const walk = (v: JsonValue | undefined): JsonValue => {
    if (v === undefined) return null;
    if (typeof v === 'string') {
      const whole = WHOLE_REFERENCE.exec(v);
      if (whole) {
        const ref = toReference(whole);
        const hit = lookup(variables, ref);
        if (hit.found) return hit.value;
        absent.push(ref.text);
        return null;
      }
      try {
        return render(v, variables);
      } catch (err) {
        if (err instanceof AppError && isRecord(err.data) && Array.isArray(err.data.variables)) absent.push(...(err.data.variables as string[]));
        else throw err;
        return '';
      }
    }
    if (Array.isArray(v)) return v.map(walk);
    if (isRecord(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  const out = walk(value);
  if (absent.length) throw missing(absent);
  return out;
}
