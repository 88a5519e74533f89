import type { Config, HttpToolConfig } from '../config/config.ts';
import { ConfigError } from '../config/config.ts';
import { AppError, type FieldError } from '../domain/errors.ts';
import type { Tool } from '../domain/llm.ts';

/**
 * HTTP tools: each config entry under `tools.http` becomes one tool that calls one URL with the
 * model's arguments. The arguments are untrusted model output, so:
 * - they are validated against the entry's JSON Schema (a small subset) before anything is sent;
 * - the final URL (after placeholders) and every redirect target must be on `tools.allowed_hosts`;
 * - configured headers (often credentials) go only to the origin of the first request;
 * - time and response size are capped by `tools.timeout` and `tools.max_response_bytes`.
 */
export type HttpToolSettings = Pick<Config['tools'], 'allowed_hosts' | 'timeout' | 'max_response_bytes'>;

export const MAX_REDIRECTS = 3;
const ERROR_SNIPPET_BYTES = 300;
const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

// ---------------------------------------------------------------- host allow-list

export interface HostRule {
  hostname: string;
  /** null: the entry named no port, which allows only the scheme's default port */
  port: string | null;
}

/**
 * `example.com` allows http://example.com and https://example.com (default ports only — a model
 * must not reach other services on an allowed machine); `example.com:8443` allows that port only.
 */
export function parseAllowedHost(entry: string): HostRule | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^\s/:@?#[\]\\]+)(?::(\d{1,5}))?$/.exec(entry.trim());
  if (!m) return null;
  try {
    const hostname = new URL(`http://${m[1]!}`).hostname; // lower case, punycode, canonical IPv4/IPv6
    return { hostname, port: m[2] === undefined ? null : String(Number(m[2])) };
  } catch {
    return null;
  }
}

function isAllowed(url: URL, rules: readonly HostRule[]): boolean {
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return rules.some((r) => r.hostname === url.hostname && (r.port === null ? url.port === '' : r.port === port));
}

// ---------------------------------------------------------------- argument schema (subset)

type ParamType = 'string' | 'number' | 'integer' | 'boolean';
const PARAM_TYPES: readonly ParamType[] = ['string', 'number', 'integer', 'boolean'];

interface ParamRule {
  type: ParamType;
  enum?: readonly unknown[];
  maxLength?: number;
  minLength?: number;
  minimum?: number;
  maximum?: number;
}

