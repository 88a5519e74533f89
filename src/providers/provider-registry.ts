/**
 * The LLM providers of one process, by name, built once from `config.llm.providers`. The provider
 * named `default` always exists (the offline demo model unless configured otherwise).
 */
import type { Config } from '../config/config.ts';
import { AppError } from '../domain/errors.ts';
import type { LlmProvider } from '../domain/llm.ts';
import { DemoProvider } from './demo-provider.ts';
import { OpenAiCompatibleProvider } from './openai-compatible-provider.ts';

export class ProviderRegistry {
  private readonly providers = new Map<string, LlmProvider>();

  constructor(providers: Iterable<LlmProvider> = []) {
    for (const p of providers) this.register(p);
  }

  /** Adds a provider, replacing one of the same name (tests inject fakes this way). */
  register(provider: LlmProvider): this {
    this.providers.set(provider.name, provider);
    return this;
  }

  /** @throws AppError `app_unbuildable` (10422) when no provider has that name */
  get(name: string): LlmProvider {
    const provider = this.providers.get(name);
    if (!provider) throw new AppError('app_unbuildable', 'model not configured', { data: { provider: name } });
    return provider;
  }

  has(name: string): boolean {
    return this.providers.has(name);
  }

  names(): string[] {
    return [...this.providers.keys()];
  }
}

export function createProviders(config: Config): ProviderRegistry {
  const registry = new ProviderRegistry();
  for (const [name, p] of Object.entries(config.llm.providers)) {
    registry.register(p.type === 'demo'
      ? new DemoProvider({ name, tokenDelayMs: p.token_delay_ms })
      : OpenAiCompatibleProvider.fromConfig(name, p, config.llm));
  }
  if (!registry.has('default')) registry.register(new DemoProvider({ name: 'default' }));
  return registry;
}
