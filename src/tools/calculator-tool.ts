import { AppError } from '../domain/errors.ts';
import type { Tool } from '../domain/llm.ts';

/**
 * The `calculator` tool: arithmetic evaluated by a small recursive-descent parser.
 * Model output is untrusted, so there is no eval/Function/vm anywhere: only the grammar below and
 * fixed tables of names (Maps, so `constructor` or `__proto__` never reach a prototype).
 *
 *   expr    := term (('+' | '-') term)*
 *   term    := unary (('*' | '/' | '%') unary)*
 *   unary   := ('-' | '+') unary | power
 *   power   := primary (('^' | '**') unary)?        right-associative; -2^2 = -4, 2^-1 = 0.5
 *   primary := number | name | name '(' expr (',' expr)* ')' | '(' expr ')'
 */
export const MAX_EXPRESSION_LENGTH = 500;
export const MAX_NESTING_DEPTH = 50;

type Token =
  | { kind: 'num'; value: number; pos: number }
  | { kind: 'name'; value: string; pos: number }
  | { kind: 'op'; value: string; pos: number }
  | { kind: 'end'; pos: number };

interface FunctionDef {
  min: number;
  max: number;
  fn: (...args: number[]) => number;
}

const CONSTANTS = new Map<string, number>([
  ['pi', Math.PI],
  ['e', Math.E],
]);

const FUNCTIONS = new Map<string, FunctionDef>([
  ['sqrt', { min: 1, max: 1, fn: (x) => Math.sqrt(x) }],
  ['abs', { min: 1, max: 1, fn: (x) => Math.abs(x) }],
  ['round', { min: 1, max: 2, fn: (x, digits) => roundTo(x, digits ?? 0) }],
  ['floor', { min: 1, max: 1, fn: (x) => Math.floor(x) }],
  ['ceil', { min: 1, max: 1, fn: (x) => Math.ceil(x) }],
  ['min', { min: 1, max: Infinity, fn: (...xs) => Math.min(...xs) }],
  ['max', { min: 1, max: Infinity, fn: (...xs) => Math.max(...xs) }],
  ['pow', { min: 2, max: 2, fn: (x, y) => x ** y! }],
  // log(x) is base 10, log(x, b) is base b; ln is the natural logarithm
  ['log', { min: 1, max: 2, fn: (x, base) => (base === undefined ? Math.log10(x) : Math.log(x) / Math.log(base)) }],
  ['ln', { min: 1, max: 1, fn: (x) => Math.log(x) }],
  ['sin', { min: 1, max: 1, fn: (x) => Math.sin(x) }],
  ['cos', { min: 1, max: 1, fn: (x) => Math.cos(x) }],
  ['tan', { min: 1, max: 1, fn: (x) => Math.tan(x) }],
]);

function roundTo(x: number, digits: number): number {
  if (!Number.isInteger(digits) || digits < 0 || digits > 15) throw calcError('round(x, digits): digits must be an integer from 0 to 15');
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function calcError(message: string): AppError {
  return new AppError('invalid_request', message);
}

const NUMBER_RE = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/;
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*/;
const OPERATORS = ['**', '+', '-', '*', '/', '%', '^', '(', ')', ','];

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const ch = source[i]!;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    const rest = source.slice(i);
    const num = NUMBER_RE.exec(rest);
    if (num) {
      // "1.2.3" or "2e" would otherwise parse as two adjacent tokens
      const next = rest[num[0].length];
      if (next !== undefined && /[.\w]/.test(next)) throw calcError(`Malformed number at position ${i + 1}`);
      tokens.push({ kind: 'num', value: Number(num[0]), pos: i });
      i += num[0].length;
      continue;
    }
    const name = NAME_RE.exec(rest);
    if (name) {
      tokens.push({ kind: 'name', value: name[0], pos: i });
      i += name[0].length;
      continue;
    }
    const op = OPERATORS.find((o) => rest.startsWith(o));
    if (op) {
      tokens.push({ kind: 'op', value: op, pos: i });
      i += op.length;
      continue;
    }
    throw calcError(`Unexpected character "${ch}" at position ${i + 1}`);
  }
  tokens.push({ kind: 'end', pos: source.length });
  return tokens;
}

/** Every intermediate result must stay finite, so the error names the step that overflowed. */
function finite(value: number, what: string): number {
  if (!Number.isFinite(value)) throw calcError(`${what} gives a result that is not a finite number`);
  return value;
}

class Parser {
  private index = 0;
  private depth = 0;

  constructor(private readonly tokens: Token[]) {}

  parse(): number {
    const value = this.expr();
    const tok = this.peek();
    if (tok.kind !== 'end') {
      throw calcError(tok.kind === 'op' && tok.value === ')' ? `Unbalanced ")" at position ${tok.pos + 1}` : `Unexpected ${describe(tok)} at position ${tok.pos + 1}`);
    }
    return value;
  }

  private peek(): Token {
    return this.tokens[this.index]!;
  }

  private isOp(...ops: string[]): string | null {
    const tok = this.peek();
    return tok.kind === 'op' && ops.includes(tok.value) ? tok.value : null;
  }

  private expect(op: string, context: string): void {
    if (this.isOp(op)) {
      this.index++;
      return;
    }
    const tok = this.peek();
    if (tok.kind === 'end') throw calcError(`Missing "${op}" ${context}`);
    throw calcError(`Expected "${op}" ${context} but found ${describe(tok)} at position ${tok.pos + 1}`);
  }

  /**
   * Each level of parentheses, function call, prefix sign or exponent chain passes through here,
   * so the depth cap bounds the recursion for any input.
   */
  private nested<T>(parse: () => T): T {
    if (++this.depth > MAX_NESTING_DEPTH) throw calcError(`Expression is nested too deeply (at most ${MAX_NESTING_DEPTH} levels)`);
    try {
      return parse();
    } finally {
      this.depth--;
    }
  }