interface ArgsSchema {
  params: Map<string, ParamRule>;
  required: Set<string>;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0;

/** Reads the supported subset of the entry's schema; every unsupported shape is a config problem. */
function compileSchema(schema: Obj, problems: string[]): ArgsSchema {
  const params = new Map<string, ParamRule>();
  const required = new Set<string>();
  if (schema.type !== undefined && schema.type !== 'object') problems.push('parameters.type: must be "object"');
  const properties = schema.properties ?? {};
  if (!isObj(properties)) {
    problems.push('parameters.properties: must be an object');
    return { params, required };
  }
  for (const [name, raw] of Object.entries(properties)) {
    const at = `parameters.properties.${name}`;
    if (!isObj(raw) || !PARAM_TYPES.includes(raw.type as ParamType)) {
      problems.push(`${at}.type: must be one of ${PARAM_TYPES.join(', ')}`);
      continue;
    }
    const rule: ParamRule = { type: raw.type as ParamType };
    if (raw.enum !== undefined) {
      if (Array.isArray(raw.enum) && raw.enum.length > 0) rule.enum = raw.enum;
      else problems.push(`${at}.enum: must be a non-empty array`);
    }
    for (const key of ['maxLength', 'minLength'] as const) {
      if (raw[key] === undefined) continue;
      if (isCount(raw[key])) rule[key] = raw[key];
      else problems.push(`${at}.${key}: must be a non-negative integer`);
    }
    for (const key of ['minimum', 'maximum'] as const) {
      if (raw[key] === undefined) continue;
      if (typeof raw[key] === 'number' && Number.isFinite(raw[key])) rule[key] = raw[key];
      else problems.push(`${at}.${key}: must be a number`);
    }
    params.set(name, rule);
  }
  const req = schema.required ?? [];
  if (!Array.isArray(req) || !req.every((r) => typeof r === 'string')) {
    problems.push('parameters.required: must be an array of property names');
  } else {
    for (const name of req) {
      if (params.has(name)) required.add(name);
      else problems.push(`parameters.required: "${name}" is not a declared property`);
    }
  }
  return { params, required };
}

const TYPE_CHECKS: Record<ParamType, (v: unknown) => boolean> = {
  string: (v) => typeof v === 'string',
  number: (v) => typeof v === 'number' && Number.isFinite(v),
  integer: (v) => Number.isSafeInteger(v),
  boolean: (v) => typeof v === 'boolean',
};

/** Every problem at once, so the model can fix all of them in one retry. `null` counts as absent. */
function validateArgs(schema: ArgsSchema, args: Obj): FieldError[] {
  const errors: FieldError[] = [];
  for (const [name, value] of Object.entries(args)) {
    const rule = schema.params.get(name);
    if (!rule) {
      errors.push({ path: name, message: 'is not a parameter of this tool' });
      continue;
    }
    if (value === null || value === undefined) continue;
    if (!TYPE_CHECKS[rule.type](value)) {
      errors.push({ path: name, message: `must be ${rule.type === 'integer' ? 'an' : 'a'} ${rule.type}` });
      continue;
    }
    if (rule.enum && !rule.enum.includes(value)) {
      errors.push({ path: name, message: `must be one of ${rule.enum.map((e) => JSON.stringify(e)).join(', ')}` });
    }
    if (typeof value === 'string') {
      const length = [...value].length; // JSON Schema counts code points
      if (rule.maxLength !== undefined && length > rule.maxLength) errors.push({ path: name, message: `must be at most ${rule.maxLength} characters` });
      if (rule.minLength !== undefined && length < rule.minLength) errors.push({ path: name, message: `must be at least ${rule.minLength} characters` });
    }
    if (typeof value === 'number') {
      if (rule.minimum !== undefined && value < rule.minimum) errors.push({ path: name, message: `must be >= ${rule.minimum}` });
      if (rule.maximum !== undefined && value > rule.maximum) errors.push({ path: name, message: `must be <= ${rule.maximum}` });
    }
  }
  for (const name of schema.required) {
    if (args[name] === undefined || args[name] === null) errors.push({ path: name, message: 'is required' });
  }
  return errors;
}

// ---------------------------------------------------------------- response reading

/** Reads at most `max` bytes; a multi-byte character cut at the limit is dropped, not mangled. */
async function readCapped(res: Response, max: number): Promise<{ text: string; truncated: boolean }> {
  if (!res.body) return { text: '', truncated: false };
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let received = 0;
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { text: text + decoder.decode(), truncated: false };
    const room = max - received;
    if (value.byteLength > room) {
      text += decoder.decode(value.subarray(0, room), { stream: true });
      await reader.cancel().catch(() => undefined);
      return { text, truncated: true };
    }
    received += value.byteLength;
    text += decoder.decode(value, { stream: true });
  }
}

// ---------------------------------------------------------------- the tool

function isHttp(url: URL): boolean {
  return url.protocol === 'http:' || url.protocol === 'https:';
}

/** The host as shown in messages: never the path or query, which may carry configured secrets. */
const where = (url: URL) => `${url.protocol}//${url.host}`;

/**
 * Builds one HTTP tool. Throws ConfigError (all problems of the entry at once) when the entry or
 * `tools.allowed_hosts` cannot work; the host allow-list itself is enforced on every call, because
 * placeholders may sit in the host.
 */
