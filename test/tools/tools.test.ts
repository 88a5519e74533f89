import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type HttpToolConfig } from '../../src/config/config.ts';
import { AppError } from '../../src/domain/errors.ts';
import { createCalculatorTool, evaluate, formatNumber } from '../../src/tools/calculator-tool.ts';
import { createCurrentTimeTool } from '../../src/tools/current-time-tool.ts';
import { createHttpTool, parseAllowedHost, type HttpToolSettings } from '../../src/tools/http-tool.ts';
import { createTools, ToolRegistry } from '../../src/tools/tool-registry.ts';

const never = new AbortController().signal;

async function rejection(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (err) {
    return err as AppError;
  }
  throw new Error('expected a rejection');
}

// ------------------------------------------------------------------ calculator

describe('calculator', () => {
  const calc = createCalculatorTool();
  const run = (expression: string) => calc.run({ expression }, never);

  it.each([
    ['1 + 2 * 3', '7'],
    ['(1 + 2) * 3', '9'],
    ['10 - 4 - 3', '3'], // left-associative
    ['64 / 4 / 2', '8'],
    ['7 % 3', '1'],
    ['2 ^ 3 ^ 2', '512'], // right-associative: 2^(3^2)
    ['2 ** 10', '1024'],
    ['-2 ^ 2', '-4'], // exponent binds tighter than unary minus
    ['(-2) ^ 2', '4'],
    ['2 ^ -1', '0.5'],
    ['2 * -3', '-6'],
    ['--3', '3'],
    ['-(4 - 6)', '2'],
    ['+5', '5'],
    ['0.1 + 0.2', '0.3'], // float noise trimmed
    ['.5 + 5.', '5.5'],
    ['1.5e3 + 2E-1', '1500.2'],
    ['1e-7', '1e-7'],
    ['2 ^ 53 - 1', '9007199254740991'], // safe integers print exactly
    ['2 ^ 53', '9.00719925474e+15'], // beyond, exponent notation shows the precision
    ['1e21', '1e+21'],
    ['sqrt(16) + abs(-3)', '7'],
    ['round(2.5)', '3'],
    ['round(3.14159, 2)', '3.14'],
    ['floor(-2.5) + ceil(2.1)', '0'],
    ['min(4, 2, 8) + max(4, 2, 8)', '10'],
    ['pow(2, 8)', '256'],
    ['log(1000)', '3'],
    ['log(8, 2)', '3'],
    ['ln(e)', '1'],
    ['sin(pi / 2) + cos(0) + tan(0)', '2'],
    ['pi', '3.14159265359'],
    ['SQRT(PI * PI)', '3.14159265359'],
    ['  ( 1 +\t2 )  ', '3'],
    ['-0', '0'],
  ])('%s = %s', async (expression, expected) => {
    expect(await run(expression)).toBe(expected);
  });

  it.each([
    ['', /empty/],
    ['1 +', /end of expression/],
    ['1 + $', /Unexpected character "\$"/],
    ['2 3', /Unexpected number 3/],
    ['1.2.3', /Malformed number/],
    ['(1 + 2', /Missing "\)"/],
    ['1 + 2)', /Unbalanced "\)"/],
    [')(', /Unexpected "\)"/],
    ['1 / 0', /Division by zero/],
    ['5 % (2 - 2)', /Modulo by zero/],
    ['10 ^ 400', /not a finite number/],
    ['sqrt(-1)', /not a finite number/],
    ['ln(0)', /not a finite number/],
    ['pow(2)', /takes 2 arguments, got 1/],
    ['sqrt', /sqrt is a function/],
    ['process', /Unknown name "process"/],
    ['constructor', /Unknown name "constructor"/],
    ['__proto__', /Unknown name "__proto__"/],
    ['toString()', /Unknown function "toString"/],
    ['process.exit(1)', /Malformed|Unexpected/],
    ['require("fs")', /Unexpected character/],
    ['require(1)', /Unknown function "require"/],
    ['1'.padEnd(501, ' '), /too long/],
    [`${'('.repeat(51)}1${')'.repeat(51)}`, /nested too deeply/],
    [`${'-'.repeat(60)}1`, /nested too deeply/],
    [`${'2^'.repeat(60)}1`, /nested too deeply/],
  ])('refuses %j', async (expression, message) => {
    const err = await rejection(run(expression));
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('invalid_request');
    expect(err.message).toMatch(message);
  });

  it('allows nesting up to the limit', () => {
    expect(evaluate(`${'('.repeat(50)}1${')'.repeat(50)}`)).toBe(1);
  });

  it('refuses a missing or non-string expression', async () => {
    expect((await rejection(calc.run({}, never))).code).toBe('invalid_request');
    expect((await rejection(calc.run({ expression: 42 }, never))).code).toBe('invalid_request');
  });

  it('formats numbers', () => {
    expect(formatNumber(0.1 * 3)).toBe('0.3');
    expect(formatNumber(1 / 3)).toBe('0.333333333333');
    expect(formatNumber(-0)).toBe('0');
    expect(formatNumber(123456789)).toBe('123456789');
  });
});

