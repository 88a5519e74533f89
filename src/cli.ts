#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { AuthService } from './auth/auth-service.ts';
import { TokenService } from './auth/tokens.ts';
import { ConfigError, loadConfig, type Config } from './config/config.ts';
import { createServer, listen, openDatabase } from './server.ts';
import { createRepos } from './storage/repos.ts';

const USAGE = `parley — real-time chat service for LLM applications

  parley serve                         start the server (default)
  parley migrate                       bring the database schema up to date
  parley user add <name> [--admin] [--password P]
                                       create a user (password generated when omitted)
`;

function load(): Config {
  try {
    const { config, warnings } = loadConfig({ env: process.env });
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/**
 * V8 lets the old generation grow to several times what survived its last full collection; a chat
 * server's turn state lives about a second, so the heap would fill with dead turns. A growing factor
 * of 2 collects them sooner (docs/decisions.md). V8 reads the flag at every collection, so it applies
 * from here on; a `--heap-growing-percent` given to node (or in NODE_OPTIONS) wins.
 */
function boundHeapGrowth(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith('--heap-growing-percent'));
  if (!given) setFlagsFromString('--heap-growing-percent=100');
}

async function serve(config: Config): Promise<void> {
  boundHeapGrowth();
  const handle = await createServer(config);
  const url = await listen(handle);
  const log = handle.app.log;
  log.info({ url, database: handle.services.db.location, dialect: handle.services.db.dialect }, 'parley listening');
  if (handle.bootstrap) {
    const lines = handle.bootstrap.generated
      ? ['', '  Admin account created.', '    user:     admin', `    password: ${handle.bootstrap.password}`, '  This password is shown once; change it or set PARLEY_ADMIN_PASSWORD.', '']
      : ['', '  Admin account "admin" created with the password from PARLEY_ADMIN_PASSWORD.', ''];
    process.stdout.write(lines.join('\n') + '\n');
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), (config.server.shutdown_grace + 5) * 1000);
    force.unref();
    handle.close().then(() => process.exit(0), (err: unknown) => { log.error({ err }, 'shutdown failed'); process.exit(1); });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

async function migrate(config: Config): Promise<void> {
  const db = await openDatabase(config);
  process.stdout.write(`database ${db.location} is up to date\n`);
  await db.close();
}

async function userAdd(config: Config, args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { admin: { type: 'boolean' }, password: { type: 'string' } } });
  const name = positionals[0];
  if (!name) throw new Error('usage: parley user add <name> [--admin] [--password P]');
  const db = await openDatabase(config);
  try {
    const auth = new AuthService(createRepos(db), new TokenService('unused', config.auth.jwt_issuer, { access: 1, refresh: 1 }));
    const password = values.password ?? (await import('./auth/passwords.ts')).generatePassword();
    const user = await auth.createUser(name, password, values.admin ? 'admin' : 'user');
    process.stdout.write(`user ${user.user_name} (id ${user.id}, ${user.role}) created${values.password ? '' : `; password: ${password}`}\n`);
  } finally {
    await db.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd = 'serve', ...rest] = argv;
  switch (cmd) {
    case 'serve': return serve(load());
    case 'migrate': return migrate(load());
    case 'user':
      if (rest[0] === 'add') return userAdd(load(), rest.slice(1));
      break;
    case 'help': case '--help': case '-h':
      process.stdout.write(USAGE);
      return;
  }
  process.stderr.write(USAGE);
  process.exit(2);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
