import { randomUUID } from 'node:crypto';
import type { AppService } from '../apps/app-service.ts';
import type { Bus } from '../bus/bus.ts';
import type { Config } from '../config/config.ts';
import type { Clock } from '../domain/clock.ts';
import type { Tracer } from '../domain/tracing.ts';
import { AppError } from '../domain/errors.ts';
import type { LlmProvider } from '../domain/llm.ts';
import type { Principal } from '../domain/types.ts';
import type { Runtime } from '../runtimes/runtime.ts';
import type { WorkflowExecutor } from '../runtimes/workflow/executor.ts';
import type { Repos } from '../storage/repos.ts';
import { ChatTurns, type AskInput, type ToolLookup } from './chat-turns.ts';
import { clientIdKey, type ClientIdStore } from './client-ids.ts';
import type { Moderation } from './moderation.ts';
import type { RateLimiter } from './rate-limiter.ts';
import type { RunStore } from './run-store.ts';
import { Targets, type ChatTarget, type TargetOptions } from './targets.ts';
import type { TurnControl } from './turn-control.ts';
import { TurnRegistry, type TurnObserver, type TurnStarted } from './turn-registry.ts';
import { TurnSeqs } from './turn-seqs.ts';
import { TurnSweeper } from './turn-sweeper.ts';
import { WorkflowSegments } from './workflow-segments.ts';
import { WorkflowTurns, type WorkflowAnswerInput, type WorkflowStartInput, type WorkflowStatus } from './workflow-turns.ts';

/** how long a stop waits for the instance that runs the turn to close it */
const STOP_WAIT_MS = 5000;

/**
 * The chat core, as the transports call it: they resolve a target, start turns, stop them, and
 * watch the bus for their events. Every turn has one life cycle (turn-registry.ts); chat and
 * assistant answers are chat-turns.ts, workflow segments workflow-turns.ts.
 */
export class ChatService implements TurnControl {
  private readonly targets: Targets;
  private readonly turns: TurnRegistry;
  private readonly seqs: TurnSeqs;
  private readonly clientIds: ClientIdStore;
  private readonly chats: ChatTurns;
  private readonly workflows: WorkflowTurns;
  private readonly sweeper: TurnSweeper;

  constructor(private readonly deps: {
    config: Config; repos: Repos; bus: Bus; apps: AppService; providers: { get(name: string): LlmProvider }; tools: ToolLookup;
    /** runs chat and assistant answers */
    runtime: Runtime;
    /** runs workflow apps (its code sandbox is the composition root's) */
    executor: WorkflowExecutor;
    /** where workflow runs wait: a stored conversation's, and an unstored one's */
    runs: { stored: RunStore; scratch: RunStore };
    rate: RateLimiter;
    /** the turns client_message_ids started (chat.replay_ttl) */
    clientIds: ClientIdStore;
    moderation: Moderation;
    clock: Clock;
    /** this instance, as the owner of the turns it runs */
    instanceId: string;
    /**
     * whether another process may be running turns of this database (PostgreSQL, or a shared bus);
     * if not, every running turn found at start is a dead one
     */
    shared: boolean;
    /** counts turns (metrics) */
    observer?: TurnObserver | undefined;
    /** traces turns */
    tracer?: Tracer | undefined;
    log?: { error(obj: object, msg: string): void; warn?(obj: object, msg: string): void };
  }) {
    const { config, repos, bus, clock, log } = deps;
    this.targets = new Targets(deps);
    const owner = { id: deps.instanceId, leaseMs: config.chat.turn_lease * 1000, clock };
    this.seqs = new TurnSeqs(repos.conversations, owner);
    this.turns = new TurnRegistry({ bus, seqs: this.seqs, clock, observer: deps.observer, tracer: deps.tracer, replayTtl: config.chat.replay_ttl, log });
    this.sweeper = new TurnSweeper({ repos, bus, turns: this.turns, seqs: this.seqs, owner, replayTtl: config.chat.replay_ttl, log });
    this.sweeper.start({ all: !deps.shared });
    this.clientIds = deps.clientIds;
    const common = { turns: this.turns, seqs: this.seqs, rate: deps.rate, targets: this.targets };
    this.chats = new ChatTurns({ ...common, config, repos, moderation: deps.moderation, runtime: deps.runtime, providers: deps.providers, tools: deps.tools, clock, log });
    const segments = new WorkflowSegments({ config, messages: repos.messages, executor: deps.executor, providers: deps.providers, tools: deps.tools, clock, log });
    this.workflows = new WorkflowTurns({ ...common, messages: repos.messages, segments, runs: deps.runs });
  }

  /** Resolves what a socket or request may chat with (targets.ts). */
  resolveTarget(p: Principal, appId: string, opts: TargetOptions): Promise<ChatTarget> {
    return this.targets.resolve(p, appId, opts);
  }

  /** A bus key for unstored turns (debug mode, stateless API calls): one per socket or request, forgotten with `forgetScratch`. */
  newScratchKey(): string {
    return `scratch:${randomUUID()}`;
  }

  isRunning(key: string): boolean {
    return this.turns.isRunning(key);
  }

  /** Turns running on this instance now. */
  get running(): number {
    return this.turns.size;
  }

