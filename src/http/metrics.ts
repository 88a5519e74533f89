import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { TurnObserver, TurnOutcome } from '../chat/turn-registry.ts';
import { sseStreams } from './sse.ts';

/** What the gauges read when /metrics is scraped. */
export interface MetricSources {
  runningTurns(): number;
  webSockets(): number;
  /** null: no Redis configured */
  redisReady(): boolean | null;
}

const LATENCY = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Prometheus metrics of one process (its own registry, so several servers in one test process do
 * not clash). Node's defaults (event-loop lag, heap, GC) come with the `parley_` prefix.
 */
export class Metrics implements TurnObserver {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({ name: 'parley_http_requests_total', help: 'HTTP requests', labelNames: ['method', 'status'] as const, registers: [this.registry] });
  readonly dbLatency = new Histogram({ name: 'parley_db_ping_seconds', help: 'Database round trip measured by /health', buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2], registers: [this.registry] });
  readonly dbQueries = new Histogram({ name: 'parley_db_query_seconds', help: 'Database statements, from issue to result', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2], registers: [this.registry] });
  readonly busPublish = new Histogram({ name: 'parley_bus_publish_seconds', help: 'Redis bus: an event from publish to stored in the shared log (one event in 16 is timed)', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers: [this.registry] });
  private readonly turnsStarted = new Counter({ name: 'parley_turns_started_total', help: 'Turns started on this instance', registers: [this.registry] });
  private readonly turnsEnded = new Counter({ name: 'parley_turns_ended_total', help: 'Turns ended on this instance, by outcome', labelNames: ['outcome'] as const, registers: [this.registry] });
  private readonly deltas = new Counter({ name: 'parley_deltas_streamed_total', help: 'Text deltas streamed (a delta carries one or more of the model\'s tokens)', registers: [this.registry] });
  private readonly firstDelta = new Histogram({ name: 'parley_turn_first_delta_seconds', help: 'From a turn\'s start to its first text delta (time to first token)', buckets: LATENCY, registers: [this.registry] });
  private readonly duration = new Histogram({ name: 'parley_turn_duration_seconds', help: 'From a turn\'s start to its close', buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300], registers: [this.registry] });
  private sources: MetricSources | null = null;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'parley_' });
    const read = (fn: (s: MetricSources) => number | boolean | null) => (this.sources ? fn(this.sources) : null);
    new Gauge({
      name: 'parley_turns_running', help: 'Turns running on this instance now', registers: [this.registry],
      collect() { this.set(Number(read((s) => s.runningTurns()) ?? 0)); },
    });
    new Gauge({
      name: 'parley_connections_open', help: 'Open client connections, by transport', labelNames: ['transport'] as const, registers: [this.registry],
      collect() {
        this.set({ transport: 'websocket' }, Number(read((s) => s.webSockets()) ?? 0));
        this.set({ transport: 'sse' }, sseStreams.open);
      },
    });
    new Gauge({
      name: 'parley_redis_up', help: '1 while the shared Redis answers, 0 while it is away (absent without Redis)', registers: [this.registry],
      collect() {
        const up = read((s) => s.redisReady());
        if (up !== null) this.set(up ? 1 : 0);
      },
    });
  }

  /** Where the gauges read from, once the server is built. */
  watch(sources: MetricSources): void {
    this.sources = sources;
  }

  started(): void {
    this.turnsStarted.inc();
  }

  ended(turn: TurnOutcome): void {
    this.turnsEnded.inc({ outcome: turn.outcome });
    this.deltas.inc(turn.deltas);
    if (turn.firstDeltaMs !== null) this.firstDelta.observe(turn.firstDeltaMs / 1000);
    this.duration.observe(turn.durationMs / 1000);
  }
}
