import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Repos } from '../../src/storage/repos.ts';
import { dbTargets, startServer, type TestServer } from '../helpers/server.ts';

describe.each(dbTargets())('workflow run repository on $name', (target) => {
  let server: TestServer;
  let repos: Repos;
  beforeAll(async () => {
    server = await startServer(target);
    repos = server.handle.services.repos;
  });
  afterAll(async () => server?.close());

  const run = (chatId: string, status: 'input' | 'success' = 'input') => ({
    chat_id: chatId, run_id: 'r'.repeat(32), app_id: 'a'.repeat(32), version: 1, user_id: 1, status,
    state: JSON.stringify({ status }), node_id: 'ask', expires_at: '2099-01-01T00:00:00.000Z',
  });

  it('saves, replaces and deletes a run', async () => {
    const saved = await repos.workflowRuns.save(run('c1'));
    expect(saved).toMatchObject({ chat_id: 'c1', status: 'input', node_id: 'ask' });
    const replaced = await repos.workflowRuns.save({ ...run('c1', 'success'), node_id: null });
    expect(replaced).toMatchObject({ status: 'success', node_id: null, create_time: saved.create_time });
    await repos.workflowRuns.delete('c1');
    expect(await repos.workflowRuns.get('c1')).toBeUndefined();
  });

  it('claim succeeds once for the version that was read', async () => {
    const saved = await repos.workflowRuns.save(run('c2'));
    const results = await Promise.all([repos.workflowRuns.claim(saved), repos.workflowRuns.claim(saved)]);
    expect(results.filter(Boolean)).toHaveLength(1);
    expect((await repos.workflowRuns.get('c2'))!.status).toBe('running');
    expect(await repos.workflowRuns.claim(saved)).toBe(false);
  });
});