  /** Starts a turn. Throws 10413 (too long), 10429 (rate), 10409 (one is running), 10400. */
  async ask(input: AskInput): Promise<TurnStarted> {
    const { principal, target } = input;
    this.turns.assertOpen();
    const max = this.deps.config.chat.max_message_length;
    if (input.text.length > max) throw new AppError('too_large', `Message longer than ${max} characters`);
    if (!input.text.trim()) throw AppError.invalid([{ path: 'inputs/input', message: 'must not be empty' }], 'Empty question');
    const key = this.keyOf(target, input.scratchKey);
    const idKey = clientIdKey(principal.id, key, input.clientMessageId);
    const seen = idKey ? await this.clientIds.seen(idKey) : null;
    if (seen) return seen;
    const started = target.app.kind === 'workflow' ? await this.workflows.ask(input, key) : await this.chats.ask(input, key);
    if (idKey) this.clientIds.remember(idKey, started);
    return started;
  }

  /** Answers the last question of a conversation again; the old answer stays as a sibling. */
  regenerate(principal: Principal, target: ChatTarget): Promise<TurnStarted> {
    return this.chats.regenerate(principal, target);
  }

  /** Marks a fresh context: the next turn sees no earlier message. */
  clearHistory(principal: Principal, target: ChatTarget): Promise<void> {
    return this.chats.clearHistory(principal, target);
  }

  /**
   * Stops the running turn of a stored conversation on whichever instance runs it; a workflow run
   * that waits for input is stopped too (a short segment stores it as stopped).
   * @returns whether a turn ran or a run waited here
   */
  stop(chatId: string): Promise<boolean> {
    return this.stopKey(chatId, chatId);
  }

  /** The same for the unstored turns of a scratch key. */
  stopScratch(key: string): Promise<boolean> {
    return this.stopKey(key, null);
  }

  private async stopKey(key: string, chatId: string | null): Promise<boolean> {
    if (await this.turns.stopLocal(key)) return true;
    // a run that waits here, unless another instance runs a turn of the conversation (10409): that one is stopped there
    const waited = await this.workflows.stopWaiting(key, chatId).catch((err: unknown) => {
      if (err instanceof AppError && err.code === 'conflict') return false;
      throw err;
    });
    if (waited) return true;
    if (chatId === null) return false;
    return this.stopElsewhere(chatId);
  }

  /**
   * Stops a turn that another instance runs (the conversation is taken in the database): the stop
   * travels on the bus, and this resolves once the turn has closed (true) or after STOP_WAIT_MS.
   */
  private async stopElsewhere(chatId: string): Promise<boolean> {
    const { bus, repos } = this.deps;
    const turnId = (await repos.conversations.get(chatId))?.turn_id;
    if (!turnId) return false;
    let off = () => undefined as void;
    let timer: NodeJS.Timeout | undefined;
    const closed = new Promise<boolean>((resolve) => {
      off = bus.subscribe(chatId, (e) => {
        if (e.turnId === turnId && e.body.kind === 'close') resolve(true);
      });
      timer = setTimeout(() => resolve(false), STOP_WAIT_MS);
    });
    try {
      await bus.whenSubscribed(chatId);
      // it may have ended meanwhile
      if ((await repos.conversations.get(chatId))?.turn_id !== turnId) return true;
      this.turns.stopElsewhere(chatId, turnId);
      return await closed;
    } finally {
      clearTimeout(timer);
      off();
    }
  }

  /** Forgets what a scratch key left behind (its seq counter, a waiting run) once its turn has ended. */
  forgetScratch(key: string): void {
    const forget = () => {
      this.seqs.forget(key);
      this.workflows.forget(key);
    };
    if (this.turns.isRunning(key)) void this.turns.settled(key).then(forget);
    else forget();
  }

  /** init_data: starts a new run of a workflow app. */
  startWorkflow(input: WorkflowStartInput): Promise<TurnStarted> {
    this.requireWorkflow(input.target);
    return this.workflows.start(input, this.keyOf(input.target, input.scratchKey));
  }

  /** `input`: answers the request the run waits for. */
  answerWorkflow(input: WorkflowAnswerInput): Promise<TurnStarted> {
    this.requireWorkflow(input.target);
    return this.workflows.answer(input, this.keyOf(input.target, input.scratchKey));
  }

  /** check_status: sends a pending request again, or says how the run stands. */
  async checkWorkflow(principal: Principal, target: ChatTarget, scratchKey?: string): Promise<WorkflowStatus> {
    this.requireWorkflow(target);
    return this.workflows.check(principal, target, this.keyOf(target, scratchKey));
  }

  /** Stops accepting turns, stops the running ones (their partial answers are stored) and waits for them. */
  async shutdown(): Promise<void> {
    await this.sweeper.stopSweeping();
    // their leases are renewed until they have ended, or another instance would take them over meanwhile
    await this.turns.shutdown();
    await this.sweeper.stop();
  }

  private keyOf(target: ChatTarget, scratchKey: string | undefined): string {
    return target.chatId ?? scratchKey ?? this.newScratchKey();
  }

  private requireWorkflow(target: ChatTarget): void {
    this.turns.assertOpen();
    if (target.app.kind !== 'workflow') throw AppError.invalid([{ path: 'action', message: `the app is a ${target.app.kind} app, not a workflow` }], 'Not a workflow app');
  }
}