// ------------------------------------------------------------------ current_time

describe('current_time', () => {
  const fixed = new Date('2024-07-01T12:34:56.000Z');
  const tool = createCurrentTimeTool({ now: () => fixed });

  it('defaults to UTC', async () => {
    const out = await tool.run({}, never);
    expect(out).toContain('utc: 2024-07-01T12:34:56.000Z');
    expect(out).toContain('timezone: UTC');
    expect(out).toContain('local: 2024-07-01T12:34:56+00:00');
    expect(out).toMatch(/readable: Monday, July 1, 2024 at 12:34:56 (PM )?UTC/);
  });

  it.each([
    ['Europe/Paris', '2024-07-01T14:34:56+02:00'],
    ['Asia/Kolkata', '2024-07-01T18:04:56+05:30'],
    ['America/New_York', '2024-07-01T08:34:56-04:00'],
    ['Pacific/Kiritimati', '2024-07-02T02:34:56+14:00'],
  ])('gives the local time in %s', async (timezone, local) => {
    const out = await tool.run({ timezone }, never);
    expect(out).toContain('utc: 2024-07-01T12:34:56.000Z');
    expect(out).toContain(`timezone: ${timezone}`);
    expect(out).toContain(`local: ${local}`);
  });

  it('uses the clock on every call', async () => {
    let now = new Date('2024-01-01T00:00:00Z');
    const ticking = createCurrentTimeTool({ now: () => now });
    expect(await ticking.run({}, never)).toContain('2024-01-01T00:00:00.000Z');
    now = new Date('2025-02-03T04:05:06Z');
    expect(await ticking.run({ timezone: 'Europe/London' }, never)).toContain('local: 2025-02-03T04:05:06+00:00');
  });

  it.each([['Mars/Olympus_Mons'], ['not a zone'], [42], ['x'.repeat(200)]])('refuses the zone %j', async (timezone) => {
    const err = await rejection(tool.run({ timezone }, never));
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('invalid_request');
  });
});

// ------------------------------------------------------------------ http tool

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

