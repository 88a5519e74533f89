import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pino, { type DestinationStream, type Logger } from 'pino';
import { AppService } from './apps/app-service.ts';
import { AuthService } from './auth/auth-service.ts';
import { TokenService } from './auth/tokens.ts';
import { ConversationService } from './chat/conversation-service.ts';
import { FeedbackService } from './chat/feedback-service.ts';
import { ChatService } from './chat/chat-service.ts';
import { Moderation } from './chat/moderation.ts';
import { ClientIds } from './chat/client-ids.ts';
import { MemoryRateLimiter } from './chat/rate-limiter.ts';
import { DatabaseRunStore, MemoryRunStore } from './chat/run-store.ts';
import { MemoryBus } from './bus/memory-bus.ts';
import { RedisBus } from './bus/redis-bus.ts';
import { connectRedis, parseRedisUrl, whenReady, type RedisClient } from './redis/connect.ts';
import { RedisClientIds, RedisConnectionCounter, RedisRateLimiter } from './redis/redis-limits.ts';
import { systemClock, type Clock } from './domain/clock.ts';
import { noTracer, type Tracer } from './domain/tracing.ts';
import { isHexId } from './domain/types.ts';
import { activeTrace } from './telemetry/active-trace.ts';
import { tracedProviders } from './telemetry/traced-providers.ts';
import { AssistantRuntime } from './runtimes/assistant-runtime.ts';
import { createProviders } from './providers/provider-registry.ts';
import { CodeSandbox } from './runtimes/workflow/code-sandbox.ts';
import { WorkflowExecutor } from './runtimes/workflow/executor.ts';
import { createTools } from './tools/tool-registry.ts';
import { WsGateway } from './ws/ws-gateway.ts';
import type { Bus } from './bus/bus.ts';
import type { Config } from './config/config.ts';
import type { LlmProvider } from './domain/llm.ts';
import { buildApp, type App } from './http/app.ts';
import { Metrics } from './http/metrics.ts';
import type { Services } from './http/services.ts';
import { openDb, type Db } from './storage/db.ts';
import { migrateToLatest } from './storage/migrations.ts';
import { createRepos } from './storage/repos.ts';

export interface ServerHandle {
  app: App;
  services: Services;
  /** set when this start created the admin account */
  bootstrap: { password: string; generated: boolean } | null;
  /** http://host:port once listening */
  url: string;
  close(): Promise<void>;
}

export function createLogger(config: Config, destination?: DestinationStream): Logger {
  return pino({
    level: config.log.level,
    // a line logged within a traced turn names its trace (nothing while tracing is off)
    mixin: () => activeTrace() ?? {},
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie', 'password', '*.password'], censor: '[redacted]' },
  }, destination as DestinationStream);
}

export async function openDatabase(config: Config, logger?: Logger, metrics?: Metrics, tracer: Tracer = noTracer): Promise<Db> {
  const system = config.server.database_url ? 'postgresql' : 'sqlite';
  const db = openDb({
    onQuery: metrics ? (seconds) => {
      metrics.dbQueries.observe(seconds);
      const end = Date.now();
      tracer.record('db.statement', end - seconds * 1000, end, { 'db.system': system });
    } : undefined,
    url: config.server.database_url,
    dataDir: config.server.data_dir,
    onIdleError: (err) => logger?.warn({ err }, 'an idle database connection failed; the pool opens a new one'),
  });
  await migrateToLatest(db.kysely as never, db.dialect);
  return db;
}

/** The composition root: the only place that chooses implementations. */
export interface ServerOptions {
  logger?: Logger;
  bus?: Bus;
  /** extra LLM providers (tests) */
  providers?: LlmProvider[];
  /** the time the core reads (tests move it) */
  clock?: Clock;
}

/** how long a start waits for Redis before it serves without it (degraded, rejoining once Redis answers) */
const REDIS_START_WAIT_MS = 5000;

/**
 * The two Redis connections of an instance (commands, subscriptions). Connection errors are logged
 * when the link goes down and when it is back, not at every reconnect attempt.
 */
async function openRedis(url: string, logger: Logger): Promise<{ client: RedisClient; sub: RedisClient; close(): Promise<void> }> {
  const watch = (name: string) => {
    let down = false;
    const c = connectRedis(url, {}, (err) => {
      if (!down) logger.warn({ err, connection: name }, 'Redis unreachable: serving from this instance alone until it is back');
      down = true;
    });
    c.on('ready', () => {
      if (down) logger.info({ connection: name }, 'Redis is back');
      down = false;
    });
    return c;
  };
  const client = watch('commands');
  const sub = watch('subscriptions');
  if (!(await whenReady(client, REDIS_START_WAIT_MS))) logger.warn('Redis did not answer at start: starting degraded');
  // QUIT lets the commands still in the pipeline (a stopped turn's last events) reach Redis; a Redis that is away gets a second
  const quit = (c: RedisClient) => new Promise<void>((resolve) => {
    const timer = setTimeout(() => { c.disconnect(); resolve(); }, 1000);
    c.quit().catch(() => c.disconnect()).finally(() => { clearTimeout(timer); resolve(); });
  });
  return { client, sub, close: () => Promise.all([quit(client), quit(sub)]).then(() => undefined) };
}

