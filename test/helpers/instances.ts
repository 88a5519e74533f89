import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createPgDatabase, ADMIN_PASSWORD } from './server.ts';
import { dropPrefix, redisClient, testPrefix } from './redis.ts';

const CLI = resolve(import.meta.dirname, '../../bin/parley.mjs');

export interface Instance {
  url: string;
  proc: ChildProcess;
  /** everything it printed */
  output(): string;
}

/**
 * Several real Parley server processes (`parley serve`, as deployed) on loopback ports, sharing one
 * fresh PostgreSQL database and one Redis key prefix: a deployment of several instances.
 */
export interface Deployment {
  instances: Instance[];
  /** starts one more instance (with `env` on top of the deployment's) */
  start(env?: Record<string, string>): Promise<Instance>;
  /** SIGKILL: the process dies with its turns running */
  kill(instance: Instance): Promise<void>;
  /** SIGTERM: a graceful stop */
  stop(instance: Instance): Promise<number | null>;
  close(): Promise<void>;
}

/** The environment of a fresh machine: no PARLEY_* variables but the deployment's. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_')) env[k] = v;
  return { ...env, ...extra };
}

const exited = (i: Instance) => i.proc.exitCode !== null || i.proc.signalCode !== null;

function launch(env: Record<string, string>): Promise<Instance> {
  return new Promise((resolvePromise, reject) => {
    const proc = spawn(process.execPath, [CLI, 'serve'], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`instance did not start:\n${out}`)), 60_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"parley listening"/.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.off('exit', onExit);
        resolvePromise({ url: m[1]!, proc, output: () => out });
      }
    };
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`instance exited with ${code}:\n${out}`));
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    proc.on('exit', onExit);
  });
}

/**
 * Starts `count` instances one after another (the first creates the schema and the admin), each
 * with `env` (e.g. the mock model's URL) on top of the shared database, Redis and a short turn lease.
 */
export async function startDeployment(count: number, opts: { redisUrl: string; env?: Record<string, string> }): Promise<Deployment> {
  const pg = await createPgDatabase();
  const prefix = testPrefix();
  const dataDir = mkdtempSync(join(tmpdir(), 'parley-deploy-'));
  const base: Record<string, string> = {
    PARLEY_HOST: '127.0.0.1', PARLEY_PORT: '0', PARLEY_DATA_DIR: dataDir, PARLEY_DATABASE_URL: pg.url,
    PARLEY_REDIS_URL: opts.redisUrl, PARLEY_SERVER__REDIS_PREFIX: prefix, PARLEY_ADMIN_PASSWORD: ADMIN_PASSWORD,
    PARLEY_LOG_LEVEL: 'info', PARLEY_CHAT__MESSAGES_PER_MINUTE: '1000', ...opts.env,
  };
  const instances: Instance[] = [];
  const deployment: Deployment = {
    instances,
    async start(env = {}) {
      const instance = await launch({ ...base, ...env });
      instances.push(instance);
      return instance;
    },
    async kill(instance) {
      if (exited(instance)) return;
      await new Promise<void>((r) => {
        instance.proc.once('exit', () => r());
        instance.proc.kill('SIGKILL');
      });
    },
    async stop(instance) {
      if (exited(instance)) return instance.proc.exitCode;
      return new Promise((r) => {
        instance.proc.once('exit', (code) => r(code));
        instance.proc.kill('SIGTERM');
      });
    },
    async close() {
      await Promise.all(instances.map((i) => deployment.kill(i)));
      await pg.drop();
      const redis = await redisClient(opts.redisUrl);
      await dropPrefix(redis, prefix);
      redis.disconnect();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  for (let i = 0; i < count; i++) await deployment.start();
  return deployment;
}
