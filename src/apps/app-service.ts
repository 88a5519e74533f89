import { AppError, type FieldError } from '../domain/errors.ts';
import { FLOW_TYPE, newId, type AppKind, type AppSpec } from '../domain/types.ts';
import { validateGraph, type Problem } from '../runtimes/workflow/graph-validate.ts';
import type { AppListFilter } from '../storage/app-repo.ts';
import type { Repos } from '../storage/repos.ts';
import type { AppRow, AppVersionRow } from '../storage/tables.ts';
import { DEMO_APPS } from './demo-apps.ts';

export const parseSpec = (json: string): AppSpec => JSON.parse(json) as AppSpec;

/** The app's own columns plus the spec fields, as a client sends them (all optional on update). */
export type AppFields = Partial<AppSpec> & { name?: string; kind?: AppKind; description?: string; icon?: string };

/** What a publish checks against: the configured providers and tools, and the workflow step budget. */
export interface BuildRules {
  providers: readonly string[];
  tools?: readonly string[] | undefined;
  maxSteps: number;
}

const SPEC_DEFAULTS: AppSpec = { model: { provider: 'default' }, prompt: '', tools: [], guide_word: '', guide_questions: [] };
const SPEC_KEYS = ['model', 'prompt', 'tools', 'guide_word', 'guide_questions', 'history_window', 'max_steps', 'graph'] as const;
const COLUMN_KEYS = ['name', 'description', 'icon'] as const;

/** Only the named keys that are set: clients may send fields Parley does not store. */
const pick = <T extends object, K extends keyof T>(o: T, keys: readonly K[]): Partial<Pick<T, K>> =>
  Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]])) as Partial<Pick<T, K>>;

/** The only code that decides what an app looks like on the wire; `spec` only where one was loaded. */
export const presentApp = (app: AppRow, spec?: AppSpec) => ({
  id: app.id,
  name: app.name,
  description: app.description,
  icon: app.icon,
  kind: app.kind,
  flow_type: FLOW_TYPE[app.kind],
  online: app.online === 1,
  published_version: app.published_version,
  user_id: app.user_id,
  create_time: app.create_time,
  update_time: app.update_time,
  ...(spec && { spec }),
});

export const presentVersion = (v: AppVersionRow) => ({ app_id: v.app_id, version: v.version, user_id: v.user_id, create_time: v.create_time, spec: parseSpec(v.spec) });

const problemPath = (p: Problem) => (p.node_id !== undefined ? `graph/nodes/${p.node_id}` : p.edge !== undefined ? `graph/edges/${p.edge}` : 'graph');

/** Apps: drafts, published versions, online status. Pure orchestration over the repositories. */
export class AppService {
  /** parsed specs of published versions, which never change once published (`appId:version`) */
  private readonly published = new Map<string, AppSpec>();

  constructor(private readonly repos: Repos) {}

  async get(id: string): Promise<AppRow> {
    const app = await this.repos.apps.get(id);
    if (!app) throw AppError.notFound('App not found');
    return app;
  }

  /** The spec a chat runs: the published version, or the draft in debug mode. */
  async specFor(app: AppRow, opts: { draft: boolean; version?: number | undefined }): Promise<AppSpec> {
    if (opts.draft) return parseSpec(app.draft);
    const version = opts.version ?? app.published_version;
    if (version === null) throw new AppError('app_offline', 'App has no published version');
    const key = `${app.id}:${version}`;
    const cached = this.published.get(key);
    if (cached) return cached;
    const row = await this.repos.apps.getVersion(app.id, version);
    if (!row) throw AppError.notFound('App version not found');
    const spec = parseSpec(row.spec);
    // read on every question of every conversation; a bounded cache, oldest entry out first
    if (this.published.size >= 1000) this.published.delete(this.published.keys().next().value!);
    this.published.set(key, spec);
    return spec;
  }

