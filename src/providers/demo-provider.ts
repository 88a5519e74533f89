/**
 * The offline demo model: deterministic, local, clearly labelled. It streams a reply word by word,
 * calls `calculator` for arithmetic and `current_time` for time questions when those tools are
 * offered, and answers from the tool output afterwards, so every runtime path works without a key.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { LlmChunk, LlmMessage, LlmProvider, LlmRequest, LlmToolCall } from '../domain/llm.ts';

export interface DemoProviderOptions {
  name?: string;
  /** pause between streamed words; 0 streams as fast as possible, still yielding to the event loop */
  tokenDelayMs?: number | undefined;
}

const QUESTION_MAX = 500;
const TIME_QUESTION = /\b(time|date|today|day is it|what day|clock)\b/i;
/** a run of characters an arithmetic expression is made of */
const EXPRESSION_RUN = /[\d.+\-*/%^()\s]+/g;
/** …that holds at least one operator between two operands */
const BINARY_OP = /\d\s*\)*\s*[-+*/%^]\s*\(*\s*-?\s*\d/;

export class DemoProvider implements LlmProvider {
  readonly name: string;
  private readonly tokenDelayMs: number;

  constructor(options: DemoProviderOptions = {}) {
    this.name = options.name ?? 'demo';
    this.tokenDelayMs = options.tokenDelayMs ?? 15;
  }

  async stream(request: LlmRequest, onChunk: (chunk: LlmChunk) => void): Promise<void> {
    const { signal, messages } = request;
    const promptTokens = messages.reduce((n, m) => n + countWords(m.content), 0);
    let completionTokens = 0;
    const usage = () => ({ prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens });

    const call = this.toolCallFor(request);
    if (call) {
      if (!(await this.pause(signal))) return;
      completionTokens = countWords(JSON.stringify(call.args));
      onChunk({ type: 'tool_call', call });
      onChunk({ type: 'finish', reason: 'tool_calls', usage: usage() });
      return;
    }

    const { reasoning, text } = reply(messages);
    for (const [type, words] of [['reasoning', reasoning], ['text', text]] as const) {
      for (const word of splitWords(words)) {
        if (!(await this.pause(signal))) return;
        completionTokens++;
        onChunk({ type, text: word });
      }
    }
    onChunk({ type: 'finish', reason: 'stop', usage: usage() });
  }

  /** @returns false when the caller aborted: the stream then ends quietly */
  private async pause(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return false;
    try {
      if (this.tokenDelayMs > 0) await sleep(this.tokenDelayMs, undefined, { signal });
      else await new Promise<void>((resolve) => setImmediate(resolve));
    } catch {
      return false;
    }
    return !signal.aborted;
  }

  private toolCallFor(request: LlmRequest): LlmToolCall | null {
    const last = request.messages.at(-1);
    if (last?.role !== 'user' || !request.tools?.length) return null;
    const offered = (name: string) => request.tools!.some((t) => t.name === name);
    const id = `call_demo_${request.messages.length}`;
    const expression = findExpression(last.content);
    if (expression && offered('calculator')) return { id, name: 'calculator', args: { expression } };
    if (TIME_QUESTION.test(last.content) && offered('current_time')) return { id, name: 'current_time', args: {} };
    return null;
  }
}

/** The deterministic answer: from tool results when the model just called tools, else an echo. */
function reply(messages: LlmMessage[]): { reasoning: string; text: string } {
  const results: Array<Extract<LlmMessage, { role: 'tool' }>> = [];
  for (let i = messages.length - 1; i >= 0 && messages[i]!.role === 'tool'; i--) results.unshift(messages[i] as Extract<LlmMessage, { role: 'tool' }>);
  if (results.length > 0) return { reasoning: '', text: results.map(describeResult).join(' ') };

  const question = [...messages].reverse().find((m) => m.role === 'user')?.content.trim() ?? '';
  if (!question) {
    return { reasoning: '', text: "Hello! This is Parley's offline demo model. Configure llm.providers (or PARLEY_LLM_BASE_URL) to talk to a real model." };
  }
  const quoted = question.length > QUESTION_MAX ? `${question.slice(0, QUESTION_MAX)}…` : question;
  return {
    reasoning: question.endsWith('?') ? 'The user asked a question. As the demo model, I will repeat it back.' : '',
    text: `This is Parley's offline demo model. You said: "${quoted}". Configure llm.providers (or PARLEY_LLM_BASE_URL) to talk to a real model.`,
  };
}

function describeResult(result: Extract<LlmMessage, { role: 'tool' }>): string {
  const output = result.content.trim();
  if (result.toolName === 'calculator') return `The result is ${output}.`;
  if (result.toolName === 'current_time') return `The current time is ${output}.`;
  return `The ${result.toolName} tool returned: ${output}`;
}

/** The longest arithmetic-looking run in the text, e.g. "12 * (3 + 4)" in "What is 12 * (3 + 4)?". */
export function findExpression(text: string): string | null {
  let best: string | null = null;
  for (const [run] of text.matchAll(EXPRESSION_RUN)) {
    const candidate = trimParens(run.trim());
    if (BINARY_OP.test(candidate) && (!best || candidate.length > best.length)) best = candidate;
  }
  return best;
}

/** Drops unmatched parentheses at either end ("(what is 2+3)" leaves "2+3)" → "2+3"). */
function trimParens(s: string): string {
  let depth = 0;
  for (const c of s) depth += c === '(' ? 1 : c === ')' ? -1 : 0;
  while (depth > 0 && s.startsWith('(')) { s = s.slice(1).trim(); depth--; }
  while (depth < 0 && s.endsWith(')')) { s = s.slice(0, -1).trim(); depth++; }
  return s;
}

/** Words with their leading spaces, so the pieces concatenate back to the text. */
function splitWords(text: string): string[] {
  return text.match(/\s*\S+/g) ?? [];
}

function countWords(text: string): number {
  return text.match(/\S+/g)?.length ?? 0;
}
