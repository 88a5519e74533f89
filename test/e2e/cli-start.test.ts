import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { newChatId } from '../helpers/apps.ts';
import { WsClient, kinds } from '../helpers/ws-client.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'bin/parley.mjs');

/** The environment of a fresh machine: no PARLEY_* variables at all (port aside, to avoid clashes). */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_')) env[k] = v;
  return { ...env, ...extra };
}

interface Started { proc: ChildProcess; url: string; stdout: () => string }

/** Runs `parley serve` through the project's bin (tsx, as `npm start` does) in a fresh folder and waits for "listening". */
function start(cwd: string, env: Record<string, string> = {}): Promise<Started> {
  return new Promise((resolvePromise, reject) => {
    const proc = spawn(process.execPath, [CLI, 'serve'], { cwd, env: cleanEnv({ PARLEY_PORT: '0', PARLEY_HOST: '127.0.0.1', ...env }), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}\n${err}`)), 40_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"parley listening"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolvePromise({ proc, url: m[1]!, stdout: () => out });
      }
    });
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}:\n${out}\n${err}`)); });
  });
}

function stop(s: Started): Promise<number | null> {
  return new Promise((r) => {
    s.proc.removeAllListeners('exit');
    s.proc.on('exit', (code) => r(code));
    s.proc.kill('SIGTERM');
  });
}

// cold starts of tsx on a loaded machine: each test starts one or two servers
describe('parley serve with no configuration', { timeout: 90_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('starts on SQLite, prints the admin credentials once, answers /health, and stops cleanly', async () => {
    const first = await start(dir);
    try {
      const health = await fetch(`${first.url}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'ok', db: { ok: true, dialect: 'sqlite' } });
      const m = /user:\s+admin\s+password:\s+(\S+)/.exec(first.stdout());
      expect(m).not.toBeNull();
      const login = await fetch(`${first.url}/api/v1/user/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_name: 'admin', password: m![1] }) });
      expect(login.status).toBe(200);
      const token = ((await login.json()) as { data: { access_token: string } }).data.access_token;
      const online = await fetch(`${first.url}/api/v1/chat/online`, { headers: { authorization: `Bearer ${token}` } });
      const names = ((await online.json()) as { data: Array<{ name: string }> }).data.map((a) => a.name).sort();
      expect(names).toEqual(['Demo assistant', 'Demo chat', 'Demo workflow']);
    } finally {
      expect(await stop(first)).toBe(0);
    }

    const second = await start(dir);
    try {
      expect(second.stdout()).not.toMatch(/password:/);
      expect((await fetch(`${second.url}/health`)).status).toBe(200);
    } finally {
      await stop(second);
    }
  });

  it('the seeded "Demo chat" and "Demo assistant" answer over WebSocket with the offline demo provider', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'parley-cli-'));
    const server = await start(fresh);
    try {
      const password = /user:\s+admin\s+password:\s+(\S+)/.exec(server.stdout())![1]!;
      const login = await fetch(`${server.url}/api/v1/user/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_name: 'admin', password }) });
      const token = ((await login.json()) as { data: { access_token: string } }).data.access_token;
      const online = await fetch(`${server.url}/api/v1/chat/online`, { headers: { authorization: `Bearer ${token}` } });
      const apps = ((await online.json()) as { data: Array<{ id: string; name: string }> }).data;
      const idOf = (name: string) => apps.find((a) => a.name === name)!.id;

      /** a question on a new conversation, the token in `t` as a browser sends it; the turn's frames */
      const ask = async (appId: string, question: string) => {
        const chatId = newChatId();
        const ws = await WsClient.connect(server.url, `/api/v1/chat/${appId}?chat_id=${chatId}&t=${token}`);
        try {
          expect(ws.closeCode, ws.describe()).toBeNull();
          ws.send({ chat_id: chatId, inputs: { input: question } });
          const frames = await ws.turn(0, 15_000);
          expect(frames.every((f) => f.chat_id === chatId && f.flow_id === appId)).toBe(true);
          expect(kinds(frames)[0]).toBe('processing/begin');
          expect(kinds(frames).slice(-2), ws.describe()).toEqual(['answer/end_cover', 'processing/close']);
          return frames;
        } finally {
          ws.close();
        }
      };

      const chat = await ask(idOf('Demo chat'), 'Hello there!');
      const chatAnswer = chat.at(-2)!;
      expect(typeof chatAnswer.message).toBe('string');
      expect((chatAnswer.message as string).trim().length).toBeGreaterThan(0);
      expect(typeof chatAnswer.message_id).toBe('number');
      expect(kinds(chat)).not.toContain('tool/start');

      const assistant = await ask(idOf('Demo assistant'), 'What is 12 * (3 + 4)?');
      const toolStart = assistant.find((f) => f.category === 'tool' && f.type === 'start');
      const toolEnd = assistant.find((f) => f.category === 'tool' && f.type === 'end');
      expect(toolStart, kinds(assistant).join(' ')).toBeDefined();
      expect(JSON.parse(toolStart!.message as string).tool_key).toBe('calculator');
      expect(JSON.parse(toolEnd!.message as string)).toMatchObject({ tool_key: 'calculator', output: '84' });
      const answer = assistant.at(-2)!.message as string;
      expect(answer.trim().length).toBeGreaterThan(0);
      expect(answer).toContain('84');
    } finally {
      expect(await stop(server)).toBe(0);
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('refuses an invalid configuration with every problem listed', async () => {
    const proc = spawn(process.execPath, [CLI, 'serve'], { cwd: dir, env: cleanEnv({ PARLEY_PORT: 'x', PARLEY_CHAT__MAX_FRAME_BYTES: '1' }), stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const code = await new Promise((r) => proc.on('exit', r));
    expect(code).toBe(2);
    expect(err).toContain('server.port');
    expect(err).toContain('chat.max_frame_bytes');
  });

  it('parley user add and parley migrate work on the same data dir', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((r) => {
      const p = spawn(process.execPath, [CLI, ...args], { cwd: dir, env: cleanEnv({}), stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
      p.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
      p.on('exit', (code) => r({ code, out }));
    });
    expect((await run(['migrate'])).out).toContain('up to date');
    const added = await run(['user', 'add', 'carol', '--password', 'carol-password']);
    expect(added.code).toBe(0);
    expect(added.out).toContain('user carol');
    const again = await run(['user', 'add', 'carol', '--password', 'x']);
    expect(again.code).toBe(1);
  });
});