export async function createServer(config: Config, opts: ServerOptions = {}): Promise<ServerHandle> {
  const logger = opts.logger ?? createLogger(config);
  const metrics = new Metrics();
  // who runs a turn, as the database and the other instances know this process (conversations.turn_owner
  // holds 64 characters: a long host name, a Kubernetes pod's, is cut)
  const instanceId = `${hostname().slice(0, 40)}:${process.pid}:${randomBytes(4).toString('hex')}`;
  const telemetry = config.telemetry.otlp_endpoint
    ? (await import('./telemetry/otel.ts')).otelTracer({ endpoint: config.telemetry.otlp_endpoint, serviceName: config.telemetry.service_name, instanceId })
    : null;
  const tracer = telemetry?.tracer ?? noTracer;
  const db = await openDatabase(config, logger, metrics, tracer);
  const repos = createRepos(db);

  const secret = config.auth.jwt_secret || (await repos.settings.getOrInit('jwt_secret', randomBytes(32).toString('base64url')));
  const tokens = new TokenService(secret, config.auth.jwt_issuer, { access: config.auth.access_token_ttl, refresh: config.auth.refresh_token_ttl });
  const auth = new AuthService(repos, tokens);
  const apps = new AppService(repos);

  const boot = await auth.bootstrapAdmin(config.auth.admin_password);
  if (boot.created) {
    const admin = (await repos.users.findByName('admin'))!;
    await apps.seedDemoApps(admin.id);
  }

  const clock = opts.clock ?? systemClock;
  const redis = config.server.redis_url ? await openRedis(config.server.redis_url, logger) : null;
  const bus = opts.bus ?? (redis
    ? new RedisBus(redis.client, redis.sub, {
      prefix: config.server.redis_prefix, replayTtl: config.chat.replay_ttl, now: () => clock.now(), instanceId,
      cluster: parseRedisUrl(config.server.redis_url).kind === 'cluster',
      // conversations are chat ids; the scratch keys of unstored turns never leave this instance
      shared: isHexId,
      onError: (err) => logger.debug({ err }, 'bus: Redis command failed'), onStored: (seconds) => metrics.busPublish.observe(seconds),
    })
    : new MemoryBus(() => clock.now()));
  const providers = createProviders(config);
  for (const p of opts.providers ?? []) providers.register(p);
  const tools = createTools(config);
  const prefix = config.server.redis_prefix;
  const replayTtlMs = config.chat.replay_ttl * 1000;
  const clientIds = new ClientIds(clock, replayTtlMs);
  // workflow code nodes run in this process's sandbox (worker threads), closed with the server
  const sandbox = new CodeSandbox();
  const chat = new ChatService({
    config, repos, bus, apps, providers: tracedProviders(providers, tracer), tools, clock, log: logger, instanceId, observer: metrics, tracer,
    // an SQLite file has one server; a PostgreSQL database may have another one starting or draining (a deploy)
    shared: redis !== null || db.dialect === 'postgres',
    runtime: new AssistantRuntime(),
    executor: new WorkflowExecutor({ sandbox }),
    runs: { stored: new DatabaseRunStore(repos.workflowRuns, config.workflow.input_timeout * 60_000), scratch: new MemoryRunStore() },
    rate: redis ? new RedisRateLimiter(redis.client, { perMinute: config.chat.messages_per_minute, prefix }) : new MemoryRateLimiter(config.chat.messages_per_minute),
    clientIds: redis ? new RedisClientIds(redis.client, clientIds, { prefix, ttlMs: replayTtlMs }) : clientIds,
    moderation: new Moderation(config.moderation),
  });
  const gateway = new WsGateway({
    config, auth, chat, bus, clock, log: logger,
    // a connection not refreshed for three heartbeats no longer counts (its instance died)
    connections: redis ? new RedisConnectionCounter(redis.client, { prefix, ttlMs: 3 * config.chat.heartbeat_interval * 1000, now: () => clock.now() }) : undefined,
  });

  const conversations = new ConversationService(repos);
  const services: Services = {
    config, db, repos, auth, apps, chat, bus, gateway, conversations, tools, redis: redis?.client ?? null,
    feedback: new FeedbackService(repos, conversations),
    turns: chat,
    metrics,
  };
  metrics.watch({ runningTurns: () => chat.running, webSockets: () => gateway.size, redisReady: () => (redis ? redis.client.status === 'ready' : null) });
  const app = await buildApp(services, logger);

  let closed = false;
  const handle: ServerHandle = {
    app,
    services,
    bootstrap: boot.created ? { password: boot.password, generated: boot.generated } : null,
    url: '',
    async close() {
      if (closed) return;
      closed = true;
      await app.close();
      await sandbox.close();
      await bus.close();
      await redis?.close();
      await db.close();
      // the last spans are sent before the process ends
      await telemetry?.shutdown().catch(() => undefined);
    },
  };
  return handle;
}

/** Starts listening on the configured host and port. */
export async function listen(handle: ServerHandle): Promise<string> {
  const { host, port } = handle.services.config.server;
  // a deep accept queue: a burst of connects must not be reset while the event loop is busy
  await handle.app.listen({ host, port, backlog: 4096 });
  const addr = handle.app.server.address();
  const actualPort = typeof addr === 'object' && addr ? addr.port : port;
  handle.url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${actualPort}`;
  return handle.url;
}
