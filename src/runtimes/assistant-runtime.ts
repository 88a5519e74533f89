import { randomUUID } from 'node:crypto';
import { AppError } from '../domain/errors.ts';
import type { LlmMessage, LlmToolCall, LlmUsage } from '../domain/llm.ts';
import { addUsage, ZERO_USAGE, type Runtime, type RuntimeResult, type TurnContext } from './runtime.ts';

/**
 * The LLM loop shared by `chat` (no tools: one call) and `assistant` (tools, several steps up to
 * `max_steps`). Emits processing/start|stream|end per call and tool/start|end per tool call.
 */
export class AssistantRuntime implements Runtime {
  constructor(private readonly defaultMaxSteps = 5) {}

  async run(ctx: TurnContext): Promise<RuntimeResult> {
    const { spec, provider, signal } = ctx;
    const messages: LlmMessage[] = [];
    if (spec.prompt) messages.push({ role: 'system', content: spec.prompt });
    messages.push(...ctx.history, { role: 'user', content: ctx.question });
    const toolSpecs = ctx.tools.map((t) => t.spec);
    const maxSteps = ctx.tools.length ? (spec.max_steps ?? this.defaultMaxSteps) : 1;
    let usage: LlmUsage = ZERO_USAGE;

    for (let step = 0; step < maxSteps; step++) {
      ctx.emit({ kind: 'llm_start' });
      const calls: LlmToolCall[] = [];
      let text = '';
      try {
        await provider.stream({
          messages, tools: toolSpecs.length ? toolSpecs : undefined, model: spec.model.name,
          temperature: spec.model.temperature, maxTokens: spec.model.max_tokens, signal,
        }, (chunk) => {
          switch (chunk.type) {
            case 'text': text += chunk.text; ctx.emit({ kind: 'delta', content: chunk.text, reasoning: '' }); break;
            case 'reasoning': ctx.emit({ kind: 'delta', content: '', reasoning: chunk.text }); break;
            case 'tool_call': calls.push(chunk.call); break;
            case 'finish': usage = addUsage(usage, chunk.usage); break;
          }
        });
      } finally {
        ctx.emit({ kind: 'llm_end' });
      }
      if (calls.length === 0 || signal.aborted) return { usage };

      messages.push({ role: 'assistant', content: text, toolCalls: calls });
      for (const call of calls) {
        const runId = call.id || randomUUID().replaceAll('-', '');
        ctx.emit({ kind: 'tool_start', runId, toolKey: call.name, input: call.args });
        const { output, error } = await this.callTool(ctx, call);
        ctx.emit({ kind: 'tool_end', runId, toolKey: call.name, input: call.args, output, failed: error !== null });
        if (signal.aborted) return { usage };
        // a failed tool ends the turn with an error frame (the tool frames above show what failed)
        if (error) throw error;
        messages.push({ role: 'tool', toolCallId: call.id, toolName: call.name, content: output });
      }
    }
    throw new AppError('upstream_error', `The assistant did not finish within ${maxSteps} steps`);
  }

  private async callTool(ctx: TurnContext, call: LlmToolCall): Promise<{ output: string; error: AppError | null }> {
    const fail = (error: AppError) => ({ output: `Error: ${error.message}`, error });
    const tool = ctx.tools.find((t) => t.spec.name === call.name);
    if (!tool) return fail(new AppError('upstream_error', `The model called an unknown tool "${call.name}"`));
    if (call.rawArgs !== undefined && Object.keys(call.args).length === 0) {
      return fail(new AppError('upstream_error', `The model sent tool arguments that are not valid JSON for "${call.name}"`));
    }
    try {
      return { output: await tool.run(call.args, ctx.signal), error: null };
    } catch (err) {
      // tool messages are written for users (no internals), so they may be shown
      return fail(new AppError('internal', `Tool "${call.name}" failed: ${(err as Error).message}`));
    }
  }
}
