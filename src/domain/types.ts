/** The caller of a request, after authentication. */
export interface Principal {
  id: number;
  user_name: string;
  role: 'admin' | 'user';
  /** set when the caller authenticated with an API key: the apps it is limited to (null = all) */
  apiKey?: { id: number; appIds: string[] | null };
}

export type AppKind = 'chat' | 'assistant' | 'workflow';

/** Bisheng's flow_type numbers for the app kinds. */
export const FLOW_TYPE: Record<AppKind, number> = { chat: 15, assistant: 5, workflow: 10 };
export const KIND_OF_FLOW_TYPE: Record<number, AppKind> = { 15: 'chat', 5: 'assistant', 10: 'workflow' };

export interface ModelSettings {
  provider: string;
  name?: string | undefined;
  temperature?: number | undefined;
  max_tokens?: number | undefined;
}

/** What an app is made of: saved as the draft, frozen into each published version. */
export interface AppSpec {
  model: ModelSettings;
  prompt: string;
  guide_word: string;
  guide_questions: string[];
  tools: string[];
  history_window?: number | undefined;
  max_steps?: number | undefined;
  graph?: WorkflowGraph | undefined;
}

export interface WorkflowGraph {
  nodes: Array<{ id: string; type: string; data?: Record<string, unknown> }>;
  edges: Array<{ source: string; target: string; sourceHandle?: string }>;
}

export const newId = (): string => crypto.randomUUID().replaceAll('-', '');
export const isHexId = (v: string): boolean => /^[0-9a-f]{32}$/.test(v);

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
