import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.ts';

describe('config', () => {
  it('has every key of PROTOCOL.md §5 and §7 with its default', () => {
    const { config } = loadConfig({ file: null, env: {} });
    expect(config.chat).toEqual({
      max_message_length: 10000, max_history_messages: 50, heartbeat_interval: 30, connection_timeout: 300,
      max_concurrent_sessions: 1000, max_connections_per_user: 20, messages_per_minute: 60, max_frame_bytes: 1048576,
      replay_ttl: 600, run_on_disconnect: true, turn_lease: 30,
    });
    expect(config.workflow).toEqual({ max_steps: 50, input_timeout: 300 });
    expect(config.llm).toMatchObject({ request_timeout: 600, max_retries: 1, providers: { default: { type: 'demo' } } });
    expect(config.server).toMatchObject({ host: '0.0.0.0', port: 8080, data_dir: './data', database_url: '', redis_url: '', redis_prefix: 'parley:' });
    expect(config.auth).toMatchObject({ admin_password: '', jwt_secret: '' });
  });

  it('applies PARLEY_* variables over the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-cfg-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'chat:\n  heartbeat_interval: 10\n  max_message_length: 500\nhttp:\n  allowed_origins: [http://a.example]\n');
    const { config } = loadConfig({
      file,
      env: {
        PARLEY_PORT: '9090', PARLEY_DATABASE_URL: 'postgres://u@h/db', PARLEY_CHAT__HEARTBEAT_INTERVAL: '15',
        PARLEY_HTTP__ALLOWED_ORIGINS: 'http://b.example,http://c.example', PARLEY_CHAT__RUN_ON_DISCONNECT: 'false',
        PARLEY_LLM_BASE_URL: 'http://127.0.0.1:8100/v1', PARLEY_LLM_MODEL: 'm1',
      },
    });
    expect(config.server.port).toBe(9090);
    expect(config.server.database_url).toBe('postgres://u@h/db');
    expect(config.chat.heartbeat_interval).toBe(15);
    expect(config.chat.max_message_length).toBe(500);
    expect(config.chat.run_on_disconnect).toBe(false);
    expect(config.http.allowed_origins).toEqual(['http://b.example', 'http://c.example']);
    expect(config.llm.providers.default).toEqual({ type: 'openai-compatible', base_url: 'http://127.0.0.1:8100/v1', model: 'm1' });
  });

  it('reports every problem at once', () => {
    let error: unknown;
    try {
      loadConfig({ file: null, env: { PARLEY_PORT: 'eighty', PARLEY_CHAT__MAX_FRAME_BYTES: '-1', PARLEY_DATABASE_URL: 'mysql://x', PARLEY_CHAT__HEARTBEAT_INTERVAL: '0' } });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    for (const key of ['server.port', 'chat.max_frame_bytes', 'server.database_url', 'chat.heartbeat_interval']) expect(problems).toContain(key);
  });

  it('warns about unknown keys and ignores them', () => {
    const { config, warnings } = loadConfig({ file: null, env: { PARLEY_CHAT__MAX_MESAGE_LENGTH: '5', PARLEY_REDIS: 'redis://x', PARLEY_LLM_MODEL: 'm' }, overrides: { nope: { x: 1 } } as never });
    expect(warnings).toEqual(expect.arrayContaining([expect.stringContaining('chat.max_mesage_length'), expect.stringContaining('nope'), expect.stringContaining('PARLEY_REDIS ')]));
    expect(warnings.join()).not.toContain('PARLEY_LLM_MODEL');
    expect(config.chat.max_message_length).toBe(10000);
    expect('nope' in config).toBe(false);
  });

  it('is frozen', () => {
    const { config } = loadConfig({ file: null, env: {} });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.chat)).toBe(true);
    expect(() => { (config.chat as { max_history_messages: number }).max_history_messages = 1; }).toThrow();
  });

  it('rejects a file that is not a mapping', () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-cfg-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(file, '- a\n- b\n');
    expect(() => loadConfig({ file, env: {} })).toThrow(ConfigError);
  });
});
