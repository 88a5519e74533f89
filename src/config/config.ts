import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Type, type Static, type TSchema, Kind } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';

const ProviderSchema = Type.Object({
  type: Type.Union([Type.Literal('demo'), Type.Literal('openai-compatible')], { default: 'openai-compatible' }),
  base_url: Type.Optional(Type.String()),
  api_key: Type.Optional(Type.String()),
  model: Type.Optional(Type.String()),
  /** demo provider: milliseconds between streamed tokens */
  token_delay_ms: Type.Optional(Type.Integer({ minimum: 0 })),
});

const HttpToolSchema = Type.Object({
  name: Type.String({ pattern: '^[a-zA-Z0-9_-]{1,64}$' }),
  description: Type.String({ default: '' }),
  method: Type.Union([Type.Literal('GET'), Type.Literal('POST')], { default: 'GET' }),
  /** may hold {placeholders} filled from the arguments */
  url: Type.String(),
  /** JSON Schema of the arguments object */
  parameters: Type.Record(Type.String(), Type.Unknown(), { default: { type: 'object', properties: {} } }),
  headers: Type.Record(Type.String(), Type.String(), { default: {} }),
});

const sec = (n: number) => Type.Integer({ minimum: 1, default: n });

/** Every configuration key with its default. Keys match PROTOCOL.md §5 and §7. */
export const ConfigSchema = Type.Object({
  server: Type.Object({
    host: Type.String({ default: '0.0.0.0' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
    data_dir: Type.String({ default: './data' }),
    /** empty → SQLite file in data_dir; postgres://… → PostgreSQL */
    database_url: Type.String({ default: '' }),
    /** empty → in-memory bus; redis://, rediss://, redis+sentinel://, redis+cluster:// → several instances share Redis */
    redis_url: Type.String({ default: '' }),
    /** the prefix of every Redis key and channel (instances that share one prefix are one deployment) */
    redis_prefix: Type.String({ minLength: 1, default: 'parley:' }),
    trust_proxy: Type.Boolean({ default: false }),
    shutdown_grace: Type.Integer({ minimum: 0, default: 10 }),
  }, { default: {} }),
  auth: Type.Object({
    /** empty → generated on first start and printed once */
    admin_password: Type.String({ default: '' }),
    /** empty → generated once and kept in the database */
    jwt_secret: Type.String({ default: '' }),
    jwt_issuer: Type.String({ default: 'parley' }),
    access_token_ttl: sec(24 * 3600),
    refresh_token_ttl: sec(30 * 24 * 3600),
    cookie_secure: Type.Boolean({ default: false }),
  }, { default: {} }),
  telemetry: Type.Object({
    /** OTLP/HTTP endpoint of a trace collector (e.g. http://otel-collector:4318); empty: no traces */
    otlp_endpoint: Type.String({ default: '' }),
    service_name: Type.String({ minLength: 1, default: 'parley' }),
  }, { default: {} }),
  http: Type.Object({
    allowed_origins: Type.Array(Type.String(), { default: [] }),
    body_limit: Type.Integer({ minimum: 1024, default: 1024 * 1024 }),
  }, { default: {} }),
  chat: Type.Object({
    max_message_length: Type.Integer({ minimum: 1, default: 10000 }),
    max_history_messages: Type.Integer({ minimum: 0, default: 50 }),
    heartbeat_interval: sec(30),
    connection_timeout: sec(300),
    max_concurrent_sessions: sec(1000),
    max_connections_per_user: sec(20),
    messages_per_minute: sec(60),
    max_frame_bytes: Type.Integer({ minimum: 1024, default: 1024 * 1024 }),
    replay_ttl: sec(600),
    run_on_disconnect: Type.Boolean({ default: true }),
    /** seconds an instance holds a running turn without renewing it: a turn whose instance died is ended after this */
    turn_lease: Type.Integer({ minimum: 3, default: 30 }),
  }, { default: {} }),
  workflow: Type.Object({
    max_steps: sec(50),
    /** minutes an input request may wait for its answer (fractions allowed, e.g. 0.5 = 30 s) */
    input_timeout: Type.Number({ exclusiveMinimum: 0, default: 300 }),
  }, { default: {} }),
  llm: Type.Object({
    /** seconds */
    request_timeout: sec(600),
    max_retries: Type.Integer({ minimum: 0, default: 1 }),
    /** seconds without a chunk before a started stream counts as stalled (10504) */
    stall_timeout: sec(60),
    providers: Type.Record(Type.String(), ProviderSchema, { default: {} }),
  }, { default: {} }),
  tools: Type.Object({
    /** HTTP tools: each calls one URL with the model's arguments, only on allowed hosts */
    http: Type.Array(HttpToolSchema, { default: [] }),
    /** host names (or host:port) HTTP tools may reach */
    allowed_hosts: Type.Array(Type.String(), { default: [] }),
    /** seconds per tool call */
    timeout: sec(15),
    /** largest tool response kept, in bytes */
    max_response_bytes: Type.Integer({ minimum: 1, default: 64 * 1024 }),
  }, { default: {} }),
  moderation: Type.Object({
    input_words: Type.Array(Type.String(), { default: [] }),
    output_words: Type.Array(Type.String(), { default: [] }),
    input_reply: Type.String({ default: 'Your message contains content that cannot be processed.' }),
    output_reply: Type.String({ default: 'The answer was withheld by content review.' }),
  }, { default: {} }),
  astron: Type.Object({
    trust_consumer_header: Type.Boolean({ default: false }),
  }, { default: {} }),
  log: Type.Object({
    level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  }, { default: {} }),
});

export type Config = Static<typeof ConfigSchema>;
export type ProviderConfig = Static<typeof ProviderSchema>;
export type HttpToolConfig = Static<typeof HttpToolSchema>;
export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: Config;
  warnings: string[];
}

/** Start-up variables of PROTOCOL.md §7 that have no `SECTION__KEY` shape. */
const DIRECT_ENV: Record<string, string[]> = {
  PARLEY_HOST: ['server', 'host'],
  PARLEY_PORT: ['server', 'port'],
  PARLEY_DATA_DIR: ['server', 'data_dir'],
  PARLEY_DATABASE_URL: ['server', 'database_url'],
  PARLEY_REDIS_URL: ['server', 'redis_url'],
  PARLEY_ADMIN_PASSWORD: ['auth', 'admin_password'],
  PARLEY_JWT_SECRET: ['auth', 'jwt_secret'],
  PARLEY_LOG_LEVEL: ['log', 'level'],
};

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function setPath(target: Obj, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (!isObj(node[key])) node[key] = {};
    node = node[key] as Obj;
  }
  node[path[path.length - 1]!] = value;
}

