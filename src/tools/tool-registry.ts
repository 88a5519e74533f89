import type { Config } from '../config/config.ts';
import { ConfigError } from '../config/config.ts';
import type { LlmToolSpec, Tool } from '../domain/llm.ts';
import { createCalculatorTool } from './calculator-tool.ts';
import { createCurrentTimeTool, type CurrentTimeOptions } from './current-time-tool.ts';
import { createHttpTool } from './http-tool.ts';

/** The tools a runtime may hand to a model, by name. Names are unique. */
export class ToolRegistry {
  // a Map, so names such as "__proto__" or "constructor" never reach a prototype
  private readonly tools = new Map<string, Tool>();

  /** Adds a tool; a name that is already taken is a programming or configuration error. */
  register(tool: Tool): this {
    const name = tool.spec.name;
    if (this.tools.has(name)) throw new Error(`A tool named "${name}" is already registered`);
    this.tools.set(name, tool);
    return this;
  }

  get(name: string): Tool | undefined {
    return this.tools.get(name);
  }

  has(name: string): boolean {
    return this.tools.has(name);
  }

  names(): string[] {
    return [...this.tools.keys()];
  }

  specs(): LlmToolSpec[] {
    return [...this.tools.values()].map((t) => t.spec);
  }

  /** The tools an app asks for, in its order and without repeats; names no tool answers to come back in `unknown`. */
  resolve(names: readonly string[]): { tools: Tool[]; unknown: string[] } {
    const tools: Tool[] = [];
    const unknown: string[] = [];
    for (const name of new Set(names)) {
      const tool = this.tools.get(name);
      if (tool) tools.push(tool);
      else unknown.push(name);
    }
    return { tools, unknown };
  }
}

export interface CreateToolsOptions {
  /** clock for `current_time` (tests) */
  now?: CurrentTimeOptions['now'];
}

export const BUILTIN_TOOL_NAMES = ['calculator', 'current_time'] as const;

/**
 * The built-ins plus one tool per `tools.http` entry. Every problem of every entry is reported at
 * once as a ConfigError, so a bad tool stops the start instead of failing on its first call.
 */
export function createTools(config: Pick<Config, 'tools'>, options: CreateToolsOptions = {}): ToolRegistry {
  const registry = new ToolRegistry()
    .register(createCalculatorTool())
    .register(createCurrentTimeTool(options.now ? { now: options.now } : {}));
  const problems: string[] = [];
  // names of entries that failed to build count too, so a duplicate is reported alongside their problems
  const taken = new Set(registry.names());
  for (const def of config.tools.http) {
    if (taken.has(def.name)) {
      problems.push(`tools.http "${def.name}": the name is already taken${(BUILTIN_TOOL_NAMES as readonly string[]).includes(def.name) ? ' by a built-in tool' : ''}`);
      continue;
    }
    taken.add(def.name);
    try {
      registry.register(createHttpTool(def, config.tools));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
    }
  }
  // a bad tools.allowed_hosts entry is reported by every HTTP tool: list it once
  if (problems.length > 0) throw new ConfigError([...new Set(problems)]);
  return registry;
}
