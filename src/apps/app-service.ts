import { AppError } from '../domain/errors.ts';
import { newId, type AppKind, type AppSpec } from '../domain/types.ts';
import type { Repos } from '../storage/repos.ts';
import type { AppRow } from '../storage/tables.ts';
import { DEMO_APPS } from './demo-apps.ts';

export const parseSpec = (json: string): AppSpec => JSON.parse(json) as AppSpec;

/** Apps: drafts, published versions, online status. Pure orchestration over the repositories. */
export class AppService {
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
    const row = await this.repos.apps.getVersion(app.id, version);
    if (!row) throw AppError.notFound('App version not found');
    return parseSpec(row.spec);
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
