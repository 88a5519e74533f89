import { Type } from '@sinclair/typebox';
import { parseSpec, presentApp, presentVersion, type BuildRules } from '../../apps/app-service.ts';
import { appListScope, authorizeAppEdit, authorizeAppRead, canEditApps, requireAppEditor } from '../../auth/policy.ts';
import { KIND_OF_FLOW_TYPE } from '../../domain/types.ts';
import { WORKFLOW_GRAPH_SCHEMA } from '../../runtimes/workflow/workflow-graph.ts';
import type { App } from '../app.ts';
import { ok } from '../envelope.ts';
import type { Services } from '../services.ts';
import { Envelope, HexId, ListOf, Nullable, PageQuery } from '../schemas.ts';

const Kind = Type.Union([Type.Literal('chat'), Type.Literal('assistant'), Type.Literal('workflow')]);
const Keyword = Type.String({ maxLength: 128 });

const ModelSchema = Type.Object({
  provider: Type.String({ minLength: 1, maxLength: 64, description: 'a name under llm.providers' }),
  name: Type.Optional(Type.String({ maxLength: 256 })),
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
  max_tokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
});
// Nodes and edges keep extra fields (positions, labels) so a graph editor's state round-trips.
const NodeSchema = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128 }),
  type: Type.String({ minLength: 1, maxLength: 64, description: 'start, input, llm, condition, tool, code, output or end' }),
  data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: true });
const EdgeSchema = Type.Object({
  source: Type.String({ maxLength: 128 }),
  target: Type.String({ maxLength: 128 }),
  sourceHandle: Type.Optional(Type.String({ maxLength: 128 })),
}, { additionalProperties: true });
const GraphSchema = Type.Object({ nodes: Type.Array(NodeSchema, { maxItems: 500 }), edges: Type.Array(EdgeSchema, { maxItems: 2000 }) });

const SpecSchema = Type.Object({
  model: ModelSchema,
  prompt: Type.String({ maxLength: 100_000 }),
  tools: Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 64 }),
  guide_word: Type.String({ maxLength: 10_000 }),
  guide_questions: Type.Array(Type.String({ maxLength: 1000 }), { maxItems: 20 }),
  history_window: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
  max_steps: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  graph: Type.Optional(GraphSchema),
});

const AppBody = Type.Composite([
  Type.Object({
    name: Type.String({ minLength: 1, maxLength: 256, pattern: '\\S' }),
    kind: Kind,
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    icon: Type.Optional(Type.String({ maxLength: 2048 })),
  }),
  Type.Partial(SpecSchema),
]);

const AppSchema = Type.Object({
  id: HexId,
  name: Type.String(),
  description: Type.String(),
  icon: Type.String(),
  kind: Kind,
  flow_type: Type.Integer({ description: "Bisheng's flow_type: chat 15, assistant 5, workflow 10" }),
  online: Type.Boolean(),
  published_version: Nullable(Type.Integer()),
  user_id: Type.Integer(),
  create_time: Type.String(),
  update_time: Type.String(),
  spec: Type.Optional(Type.Composite([SpecSchema], { description: 'draft for admins, published spec for users; absent in lists' })),
});

const VersionSchema = Type.Object({ app_id: HexId, version: Type.Integer(), user_id: Type.Integer(), create_time: Type.String(), spec: SpecSchema });

const ProblemSchema = Type.Object({
  code: Type.String(),
  message: Type.String(),
  node_id: Type.Optional(Type.String()),
  edge: Type.Optional(Type.Integer({ description: 'index in graph.edges' })),
});

const OnlineAppSchema = Type.Composite([
  Type.Omit(AppSchema, ['spec']),
  Type.Object({
    logo: Type.String({ description: 'same as icon' }),
    status: Type.Integer({ description: "Bisheng's status: 2 online" }),
    guide_word: Type.String(),
    guide_questions: Type.Array(Type.String()),
  }),
]);

const IdParams = Type.Object({ id: HexId });

