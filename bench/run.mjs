#!/usr/bin/env node
// `npm run bench`: Parley beside the physical limit, in one run, on loopback only.
//
// Starts as child processes the mock LLM (bench/mock-llm.mjs), Parley (built first with `npm run build`,
// then run as deployed: `node dist/cli.js serve`,
// SQLite in a temp data dir, persistence on; PostgreSQL for the turns figure) and the raw relays
// (bench/baselines/), drives them with bench/load.mjs, verifies every answer, and prints median
// tables that also go to bench/RESULTS.md. See bench/README.md.
//
// Env: BENCH_RUNS [3; 1 in quick mode]   BENCH_QUICK=1 (a ~2-minute smoke)   BENCH_PROFILE=1 (adds a
// --cpu-prof run of the 100-stream WebSocket case, or of the SSE one with BENCH_PROFILE_PROTO=sse;
// profile and top functions in bench/out/)
// BENCH_PHASES [stream,saturation,idle,turns(,profile)]   BENCH_IDLE [10000]   BENCH_PG_URL
// [postgres://postgres@127.0.0.1:5432/postgres]   BENCH_MAX_MINUTES [45] (hard stop of the whole run)
// BENCH_RESULTS [bench/RESULTS.md]   BENCH_QUIET [30] / BENCH_QUIET_WAIT [120]: before each load wait (≤ 15 s,
// ≤ BENCH_QUIET_WAIT s in all) until other processes use < BENCH_QUIET % of one core
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, jsonRequest, median, procSample, waitPort } from './lib.mjs';
import { analyzeProfile } from './profile.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const OUT = path.join(HERE, 'out');
const LOGS = path.join(OUT, 'logs');
const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const RUNS = Math.max(1, Number(env.BENCH_RUNS ?? (QUICK ? 1 : 3)));
const PROFILE = env.BENCH_PROFILE === '1';
const PROFILE_PROTO = env.BENCH_PROFILE_PROTO === 'sse' ? 'sse' : 'ws'; // which transport the profile phase loads
const PROFILE_RELAY = PROFILE_PROTO === 'sse' ? 'SSE' : 'ws';
const PROFILE_STREAMS = PROFILE_PROTO === 'sse' ? 'OpenAI SSE' : 'WebSocket';
const PHASES = new Set((env.BENCH_PHASES || 'stream,saturation,idle,turns,scale').split(',').map((s) => s.trim()).filter(Boolean));
if (PROFILE) PHASES.add('profile');
const IDLE_N = Number(env.BENCH_IDLE ?? (QUICK ? 2000 : 10_000));
const PG_URL = env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const RESULTS_MD = env.BENCH_RESULTS ? path.resolve(env.BENCH_RESULTS) : path.join(HERE, 'RESULTS.md');
const TOKENS = Number(env.BENCH_TOKENS ?? 200); // answer length of the stream and saturation phases (200 in every reported figure; fewer for quick latency studies)
const TOKEN = ' tok';
const TURN_TOKENS = Number(env.BENCH_TURN_TOKENS ?? 20);
const ADMIN_PASSWORD = 'bench-admin-password';
const STAMP = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const JSONL = path.join(OUT, `results-${STAMP}.jsonl`);

/** The matrix. Turns per measured phase by concurrency; warmup = min(C, 10). */
const PLAN = QUICK
  ? { stream: [[1, 3], [100, 200]], saturation: [[1, 10], [100, 200]], turns: { c: 50, n: 300 }, scale: [100, 200], idleHoldS: 11, profileTurns: 300 }
  : { stream: [[1, 5], [100, 300], [1000, 1500]], saturation: [[1, 20], [100, 400]], turns: { c: 50, n: 1500 }, scale: [100, 300], idleHoldS: 11, profileTurns: 800 };
if (env.BENCH_PLAN) Object.assign(PLAN, JSON.parse(env.BENCH_PLAN)); // e.g. '{"stream":[[100,300]]}' (tuning, tests)

fs.mkdirSync(LOGS, { recursive: true });
const t0 = Date.now();
const log = (msg) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);

// ---------------------------------------------------------------- child processes
const children = new Set();
const tmpDirs = [];
let stoppingAll = false;

function start(name, args, extraEnv = {}, opts = {}) {
  const logFile = path.join(LOGS, `${name}.log`);
  const fd = fs.openSync(logFile, 'w');
  // raise the open-files limit to the hard limit (10,000 idle sockets need it), then exec node
  const child = spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'bash', process.execPath, ...args], {
    cwd: opts.cwd || ROOT, env: { ...env, ...extraEnv }, stdio: ['ignore', fd, fd], detached: false,
  });
  fs.closeSync(fd);
  const proc = { name, child, pid: child.pid, logFile, exited: false, code: null };
  proc.exit = new Promise((resolve) => child.on('exit', (code, signal) => {
    proc.exited = true;
    proc.code = code ?? signal;
    children.delete(proc);
    if (!stoppingAll && !proc.expectExit) log(`!! ${name} (pid ${proc.pid}) exited unexpectedly: ${proc.code}; see ${path.relative(ROOT, logFile)}`);
    resolve(proc.code);
  }));
  children.add(proc);
  return proc;
}

async function stop(proc, graceMs = 15_000) {
  if (!proc || proc.exited) return;
  proc.expectExit = true;
  proc.child.kill('SIGTERM');
  const done = await Promise.race([proc.exit.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done) {
    proc.child.kill('SIGKILL');
    await proc.exit;
  }
}

async function stopAll() {
  stoppingAll = true;
  await Promise.all([...children].map((p) => stop(p, 5000)));
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { log(`${sig}: stopping children`); stopAll().finally(() => process.exit(130)); });
}
const watchdog = setTimeout(() => { log('!! BENCH_MAX_MINUTES reached: stopping'); stopAll().finally(() => process.exit(4)); }, Number(env.BENCH_MAX_MINUTES ?? 45) * 60_000);
watchdog.unref();

async function startMock(name, { tokens = TOKENS, delay = 5 }) {
  const port = await freePort();
  const p = start(name, [path.join(HERE, 'mock-llm.mjs')], { MOCK_PORT: String(port), MOCK_TOKENS: String(tokens), MOCK_DELAY_MS: String(delay), MOCK_TOKEN: TOKEN, MOCK_QUIET: '1' });
  await waitPort(port);
  return { ...p, port, url: `http://127.0.0.1:${port}`, proc: p };
}

async function startRelay(kind, mock, nodeArgs = []) {
  const port = await freePort();
  const p = start(`${kind}-relay-${mock.name}`, [...nodeArgs, path.join(HERE, 'baselines', `${kind}-relay.mjs`)], {
    RELAY_PORT: String(port), UPSTREAM_URL: `${mock.url}/v1/chat/completions`, RELAY_QUIET: '1',
  });
  await waitPort(port);
  return { proc: p, pid: p.pid, port };
}

