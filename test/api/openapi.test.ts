import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, startServer, type TestServer } from '../helpers/server.ts';

describe('OpenAPI document', () => {
  let server: TestServer;
  let doc: any;

  beforeAll(async () => {
    server = await startServer();
    doc = (await new Api(server.url).get('/openapi.json')).body;
  });
  afterAll(async () => server?.close());

  it('is OpenAPI 3 and the docs UI is served', async () => {
    expect(doc.openapi).toMatch(/^3\./);
    const ui = await fetch(`${server.url}/docs/`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('<html');
  });

  it('lists every endpoint of PROTOCOL.md §2, each with a response schema and its request schemas', () => {
    const documented = new Set<string>();
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) {
        documented.add(`${method.toUpperCase()} ${path}`);
        expect(op.responses?.['200'] ?? op.responses?.['201'], `${method} ${path} has no 200 response schema`).toBeDefined();
        const ok = op.responses['200'] ?? op.responses['201'];
        expect(ok.content, `${method} ${path} 200 has no content schema`).toBeDefined();
        if (['post', 'put'].includes(method) && !path.includes('logout') && !path.includes('/publish')) {
          expect(op.requestBody?.content?.['application/json']?.schema, `${method} ${path} has no request body schema`).toBeDefined();
        }
        for (const m of path.matchAll(/\{(\w+)\}/g)) {
          expect(op.parameters?.some((p: any) => p.in === 'path' && p.name === m[1]), `${method} ${path} lacks path param ${m[1]}`).toBe(true);
        }
      }
    }
    const expected = [
      'POST /api/v1/user/login', 'POST /api/v1/user/refresh', 'POST /api/v1/user/logout', 'GET /api/v1/user/info', 'POST /api/v1/user', 'GET /api/v1/user',
      'POST /api/v1/apikeys', 'GET /api/v1/apikeys', 'DELETE /api/v1/apikeys/{id}',
      'POST /api/v1/apps', 'GET /api/v1/apps', 'GET /api/v1/apps/{id}', 'PUT /api/v1/apps/{id}', 'DELETE /api/v1/apps/{id}',
      'POST /api/v1/apps/{id}/publish', 'POST /api/v1/apps/{id}/status', 'GET /api/v1/apps/{id}/versions', 'POST /api/v1/apps/{id}/validate',
      'GET /api/v1/chat/online', 'GET /api/v1/chat/list', 'GET /api/v1/chat/history', 'GET /api/v1/chat/info', 'GET /api/v1/chat/{chat_id}/export',
      'POST /api/v1/chat/conversation/rename', 'POST /api/v1/chat/conversation/copy', 'DELETE /api/v1/chat/{chat_id}',
      'POST /api/v1/chat/message', 'PUT /api/v1/chat/message/{message_id}', 'DELETE /api/v1/chat/message/{message_id}',
      'POST /api/v1/liked', 'POST /api/v1/chat/liked', 'POST /api/v1/chat/copied', 'POST /api/v1/chat/comment',
      'GET /api/v1/session/chat/history', 'GET /api/v1/session/chat/messages/{conversationId}', 'POST /api/v1/session/chat/message/telemetry',
      'POST /api/v1/chat/session/create', 'GET /api/v1/chat/session/list', 'GET /api/v1/chat/session/{chat_id}', 'PUT /api/v1/chat/session/{chat_id}', 'DELETE /api/v1/chat/session/{chat_id}',
      'GET /api/v1/chat/message/history', 'DELETE /api/v1/chat/message/delete', 'POST /api/v1/chat/interrupt',
      'GET /api/v1/chat/statistics', 'GET /api/v1/chat/messages/count', 'GET /api/v1/audit',
      'GET /health', 'GET /metrics',
    ];
    const missing = expected.filter((e) => !documented.has(e));
    expect(missing).toEqual([]);
  });

  it('documents request schemas with their constraints', () => {
    const login = doc.paths['/api/v1/user/login'].post.requestBody.content['application/json'].schema;
    expect(login.required).toEqual(expect.arrayContaining(['user_name', 'password']));
  });
});