  private expr(): number {
    let left = this.term();
    for (let op = this.isOp('+', '-'); op; op = this.isOp('+', '-')) {
      this.index++;
      const right = this.term();
      left = finite(op === '+' ? left + right : left - right, op === '+' ? 'Addition' : 'Subtraction');
    }
    return left;
  }

  private term(): number {
    let left = this.unary();
    for (let op = this.isOp('*', '/', '%'); op; op = this.isOp('*', '/', '%')) {
      this.index++;
      const right = this.unary();
      if (op === '*') left = finite(left * right, 'Multiplication');
      else if (right === 0) throw calcError(op === '/' ? 'Division by zero' : 'Modulo by zero');
      else left = finite(op === '/' ? left / right : left % right, op === '/' ? 'Division' : 'Modulo');
    }
    return left;
  }

  private unary(): number {
    const op = this.isOp('-', '+');
    if (!op) return this.power();
    this.index++;
    const value = this.nested(() => this.unary());
    return op === '-' ? -value : value;
  }

  private power(): number {
    const base = this.primary();
    if (!this.isOp('^', '**')) return base;
    this.index++;
    const exponent = this.nested(() => this.unary());
    return finite(base ** exponent, 'Exponentiation');
  }

  private primary(): number {
    const tok = this.peek();
    if (tok.kind === 'num') {
      this.index++;
      return finite(tok.value, 'The number literal');
    }
    if (tok.kind === 'op' && tok.value === '(') {
      this.index++;
      const value = this.nested(() => this.expr());
      this.expect(')', `to close "(" at position ${tok.pos + 1}`);
      return value;
    }
    if (tok.kind === 'name') {
      this.index++;
      const name = tok.value.toLowerCase();
      if (this.isOp('(')) return this.call(name, tok);
      const constant = CONSTANTS.get(name);
      if (constant === undefined) {
        const hint = FUNCTIONS.has(name) ? ` (${name} is a function: write ${name}(...))` : '';
        throw calcError(`Unknown name "${tok.value}"${hint}; known constants: ${[...CONSTANTS.keys()].join(', ')}`);
      }
      return constant;
    }
    if (tok.kind === 'end') throw calcError('Unexpected end of expression');
    throw calcError(`Unexpected ${describe(tok)} at position ${tok.pos + 1}`);
  }

  private call(name: string, tok: Token & { kind: 'name' }): number {
    const def = FUNCTIONS.get(name);
    if (!def) throw calcError(`Unknown function "${tok.value}"; known functions: ${[...FUNCTIONS.keys()].join(', ')}`);
    this.index++; // '('
    const args = this.nested(() => {
      const list = [this.expr()];
      while (this.isOp(',')) {
        this.index++;
        list.push(this.expr());
      }
      return list;
    });
    this.expect(')', `to close ${name}( at position ${tok.pos + 1}`);
    if (args.length < def.min || args.length > def.max) {
      const want = def.max === Infinity ? `at least ${def.min}` : def.min === def.max ? `${def.min}` : `${def.min} or ${def.max}`;
      throw calcError(`${name}() takes ${want} argument${def.min === 1 && def.max === 1 ? '' : 's'}, got ${args.length}`);
    }
    return finite(def.fn(...args), `${name}(${args.map(formatNumber).join(', ')})`);
  }
}

function describe(tok: Token): string {
  switch (tok.kind) {
    case 'end':
      return 'end of expression';
    case 'num':
      return `number ${tok.value}`;
    default:
      return `"${tok.value}"`;
  }
}

/** Evaluates an arithmetic expression; throws AppError(`invalid_request`) with a readable message. */
export function evaluate(expression: string): number {
  if (expression.length > MAX_EXPRESSION_LENGTH) throw calcError(`Expression is too long (at most ${MAX_EXPRESSION_LENGTH} characters)`);
  if (expression.trim() === '') throw calcError('Expression is empty');
  const value = new Parser(tokenize(expression)).parse();
  return finite(value, 'The expression');
}

/**
 * Float noise is trimmed to 12 significant digits (0.1 + 0.2 → "0.3"); safe integers print exactly.
 * Beyond 2^53 the digits are not all meaningful, so exponent notation says so ("9.00719925474e+15").
 */
export function formatNumber(value: number): string {
  if (Object.is(value, -0)) return '0';
  if (Number.isSafeInteger(value)) return String(value);
  const trimmed = Number(value.toPrecision(12));
  return Math.abs(value) > Number.MAX_SAFE_INTEGER ? trimmed.toExponential() : String(trimmed);
}

export function createCalculatorTool(): Tool {
  return {
    spec: {
      name: 'calculator',
      description:
        'Evaluates an arithmetic expression and returns the number. Supports + - * / % ^ (or **), parentheses, unary minus, ' +
        'decimals and exponent notation (1.5e3), the constants pi and e, and the functions sqrt, abs, round(x[, digits]), ' +
        'floor, ceil, min, max, pow(x, y), log (base 10, or log(x, base)), ln, sin, cos, tan (radians).',
      parameters: {
        type: 'object',
        properties: {
          expression: { type: 'string', maxLength: MAX_EXPRESSION_LENGTH, description: 'for example "(2 + 3) * 4 ^ 2"' },
        },
        required: ['expression'],
        additionalProperties: false,
      },
    },
    async run(args) {
      const expression = args.expression;
      if (typeof expression !== 'string') {
        throw AppError.invalid([{ path: 'expression', message: 'is required and must be a string' }], 'calculator: "expression" must be a string');
      }
      return formatNumber(evaluate(expression));
    },
  };
}