/** Parley with raised caps; SQLite in a fresh temp dir unless databaseUrl. Returns login, app and API key. */
async function startParley(name, { mock, databaseUrl = '', extraEnv = {}, nodeArgs = [] }) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-bench-'));
  tmpDirs.push(dataDir);
  const cfgFile = path.join(dataDir, 'bench-config.yaml');
  fs.writeFileSync(cfgFile, '{}\n');
  const p = start(name, [...nodeArgs, path.join(ROOT, 'dist', 'cli.js'), 'serve'], {
    PARLEY_CONFIG: cfgFile, PARLEY_HOST: '127.0.0.1', PARLEY_PORT: String(port), PARLEY_DATA_DIR: dataDir, PARLEY_DATABASE_URL: databaseUrl,
    PARLEY_ADMIN_PASSWORD: ADMIN_PASSWORD, PARLEY_JWT_SECRET: 'bench-jwt-secret-0123456789abcdef0123456789',
    PARLEY_LLM_BASE_URL: mock ? `${mock.url}/v1` : '', PARLEY_LLM_MODEL: 'mock-gpt', PARLEY_LLM_API_KEY: 'sk-mock',
    PARLEY_CHAT__MAX_CONCURRENT_SESSIONS: '100000', PARLEY_CHAT__MAX_CONNECTIONS_PER_USER: '100000', PARLEY_CHAT__MESSAGES_PER_MINUTE: '10000000',
    PARLEY_SERVER__SHUTDOWN_GRACE: '3', PARLEY_LOG_LEVEL: 'warn',
    // the deployment setting README recommends: glibc's per-thread malloc arenas otherwise keep ~80 MiB
    // more RSS after a few thousand turns (the live JS heap is ~36 MiB either way)
    MALLOC_ARENA_MAX: '2', ...extraEnv,
  });
  await Promise.race([waitPort(port, '127.0.0.1', 60_000), p.exit.then((c) => { throw new Error(`${name} exited (${c}) before listening; see ${p.logFile}`); })]);
  const base = `http://127.0.0.1:${port}`;
  const login = await jsonRequest(`${base}/api/v1/user/login`, { method: 'POST', body: { user_name: 'admin', password: ADMIN_PASSWORD } });
  const jwt = login.data.access_token;
  const auth = { authorization: `Bearer ${jwt}` };
  const online = await jsonRequest(`${base}/api/v1/chat/online`, { headers: auth });
  const app = online.data.find((a) => a.kind === 'chat' && a.name === 'Demo chat') || online.data.find((a) => a.kind === 'chat');
  if (!app) throw new Error(`${name}: no chat app among the online apps`);
  const key = await jsonRequest(`${base}/api/v1/apikeys`, { method: 'POST', headers: auth, body: { name: `bench-${STAMP}` } });
  return { proc: p, pid: p.pid, port, base, jwt, appId: app.id, apiKey: key.data.key, dataDir, databaseUrl };
}

// ---------------------------------------------------------------- noise: CPU used by other processes
/** busy ms of the whole machine and of this bench's own processes (this one, its reaped children, the live servers) */
function cpuSnapshot() {
  const tick = 1000 / 100;
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const busy = (total - f[3] - f[4]) * tick;
    const own = (pid, withChildren) => {
      try {
        const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const x = st.slice(st.lastIndexOf(')') + 2).split(' ').map(Number);
        return (x[11] + x[12] + (withChildren ? x[13] + x[14] : 0)) * tick;
      } catch { return 0; }
    };
    let ours = own(process.pid, true);
    for (const c of children) ours += own(c.pid, false);
    return { busy, ours, at: Date.now() };
  } catch { return null; }
}
/** the kernel's count of connections dropped because a listen (accept) queue was full, all sockets of the host */
function listenOverflows() {
  try {
    const lines = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const keys = lines[0].split(/\s+/);
    const vals = lines[1].split(/\s+/).map(Number);
    return vals[keys.indexOf('ListenOverflows')] ?? null;
  } catch { return null; }
}
const foreignPct = (a, b) => (a && b && b.at > a.at ? Math.max(0, ((b.busy - a.busy) - (b.ours - a.ours)) / (b.at - a.at)) * 100 : null);

/**
 * Before each load, wait (0.5 s windows, ≤ 15 s per load, ≤ BENCH_QUIET_WAIT s in all) until other processes
 * use less than BENCH_QUIET % of one core: on a shared machine, loads then start when the others pause.
 */
const QUIET_PCT = Number(env.BENCH_QUIET ?? 30);
let quietBudgetMs = Number(env.BENCH_QUIET_WAIT ?? 120) * 1000;
let quietWaitedMs = 0;
async function waitQuiet() {
  const t = Date.now();
  while (quietBudgetMs > 0 && Date.now() - t < 15_000) {
    const a = cpuSnapshot();
    await sleep(500);
    const f = foreignPct(a, cpuSnapshot());
    if (f === null || f < QUIET_PCT) break;
    quietBudgetMs -= Date.now() - a.at;
  }
  const waited = Date.now() - t;
  quietWaitedMs += waited;
  return waited;
}

// ---------------------------------------------------------------- load
const rows = []; // every load result, tagged with {phase, run, delay, target}

async function load(cfg, meta) {
  await waitQuiet();
  const before = cpuSnapshot();
  const lo = listenOverflows();
  const child = spawn(process.execPath, [path.join(HERE, 'load.mjs'), JSON.stringify(cfg)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { err += c; });
  const killer = setTimeout(() => child.kill('SIGKILL'), ((cfg.durationS ?? 120) * 2 + 150) * 1000);
  const code = await new Promise((resolve) => child.on('exit', resolve));
  clearTimeout(killer);
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`load ${meta.target} failed (exit ${code}): ${err.slice(-800)}`);
  const lo2 = listenOverflows();
  const r = { ...meta, ...JSON.parse(line.slice(7)), foreignCpuPct: foreignPct(before, cpuSnapshot()), listenOverflows: lo !== null && lo2 !== null ? lo2 - lo : null };
  rows.push(r);
  fs.appendFileSync(JSONL, JSON.stringify(r) + '\n');
  if (r.mode === 'idle') {
    log(`  ${meta.target.padEnd(10)} idle ${r.opened}/${r.requested} open, ${r.serverBytesPerConn} B/conn, ${r.closedDuringHold} closed, ${r.pingsReceived} pings`);
  } else {
    const fails = (r.failed ? `  FAILED ${r.failed}: ${JSON.stringify(r.errors).slice(0, 200)}` : '') + (r.listenOverflows ? `  (kernel: ${r.listenOverflows} listen-queue overflows)` : '');
    log(`  ${meta.target.padEnd(10)} c=${String(r.concurrency).padEnd(4)} ${String(r.tokensPerS).padStart(6)} tok/s  ${String(r.cpuMsPer1kTokens).padStart(6)} CPU ms/1k  TTFT p50 ${r.ttftMs.p50} ms  ${r.completed}/${r.requests} ok${fails}`);
  }
  return r;
}

/** The load configs of the five targets of a streaming case. */
function targets({ mock, parley, wsr, ssr }) {
  const common = { mockUrl: mock.url, expectTokens: mock.tokens, token: TOKEN };
  return {
    direct: { ...common, proto: 'sse', url: `${mock.url}/v1/chat/completions`, format: 'openai', body: 'openai', pid: mock.pid },
    'ws-relay': { ...common, proto: 'ws', url: `ws://127.0.0.1:${wsr.port}`, format: 'relay', message: 'relay', pid: wsr.pid },
    'sse-relay': { ...common, proto: 'sse', url: `http://127.0.0.1:${ssr.port}/chat`, format: 'relay', body: 'relay', pid: ssr.pid },
    'parley-ws': { ...common, proto: 'ws', url: `ws://127.0.0.1:${parley.port}/api/v1/chat/${parley.appId}?chat_id={{chat}}&t=${parley.jwt}`, format: 'parley-ws', message: 'parley', pid: parley.pid },
    'parley-sse': {
      ...common, proto: 'sse', url: `${parley.base}/v1/chat/completions`, format: 'openai', body: 'parley', model: parley.appId,
      headers: { authorization: `Bearer ${parley.apiKey}` }, pid: parley.pid,
    },
  };
}