export function registerAppRoutes(app: App, { apps, repos, config, tools }: Services): void {
  const rules: BuildRules = { providers: Object.keys(config.llm.providers), tools: tools.names(), maxSteps: config.workflow.max_steps };
  const load = (id: string) => repos.apps.get(id);

  app.post('/api/v1/apps', {
    schema: { tags: ['apps'], summary: 'Create an app draft (admin); it starts offline and unpublished', body: AppBody, response: { 200: Envelope(AppSchema) } },
  }, async (req) => {
    requireAppEditor(req.principal!);
    const row = await apps.create(req.body, req.principal!.id);
    return ok(presentApp(row, parseSpec(row.draft)));
  });

  app.get('/api/v1/apps', {
    schema: {
      tags: ['apps'], summary: 'List apps: admins see every app, users the online, published ones',
      querystring: Type.Object({ ...PageQuery, kind: Type.Optional(Kind), keyword: Type.Optional(Keyword) }),
      response: { 200: Envelope(ListOf(AppSchema)) },
    },
  }, async (req) => {
    const { list, total } = await repos.apps.list({ ...req.query, ...appListScope(req.principal!) });
    return ok({ list: list.map((a) => presentApp(a)), total });
  });

  app.get('/api/v1/apps/:id', {
    schema: { tags: ['apps'], summary: 'One app with its draft (admins) or published spec (users)', params: IdParams, response: { 200: Envelope(AppSchema) } },
  }, async (req) => {
    const row = authorizeAppRead(req.principal!, await load(req.params.id));
    return ok(presentApp(row, await apps.specFor(row, { draft: canEditApps(req.principal!) })));
  });

  app.put('/api/v1/apps/:id', {
    schema: {
      tags: ['apps'], summary: 'Save the draft (admin); it may be invalid until published; kind cannot change',
      params: IdParams, body: Type.Partial(AppBody), response: { 200: Envelope(AppSchema) },
    },
  }, async (req) => {
    const row = await apps.update(authorizeAppEdit(req.principal!, await load(req.params.id)), req.body);
    return ok(presentApp(row, parseSpec(row.draft)));
  });

  app.delete('/api/v1/apps/:id', {
    schema: { tags: ['apps'], summary: 'Delete an app (admin; soft delete, audit-logged)', params: IdParams, response: { 200: Envelope(Type.Null()) } },
  }, async (req) => {
    await apps.remove(authorizeAppEdit(req.principal!, await load(req.params.id)), { userId: req.principal!.id, ip: req.ip });
    return ok(null);
  });

  app.post('/api/v1/apps/:id/publish', {
    schema: {
      tags: ['apps'], summary: 'Freeze the draft as a new version (admin); an invalid workflow is refused with every problem (10400)',
      params: IdParams, response: { 200: Envelope(VersionSchema) },
    },
  }, async (req) => {
    const row = authorizeAppEdit(req.principal!, await load(req.params.id));
    return ok(presentVersion(await apps.publish(row, req.principal!.id, rules)));
  });

  app.post('/api/v1/apps/:id/status', {
    schema: {
      tags: ['apps'], summary: 'Put an app online or offline (admin); online needs a published version (else 10400)',
      params: IdParams, body: Type.Object({ online: Type.Boolean() }), response: { 200: Envelope(AppSchema) },
    },
  }, async (req) => {
    const row = authorizeAppEdit(req.principal!, await load(req.params.id));
    return ok(presentApp(await apps.setOnline(row, req.body.online)));
  });

  app.get('/api/v1/apps/:id/versions', {
    schema: { tags: ['apps'], summary: 'Published versions, newest first (admin)', params: IdParams, response: { 200: Envelope(Type.Array(VersionSchema)) } },
  }, async (req) => {
    const row = authorizeAppEdit(req.principal!, await load(req.params.id));
    return ok((await repos.apps.listVersions(row.id)).map(presentVersion));
  });

  app.post('/api/v1/apps/:id/validate', {
    schema: {
      tags: ['apps'], summary: "Validate a workflow graph (admin): the given one, else the draft's; answers 200 with every problem",
      params: IdParams,
      body: Type.Object({ graph: Type.Optional(Type.Unknown({ description: 'any value: whatever is wrong with it is reported as a problem' })) }),
      response: { 200: Envelope(Type.Object({ ok: Type.Boolean(), problems: Type.Array(ProblemSchema) })) },
    },
  }, async (req) => {
    const row = authorizeAppEdit(req.principal!, await load(req.params.id));
    const problems = apps.validate(row, req.body.graph, rules);
    return ok({ ok: problems.length === 0, problems });
  });

  app.get('/api/v1/workflow/schema', {
    schema: {
      tags: ['apps'], summary: "The JSON Schema of a workflow graph (an app's `graph`): node types, their data, edges",
      response: { 200: Envelope(Type.Unknown({ description: 'JSON Schema (draft 2020-12 style) of {nodes, edges}' })) },
    },
  }, async () => ok(WORKFLOW_GRAPH_SCHEMA));

  app.get('/api/v1/chat/online', {
    schema: {
      tags: ['apps'], summary: 'Apps the caller may chat with (Bisheng: data is a plain array)',
      querystring: Type.Object({ ...PageQuery, keyword: Type.Optional(Keyword), flow_type: Type.Optional(Type.Integer()) }),
      response: { 200: Envelope(Type.Array(OnlineAppSchema)) },
    },
  }, async (req) => {
    const { page, limit, keyword, flow_type } = req.query;
    const kind = flow_type === undefined ? undefined : KIND_OF_FLOW_TYPE[flow_type];
    if (flow_type !== undefined && !kind) return ok([]);
    const found = await apps.listPublished({ page, limit, keyword, kind, ids: appListScope(req.principal!).ids });
    return ok(found.map(({ app: a, spec }) => ({
      ...presentApp(a), logo: a.icon, status: 2, guide_word: spec.guide_word, guide_questions: spec.guide_questions,
    })));
  });
}
