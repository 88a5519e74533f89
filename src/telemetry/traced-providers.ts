import type { LlmProvider } from '../domain/llm.ts';
import type { Tracer } from '../domain/tracing.ts';

/** The providers of `lookup`, each model call a span (`llm.call`, a child of the turn's). */
export function tracedProviders(lookup: { get(name: string): LlmProvider }, tracer: Tracer): { get(name: string): LlmProvider } {
  const traced = new Map<LlmProvider, LlmProvider>();
  return {
    get(name) {
      const provider = lookup.get(name);
      let t = traced.get(provider);
      if (!t) {
        t = {
          name: provider.name,
          stream: (request, onChunk) => tracer.start('llm.call', { 'llm.provider': provider.name, 'llm.model': request.model ?? '' }, (span) =>
            provider.stream(request, onChunk).then(() => span.end(), (err: unknown) => {
              span.end(err);
              throw err;
            })),
        };
        traced.set(provider, t);
      }
      return t;
    },
  };
}