// ---------------------------------------------------------------- database checks
/** Questions and answers stored by a Parley instance (every answer must equal token × n). */
async function storedTurns(parley, expectTokens) {
  const expect = TOKEN.repeat(expectTokens);
  const q = `SELECT
    (SELECT COUNT(*) FROM messages WHERE category = 'question') AS questions,
    (SELECT COUNT(*) FROM messages WHERE category = 'answer') AS answers,
    (SELECT COUNT(*) FROM messages WHERE category = 'answer' AND message = $1 AND parent_message_id IS NOT NULL) AS good`;
  if (parley.databaseUrl) {
    const { default: pg } = await import('pg');
    const c = new pg.Client({ connectionString: parley.databaseUrl });
    await c.connect();
    try {
      const r = (await c.query(q, [expect])).rows[0];
      return { questions: Number(r.questions), answers: Number(r.answers), good: Number(r.good) };
    } finally { await c.end(); }
  }
  const { default: Sqlite } = await import('better-sqlite3');
  const db = new Sqlite(path.join(parley.dataDir, 'parley.db'), { readonly: true, fileMustExist: true });
  try {
    const r = db.prepare(q.replaceAll('$1', '?')).get(expect);
    return { questions: Number(r.questions), answers: Number(r.answers), good: Number(r.good) };
  } finally { db.close(); }
}

const dbChecks = [];
async function checkStored(label, parley, expectTokens, turnsOk) {
  try {
    const s = await storedTurns(parley, expectTokens);
    const ok = s.questions === turnsOk && s.answers === turnsOk && s.good === turnsOk;
    dbChecks.push({ label, turnsOk, ...s, ok });
    log(`  stored (${label}): ${s.questions} questions, ${s.answers} answers (${s.good} exact) for ${turnsOk} verified turns ${ok ? 'OK' : 'MISMATCH'}`);
  } catch (e) {
    dbChecks.push({ label, turnsOk, ok: false, error: e.message });
    log(`  !! stored-turns check (${label}) failed: ${e.message}`);
  }
}
const okTurns = (rs) => rs.reduce((s, r) => s + (r.completed || 0) + (r.warmupOk || 0), 0);

// ---------------------------------------------------------------- phases
const notes = [];
const problems = []; // server exits, error frames, caps hit

async function streamPhase(phase, delay, plan) {
  log(`phase ${phase}: mock ${TOKENS} tokens, ${delay} ms apart`);
  const mock = await startMock(`mock-d${delay}`, { delay });
  mock.tokens = TOKENS;
  const [wsr, ssr] = await Promise.all([startRelay('ws', mock), startRelay('sse', mock)]);
  try {
    for (let run = 1; run <= RUNS; run++) {
      // a fresh Parley per run (new SQLite dir): runs are independent, and what one run keeps in memory
      // (the replay log keeps every conversation's last turn for chat.replay_ttl) does not weigh on the next
      const parley = await startParley(`parley-d${delay}-run${run}`, { mock });
      const ts = targets({ mock, parley, wsr, ssr });
      const parleyRows = [];
      const rssStart = procSample(parley.pid)?.rss;
      try {
        // every target is measured warm, as a server in service is: a first load (100 clients, 100 turns,
        // verified but not in the tables) gets the JIT and connection pools going
        log(`run ${run}/${RUNS}, warm-up: 100 concurrent, 100 turns per target`);
        for (const [target, cfg] of Object.entries(ts)) {
          const r = await load({ ...cfg, concurrency: 100, requests: 100, warmup: 0, durationS: 60, timeoutS: 90, label: `${target} warm-up` }, { phase, run, delay, target, warm: true });
          if (target.startsWith('parley')) parleyRows.push(r);
        }
        for (const [c, n] of plan) {
          log(`run ${run}/${RUNS}, ${c} concurrent, ${n} turns`);
          for (const [target, cfg] of Object.entries(ts)) {
            // one unmeasured turn per client first (at least 10): every conversation exists before the measured turns
            const r = await load({ ...cfg, concurrency: c, requests: n, warmup: Math.max(c, 10), durationS: QUICK ? 60 : 150, timeoutS: 90, label: target },
              { phase, run, delay, target });
            if (target.startsWith('parley')) parleyRows.push(r);
            if (parley.proc.exited) throw new Error(`Parley exited during ${target} c=${c}`);
          }
        }
      } finally {
        await checkStored(`${phase} run ${run} (SQLite)`, parley, TOKENS, okTurns(parleyRows));
        const rssEnd = procSample(parley.pid)?.rss;
        if (rssStart && rssEnd) {
          rssNotes.push({ phase, run, startMiB: rssStart / 2 ** 20, endMiB: rssEnd / 2 ** 20, turns: okTurns(parleyRows) });
        }
        await stop(parley.proc);
      }
    }
  } finally {
    await Promise.all([stop(wsr.proc), stop(ssr.proc)]);
    await stop(mock.proc);
  }
}
const rssNotes = [];

async function idlePhase() {
  log(`phase idle: ${IDLE_N} idle authenticated WebSocket connections, heartbeats every 5 s, held ${PLAN.idleHoldS} s`);
  const holdS = PLAN.idleHoldS;
  for (let run = 1; run <= RUNS; run++) {
    const parley = await startParley(`parley-idle-${run}`, { mock: null, extraEnv: { PARLEY_CHAT__HEARTBEAT_INTERVAL: '5' } });
    try {
      await load({ proto: 'ws', idle: IDLE_N, holdS, ramp: 500, warmIdle: 200, durationS: 300, url: `ws://127.0.0.1:${parley.port}/api/v1/chat/${parley.appId}?chat_id={{chat}}&t=${parley.jwt}`, pid: parley.pid, label: 'parley-ws' },
        { phase: 'idle', run, target: 'parley-ws' });
    } finally { await stop(parley.proc); }
    const mockStub = { name: 'none', url: 'http://127.0.0.1:9' };
    const wsr = await startRelay('ws', mockStub);
    try {
      await load({ proto: 'ws', idle: IDLE_N, holdS, ramp: 500, warmIdle: 200, durationS: 300, url: `ws://127.0.0.1:${wsr.port}`, pid: wsr.pid, label: 'ws-relay' },
        { phase: 'idle', run, target: 'ws-relay' });
    } finally { await stop(wsr.proc); }
  }
}

