import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, adminAndUser, dbTargets, startServer, type ApiResponse, type TestServer } from '../helpers/server.ts';

const expectError = (r: ApiResponse, http: number, code: number) => {
  expect({ http: r.status, code: r.body.status_code }).toEqual({ http, code });
};
const errorPaths = (r: ApiResponse) => [...new Set(r.body.data.errors.map((e: { path: string }) => e.path))].sort();
const MISSING = 'f'.repeat(32);

const validGraph = {
  nodes: [
    { id: 'start', type: 'start', data: {} },
    { id: 'ask', type: 'input', data: { mode: 'dialog' } },
    { id: 'answer', type: 'llm', data: { prompt: 'Answer {{ask.user_input}}' }, position: { x: 1, y: 2 } },
    { id: 'end', type: 'end' },
  ],
  edges: [{ source: 'start', target: 'ask' }, { source: 'ask', target: 'answer' }, { source: 'answer', target: 'end' }],
};
/** Two starts, an llm without prompt, a dangling edge, an unknown variable, an unguarded loop, no end. */
const brokenGraph = {
  nodes: [
    { id: 's1', type: 'start' },
    { id: 's2', type: 'start' },
    { id: 'a', type: 'llm', data: { prompt: '{{nobody.text}}' } },
    { id: 'b', type: 'llm', data: {} },
  ],
  edges: [{ source: 's1', target: 'a' }, { source: 'a', target: 'b' }, { source: 'b', target: 'a' }, { source: 's2', target: 'ghost' }],
};
const BROKEN_CODES = ['dangling_edge', 'invalid_node_data', 'multiple_starts', 'no_end', 'unguarded_cycle', 'unknown_variable'];