  /** A new draft: offline, unpublished, with the spec defaults filled in. */
  create(fields: AppFields & { name: string; kind: AppKind }, userId: number): Promise<AppRow> {
    const spec: AppSpec = { ...SPEC_DEFAULTS, ...pick(fields, SPEC_KEYS) };
    return this.repos.apps.create({
      id: newId(), name: fields.name, description: fields.description ?? '', icon: fields.icon ?? '', kind: fields.kind, user_id: userId, draft: JSON.stringify(spec),
    });
  }

  /** Saves the draft; it may be invalid until it is published. */
  update(app: AppRow, fields: AppFields): Promise<AppRow> {
    if (fields.kind !== undefined && fields.kind !== app.kind) throw AppError.invalid([{ path: 'body/kind', message: 'the kind of an app cannot change' }]);
    const draft = JSON.stringify({ ...parseSpec(app.draft), ...pick(fields, SPEC_KEYS) });
    return this.repos.apps.update(app.id, { ...pick(fields, COLUMN_KEYS), draft });
  }

  async remove(app: AppRow, actor: { userId: number; ip: string }): Promise<void> {
    await this.repos.apps.softDelete(app.id);
    await this.repos.audit.record({ user_id: actor.userId, action: 'app.delete', object_type: 'app', object_id: app.id, ip: actor.ip });
  }

  /** Problems of the given graph, else of the draft's. */
  validate(app: AppRow, graph: unknown, rules: BuildRules): Problem[] {
    return validateGraph(graph === undefined ? parseSpec(app.draft).graph : graph, rules);
  }

  /** Freezes the draft as the next version, once it builds; nothing is stored otherwise. */
  async publish(app: AppRow, userId: number, rules: BuildRules): Promise<AppVersionRow> {
    const spec = parseSpec(app.draft);
    if (app.kind === 'workflow') {
      const problems = validateGraph(spec.graph, rules);
      if (problems.length) {
        const errors: FieldError[] = problems.map((p) => ({ path: problemPath(p), message: p.message }));
        throw new AppError('invalid_request', `The workflow has ${problems.length} problem(s)`, { data: { errors, problems } });
      }
    }
    if (!rules.providers.includes(spec.model.provider)) throw new AppError('app_unbuildable', `Model provider "${spec.model.provider}" is not configured`);
    return this.repos.apps.publish(app.id, app.draft, userId);
  }

  /** Going online needs a published version (10400: the request asks for a state the app cannot take yet). */
  setOnline(app: AppRow, online: boolean): Promise<AppRow> {
    if (online && app.published_version === null) throw AppError.invalid([{ path: 'body/online', message: 'publish the app before putting it online' }]);
    return this.repos.apps.update(app.id, { online: online ? 1 : 0 });
  }

  /** A page of apps, each with its published spec (the lists users chat from). */
  async listPublished(filter: AppListFilter): Promise<Array<{ app: AppRow; spec: AppSpec }>> {
    const { list } = await this.repos.apps.list({ ...filter, onlineOnly: true });
    const specs = new Map((await this.repos.apps.publishedSpecs(list.map((a) => a.id))).map((r) => [r.app_id, parseSpec(r.spec)]));
    return list.flatMap((app) => {
      const spec = specs.get(app.id);
      return spec ? [{ app, spec }] : [];
    });
  }

  /** Seeds the three demo apps on an empty database: online, published, on the `default` provider. */
  async seedDemoApps(ownerId: number): Promise<AppRow[]> {
    const { total } = await this.repos.apps.list({ page: 1, limit: 1 });
    if (total > 0) return [];
    const out: AppRow[] = [];
    for (const demo of DEMO_APPS) {
      const spec = JSON.stringify(demo.spec);
      const app = await this.repos.apps.create({ id: newId(), name: demo.name, description: demo.description, icon: '', kind: demo.kind as AppKind, user_id: ownerId, draft: spec, online: 1 });
      await this.repos.apps.publish(app.id, spec, ownerId);
      out.push((await this.repos.apps.get(app.id))!);
    }
    return out;
  }
}