/** A fresh PostgreSQL database for a phase ({url, drop}), or null (with a note) when PostgreSQL cannot be reached. */
async function pgDatabase(what) {
  const { default: pg } = await import('pg');
  const admin = new pg.Client({ connectionString: PG_URL });
  try {
    await admin.connect();
    const name = `parley_bench_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const u = new URL(PG_URL);
    u.pathname = `/${name}`;
    return {
      url: u.toString(),
      drop: async () => {
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch((e) => log(`  !! could not drop ${name}: ${e.message}`));
        await admin.end().catch(() => {});
      },
    };
  } catch (e) {
    notes.push(`PostgreSQL skipped (${what}): ${e.message}`);
    log(`  !! PostgreSQL skipped (${what}): ${e.message}`);
    await admin.end().catch(() => {});
    return null;
  }
}

async function turnsPhase() {
  const { c, n } = PLAN.turns;
  log(`phase turns: end-to-end turns/s (question stored → answer stored), ${TURN_TOKENS}-token answers with no delay, ${c} WebSocket clients`);
  const mock = await startMock('mock-turns', { tokens: TURN_TOKENS, delay: 0 });
  mock.tokens = TURN_TOKENS;
  const pgDb = await pgDatabase('turns');
  const dbs = [['sqlite', ''], ...(pgDb ? [['postgres', pgDb.url]] : [])];
  try {
    for (const [db, url] of dbs) {
      const parley = await startParley(`parley-turns-${db}`, { mock, databaseUrl: url });
      const rs = [];
      try {
        for (let run = 1; run <= RUNS; run++) {
          rs.push(await load({
            proto: 'ws', url: wsUrl(parley), format: 'parley-ws', message: 'parley',
            concurrency: c, requests: n, warmup: 10, durationS: 150, timeoutS: 60, pid: parley.pid, mockUrl: mock.url, expectTokens: TURN_TOKENS, token: TOKEN, label: `parley-${db}`,
          }, { phase: 'turns', run, db, target: `parley-${db}` }));
        }
      } finally {
        await checkStored(`turns (${db})`, parley, TURN_TOKENS, okTurns(rs));
        await stop(parley.proc);
      }
    }
  } finally {
    await stop(mock.proc);
    await pgDb?.drop();
  }
}

const wsUrl = (parley) => `ws://127.0.0.1:${parley.port}/api/v1/chat/${parley.appId}?chat_id={{chat}}&t=${parley.jwt}`;

/**
 * Scale-out (issue 13), on PostgreSQL: one instance with the Redis bus beside the same instance with
 * the memory bus; then two instances on one database and one Redis, the clients asking through one
 * and each conversation watched through the other (every frame must reach both).
 */
async function scalePhase() {
  const [c, n] = PLAN.scale;
  const redisUrl = env.BENCH_REDIS_URL || 'redis://127.0.0.1:6379';
  log(`phase scale: PostgreSQL + Redis (${redisUrl}); mock ${TOKENS} tokens, 5 ms apart; ${c} WebSocket streams`);
  const mock = await startMock('mock-scale', { delay: 5 });
  mock.tokens = TOKENS;
  const redisEnv = () => ({ PARLEY_REDIS_URL: redisUrl, PARLEY_SERVER__REDIS_PREFIX: `parley-bench:${process.pid}:${Math.random().toString(36).slice(2, 8)}:` });
  const common = { proto: 'ws', format: 'parley-ws', message: 'parley', concurrency: c, requests: n, durationS: 150, timeoutS: 60, mockUrl: mock.url, expectTokens: TOKENS, token: TOKEN };
  try {
    for (let run = 1; run <= RUNS; run++) {
      for (const bus of ['memory', 'redis']) {
        const db = await pgDatabase('scale');
        if (!db) return;
        const parley = await startParley(`parley-scale-${bus}`, { mock, databaseUrl: db.url, extraEnv: bus === 'redis' ? redisEnv() : {} });
        try {
          const r = await load({ ...common, url: wsUrl(parley), pid: parley.pid, label: `one-${bus}` }, { phase: 'scale', run, target: `one-${bus}` });
          await checkStored(`scale run ${run} (one instance, ${bus} bus)`, parley, TOKENS, okTurns([r]));
        } finally {
          await stop(parley.proc);
          await db.drop();
        }
      }
      const db = await pgDatabase('scale');
      if (!db) return;
      const shared = redisEnv();
      const a = await startParley('parley-scale-a', { mock, databaseUrl: db.url, extraEnv: shared });
      const b = await startParley('parley-scale-b', { mock, databaseUrl: db.url, extraEnv: shared });
      try {
        const r = await load({ ...common, url: wsUrl(a), urls: [wsUrl(a), wsUrl(b)], watchUrls: [wsUrl(b), wsUrl(a)], pids: [a.pid, b.pid], label: 'two-instances' }, { phase: 'scale', run, target: 'two-instances' });
        await checkStored(`scale run ${run} (two instances)`, a, TOKENS, okTurns([r]));
      } finally {
        await Promise.all([stop(a.proc), stop(b.proc)]);
        await db.drop();
      }
    }
  } finally {
    await stop(mock.proc);
  }
}

let profileSummary = null;
/** The main thread's profile in `dir`, analysed over the load's measured window. */
function readProfile(dir, r) {
  // one profile per thread (tsx runs its loader in a worker): the main thread's is thread 0, and the largest
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(dir, f));
  const file = files.find((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f)) || files.sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0];
  if (!file) return null;
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const win = r && r.monoStart && r.monoStart * 1000 >= prof.startTime && r.monoEnd * 1000 <= prof.endTime ? [r.monoStart, r.monoEnd] : null;
  if (!win) notes.push(`profile ${path.relative(ROOT, file)}: the measured window could not be matched to the profile clock; the whole process life is analysed (start-up included)`);
  return { file: path.relative(ROOT, file), ...analyzeProfile(prof, ROOT, win), load: r };
}

async function profilePhase() {
  log(`phase profile: Parley and the raw ${PROFILE_RELAY} relay under --cpu-prof, 100 concurrent ${PROFILE_STREAMS} turns (mock 5 ms apart)`);
  const dir = path.join(OUT, `profile-${STAMP}`);
  const pdir = path.join(dir, 'parley');
  const rdir = path.join(dir, `${PROFILE_PROTO}-relay`);
  fs.mkdirSync(pdir, { recursive: true });
  fs.mkdirSync(rdir, { recursive: true });
  const profArgs = (d) => ['--cpu-prof', `--cpu-prof-dir=${d}`, '--cpu-prof-interval=500'];
  const mock = await startMock('mock-profile', { delay: 5 });
  mock.tokens = TOKENS;
  const common = { concurrency: 100, requests: PLAN.profileTurns, warmup: 10, durationS: 150, timeoutS: 90, mockUrl: mock.url, expectTokens: TOKENS, token: TOKEN };
  let r;
  let rr;
  try {
    const parley = await startParley('parley-profile', { mock, nodeArgs: profArgs(pdir) });
    try {
      r = await load({ ...targets({ mock, parley, wsr: {}, ssr: {} })[`parley-${PROFILE_PROTO}`], ...common, label: `parley-${PROFILE_PROTO} (profiled)` }, { phase: 'profile', run: 1, delay: 5, target: `parley-${PROFILE_PROTO}-prof` });
    } finally { await stop(parley.proc, 30_000); }
    // the same load on the raw relay, profiled the same way: what the per-token work costs at the minimum
    const relay = await startRelay(PROFILE_PROTO, { ...mock, name: 'profile' }, profArgs(rdir));
    try {
      const cfg = targets({ mock, parley: {}, wsr: relay, ssr: relay })[`${PROFILE_PROTO}-relay`];
      rr = await load({ ...cfg, ...common, label: `${PROFILE_PROTO}-relay (profiled)` }, { phase: 'profile', run: 1, delay: 5, target: `${PROFILE_PROTO}-relay-prof` });
    } finally { await stop(relay.proc); }
  } finally {
    await stop(mock.proc);
  }
  profileSummary = readProfile(pdir, r);
  if (!profileSummary) { notes.push('profile: no .cpuprofile was written (did Parley exit cleanly?)'); return; }
  relayProfile = rr ? readProfile(rdir, rr) : null;
  fs.writeFileSync(path.join(dir, 'PROFILE.md'), profileMarkdown(profileSummary, relayProfile));
  log(`  profile: ${profileSummary.file}${relayProfile ? `, ${relayProfile.file}` : ''}`);
}
let relayProfile = null;

