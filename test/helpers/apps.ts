import type { Api } from './server.ts';

export interface AppInput {
  name?: string;
  kind: 'chat' | 'assistant' | 'workflow';
  provider?: string;
  prompt?: string;
  tools?: string[];
  graph?: unknown;
  max_steps?: number;
}

/** Creates an app through the REST API, publishes it and puts it online; returns its id. */
export async function publishedApp(admin: Api, input: AppInput): Promise<string> {
  const created = await admin.post('/api/v1/apps', {
    name: input.name ?? `Test ${input.kind}`, kind: input.kind, model: { provider: input.provider ?? 'default' },
    prompt: input.prompt ?? 'You are a test assistant.', tools: input.tools ?? [], ...(input.graph ? { graph: input.graph } : {}),
  });
  if (created.status !== 200) throw new Error(`create app: ${JSON.stringify(created.body)}`);
  const id = created.body.data.id as string;
  const published = await admin.post(`/api/v1/apps/${id}/publish`, {});
  if (published.status !== 200) throw new Error(`publish app: ${JSON.stringify(published.body)}`);
  const online = await admin.post(`/api/v1/apps/${id}/status`, { online: true });
  if (online.status !== 200) throw new Error(`online app: ${JSON.stringify(online.body)}`);
  return id;
}

export const newChatId = (): string => crypto.randomUUID().replaceAll('-', '');
