import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * Layers import downward only (ARCHITECTURE.md). Each entry lists what a folder must NOT import.
 * The chat core imports no transport, driver or SDK.
 */
const DRIVERS = ['fastify', '@fastify/*', 'ws', 'better-sqlite3', 'pg', 'ioredis', 'kysely', 'eventsource-parser'];
const layer = (folder, forbiddenFolders, forbiddenPackages = []) => ({
  files: [`src/${folder}/**/*.ts`],
  rules: {
    'no-restricted-imports': ['error', {
      patterns: [
        ...forbiddenFolders.map((f) => ({ group: [`**/${f}/*`, `../${f}/*`, `../../${f}/*`], message: `src/${folder} must not import src/${f} (layer boundary).` })),
        ...(forbiddenPackages.length ? [{ group: forbiddenPackages, message: `src/${folder} must not import drivers, transports or SDKs.` }] : []),
      ],
    }],
  },
});

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'data/', 'web/dist/', 'bench/out/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module', globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', performance: 'readonly', fetch: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', AbortController: 'readonly', crypto: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'Read configuration through src/config, not process.env.' }],
    },
  },
  layer('domain', ['config', 'storage', 'bus', 'providers', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], DRIVERS),
  layer('config', ['domain', 'storage', 'bus', 'providers', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], DRIVERS),
  layer('storage', ['bus', 'providers', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], ['fastify', '@fastify/*', 'ws', 'ioredis', 'eventsource-parser']),
  layer('bus', ['storage', 'providers', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], ['fastify', '@fastify/*', 'ws', 'better-sqlite3', 'pg', 'kysely', 'eventsource-parser']),
  layer('providers', ['storage', 'bus', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], ['fastify', '@fastify/*', 'ws', 'better-sqlite3', 'pg', 'kysely', 'ioredis']),
  layer('tools', ['storage', 'bus', 'providers', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], DRIVERS),
  layer('runtimes', ['storage', 'bus', 'chat', 'auth', 'http', 'ws', 'apps', 'wire'], DRIVERS),
  layer('chat', ['http', 'ws', 'wire', 'providers', 'telemetry', 'redis'], DRIVERS),
  // OpenTelemetry behind the domain's Tracer port
  layer('telemetry', ['config', 'storage', 'bus', 'providers', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps', 'wire', 'redis'], DRIVERS),
  // wire codecs shared by the transports that speak them: what they encode is the domain's
  layer('wire', ['config', 'storage', 'bus', 'providers', 'tools', 'runtimes', 'chat', 'auth', 'http', 'ws', 'apps'], DRIVERS),
  // Redis adapters of the core's ports (bus, limits): drivers allowed, transports not
  layer('redis', ['storage', 'providers', 'tools', 'runtimes', 'auth', 'http', 'ws', 'apps', 'wire'], ['fastify', '@fastify/*', 'ws', 'better-sqlite3', 'pg', 'kysely', 'eventsource-parser']),
  layer('auth', ['http', 'ws', 'bus', 'providers', 'tools', 'runtimes', 'chat', 'apps', 'wire'], DRIVERS),
  layer('apps', ['http', 'ws', 'bus', 'providers', 'chat', 'wire'], DRIVERS),
  layer('ws', ['http', 'storage'], ['fastify', 'better-sqlite3', 'pg', 'kysely', 'ioredis', 'eventsource-parser']),
  {
    // a transport's pieces that another one needs belong in a shared module (STYLE.md rule 12)
    files: ['src/http/routes/*-routes.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['./*-routes.ts'], message: 'A route file must not import another route file.' }] }] },
  },
  {
    // the composition root, the CLI and the tests may read the environment
    files: ['src/cli.ts', 'test/**/*.ts', 'bench/**/*', 'bin/**/*', 'eslint.config.js', 'vitest.config.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