// ---------------------------------------------------------------- report
const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Math.abs(x) >= 100 ? Math.round(x).toLocaleString('en-US') : String(Math.round(x * 10 ** d) / 10 ** d));
const pick = (f) => (r) => { try { return f(r); } catch { return null; } };

const med = (rs, f) => median(rs.map(pick(f)));
const rangeOf = (rs, f) => { const v = rs.map(pick(f)).filter((x) => x !== null && x !== undefined); return v.length > 1 ? ` (${fmt(Math.min(...v), 0)}–${fmt(Math.max(...v), 0)})` : ''; };

const TARGET_ORDER = ['direct', 'ws-relay', 'sse-relay', 'parley-ws', 'parley-sse'];
const TARGET_NAME = { direct: 'mock direct (SSE)', 'ws-relay': 'raw ws relay', 'sse-relay': 'raw SSE relay', 'parley-ws': 'Parley WebSocket', 'parley-sse': 'Parley OpenAI SSE' };

/** figures of one (delay, concurrency, target) cell: medians over runs */
function cell(delay, c, target) {
  const rs = rows.filter((r) => r.mode === 'stream' && !r.warm && r.phase !== 'profile' && r.phase !== 'turns' && r.delay === delay && r.concurrency === c && r.target === target);
  if (!rs.length) return null;
  return {
    rs,
    tps: med(rs, (r) => r.tokensPerS), tpsRange: rangeOf(rs, (r) => r.tokensPerS),
    cpu1k: med(rs, (r) => r.cpuMsPer1kTokens), cpuPct: med(rs, (r) => r.server.cpuPct), rss: med(rs, (r) => r.server.rssPeakMiB),
    ttft50: med(rs, (r) => r.ttftMs.p50), ttft99: med(rs, (r) => r.ttftMs.p99),
    lat50: med(rs, (r) => r.tokenLatencyMs.p50), lat99: med(rs, (r) => r.tokenLatencyMs.p99),
    gap50: med(rs, (r) => r.interTokenGapMs.p50), gap99: med(rs, (r) => r.interTokenGapMs.p99),
    in50: med(rs, (r) => r.inboundMs.p50), mock50: med(rs, (r) => r.mockFirstMs.p50), back50: med(rs, (r) => r.firstTokenLatencyMs.p50),
    edge50: med(rs, (r) => r.edgeTtftMs.p50), edge99: med(rs, (r) => r.edgeTtftMs.p99),
    failed: rs.reduce((s, r) => s + r.failed + (r.warmup - r.warmupOk), 0), turns: rs.reduce((s, r) => s + r.requests + r.warmup, 0), runs: rs.length,
    foreign: Math.max(...rs.map((r) => r.foreignCpuPct ?? 0)),
  };
}

function streamTable(delay, cs) {
  const lines = [
    '| streams | target | tokens/s (min–max) | server CPU ms / 1k tok | server CPU % | server RSS peak MiB | TTFT p50 / p99 ms | added TTFT p50 ms | token latency p50 / p99 ms | added token latency p50 / p99 ms | inter-token gap p50 / p99 ms | failed / turns | runs | other CPU % (max) |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of cs) {
    const d = cell(delay, c, 'direct');
    for (const t of TARGET_ORDER) {
      const x = cell(delay, c, t);
      if (!x) continue;
      const addT = d && t !== 'direct' ? x.ttft50 - d.ttft50 : null;
      const add50 = d && t !== 'direct' ? x.lat50 - d.lat50 : null;
      const add99 = d && t !== 'direct' ? x.lat99 - d.lat99 : null;
      lines.push(`| ${c} | ${TARGET_NAME[t]} | ${fmt(x.tps, 0)}${x.tpsRange} | ${fmt(x.cpu1k)} | ${fmt(x.cpuPct)} | ${fmt(x.rss)} | ${fmt(x.ttft50, 2)} / ${fmt(x.ttft99, 2)} | ${t === 'direct' ? '—' : fmt(addT, 2)} | ${fmt(x.lat50, 2)} / ${fmt(x.lat99, 2)} | ${t === 'direct' ? '—' : `${fmt(add50, 2)} / ${fmt(add99, 2)}`} | ${fmt(x.gap50, 2)} / ${fmt(x.gap99, 2)} | ${x.failed} / ${x.turns} | ${x.runs} | ${fmt(x.foreign, 0)} |`);
    }
  }
  return lines.join('\n');
}

/**
 * The time to first token of the tagged turns split at the edges (bench/README.md): the way in, the
 * mock's own time and the way back. "in + back" is what the path between client and mock adds to
 * that very request; it leaves out how long the mock itself took, which on 2 shared cores also
 * depends on how much CPU the gateway leaves it.
 */
function edgeTable(delay, cs) {
  const lines = [
    '| streams | target | TTFT p50 ms | way in p50 ms | mock\'s own p50 ms | way back p50 ms | in + back p50 / p99 ms | in + back vs mock direct p50 ms |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of cs) {
    const d = cell(delay, c, 'direct');
    for (const t of TARGET_ORDER) {
      const x = cell(delay, c, t);
      if (!x || x.edge50 === null || x.edge50 === undefined) continue;
      lines.push(`| ${c} | ${TARGET_NAME[t]} | ${fmt(x.ttft50, 2)} | ${fmt(x.in50, 2)} | ${fmt(x.mock50, 2)} | ${fmt(x.back50, 2)} | ${fmt(x.edge50, 2)} / ${fmt(x.edge99, 2)} | ${t === 'direct' || !d ? '—' : fmt(x.edge50 - d.edge50, 2)} |`);
    }
  }
  return lines.length > 2 ? lines.join('\n') : null;
}

function ratioTable(delay, cs) {
  const lines = ['| streams | Parley transport | tokens/s vs raw relay | CPU per 1k tokens vs raw relay |', '|---:|---|---:|---:|'];
  for (const c of cs) {
    for (const [p, rl] of [['parley-ws', 'ws-relay'], ['parley-sse', 'sse-relay']]) {
      const a = cell(delay, c, p);
      const b = cell(delay, c, rl);
      if (!a || !b) continue;
      lines.push(`| ${c} | ${TARGET_NAME[p]} vs ${TARGET_NAME[rl]} | ${fmt((a.tps / b.tps) * 100)} % | ${fmt(a.cpu1k / b.cpu1k, 2)}× |`);
    }
  }
  return lines.join('\n');
}

