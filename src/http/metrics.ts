import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one process (its own registry, so several servers in one test process do not clash). */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({ name: 'parley_http_requests_total', help: 'HTTP requests', labelNames: ['method', 'status'] as const, registers: [this.registry] });
  readonly dbLatency = new Histogram({ name: 'parley_db_ping_seconds', help: 'Database round trip measured by /health', buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'parley_' });
  }
}
