#!/usr/bin/env node
// Self time per function and per module from a V8 .cpuprofile (node --cpu-prof).
//   node bench/profile.mjs FILE.cpuprofile [N] [startMs endMs]   prints the top N functions (optionally of a
//   CLOCK_MONOTONIC window, e.g. a load result's monoStart/monoEnd)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const META = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function where(url, line, root) {
  if (!url) return '(native)';
  let p = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (root && p.startsWith(root + path.sep)) p = path.relative(root, p);
  return `${p}:${line + 1}`;
}

/** The module a URL belongs to: a package under node_modules, a project file, or node's internals. */
function moduleOf(url, root) {
  if (!url) return '(native / V8 builtins)';
  if (url.startsWith('node:')) return url;
  const p = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = p.lastIndexOf(`node_modules${path.sep}`);
  if (nm >= 0) {
    const rest = p.slice(nm + 13).split(path.sep);
    return `npm: ${rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  return root && p.startsWith(root + path.sep) ? path.relative(root, p) : p;
}

/** window: optional [startMs, endMs] on CLOCK_MONOTONIC (V8's profile clock on Linux): only samples inside count */
export function analyzeProfile(prof, root, window = null) {
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children || []) parent.set(c, n.id);
  // Parley's code: src/ (run through tsx) or its build in dist/ (how the bench runs it)
  const ownDirs = root ? ['src', 'dist'].map((d) => path.join(root, d) + path.sep) : [];
  const isOwn = (url) => Boolean(url && ownDirs.some((d) => (url.startsWith('file://') ? fileURLToPath(url) : url).startsWith(d)));
  const incl = new Map(); // Parley's own functions (src/): time with everything they call
  const self = new Map();
  const { samples, timeDeltas } = prof;
  let t = prof.startTime / 1000;
  let inWindow = 0;
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i] / 1000;
    const dt = (timeDeltas[i + 1] ?? 0) / 1000; // the delta after a sample is the time it stood for
    if (window && (t < window[0] || t > window[1])) continue;
    inWindow++;
    self.set(samples[i], (self.get(samples[i]) || 0) + dt);
    const seen = new Set();
    for (let id = samples[i]; id !== undefined; id = parent.get(id)) {
      const cf = byId.get(id).callFrame;
      if (!isOwn(cf.url)) continue;
      const key = `${cf.functionName || '(anonymous)'}|${cf.url}|${cf.lineNumber}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const f = incl.get(key) || { name: cf.functionName || '(anonymous)', where: where(cf.url, cf.lineNumber, root), totalMs: 0 };
      f.totalMs += dt;
      incl.set(key, f);
    }
  }
  let total = 0;
  const meta = {};
  const fns = new Map();
  const mods = new Map();
  for (const [id, ms] of self) {
    total += ms;
    const cf = byId.get(id).callFrame;
    const name = cf.functionName || '(anonymous)';
    if (META.has(name)) { meta[name] = (meta[name] || 0) + ms; continue; }
    const key = `${name}|${cf.url}|${cf.lineNumber}`;
    const f = fns.get(key) || { name, where: where(cf.url, cf.lineNumber, root), module: moduleOf(cf.url, root), selfMs: 0 };
    f.selfMs += ms;
    fns.set(key, f);
    const m = moduleOf(cf.url, root);
    mods.set(m, (mods.get(m) || 0) + ms);
  }
  const busy = total - (meta['(idle)'] || 0);
  const functions = [...fns.values()].sort((a, b) => b.selfMs - a.selfMs).map((f) => ({ ...f, pct: (f.selfMs / busy) * 100 }));
  const modules = [...mods.entries()].map(([name, selfMs]) => ({ name, selfMs, pct: (selfMs / busy) * 100 })).sort((a, b) => b.selfMs - a.selfMs);
  const own = [...incl.values()].sort((a, b) => b.totalMs - a.totalMs).map((f) => ({ ...f, pct: (f.totalMs / busy) * 100 }));
  const pctOf = (k) => ((meta[k] || 0) / total) * 100;
  return { windowed: Boolean(window), samples: inWindow, profileStartMs: prof.startTime / 1000, profileEndMs: prof.endTime / 1000, totalMs: total, busyMs: busy, idlePct: pctOf('(idle)'), gcPct: pctOf('(garbage collector)'), programPct: pctOf('(program)'), functions, modules, own };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) { console.error('usage: node bench/profile.mjs FILE.cpuprofile [N]'); process.exit(2); }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const win = process.argv[4] && process.argv[5] ? [Number(process.argv[4]), Number(process.argv[5])] : null;
  const p = analyzeProfile(JSON.parse(fs.readFileSync(file, 'utf8')), root, win);
  const n = Number(process.argv[3] || 30);
  console.log(`${file}: ${Math.round(p.totalMs)} ms sampled, idle ${p.idlePct.toFixed(1)} %, GC ${p.gcPct.toFixed(1)} %, program ${p.programPct.toFixed(1)} %`);
  for (const f of p.functions.slice(0, n)) console.log(`${f.selfMs.toFixed(0).padStart(7)} ms ${f.pct.toFixed(1).padStart(5)} %  ${f.name}  ${f.where}`);
  console.log('\nParley functions (src/), inclusive:');
  for (const f of p.own.slice(0, 20)) console.log(`${f.totalMs.toFixed(0).padStart(7)} ms ${f.pct.toFixed(1).padStart(5)} %  ${f.name}  ${f.where}`);
  console.log('\nby module:');
  for (const m of p.modules.slice(0, 20)) console.log(`${m.selfMs.toFixed(0).padStart(7)} ms ${m.pct.toFixed(1).padStart(5)} %  ${m.name}`);
}