export function createHttpTool(def: HttpToolConfig, settings: HttpToolSettings): Tool {
  const hostProblems: string[] = [];
  const rules: HostRule[] = [];
  for (const entry of settings.allowed_hosts) {
    const rule = parseAllowedHost(entry);
    if (rule) rules.push(rule);
    else hostProblems.push(`tools.allowed_hosts: "${entry}" is not a host name or host:port`);
  }
  const problems: string[] = [];
  const schema = compileSchema(def.parameters, problems);
  const placeholders = new Set([...def.url.matchAll(PLACEHOLDER)].map((m) => m[1]!));
  for (const name of placeholders) {
    if (schema.params.has(name)) schema.required.add(name); // a URL cannot be built without it
    else problems.push(`url: placeholder {${name}} is not a declared parameter`);
  }
  try {
    if (!isHttp(new URL(def.url.replace(PLACEHOLDER, 'x')))) problems.push('url: only http and https URLs are allowed');
  } catch {
    problems.push('url: not a valid absolute URL');
  }
  if (problems.length + hostProblems.length > 0) {
    throw new ConfigError([...hostProblems, ...problems.map((p) => `tools.http "${def.name}": ${p}`)]);
  }

  const timeoutMs = settings.timeout * 1000;
  const maxBytes = settings.max_response_bytes;
  const fail = (code: 'forbidden' | 'upstream_error' | 'upstream_timeout', message: string, data?: unknown) =>
    new AppError(code, `HTTP tool "${def.name}": ${message}`, data === undefined ? undefined : { data });

  function buildRequest(args: Obj): { url: URL; body: string | undefined } {
    const url = new URL(def.url.replace(PLACEHOLDER, (_, name: string) => encodeURIComponent(String(args[name]))));
    const rest = Object.entries(args).filter(([k, v]) => !placeholders.has(k) && v !== null && v !== undefined);
    if (def.method === 'GET') {
      for (const [k, v] of rest) url.searchParams.append(k, String(v));
      return { url, body: undefined };
    }
    return { url, body: JSON.stringify(Object.fromEntries(rest)) };
  }

  async function call(args: Obj, signal: AbortSignal): Promise<string> {
    const errors = validateArgs(schema, args);
    if (errors.length > 0) {
      throw AppError.invalid(errors, `Invalid arguments for tool "${def.name}": ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);
    }
    let first: { url: URL; body: string | undefined };
    try {
      first = buildRequest(args);
    } catch {
      // e.g. a placeholder in the host filled with characters no host name may hold
      throw AppError.invalid([{ path: [...placeholders].join(', '), message: 'does not form a valid URL' }], `Invalid arguments for tool "${def.name}": they do not form a valid URL`);
    }
    signal.throwIfAborted();
    const timeout = AbortSignal.timeout(timeoutMs);
    const combined = AbortSignal.any([signal, timeout]);

    let url = first.url;
    let method: string = def.method;
    let body = first.body;
    try {
      for (let hop = 0; ; hop++) {
        if (!isHttp(url)) throw fail('forbidden', `only http and https URLs are allowed (got ${url.protocol})`);
        if (!isAllowed(url, rules)) throw fail('forbidden', `${where(url)} is not in tools.allowed_hosts`);
        const headers = new Headers();
        if (body !== undefined) headers.set('content-type', 'application/json');
        // configured headers are often credentials: never to another origin, even an allowed one
        if (url.origin === first.url.origin) for (const [k, v] of Object.entries(def.headers)) headers.set(k, v);

        const res = await fetch(url, { method, headers, body, redirect: 'manual', signal: combined });
        if (REDIRECT_STATUSES.has(res.status)) {
          await res.body?.cancel().catch(() => undefined);
          const location = res.headers.get('location');
          if (!location) throw fail('upstream_error', `${where(url)} answered ${res.status} without a Location`, { status: res.status });
          if (hop >= MAX_REDIRECTS) throw fail('upstream_error', `too many redirects (at most ${MAX_REDIRECTS})`, { status: res.status });
          let next: URL;
          try {
            next = new URL(location, url);
          } catch {
            throw fail('upstream_error', `${where(url)} redirected to an invalid URL`, { status: res.status });
          }
          if (!isHttp(next)) throw fail('forbidden', `redirect to a ${next.protocol} URL refused`);
          if (!isAllowed(next, rules)) throw fail('forbidden', `redirect to ${where(next)} refused: not in tools.allowed_hosts`);
          if (url.protocol === 'https:' && next.protocol === 'http:') throw fail('forbidden', `redirect from https to ${where(next)} refused`);
          if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) {
            method = 'GET'; // what browsers do: 303 (and 301/302 after POST) repeat as a GET without body
            body = undefined;
          }
          url = next;
          continue;
        }
        if (!res.ok) {
          const { text } = await readCapped(res, Math.min(maxBytes, ERROR_SNIPPET_BYTES));
          const snippet = text.trim() ? `: ${text.trim()}` : '';
          throw fail('upstream_error', `${where(url)} answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${snippet}`, { status: res.status });
        }
        const { text, truncated } = await readCapped(res, maxBytes);
        return truncated ? `${text}\n[truncated: the response exceeded ${maxBytes} bytes]` : text;
      }
    } catch (err) {
      if (err instanceof AppError) throw err;
      if (signal.aborted) throw signal.reason ?? err;
      if (timeout.aborted) throw fail('upstream_timeout', `${where(url)} did not answer within ${settings.timeout} s`);
      const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
      const detail = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message : (err as Error).message;
      throw fail('upstream_error', `request to ${where(url)} failed (${detail})`);
    }
  }

  return {
    spec: { name: def.name, description: def.description, parameters: def.parameters },
    run: call,
  };
}