function idleTable() {
  const rs = rows.filter((r) => r.mode === 'idle');
  if (!rs.length) return null;
  const lines = ['| target | connections requested | opened (median) | RSS before MiB | RSS after MiB | bytes per idle connection (min–max) | pings seen by clients | closed during hold | runs |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|'];
  for (const t of ['parley-ws', 'ws-relay']) {
    const g = rs.filter((r) => r.target === t);
    if (!g.length) continue;
    lines.push(`| ${TARGET_NAME[t]} | ${g[0].requested} | ${fmt(med(g, (r) => r.opened), 0)} | ${fmt(med(g, (r) => r.serverRssBeforeMiB))} | ${fmt(med(g, (r) => r.serverRssAfterMiB))} | ${fmt(med(g, (r) => r.serverBytesPerConn), 0)}${rangeOf(g, (r) => r.serverBytesPerConn)} | ${fmt(med(g, (r) => r.pingsReceived), 0)} | ${fmt(med(g, (r) => r.closedDuringHold), 0)} | ${g.length} |`);
  }
  return lines.join('\n');
}

function turnsTable() {
  const rs = rows.filter((r) => r.phase === 'turns');
  if (!rs.length) return null;
  const lines = [`| database | turns/s (min–max) | turn duration p50 / p99 ms | TTFT p50 / p99 ms | server CPU % | server CPU ms per turn | failed / turns | runs |`, '|---|---:|---:|---:|---:|---:|---:|---:|'];
  for (const db of ['sqlite', 'postgres']) {
    const g = rs.filter((r) => r.db === db);
    if (!g.length) continue;
    lines.push(`| ${db === 'sqlite' ? 'SQLite' : 'PostgreSQL'} | ${fmt(med(g, (r) => r.turnsPerS))}${rangeOf(g, (r) => r.turnsPerS)} | ${fmt(med(g, (r) => r.durationMs.p50))} / ${fmt(med(g, (r) => r.durationMs.p99))} | ${fmt(med(g, (r) => r.ttftMs.p50))} / ${fmt(med(g, (r) => r.ttftMs.p99))} | ${fmt(med(g, (r) => r.server.cpuPct))} | ${fmt(med(g, (r) => r.server.cpuMs / r.completed), 2)} | ${g.reduce((s, r) => s + r.failed + (r.warmup - r.warmupOk), 0)} / ${g.reduce((s, r) => s + r.requests + r.warmup, 0)} | ${g.length} |`);
  }
  return lines.join('\n');
}

const SCALE_NAME = { 'one-memory': 'one instance, memory bus', 'one-redis': 'one instance, Redis bus', 'two-instances': 'two instances, asked on one, watched on the other' };

function scaleTable() {
  const rs = rows.filter((r) => r.phase === 'scale');
  if (!rs.length) return null;
  const lines = ['| setup | tokens/s (min–max) | server CPU ms / 1k tok | TTFT p50 / p99 ms | token latency p50 / p99 ms | watcher minus asker p50 / p99 ms | failed / turns | runs |', '|---|---:|---:|---:|---:|---:|---:|---:|'];
  for (const [t, name] of Object.entries(SCALE_NAME)) {
    const g = rs.filter((r) => r.target === t);
    if (!g.length) continue;
    const bus = t === 'two-instances' ? `${fmt(med(g, (r) => r.busLatencyMs?.p50), 2)} / ${fmt(med(g, (r) => r.busLatencyMs?.p99), 2)}` : '—';
    lines.push(`| ${name} | ${fmt(med(g, (r) => r.tokensPerS), 0)}${rangeOf(g, (r) => r.tokensPerS)} | ${fmt(med(g, (r) => r.cpuMsPer1kTokens))} | ${fmt(med(g, (r) => r.ttftMs.p50))} / ${fmt(med(g, (r) => r.ttftMs.p99))} | ${fmt(med(g, (r) => r.tokenLatencyMs.p50), 2)} / ${fmt(med(g, (r) => r.tokenLatencyMs.p99), 2)} | ${bus} | ${g.reduce((x, r) => x + r.failed + (r.warmup - r.warmupOk), 0)} / ${g.reduce((x, r) => x + r.requests + r.warmup, 0)} | ${g.length} |`);
  }
  lines.push('', 'Two instances: CPU is both processes together; every turn is verified twice, by the client that asked and by the one watching through the other instance.');
  return lines.join('\n');
}

function scaleTargets() {
  const out = [];
  const g = (t) => rows.filter((r) => r.phase === 'scale' && r.target === t);
  const [mem, red, two] = [g('one-memory'), g('one-redis'), g('two-instances')];
  if (mem.length && red.length) {
    const [tm, tr] = [med(mem, (r) => r.tokensPerS), med(red, (r) => r.tokensPerS)];
    const [cm, cr] = [med(mem, (r) => r.cpuMsPer1kTokens), med(red, (r) => r.cpuMsPer1kTokens)];
    out.push(['100 streams, Redis bus: tokens/s ≥ 90 % of the memory bus', `${fmt(tr, 0)} vs ${fmt(tm, 0)} = ${fmt((tr / tm) * 100)} %`, tr >= 0.9 * tm]);
    out.push(['100 streams, Redis bus: CPU per 1k tokens ≤ 1.3× the memory bus', `${fmt(cr)} vs ${fmt(cm)} ms = ${fmt(cr / cm, 2)}×`, cr <= 1.3 * cm]);
    const bad = [...mem, ...red].reduce((x, r) => x + r.failed + (r.warmup - r.warmupOk), 0);
    out.push(['one instance, both buses: 0 wrong answers', `${bad} failed`, bad === 0]);
  }
  if (two.length) {
    const bad = two.reduce((x, r) => x + r.failed + (r.warmup - r.warmupOk), 0);
    out.push(['two instances: every frame delivered to the asker and the watcher', `${bad} failed of ${two.reduce((x, r) => x + r.requests + r.warmup, 0)} turns`, bad === 0]);
    const p50 = med(two, (r) => r.busLatencyMs?.p50);
    out.push(['two instances: added token latency p50 through the bus ≤ 2 ms', `${fmt(p50, 2)} ms`, p50 <= 2]);
  }
  return ['| target | measured | result |', '|---|---|---|', ...out.map(([n, v, ok]) => `| ${n} | ${v} | ${ok ? 'PASS' : '**FAIL**'} |`)].join('\n');
}