function mergeDeep(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isObj(v) && isObj(out[k]) ? mergeDeep(out[k] as Obj, v) : v;
  }
  return out;
}

/** Env values are strings; arrays and objects may be given as JSON, arrays also comma-separated. */
function envValue(raw: string, schema: TSchema | undefined): unknown {
  const kind = schema?.[Kind];
  if (kind === 'Array') {
    if (raw.trim().startsWith('[')) return JSON.parse(raw);
    return raw.split(',').map((s) => s.trim()).filter(Boolean);
  }
  if (kind === 'Record' || kind === 'Object') return JSON.parse(raw);
  return raw;
}

function schemaAt(path: string[]): TSchema | undefined {
  let node: TSchema | undefined = ConfigSchema;
  for (const key of path) {
    node = (node as { properties?: Record<string, TSchema> } | undefined)?.properties?.[key];
  }
  return node;
}

/** Variables read as they are, outside the settings (the config file's name, the default model's endpoint). */
const OTHER_ENV = new Set(['PARLEY_CONFIG', 'PARLEY_LLM_BASE_URL', 'PARLEY_LLM_API_KEY', 'PARLEY_LLM_MODEL']);

function envOverrides(env: NodeJS.ProcessEnv, problems: string[], warnings: string[]): Obj {
  const out: Obj = {};
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined || !name.startsWith('PARLEY_') || OTHER_ENV.has(name)) continue;
    let path = DIRECT_ENV[name];
    if (!path) {
      const m = /^PARLEY_([A-Z0-9]+)__([A-Z0-9_]+)$/.exec(name);
      if (!m) {
        warnings.push(`unknown environment variable ${name} (ignored; settings are PARLEY_<SECTION>__<KEY>)`);
        continue;
      }
      path = [m[1]!.toLowerCase(), m[2]!.toLowerCase()];
    }
    try {
      setPath(out, path, envValue(raw, schemaAt(path)));
    } catch {
      problems.push(`${name}: not valid JSON`);
    }
  }
  const base = env.PARLEY_LLM_BASE_URL;
  if (base) {
    setPath(out, ['llm', 'providers', 'default'], {
      type: 'openai-compatible',
      base_url: base,
      ...(env.PARLEY_LLM_API_KEY ? { api_key: env.PARLEY_LLM_API_KEY } : {}),
      ...(env.PARLEY_LLM_MODEL ? { model: env.PARLEY_LLM_MODEL } : {}),
    });
  }
  return out;
}

