import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/config.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** The deploy/ example stays a valid configuration: every PARLEY_* variable it sets is a known setting. */
describe('deploy/compose.yaml', () => {
  const compose = parse(readFileSync(resolve(ROOT, 'deploy/compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, { environment?: Record<string, string> }> };
  const instances = Object.entries(compose.services).filter(([, s]) => Object.keys(s.environment ?? {}).some((k) => k.startsWith('PARLEY_')));

  it('runs several Parley instances on the PostgreSQL and Redis it starts', () => {
    expect(instances.map(([name]) => name)).toEqual(['parley-a', 'parley-b']);
    for (const [, s] of instances) {
      expect(s.environment!.PARLEY_DATABASE_URL).toMatch(/^postgres:\/\/.*@postgres:/);
      expect(s.environment!.PARLEY_REDIS_URL).toBe('redis://redis:6379');
    }
  });

  it('sets only known settings, each valid', () => {
    for (const [name, s] of instances) {
      const env = Object.fromEntries(Object.entries(s.environment!).map(([k, v]) => [k, String(v)]));
      const { config, warnings } = loadConfig({ file: null, env });
      expect(warnings, name).toEqual([]);
      expect(config.server.redis_url).toBe(env.PARLEY_REDIS_URL);
      expect(config.server.trust_proxy).toBe(true);
    }
  });

  it('balances the instances through nginx with WebSocket upgrades and unbuffered SSE', () => {
    const nginx = readFileSync(resolve(ROOT, 'deploy/nginx.conf'), 'utf8');
    for (const [name] of instances) expect(nginx).toContain(`server ${name}:8080;`);
    expect(nginx).toMatch(/proxy_set_header Upgrade \$http_upgrade;/);
    expect(nginx).toMatch(/proxy_buffering off;/);
  });
});