function startServer(handler: (req: IncomingMessage, body: string, res: ServerResponse, seen: Seen[]) => void) {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handler(req, body, res, seen);
    });
  });
  return {
    seen,
    server,
    async listen(): Promise<number> {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return (server.address() as AddressInfo).port;
    },
    async close(): Promise<void> {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('http tool', () => {
  let port = 0;
  let otherPort = 0;
  const other = startServer((_req, _body, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('other');
  });
  const main = startServer((req, body, res) => {
    const path = new URL(req.url!, 'http://x').pathname;
    if (path === '/slow') {
      setTimeout(() => res.end('late'), 5000).unref();
    } else if (path === '/big') {
      res.end('x'.repeat(10_000));
    } else if (path === '/utf8') {
      res.end('é'.repeat(100)); // two bytes each
    } else if (path === '/fail') {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('backend down');
    } else if (path === '/redirect-out') {
      res.writeHead(302, { location: `http://localhost:${port}/secret` });
      res.end();
    } else if (path === '/redirect-in') {
      res.writeHead(302, { location: '/echo?from=redirect' });
      res.end();
    } else if (path === '/redirect-other') {
      res.writeHead(307, { location: `http://127.0.0.1:${otherPort}/landing` });
      res.end();
    } else if (path === '/redirect-ftp') {
      res.writeHead(302, { location: 'ftp://127.0.0.1/file' });
      res.end();
    } else if (path === '/loop') {
      res.writeHead(302, { location: '/loop' });
      res.end();
    } else {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, body, key: req.headers['x-api-key'] ?? null, type: req.headers['content-type'] ?? null }));
    }
  });

  beforeAll(async () => {
    port = await main.listen();
    otherPort = await other.listen();
  });
  afterAll(async () => {
    await Promise.all([main.close(), other.close()]);
  });

  const settings = (over: Partial<HttpToolSettings> = {}): HttpToolSettings => ({
    allowed_hosts: [`127.0.0.1:${port}`],
    timeout: 5,
    max_response_bytes: 64 * 1024,
    ...over,
  });
  const def = (over: Partial<HttpToolConfig> = {}): HttpToolConfig => ({
    name: 'probe',
    description: 'test tool',
    method: 'GET',
    url: `http://127.0.0.1:${port}/echo`,
    parameters: { type: 'object', properties: {} },
    headers: {},
    ...over,
  });
  const cityParams = {
    type: 'object',
    properties: {
      city: { type: 'string', maxLength: 40 },
      days: { type: 'integer', minimum: 1, maximum: 7 },
      units: { type: 'string', enum: ['metric', 'imperial'] },
      verbose: { type: 'boolean' },
    },
    required: ['city'],
  };
  const json = (text: string) => JSON.parse(text) as { method: string; url: string; body: string; key: string | null; type: string | null };

  it('GET fills placeholders (encoded) and sends the other arguments as query parameters', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/weather/{city}?fixed=1`, parameters: cityParams, headers: { 'X-Api-Key': 's3cret' } }), settings());
    expect(tool.spec).toEqual({ name: 'probe', description: 'test tool', parameters: cityParams });
    const out = json(await tool.run({ city: 'São Paulo/../x?y', days: 3, units: 'metric', verbose: false }, never));
    expect(out.method).toBe('GET');
    expect(out.url).toBe('/weather/S%C3%A3o%20Paulo%2F..%2Fx%3Fy?fixed=1&days=3&units=metric&verbose=false');
    expect(out.key).toBe('s3cret');
    expect(out.body).toBe('');
  });

  it('POST sends the remaining arguments as a JSON body', async () => {
    const tool = createHttpTool(def({ method: 'POST', url: `http://127.0.0.1:${port}/cities/{city}`, parameters: cityParams }), settings());
    const out = json(await tool.run({ city: 'Oslo', days: 2, verbose: true, units: null }, never));
    expect(out.method).toBe('POST');
    expect(out.url).toBe('/cities/Oslo');
    expect(out.type).toBe('application/json');
    expect(JSON.parse(out.body)).toEqual({ days: 2, verbose: true });
  });

  it('lists every bad argument at once', async () => {
    const tool = createHttpTool(def({ parameters: cityParams }), settings());
    const before = main.seen.length;
    const err = await rejection(tool.run({ days: 1.5, units: 'kelvin', verbose: 'yes', extra: 1 }, never));
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('invalid_request');
    const errors = (err.data as { errors: { path: string; message: string }[] }).errors;
    expect(errors).toEqual(expect.arrayContaining([
      { path: 'city', message: 'is required' },
      { path: 'days', message: 'must be an integer' },
      { path: 'units', message: 'must be one of "metric", "imperial"' },
      { path: 'verbose', message: 'must be a boolean' },
      { path: 'extra', message: 'is not a parameter of this tool' },
    ]));
    expect(errors).toHaveLength(5);
    for (const e of errors) expect(err.message).toContain(`${e.path} ${e.message}`);

    const tooLong = await rejection(tool.run({ city: 'x'.repeat(41), days: 9 }, never));
    expect((tooLong.data as { errors: unknown[] }).errors).toEqual([
      { path: 'city', message: 'must be at most 40 characters' },
      { path: 'days', message: 'must be <= 7' },
    ]);
    expect(main.seen.length).toBe(before); // nothing was sent
  });

  it('treats a placeholder as required', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/x/{units}`, parameters: cityParams }), settings());
    const err = await rejection(tool.run({ city: 'Oslo' }, never));
    expect((err.data as { errors: unknown[] }).errors).toEqual([{ path: 'units', message: 'is required' }]);
  });

  it('refuses a host that is not allowed', async () => {
    const before = main.seen.length;
    const tool = createHttpTool(def({ headers: { 'X-Api-Key': 's3cret' } }), settings({ allowed_hosts: [`localhost:${port}`] }));
    const err = await rejection(tool.run({}, never));
    expect(err.code).toBe('forbidden');
    expect(err.message).toContain(`http://127.0.0.1:${port} is not in tools.allowed_hosts`);
    expect(main.seen.length).toBe(before);
  });

  it('refuses another port of an allowed host, and a host placeholder pointing elsewhere', async () => {
    const bare = createHttpTool(def(), settings({ allowed_hosts: ['127.0.0.1'] }));
    expect((await rejection(bare.run({}, never))).code).toBe('forbidden');

    const dynamic = createHttpTool(def({ url: 'http://{host}/echo', parameters: { type: 'object', properties: { host: { type: 'string' } } } }), settings());
    // encodeURIComponent keeps ':' out of the host, so no port can be smuggled in either
    expect((await rejection(dynamic.run({ host: `127.0.0.1:${port}` }, never))).code).toBe('invalid_request');
    expect((await rejection(dynamic.run({ host: `evil.com@127.0.0.1:${port}` }, never))).code).toBe('invalid_request');
    expect((await rejection(dynamic.run({ host: 'example.com' }, never))).code).toBe('forbidden');
  });

  it('follows a redirect on the same allowed host', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/redirect-in` }), settings());
    expect(json(await tool.run({}, never)).url).toBe('/echo?from=redirect');
  });

  it('refuses a redirect to a host that is not allowed, without contacting it', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/redirect-out`, headers: { 'X-Api-Key': 's3cret' } }), settings());
    const err = await rejection(tool.run({}, never));
    expect(err.code).toBe('forbidden');
    expect(err.message).toContain(`redirect to http://localhost:${port} refused`);
    expect(main.seen.some((s) => s.url.startsWith('/secret'))).toBe(false);
  });

  it('refuses a redirect to a non-http scheme and redirect loops', async () => {
    const ftp = createHttpTool(def({ url: `http://127.0.0.1:${port}/redirect-ftp` }), settings());
    expect((await rejection(ftp.run({}, never))).message).toMatch(/ftp: URL refused/);
    const loop = createHttpTool(def({ url: `http://127.0.0.1:${port}/loop` }), settings());
    const err = await rejection(loop.run({}, never));
    expect(err.code).toBe('upstream_error');
    expect(err.message).toMatch(/too many redirects/);
  });

  it('does not forward configured headers to another allowed origin', async () => {
    const tool = createHttpTool(
      def({ url: `http://127.0.0.1:${port}/redirect-other`, headers: { 'X-Api-Key': 's3cret', Authorization: 'Bearer t' } }),
      settings({ allowed_hosts: [`127.0.0.1:${port}`, `127.0.0.1:${otherPort}`] }),
    );
    expect(await tool.run({}, never)).toBe('other');
    const landing = other.seen.find((s) => s.url === '/landing')!;
    expect(landing.headers['x-api-key']).toBeUndefined();
    expect(landing.headers.authorization).toBeUndefined();
  });

  it('times out', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/slow` }), settings({ timeout: 0.2 }));
    const started = Date.now();
    const err = await rejection(tool.run({}, never));
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('stops when the caller aborts', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/slow` }), settings());
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const err = await rejection(tool.run({}, controller.signal));
    expect(err).not.toBeInstanceOf(AppError);
    expect((err as Error).name).toBe('AbortError');

    const before = main.seen.length;
    const aborted = AbortSignal.abort();
    expect((await rejection(tool.run({}, aborted))).name).toBe('AbortError');
    expect(main.seen.length).toBe(before);
  });

  it('truncates a large response with a marker', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/big` }), settings({ max_response_bytes: 100 }));
    const out = await tool.run({}, never);
    expect(out).toBe(`${'x'.repeat(100)}\n[truncated: the response exceeded 100 bytes]`);

    const exact = createHttpTool(def({ url: `http://127.0.0.1:${port}/big` }), settings({ max_response_bytes: 10_000 }));
    expect(await exact.run({}, never)).toBe('x'.repeat(10_000));
  });

  it('never cuts a character in half', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/utf8` }), settings({ max_response_bytes: 7 }));
    expect(await tool.run({}, never)).toBe(`ééé\n[truncated: the response exceeded 7 bytes]`);
  });

  it('turns a non-2xx answer into an error with the status', async () => {
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${port}/fail` }), settings());
    const err = await rejection(tool.run({}, never));
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('upstream_error');
    expect(err.data).toEqual({ status: 503 });
    expect(err.message).toContain('503');
    expect(err.message).toContain('backend down');
  });

  it('reports a refused connection as upstream_error', async () => {
    const closed = startServer(() => undefined);
    const closedPort = await closed.listen();
    await closed.close();
    const tool = createHttpTool(def({ url: `http://127.0.0.1:${closedPort}/` }), settings({ allowed_hosts: [`127.0.0.1:${closedPort}`] }));
    const err = await rejection(tool.run({}, never));
    expect(err.code).toBe('upstream_error');
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it('rejects unusable entries at construction, listing every problem', () => {
    let err: unknown;
    try {
      createHttpTool(def({
        url: 'ftp://127.0.0.1/{missing}',
        parameters: { type: 'object', properties: { list: { type: 'array' }, n: { type: 'number', maxLength: -1 } }, required: ['nope'] },
      }), settings({ allowed_hosts: ['https://example.com/'] }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      'tools.allowed_hosts: "https://example.com/" is not a host name or host:port',
      'tools.http "probe": parameters.properties.list.type: must be one of string, number, integer, boolean',
      'tools.http "probe": parameters.properties.n.maxLength: must be a non-negative integer',
      'tools.http "probe": parameters.required: "nope" is not a declared property',
      'tools.http "probe": url: placeholder {missing} is not a declared parameter',
      'tools.http "probe": url: only http and https URLs are allowed',
    ]);
  });

  it('parses allowed hosts', () => {
    expect(parseAllowedHost('API.Example.com')).toEqual({ hostname: 'api.example.com', port: null });
    expect(parseAllowedHost('example.com:8443')).toEqual({ hostname: 'example.com', port: '8443' });
    expect(parseAllowedHost('[::1]:8080')).toEqual({ hostname: '[::1]', port: '8080' });
    expect(parseAllowedHost('user@example.com')).toBeNull();
    expect(parseAllowedHost('example.com/path')).toBeNull();
  });
});

// ------------------------------------------------------------------ registry

describe('tool registry', () => {
  const tools = (over: Partial<HttpToolSettings> & { http?: HttpToolConfig[] } = {}) => ({
    tools: { http: [], allowed_hosts: ['api.example.com'], timeout: 15, max_response_bytes: 65536, ...over },
  });
  const weather: HttpToolConfig = {
    name: 'weather',
    description: 'Weather for a city',
    method: 'GET',
    url: 'https://api.example.com/weather/{city}',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    headers: {},
  };

  it('holds the built-ins and the configured HTTP tools', async () => {
    const registry = createTools(tools({ http: [weather] }), { now: () => new Date('2024-01-01T00:00:00Z') });
    expect(registry.names()).toEqual(['calculator', 'current_time', 'weather']);
    expect(registry.get('weather')?.spec.description).toBe('Weather for a city');
    expect(await registry.get('calculator')!.run({ expression: '6*7' }, never)).toBe('42');
    expect(await registry.get('current_time')!.run({}, never)).toContain('2024-01-01T00:00:00.000Z');
    expect(registry.get('nope')).toBeUndefined();
    expect(registry.get('__proto__')).toBeUndefined();
    expect(registry.get('constructor')).toBeUndefined();
    expect(registry.specs().map((s) => s.name)).toEqual(['calculator', 'current_time', 'weather']);
  });

  it('resolves names in order, without repeats, and reports unknown ones', () => {
    const registry = createTools(tools({ http: [weather] }));
    const { tools: found, unknown } = registry.resolve(['weather', 'calculator', 'weather', 'search', 'toString']);
    expect(found.map((t) => t.spec.name)).toEqual(['weather', 'calculator']);
    expect(unknown).toEqual(['search', 'toString']);
  });

  it('registers extra tools and refuses a taken name', async () => {
    const registry = new ToolRegistry();
    registry.register({ spec: { name: 'echo', description: 'echo', parameters: { type: 'object' } }, run: async (args) => JSON.stringify(args) });
    expect(await registry.get('echo')!.run({ a: 1 }, never)).toBe('{"a":1}');
    expect(() => registry.register({ spec: { name: 'echo', description: '', parameters: {} }, run: async () => '' })).toThrow(/already registered/);
  });

  it('reports every configuration problem at once', () => {
    let err: unknown;
    try {
      createTools(tools({
        allowed_hosts: ['bad host'],
        http: [
          { ...weather, name: 'calculator' },
          { ...weather, name: 'a', url: 'not a url' },
          { ...weather, name: 'b' },
          { ...weather, name: 'b' },
        ],
      }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      'tools.http "calculator": the name is already taken by a built-in tool',
      'tools.allowed_hosts: "bad host" is not a host name or host:port',
      'tools.http "a": url: not a valid absolute URL',
      'tools.http "b": the name is already taken',
    ]);
  });
});