function targetsTable() {
  const out = [];
  const add = (name, value, pass, ref) => out.push({ name, value, pass, ref });
  for (const [p, rl] of [['parley-ws', 'ws-relay'], ['parley-sse', 'sse-relay']]) {
    const a = cell(5, 100, p);
    const b = cell(5, 100, rl);
    if (a && b) {
      add(`100 streams, ${TARGET_NAME[p]}: tokens/s ≥ 95 % of the raw relay`, `${fmt(a.tps, 0)} vs ${fmt(b.tps, 0)} = ${fmt((a.tps / b.tps) * 100)} %`, a.tps >= 0.95 * b.tps);
      add(`100 streams, ${TARGET_NAME[p]}: CPU per 1k tokens ≤ 1.5× the raw relay`, `${fmt(a.cpu1k)} vs ${fmt(b.cpu1k)} ms = ${fmt(a.cpu1k / b.cpu1k, 2)}×`, a.cpu1k <= 1.5 * b.cpu1k);
    }
    const a2 = cell(5, 1000, p);
    const b2 = cell(5, 1000, rl);
    if (a2 && b2) add(`1000 streams, ${TARGET_NAME[p]}: tokens/s ≥ 85 % of the raw relay`, `${fmt(a2.tps, 0)} vs ${fmt(b2.tps, 0)} = ${fmt((a2.tps / b2.tps) * 100)} %`, a2.tps >= 0.85 * b2.tps);
  }
  for (const p of ['parley-ws', 'parley-sse']) {
    for (const [c, lim] of [[1, 3], [100, 15]]) {
      const a = cell(5, c, p);
      const d = cell(5, c, 'direct');
      if (a && d) add(`added TTFT p50 at ${c} stream${c > 1 ? 's' : ''}, ${TARGET_NAME[p]} ≤ ${lim} ms`, `${fmt(a.ttft50, 2)} − ${fmt(d.ttft50, 2)} = ${fmt(a.ttft50 - d.ttft50, 2)} ms`, a.ttft50 - d.ttft50 <= lim);
    }
  }
  const idle = rows.filter((r) => r.mode === 'idle' && r.target === 'parley-ws');
  if (idle.length) {
    const b = med(idle, (r) => r.serverBytesPerConn);
    const allOpen = idle.every((r) => r.opened === r.requested && r.closedDuringHold === 0);
    add(`≤ 16 KB RSS per idle authenticated WebSocket at ${idle[0].requested.toLocaleString('en-US')} connections`, `${fmt(b / 1024)} KB${allOpen ? '' : ' (not all connections stayed open)'}`, b <= 16 * 1024 && allOpen);
  }
  for (const p of ['parley-ws', 'parley-sse']) {
    const a = cell(5, 100, p);
    if (a) add(`server RSS ≤ 200 MiB at 100 streams, ${TARGET_NAME[p]}`, `${fmt(a.rss)} MiB peak`, a.rss <= 200);
  }
  const failed = rows.filter((r) => r.mode === 'stream').reduce((s, r) => s + r.failed + (r.warmup - r.warmupOk), 0);
  const total = rows.filter((r) => r.mode === 'stream').reduce((s, r) => s + r.requests + r.warmup, 0);
  add('every answer verified (right tokens, in order, no duplicates, no errors)', `${failed} failed of ${total} turns`, failed === 0);
  if (dbChecks.length) {
    const bad = dbChecks.filter((d) => !d.ok);
    const turns = dbChecks.reduce((s, d) => s + d.turnsOk, 0);
    add('every verified Parley turn stored (question and exact answer in the database)',
      bad.length ? bad.map((d) => `${d.label}: ${d.error || `${d.questions} questions, ${d.answers} answers (${d.good} exact) for ${d.turnsOk} turns`}`).join('; ') : `${dbChecks.length} database checks, ${turns.toLocaleString('en-US')} turns: all stored`,
      bad.length === 0);
  }
  return ['| target | measured | result |', '|---|---|---|', ...out.map((o) => `| ${o.name} | ${o.value} | ${o.pass ? 'PASS' : '**FAIL**'} |`)].join('\n');
}

function failuresText() {
  const lines = [];
  for (const r of rows) {
    const errs = { ...(r.warmupErrors || {}), ...(r.errors || {}) };
    const ce = r.connectErrors && Object.keys(r.connectErrors).length ? ` connect errors ${JSON.stringify(r.connectErrors)}` : '';
    if (Object.keys(errs).length || ce || (r.mode === 'idle' && (r.failed || r.closedDuringHold))) {
      const lo = r.listenOverflows ? ` — the kernel counted ${r.listenOverflows} listen-queue overflows during this load` : '';
      lines.push(`- ${r.phase} run ${r.run} ${r.target}${r.concurrency ? ` c=${r.concurrency}` : ''}: ${JSON.stringify(errs)}${ce}${r.mode === 'idle' ? ` failed=${r.failed} closed=${r.closedDuringHold} ${JSON.stringify(r.errors)}` : ''}${lo}`);
    }
  }
  for (const d of dbChecks) if (!d.ok) lines.push(`- stored turns ${d.label}: ${d.error || JSON.stringify(d)}`);
  return lines.length ? lines.join('\n') : 'none';
}

/** µs of CPU per delivered token by module, Parley beside the raw relay (both profiled under the same load). */
function perTokenTable(p, rp) {
  const tok = (x) => x.load?.tokens || null;
  if (!rp || !tok(p) || !tok(rp)) return [];
  const us = (ms, x) => (ms * 1000) / tok(x);
  const writev = (x) => x.functions.filter((f) => f.name === 'writev' || f.name === 'writevGeneric' || f.name === 'writeUtf8String' || f.name === 'writeBuffer').reduce((s, f) => s + f.selfMs, 0);
  const rmods = new Map(rp.modules.map((m) => [m.name, m.selfMs]));
  const rows2 = [
    ['all busy time (what the profile saw, minus idle)', us(p.busyMs, p), us(rp.busyMs, rp)],
    ['socket writes (`writev` & co., one syscall per frame)', us(writev(p), p), us(writev(rp), rp)],
    ['garbage collector', us((p.gcPct / 100) * p.totalMs, p), us((rp.gcPct / 100) * rp.totalMs, rp)],
    ...p.modules.filter((m) => m.name !== '(native / V8 builtins)').slice(0, 12).map((m) => [m.name, us(m.selfMs, p), rmods.has(m.name) ? us(rmods.get(m.name), rp) : 0]),
  ];
  return [
    '', `CPU µs per delivered token, Parley beside the raw \`${PROFILE_RELAY}\` relay under the same load (${fmt(p.load.tokensPerS, 0)} vs ${fmt(rp.load.tokensPerS, 0)} tok/s while profiled; relay profile \`${rp.file}\`):`, '',
    `| where (self time) | Parley µs / token | raw ${PROFILE_RELAY} relay µs / token |`, '|---|---:|---:|',
    ...rows2.map(([n, a, b]) => `| ${n} | ${fmt(a, 1)} | ${fmt(b, 1)} |`),
  ];
}

function profileMarkdown(p, rp = null) {
  const lines = [
    `Profile: \`${p.file}\`, ${p.windowed ? 'the measured phase only' : 'the whole process (start-up included)'}: ${fmt(p.totalMs, 0)} ms sampled; idle ${fmt(p.idlePct)} %, GC ${fmt(p.gcPct)} %, program ${fmt(p.programPct)} %.`,
    p.load ? `Load while profiled: ${p.load.concurrency} ${PROFILE_STREAMS} streams, ${p.load.completed}/${p.load.requests} turns ok, ${fmt(p.load.tokensPerS, 0)} tok/s, ${fmt(p.load.cpuMsPer1kTokens)} CPU ms per 1k tokens (with the profiler's overhead).` : '',
    '',
    '| # | self ms | self % of busy | function | where |', '|---:|---:|---:|---|---|',
    ...p.functions.slice(0, 25).map((f, i) => `| ${i + 1} | ${fmt(f.selfMs, 0)} | ${fmt(f.pct)} | \`${f.name}\` | ${f.where} |`),
    '',
    'Self time by module / package:', '',
    '| self ms | self % of busy | module |', '|---:|---:|---|',
    ...p.modules.slice(0, 15).map((m) => `| ${fmt(m.selfMs, 0)} | ${fmt(m.pct)} | ${m.name} |`),
    '',
    "Parley's own functions (src/), inclusive time (with everything they call):", '',
    '| total ms | % of busy | function | where |', '|---:|---:|---|---|',
    ...p.own.slice(0, 15).map((f) => `| ${fmt(f.totalMs, 0)} | ${fmt(f.pct)} | \`${f.name}\` | ${f.where} |`),
    ...perTokenTable(p, rp),
  ];
  return lines.join('\n') + '\n';
}

