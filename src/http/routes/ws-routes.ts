import type {} from '@fastify/websocket';
import { Type } from '@sinclair/typebox';
import type { AppKind } from '../../domain/types.ts';
import type { WsGateway } from '../../ws/ws-gateway.ts';
import type { App } from '../app.ts';

const PATHS: Array<[string, AppKind | undefined]> = [
  ['/api/v1/chat/:app_id', undefined],
  ['/api/v1/assistant/chat/:app_id', 'assistant'],
  ['/api/v1/workflow/chat/:app_id', 'workflow'],
];

/** The WebSocket chat endpoints (PROTOCOL.md §3); authentication happens in the gateway. */
export function registerWsRoutes(app: App, gateway: WsGateway): void {
  for (const [path, kind] of PATHS) {
    app.get(path, {
      websocket: true,
      config: { public: true },
      schema: {
        tags: ['chat'],
        summary: `WebSocket chat${kind ? ` (${kind} apps)` : ''}: upgrade with a JWT (header, \`t\` or cookie); frames per PROTOCOL.md §3`,
        params: Type.Object({ app_id: Type.String() }),
        querystring: Type.Object({
          chat_id: Type.Optional(Type.String()), version_id: Type.Optional(Type.String()), t: Type.Optional(Type.String()), last_seq: Type.Optional(Type.String()),
        }),
        response: { 101: Type.Null({ description: 'Switching Protocols' }) },
      },
    }, (socket, req) => {
      void gateway.accept(socket, {
        headers: req.headers, query: req.query as Record<string, unknown>, cookies: req.cookies, appId: (req.params as { app_id: string }).app_id, kind,
        transport: req.socket,
      });
    });
  }
}