describe.each(dbTargets())('apps on $name', (target) => {
  let server: TestServer;
  let admin: Api;
  let user: Api;

  const create = async (body: Record<string, unknown> = {}) => {
    const r = await admin.post('/api/v1/apps', { name: 'Test app', kind: 'chat', ...body });
    expect(r.status).toBe(200);
    return r.body.data as { id: string; [k: string]: unknown };
  };
  const onlineNames = async (api: Api, query = '') => (await api.get(`/api/v1/chat/online?limit=100${query}`)).body.data.map((a: { name: string }) => a.name);

  beforeAll(async () => {
    server = await startServer(target);
    ({ admin, user } = await adminAndUser(server));
  });
  afterAll(async () => server?.close());

  describe('GET /chat/online', () => {
    it('shows the three seeded demo apps to a plain user, Bisheng-shaped, as a plain array', async () => {
      const r = await user.get('/api/v1/chat/online');
      expect(r.status).toBe(200);
      expect(Array.isArray(r.body.data)).toBe(true);
      expect(r.body.data.map((a: { name: string }) => a.name).sort()).toEqual(['Demo assistant', 'Demo chat', 'Demo workflow']);
      const chat = r.body.data.find((a: { kind: string }) => a.kind === 'chat');
      expect(chat).toMatchObject({
        id: expect.stringMatching(/^[0-9a-f]{32}$/), flow_type: 15, status: 2, online: true, published_version: 1, logo: '',
        guide_word: 'Hello! Ask me anything.', guide_questions: ['What can you do?', 'Tell me a short story.'],
      });
      expect(chat.spec).toBeUndefined();
    });

    it('filters by flow_type and keyword, and pages', async () => {
      expect(await onlineNames(user, '&flow_type=10')).toEqual(['Demo workflow']);
      expect(await onlineNames(user, '&flow_type=5')).toEqual(['Demo assistant']);
      expect(await onlineNames(user, '&flow_type=1')).toEqual([]);
      expect(await onlineNames(user, '&keyword=ASSIST')).toEqual(['Demo assistant']);
      expect((await user.get('/api/v1/chat/online?page=2&limit=2')).body.data).toHaveLength(1);
    });

    it('refuses a bad query with 10400', async () => {
      const r = await user.get('/api/v1/chat/online?page=0&flow_type=x');
      expectError(r, 400, 10400);
      expect(errorPaths(r)).toEqual(['querystring/flow_type', 'querystring/page']);
    });
  });

  describe('POST /apps', () => {
    it('creates an offline, unpublished draft with the spec defaults', async () => {
      const r = await admin.post('/api/v1/apps', { name: 'Helper', kind: 'assistant', description: 'd', tools: ['calculator'], future_field: 1 });
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({
        id: expect.stringMatching(/^[0-9a-f]{32}$/), name: 'Helper', kind: 'assistant', flow_type: 5, description: 'd', icon: '',
        online: false, published_version: null,
        spec: { model: { provider: 'default' }, prompt: '', tools: ['calculator'], guide_word: '', guide_questions: [] },
      });
      expect(r.body.data.spec).not.toHaveProperty('future_field');
    });

    it('lists every bad field with 10400', async () => {
      const r = await admin.post('/api/v1/apps', {
        name: 'x'.repeat(257), kind: 'bot', prompt: 'p'.repeat(100_001), tools: [1], model: { temperature: 9 }, guide_questions: 'q',
      });
      expectError(r, 400, 10400);
      expect(errorPaths(r)).toEqual(['body/guide_questions', 'body/kind', 'body/model/provider', 'body/model/temperature', 'body/name', 'body/prompt', 'body/tools/0']);
      expect(errorPaths(await admin.post('/api/v1/apps', { name: '   ', kind: 'chat' }))).toEqual(['body/name']);
    });

    it('is for admins only', async () => {
      expectError(await user.post('/api/v1/apps', { name: 'Mine', kind: 'chat' }), 403, 10403);
    });
  });

  describe('GET /apps and /apps/{id}', () => {
    it('admins see drafts; users see only online, published apps', async () => {
      const draft = await create({ name: 'Hidden draft' });
      const adminList = await admin.get('/api/v1/apps?limit=100');
      expect(adminList.status).toBe(200);
      expect(adminList.body.data.list.map((a: { id: string }) => a.id)).toContain(draft.id);
      expect(adminList.body.data.total).toBe(adminList.body.data.list.length);
      const userList = await user.get('/api/v1/apps?limit=100');
      expect(userList.body.data.list.map((a: { name: string }) => a.name).sort()).toEqual(['Demo assistant', 'Demo chat', 'Demo workflow']);
      expect(userList.body.data.total).toBe(3);
      const workflows = await admin.get('/api/v1/apps?kind=workflow&keyword=demo');
      expect(workflows.body.data.list.map((a: { name: string }) => a.name)).toEqual(['Demo workflow']);
    });

    it('answers the draft to admins, the published spec to users, 404 for a draft to users', async () => {
      const demo = (await user.get('/api/v1/chat/online?flow_type=15')).body.data[0];
      await admin.put(`/api/v1/apps/${demo.id}`, { prompt: 'Draft prompt' });
      expect((await admin.get(`/api/v1/apps/${demo.id}`)).body.data.spec.prompt).toBe('Draft prompt');
      const seen = await user.get(`/api/v1/apps/${demo.id}`);
      expect(seen.status).toBe(200);
      expect(seen.body.data.spec.prompt).toBe('You are a helpful assistant.');
      const draft = await create();
      expectError(await user.get(`/api/v1/apps/${draft.id}`), 404, 10404);
    });

    it('unknown id → 10404, malformed id → 10400, bad query → 10400', async () => {
      expectError(await admin.get(`/api/v1/apps/${MISSING}`), 404, 10404);
      const bad = await admin.get('/api/v1/apps/not-an-id');
      expectError(bad, 400, 10400);
      expect(errorPaths(bad)).toEqual(['params/id']);
      const list = await admin.get('/api/v1/apps?limit=1000&kind=bot');
      expectError(list, 400, 10400);
      expect(errorPaths(list)).toEqual(['querystring/kind', 'querystring/limit']);
    });

    it('takes SQL-looking keywords literally and changes nothing', async () => {
      const before = (await admin.get('/api/v1/apps?limit=100')).body.data;
      for (const keyword of ["' OR '1'='1", "'; DROP TABLE apps; --", '%', '_', '\\', "demo' --", '") OR 1=1 --']) {
        for (const path of ['/api/v1/apps', '/api/v1/chat/online']) {
          const r = await admin.get(`${path}?keyword=${encodeURIComponent(keyword)}`);
          expect(r.status).toBe(200);
          expect(path === '/api/v1/apps' ? r.body.data.list : r.body.data).toEqual([]);
        }
      }
      expect((await admin.get('/api/v1/apps?limit=100')).body.data).toEqual(before);
    });
  });

  describe('PUT /apps/{id}', () => {
    it('saves the draft, even an invalid workflow, and keeps unspecified fields', async () => {
      const app = await create({ kind: 'workflow', guide_word: 'hi' });
      const r = await admin.put(`/api/v1/apps/${app.id}`, { name: 'Renamed', graph: brokenGraph });
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({ id: app.id, name: 'Renamed', kind: 'workflow', spec: { guide_word: 'hi', graph: { nodes: brokenGraph.nodes } } });
      const kept = await admin.put(`/api/v1/apps/${app.id}`, { graph: validGraph });
      expect(kept.body.data.spec.graph.nodes[2].position).toEqual({ x: 1, y: 2 });
    });

    it('refuses a kind change and bad fields with 10400, plain users with 10403, unknown ids with 10404', async () => {
      const app = await create();
      const kind = await admin.put(`/api/v1/apps/${app.id}`, { kind: 'workflow' });
      expectError(kind, 400, 10400);
      expect(errorPaths(kind)).toEqual(['body/kind']);
      const bad = await admin.put(`/api/v1/apps/${app.id}`, { name: '', graph: { nodes: [{ id: 'x' }], edges: 'none' } });
      expect(errorPaths(bad)).toEqual(['body/graph/edges', 'body/graph/nodes/0/type', 'body/name']);
      expectError(await user.put(`/api/v1/apps/${app.id}`, { name: 'Mine' }), 403, 10403);
      expectError(await admin.put(`/api/v1/apps/${MISSING}`, { name: 'x' }), 404, 10404);
      expect((await admin.get(`/api/v1/apps/${app.id}`)).body.data.name).toBe('Test app');
    });
  });

  describe('publish, status and versions', () => {
    it('publishes a chat app, puts it online for users, and takes it offline again', async () => {
      const app = await create({ name: 'Launch app', prompt: 'v1' });
      expectError(await admin.post(`/api/v1/apps/${app.id}/status`, { online: true }), 400, 10400);

      const pub = await admin.post(`/api/v1/apps/${app.id}/publish`);
      expect(pub.status).toBe(200);
      expect(pub.body.data).toMatchObject({ app_id: app.id, version: 1, spec: { prompt: 'v1' } });
      await admin.put(`/api/v1/apps/${app.id}`, { prompt: 'v2' });
      expect((await admin.post(`/api/v1/apps/${app.id}/publish`)).body.data.version).toBe(2);

      const versions = await admin.get(`/api/v1/apps/${app.id}/versions`);
      expect(versions.status).toBe(200);
      expect(versions.body.data.map((v: { version: number; spec: { prompt: string } }) => [v.version, v.spec.prompt])).toEqual([[2, 'v2'], [1, 'v1']]);
      expect(versions.body.data[0]).toEqual({ app_id: app.id, version: 2, user_id: expect.any(Number), create_time: expect.any(String), spec: expect.any(Object) });

      expect(await onlineNames(user)).not.toContain('Launch app');
      const on = await admin.post(`/api/v1/apps/${app.id}/status`, { online: true });
      expect(on.body.data).toMatchObject({ online: true, published_version: 2 });
      expect(await onlineNames(user)).toContain('Launch app');
      expect((await user.get(`/api/v1/apps/${app.id}`)).body.data.spec.prompt).toBe('v2');

      expect((await admin.post(`/api/v1/apps/${app.id}/status`, { online: false })).body.data.online).toBe(false);
      expect(await onlineNames(user)).not.toContain('Launch app');
      expectError(await user.get(`/api/v1/apps/${app.id}`), 404, 10404);
    });

    it('refuses an invalid workflow with every problem and publishes nothing', async () => {
      const app = await create({ kind: 'workflow', graph: brokenGraph });
      const r = await admin.post(`/api/v1/apps/${app.id}/publish`);
      expectError(r, 400, 10400);
      expect([...new Set(r.body.data.problems.map((p: { code: string }) => p.code))].sort()).toEqual(BROKEN_CODES);
      expect(r.body.data.errors).toHaveLength(r.body.data.problems.length);
      expect(r.body.data.errors).toContainEqual({ path: 'graph/nodes/b', message: expect.stringContaining('prompt') });
      expect((await admin.get(`/api/v1/apps/${app.id}/versions`)).body.data).toEqual([]);
      expect((await admin.get(`/api/v1/apps/${app.id}`)).body.data.published_version).toBeNull();

      await admin.put(`/api/v1/apps/${app.id}`, { graph: validGraph });
      expect((await admin.post(`/api/v1/apps/${app.id}/publish`)).body.data.version).toBe(1);
    });

    it('refuses an app whose model provider is not configured with 10422', async () => {
      const app = await create({ model: { provider: 'nowhere' } });
      expectError(await admin.post(`/api/v1/apps/${app.id}/publish`), 422, 10422);
      expect((await admin.get(`/api/v1/apps/${app.id}/versions`)).body.data).toEqual([]);
    });

    it('is for admins only; unknown ids → 10404; a bad status body → 10400', async () => {
      const demo = (await user.get('/api/v1/chat/online?flow_type=15')).body.data[0];
      expectError(await user.post(`/api/v1/apps/${demo.id}/publish`), 403, 10403);
      expectError(await user.post(`/api/v1/apps/${demo.id}/status`, { online: false }), 403, 10403);
      expectError(await user.get(`/api/v1/apps/${demo.id}/versions`), 403, 10403);
      expectError(await admin.post(`/api/v1/apps/${MISSING}/publish`), 404, 10404);
      expectError(await admin.post(`/api/v1/apps/${MISSING}/status`, { online: true }), 404, 10404);
      expectError(await admin.get(`/api/v1/apps/${MISSING}/versions`), 404, 10404);
      const bad = await admin.post(`/api/v1/apps/${demo.id}/status`, { online: 'yes' });
      expect(errorPaths(bad)).toEqual(['body/online']);
      expect(await onlineNames(user)).toContain('Demo chat');
    });
  });

  describe('POST /apps/{id}/validate', () => {
    it("validates the given graph, else the draft's, answering 200 with every problem", async () => {
      const app = await create({ kind: 'workflow', graph: validGraph });
      const draft = await admin.post(`/api/v1/apps/${app.id}/validate`, {});
      expect(draft.status).toBe(200);
      expect(draft.body.data).toEqual({ ok: true, problems: [] });
      const given = await admin.post(`/api/v1/apps/${app.id}/validate`, { graph: brokenGraph });
      expect(given.status).toBe(200);
      expect(given.body.data.ok).toBe(false);
      expect([...new Set(given.body.data.problems.map((p: { code: string }) => p.code))].sort()).toEqual(BROKEN_CODES);
      expect(given.body.data.problems).toContainEqual({ code: 'dangling_edge', message: expect.any(String), edge: 3 });
      const garbage = await admin.post(`/api/v1/apps/${app.id}/validate`, { graph: 'nodes' });
      expect(garbage.body.data).toEqual({ ok: false, problems: [{ code: 'invalid_graph', message: expect.any(String) }] });
    });

    it('is for admins only; unknown ids → 10404; a body that is not an object → 10400', async () => {
      const app = await create({ kind: 'workflow' });
      expectError(await user.post(`/api/v1/apps/${app.id}/validate`, {}), 403, 10403);
      expectError(await admin.post(`/api/v1/apps/${MISSING}/validate`, {}), 404, 10404);
      expectError(await admin.post(`/api/v1/apps/${app.id}/validate`, [1]), 400, 10400);
    });
  });

  describe('DELETE /apps/{id}', () => {
    it('soft-deletes with an audit row; the app then answers 10420 everywhere', async () => {
      const app = await create({ name: 'Doomed' });
      await admin.post(`/api/v1/apps/${app.id}/publish`);
      await admin.post(`/api/v1/apps/${app.id}/status`, { online: true });
      expect(await onlineNames(user)).toContain('Doomed');

      expectError(await user.delete(`/api/v1/apps/${app.id}`), 403, 10403);
      const r = await admin.delete(`/api/v1/apps/${app.id}`);
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ status_code: 200, status_message: 'SUCCESS', data: null });

      const audit = await server.handle.services.repos.audit.list({ action: 'app.delete', objectId: app.id, page: 1, limit: 10 });
      expect(audit.list).toEqual([expect.objectContaining({ object_type: 'app', ip: '127.0.0.1', user_id: expect.any(Number) })]);

      expect(await onlineNames(user)).not.toContain('Doomed');
      expect((await admin.get('/api/v1/apps?limit=100')).body.data.list.map((a: { name: string }) => a.name)).not.toContain('Doomed');
      expectError(await admin.get(`/api/v1/apps/${app.id}`), 404, 10420);
      expectError(await user.get(`/api/v1/apps/${app.id}`), 404, 10420);
      expectError(await admin.put(`/api/v1/apps/${app.id}`, { name: 'Back' }), 404, 10420);
      expectError(await admin.post(`/api/v1/apps/${app.id}/publish`), 404, 10420);
      expectError(await admin.post(`/api/v1/apps/${app.id}/status`, { online: true }), 404, 10420);
      expectError(await admin.get(`/api/v1/apps/${app.id}/versions`), 404, 10420);
      expectError(await admin.post(`/api/v1/apps/${app.id}/validate`, {}), 404, 10420);
      expectError(await admin.delete(`/api/v1/apps/${app.id}`), 404, 10420);
      expectError(await admin.delete(`/api/v1/apps/${MISSING}`), 404, 10404);
    });
  });

  it('documents request and response schemas of every app endpoint in /openapi.json', async () => {
    const doc = (await new Api(server.url).get('/openapi.json')).body;
    const ops: Array<[string, string, boolean]> = [
      ['/api/v1/apps', 'post', true], ['/api/v1/apps', 'get', false], ['/api/v1/apps/{id}', 'get', false], ['/api/v1/apps/{id}', 'put', true],
      ['/api/v1/apps/{id}', 'delete', false], ['/api/v1/apps/{id}/publish', 'post', false], ['/api/v1/apps/{id}/status', 'post', true],
      ['/api/v1/apps/{id}/versions', 'get', false], ['/api/v1/apps/{id}/validate', 'post', true], ['/api/v1/chat/online', 'get', false],
    ];
    for (const [path, method, hasBody] of ops) {
      const op = doc.paths[path]?.[method];
      expect(op, `${method} ${path}`).toBeDefined();
      expect(op.responses['200'].content['application/json'].schema, `${method} ${path}`).toBeDefined();
      if (hasBody) expect(op.requestBody.content['application/json'].schema, `${method} ${path}`).toBeDefined();
    }
  });
});