function machine() {
  const cpu = (os.cpus()[0] || {}).model || 'unknown';
  let rev = 'unknown';
  try {
    rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).trim();
    if (dirty) rev += ' + uncommitted changes in src/';
  } catch { /* not a git checkout */ }
  return { cpu, cores: os.cpus().length, ramGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10, node: process.version, os: `${os.type()} ${os.release()}`, rev };
}

function report() {
  const m = machine();
  const streamCs = [...new Set(rows.filter((r) => r.delay === 5 && r.phase === 'stream').map((r) => r.concurrency))].sort((a, b) => a - b);
  const satCs = [...new Set(rows.filter((r) => r.delay === 0 && r.phase === 'saturation').map((r) => r.concurrency))].sort((a, b) => a - b);
  const parts = [
    '# Parley benchmark results', '',
    `- date: ${new Date().toISOString()}  (${((Date.now() - t0) / 60000).toFixed(1)} min, ${RUNS} run${RUNS > 1 ? 's' : ''} per figure, medians${QUICK ? ', QUICK mode: smaller samples' : ''})`,
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.os}`,
    `- Node ${m.node}; Parley ${m.rev}`,
    `- mock LLM: ${TOKENS} tokens of "${TOKEN}" per answer; Parley on SQLite (temp dir), persistence on, one chat_id per client; all on 127.0.0.1`,
    `- raw data: \`${path.relative(ROOT, JSONL)}\``, '',
    'Everything runs on the same 2 cores: the mock, the server under test and the load generator compete for them, so absolute numbers are the machine\'s, and the raw relays beside Parley are the limit a Node gateway reaches here.', '',
  ];
  if (streamCs.length) {
    parts.push('## 1–2. Streaming: mock 200 tokens, 5 ms apart', '', streamTable(5, streamCs), '', ratioTable(5, streamCs), '');
    const edges = edgeTable(5, streamCs);
    if (edges) parts.push('Time to first token at the edges (tagged turns; the mock notes when each request reached it):', '', edges, '');
  }
  if (satCs.length) parts.push('## 1. Saturation: mock 200 tokens, no delay', '', streamTable(0, satCs), '', ratioTable(0, satCs), '');
  const it = idleTable();
  if (it) parts.push(`## 3. Memory per idle authenticated WebSocket connection (heartbeat every 5 s, held ${PLAN.idleHoldS} s)`, '', it, '');
  const tt = turnsTable();
  if (tt) parts.push(`## 4. Turns per second end to end (question stored → answer stored): ${TURN_TOKENS}-token answers, no delay, ${PLAN.turns.c} WebSocket clients`, '', tt, '');
  const st = scaleTable();
  if (st) parts.push(`## 6. Scale-out on PostgreSQL + Redis: mock ${TOKENS} tokens, 5 ms apart, ${PLAN.scale[0]} WebSocket streams`, '', st, '', '## Targets (issue 13)', '', scaleTargets(), '');
  parts.push('## Targets (issue 6)', '', targetsTable(), '');
  parts.push('## 5. Verification failures', '', failuresText(), '');
  if (profileSummary) parts.push(`## CPU profile: Parley, 100 ${PROFILE_STREAMS} streams`, '', profileMarkdown(profileSummary, relayProfile));
  const foreign = rows.map((r) => r.foreignCpuPct).filter((x) => x !== null && x !== undefined);
  if (foreign.length) {
    parts.push(`CPU used by processes other than the bench's during the loads (noise from other work on the machine; "other CPU %" in the tables): median ${fmt(median(foreign))} %, max ${fmt(Math.max(...foreign))} % of one core. Before the loads the bench waited ${fmt(quietWaitedMs / 1000, 0)} s in all for the others to use less than ${QUIET_PCT} % (BENCH_QUIET, BENCH_QUIET_WAIT).`, '');
  }
  if (rssNotes.length) {
    parts.push('Parley RSS right after start and at the end of each streaming run (after the 1000-stream load: V8 and malloc keep much of the memory that load used; the replay log keeps finished turns within a bounded event budget, and a heap snapshot after 3,000 turns at 100 streams showed ~36 MiB of live JS heap):', '');
    for (const n of rssNotes) parts.push(`- ${n.phase} run ${n.run}: ${fmt(n.startMiB)} MiB → ${fmt(n.endMiB)} MiB after ${n.turns.toLocaleString('en-US')} stored turns (${fmt(((n.endMiB - n.startMiB) * 1024) / n.turns)} KB per turn)`);
    parts.push('');
  }
  if (notes.length || problems.length) parts.push('## Notes', '', ...[...notes, ...problems].map((n) => `- ${n}`), '');
  parts.push('Column meanings: see bench/README.md.', '');
  return parts.join('\n');
}

/** Errors Parley logged (level ≥ 50 at PARLEY_LOG_LEVEL=warn) or printed as stack traces, per process. */
function scanServerLogs() {
  for (const f of fs.readdirSync(LOGS).filter((x) => x.startsWith('parley-'))) {
    const text = fs.readFileSync(path.join(LOGS, f), 'utf8');
    const bad = text.split('\n').filter((l) => /"level":(50|60)/.test(l) || /^\s*(Error|TypeError|RangeError|FATAL|Uncaught)/.test(l) || /ERR_|heap out of memory/.test(l));
    if (bad.length) problems.push(`${f}: ${bad.length} error line(s) logged, first: ${bad[0].slice(0, 300)}`);
  }
}

// ---------------------------------------------------------------- main
async function main() {
  log(`parley bench: ${RUNS} run(s)${QUICK ? ' (quick)' : ''}, phases: ${[...PHASES].join(', ')}; logs in ${path.relative(ROOT, LOGS)}`);
  // Parley runs as it is deployed: compiled JavaScript (tsx, the development runner, costs ~40 MiB and start-up time)
  if (env.BENCH_NO_BUILD === '1') log('BENCH_NO_BUILD=1: measuring dist/ as it is');
  else {
    log('building Parley (npm run build → dist/)');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  }
  const phases = [
    ['stream', () => streamPhase('stream', 5, PLAN.stream)],
    ['saturation', () => streamPhase('saturation', 0, PLAN.saturation)],
    ['idle', idlePhase],
    ['turns', turnsPhase],
    ['scale', scalePhase],
    ['profile', profilePhase],
  ];
  for (const [name, fn] of phases) {
    if (!PHASES.has(name)) continue;
    try {
      await fn();
    } catch (e) {
      // one phase failing (a crash, a load that could not run) does not stop the others
      problems.push(`phase ${name} aborted: ${e.message.split('\n')[0]}`);
      log(`!! phase ${name}: ${e.stack || e.message}`);
      process.exitCode = 1;
      await Promise.all([...children].map((p) => stop(p, 5000)));
    }
  }
  await stopAll();
  scanServerLogs();
  const md = report();
  fs.writeFileSync(RESULTS_MD, md);
  process.stdout.write(`\n${md}\n`);
  log(`written ${path.relative(ROOT, RESULTS_MD)}`);
}

await main();