function unknownKeys(value: unknown, schema: TSchema, prefix: string, out: string[]): void {
  if (!isObj(value)) return;
  if (schema[Kind] === 'Record') {
    const inner = Object.values((schema as unknown as { patternProperties: Record<string, TSchema> }).patternProperties)[0];
    for (const [k, v] of Object.entries(value)) if (inner) unknownKeys(v, inner, `${prefix}${k}.`, out);
    return;
  }
  const props = (schema as { properties?: Record<string, TSchema> }).properties;
  if (!props) return;
  for (const [k, v] of Object.entries(value)) {
    const child = props[k];
    if (!child) out.push(`unknown configuration key "${prefix}${k}" (ignored)`);
    else unknownKeys(v, child, `${prefix}${k}.`, out);
  }
}

function stripUnknown(value: unknown, schema: TSchema): unknown {
  if (!isObj(value)) return value;
  if (schema[Kind] === 'Record') {
    const inner = Object.values((schema as unknown as { patternProperties: Record<string, TSchema> }).patternProperties)[0]!;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, stripUnknown(v, inner)]));
  }
  const props = (schema as { properties?: Record<string, TSchema> }).properties;
  if (!props) return value;
  return Object.fromEntries(Object.entries(value).filter(([k]) => k in props).map(([k, v]) => [k, stripUnknown(v, props[k]!)]));
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** path of a YAML file; default: env PARLEY_CONFIG, else ./config.yaml when present */
  file?: string | null;
  /** applied last (tests) */
  overrides?: DeepPartial<Config>;
}

/** Reads config.yaml + PARLEY_* env + overrides into one validated, frozen object. Every problem is reported at once. */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env = options.env ?? {};
  const problems: string[] = [];
  const warnings: string[] = [];

  let fromFile: Obj = {};
  const file = options.file === undefined ? (env.PARLEY_CONFIG ?? (existsSync('config.yaml') ? 'config.yaml' : null)) : options.file;
  if (file) {
    try {
      const parsed: unknown = parseYaml(readFileSync(resolve(file), 'utf8'));
      if (parsed !== null && parsed !== undefined && !isObj(parsed)) problems.push(`${file}: the top level must be a mapping`);
      else fromFile = parsed ?? {};
    } catch (err) {
      problems.push(`${file}: ${(err as Error).message}`);
    }
  }

  let merged = mergeDeep(fromFile, envOverrides(env, problems, warnings));
  if (options.overrides) merged = mergeDeep(merged, options.overrides as Obj);
  unknownKeys(merged, ConfigSchema, '', warnings);
  merged = stripUnknown(merged, ConfigSchema) as Obj;

  const withDefaults = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, merged)) as Obj;
  for (const e of Value.Errors(ConfigSchema, withDefaults)) {
    const key = e.path.replace(/^\//, '').replaceAll('/', '.');
    problems.push(`${key || '(root)'}: ${e.message} (got ${JSON.stringify(e.value)})`);
  }
  const config = withDefaults as Config;
  if (config.server.database_url && !/^(postgres|postgresql):\/\//.test(config.server.database_url)) {
    problems.push('server.database_url: must be a postgres:// URL (leave empty for SQLite)');
  }
  if (config.server.redis_url && !/^(rediss?|redis\+sentinel|redis\+cluster):\/\//.test(config.server.redis_url)) {
    problems.push('server.redis_url: must be a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL');
  }
  for (const [name, p] of Object.entries(config.llm.providers ?? {})) {
    if (p.type === 'openai-compatible' && !p.base_url) problems.push(`llm.providers.${name}.base_url: required for an openai-compatible provider`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if (!config.llm.providers.default) config.llm.providers.default = { type: 'demo' };
  return { config: deepFreeze(config), warnings };
}
