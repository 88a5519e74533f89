/**
 * Several instances, one conversation space (issue 13): real `parley serve` processes on one
 * PostgreSQL database and one Redis, real WebSocket clients, the mock model over HTTP. No sticky
 * sessions: a client may talk to any instance.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MockLlm } from '../fixtures/mock-llm.ts';
import { newChatId } from '../helpers/apps.ts';
import { startDeployment, type Deployment, type Instance } from '../helpers/instances.ts';
import { redisUrl } from '../helpers/redis.ts';
import { ADMIN_PASSWORD, Api, dbTargets } from '../helpers/server.ts';
import { eventually } from '../helpers/wait.ts';
import { kinds, WsClient, type Frame } from '../helpers/ws-client.ts';

const redis = redisUrl();
const postgres = dbTargets().some((t) => t.name === 'postgres');
const tokens = (n: number) => Array<string>(n).fill(' tok');
const isClose = (f: Frame) => f.category === 'processing' && f.type === 'close';
const seqs = (frames: Frame[]) => frames.map((f) => f.seq);

describe.runIf(redis && postgres)('several instances on PostgreSQL and Redis', { timeout: 120_000 }, () => {
  let mock: MockLlm;
  let deployment: Deployment;
  let a: Instance;
  let b: Instance;
  let token: string;
  let chatApp: string;
  let workflowApp: string;
  const sockets: WsClient[] = [];

  beforeAll(async () => {
    mock = await MockLlm.start();
    deployment = await startDeployment(2, {
      redisUrl: redis!,
      env: { PARLEY_LLM_BASE_URL: mock.url, PARLEY_LLM_MODEL: 'mock-gpt', PARLEY_LLM__MAX_RETRIES: '0', PARLEY_LLM__STALL_TIMEOUT: '10', PARLEY_CHAT__TURN_LEASE: '3' },
    });
    [a, b] = deployment.instances as [Instance, Instance];
    const admin = await new Api(a.url).login('admin', ADMIN_PASSWORD);
    token = admin.token!;
    const apps = (await admin.get('/api/v1/chat/online?limit=100')).body.data as Array<{ id: string; name: string }>;
    chatApp = apps.find((x) => x.name === 'Demo chat')!.id;
    workflowApp = apps.find((x) => x.name === 'Demo workflow')!.id;
  }, 180_000);
  afterAll(async () => {
    for (const ws of sockets) ws.close();
    await deployment?.close();
    await mock?.close();
  });

  const connect = async (instance: Instance, chatId: string, query = '') => {
    const ws = await WsClient.connect(instance.url, `/api/v1/chat/${chatApp}?chat_id=${chatId}${query}`, { token });
    sockets.push(ws);
    expect(ws.closeCode, ws.describe()).toBeNull();
    return ws.settle();
  };

  it('a watcher on B gets every frame of a turn run on A, once, in seq order', async () => {
    const chatId = newChatId();
    const onB = await connect(b, chatId);
    const onA = await connect(a, chatId);
    mock.enqueue({ text: tokens(40), delayMs: 5 });
    onA.send({ inputs: { input: 'hello from A' } });
    const turnA = await onA.turn(0);
    const turnB = await onB.turn(0);
    expect(kinds(turnA).at(-2)).toBe('answer/end_cover');
    expect(onB.raw.slice(0, turnB.length)).toEqual(onA.raw.slice(0, turnA.length));
    const s = seqs(turnB);
    expect(s.every((x, i) => i === 0 || x === s[i - 1]! + 1)).toBe(true);
  });

  it('a client streaming from A reconnects to B with last_seq: no gap, no duplicate', async () => {
    const chatId = newChatId();
    const first = await connect(a, chatId);
    mock.enqueue({ text: tokens(60), delayMs: 20 });
    first.send({ inputs: { input: 'a long one' } });
    await first.until((f) => f.filter((x) => x.type === 'stream').length >= 5, 10_000, 'five deltas');
    first.close();
    await first.waitClose();
    const lastSeq = first.frames.at(-1)!.seq!;
    const second = await WsClient.connect(b.url, `/api/v1/chat/${chatApp}?chat_id=${chatId}&last_seq=${lastSeq}`, { token });
    sockets.push(second);
    await second.until((f) => f.some(isClose), 15_000, 'the close');
    expect(second.frames[0]).toMatchObject({ category: 'system', type: 'info', message: { resumed: true, from_seq: lastSeq } });
    const all = [...first.frames, ...second.frames.slice(1)];
    const s = seqs(all);
    expect(s[0]).toBe(s.at(-1)! - all.length + 1);
    expect(new Set(s).size).toBe(s.length);
    expect(kinds(all).at(0)).toBe('processing/begin');
    expect(kinds(all).at(-1)).toBe('processing/close');
  });

  it('a stop sent to B stops the turn running on A within a second; the partial answer is stored once', async () => {
    const chatId = newChatId();
    const onA = await connect(a, chatId);
    const onB = await connect(b, chatId);
    mock.enqueue({ text: tokens(400), delayMs: 20 });
    onA.send({ inputs: { input: 'go on and on' } });
    await onA.until((f) => f.filter((x) => x.type === 'stream').length >= 3, 10_000, 'deltas');
    const asked = Date.now();
    onB.send({ action: 'stop', chat_id: chatId });
    const turn = await onA.turn(0);
    expect(Date.now() - asked).toBeLessThan(1000);
    expect(kinds(turn).slice(-2)).toEqual(['answer/end', 'processing/close']);
    const history = (await new Api(b.url).call('GET', `/api/v1/chat/history?chat_id=${chatId}&page_size=50`, { token })).body.data as Array<{ category: string; remark: string }>;
    expect(history.filter((m) => m.category === 'answer').map((m) => m.remark)).toEqual(['break_answer']);

    // the same through the REST interrupt, answered on B for a turn on A
    mock.enqueue({ text: tokens(400), delayMs: 20 });
    const from = onA.frames.length;
    onA.send({ inputs: { input: 'again' } });
    await onA.until((f) => f.slice(from).filter((x) => x.type === 'stream').length >= 3, 10_000, 'deltas');
    const r = await new Api(b.url).call('POST', '/api/v1/chat/interrupt', { body: { chat_id: chatId }, token });
    expect(r.body.data).toEqual({ stopped: true });
    expect(kinds(await onA.turn(from)).slice(-2)).toEqual(['answer/end', 'processing/close']);
  });

  it('a workflow paused on A is answered through B and completes', async () => {
    const chatId = newChatId();
    const path = `/api/v1/workflow/chat/${workflowApp}?chat_id=${chatId}`;
    const onA = await WsClient.connect(a.url, path, { token });
    sockets.push(onA);
    onA.send({ action: 'init_data', chat_id: chatId, flow_id: workflowApp });
    const paused = await onA.turn(0);
    expect(JSON.parse(paused.at(-1)!.extra)).toMatchObject({ run_status: 'input' });
    const onB = await WsClient.connect(b.url, path, { token });
    sockets.push(onB);
    mock.enqueue({ text: 'A note about rain.' });
    onB.send({ action: 'input', chat_id: chatId, data: { ask: { data: { topic: 'rain', length: 'short' } } } });
    const done = await onB.turn(0);
    expect(JSON.parse(done.at(-1)!.extra)).toMatchObject({ run_status: 'success' });
    expect(kinds(done)).toContain('output_msg/over');
    // A watched it too
    await onA.until((f) => f.filter(isClose).length >= 2, 10_000, 'the second segment on A');
  });

  it('kill -9 of the instance running a turn: the turn is ended within the lease, rows intact, the conversation goes on elsewhere', async () => {
    const victim = await deployment.start();
    const chatId = newChatId();
    const onB = await connect(b, chatId);
    const onVictim = await connect(victim, chatId);
    mock.enqueue({ text: tokens(400), delayMs: 25 });
    onVictim.send({ inputs: { input: 'doomed' } });
    await onB.until((f) => f.filter((x) => x.type === 'stream').length >= 5, 10_000, 'deltas on B');
    await deployment.kill(victim);
    const killed = Date.now();
    await onB.until((f) => f.some(isClose), 15_000, 'the close of the dead turn');
    expect(Date.now() - killed).toBeLessThan(10_000);
    expect(kinds(onB.frames).slice(-2)).toEqual(['error/end', 'processing/close']);
    const streamed = onB.frames.filter((f) => f.type === 'stream').map((f) => f.message.content as string).join('');
    const history = async () => (await new Api(b.url).call('GET', `/api/v1/chat/history?chat_id=${chatId}&page_size=50`, { token })).body.data as Array<{ category: string; remark: string; message: string }>;
    const rows = (await history()).reverse();
    expect(rows.map((m) => [m.category, m.remark])).toEqual([['question', ''], ['answer', 'break_answer']]);
    expect(streamed.startsWith(rows[1]!.message) || rows[1]!.message.startsWith(streamed)).toBe(true);
    // the conversation takes a question on the surviving instance
    mock.enqueue({ text: 'still here' });
    const from = onB.frames.length;
    onB.send({ inputs: { input: 'are you there?' } });
    const next = await onB.turn(from);
    expect(next.find((f) => f.type === 'end_cover')!.message).toBe('still here');
    expect(next[0]!.seq).toBeGreaterThan(onB.frames[from - 1]!.seq!);
    await eventually(async () => ((await history()).length === 4 ? true : undefined), 'the next answer stored');
  });

  it('a graceful stop of an instance mid-turn: the partial answer stored, sockets closed with 1001; the client resumes on another instance', async () => {
    const leaving = await deployment.start();
    const chatId = newChatId();
    const ws = await connect(leaving, chatId);
    mock.enqueue({ text: tokens(400), delayMs: 20 });
    ws.send({ inputs: { input: 'a long answer' } });
    await ws.until((f) => f.filter((x) => x.type === 'stream').length >= 3, 10_000, 'deltas');
    const exit = deployment.stop(leaving);
    expect(await ws.waitClose()).toEqual({ code: 1001, reason: 'going away' });
    expect(await exit).toBe(0);
    // the turn ended before its socket was closed
    expect(kinds(ws.frames).slice(-2)).toEqual(['answer/end', 'processing/close']);
    const from = ws.frames.find((f) => f.type === 'stream')!.seq!;
    const onB = await WsClient.connect(b.url, `/api/v1/chat/${chatApp}?chat_id=${chatId}&last_seq=${from}`, { token });
    sockets.push(onB);
    await onB.until((f) => f.some(isClose), 10_000, 'the replayed close');
    expect(seqs(onB.frames.slice(1))).toEqual(seqs(ws.frames.filter((f) => f.seq! > from)));
    const history = (await new Api(b.url).call('GET', `/api/v1/chat/history?chat_id=${chatId}&page_size=50`, { token })).body.data as Array<{ category: string; remark: string }>;
    expect(history.filter((m) => m.category === 'answer').map((m) => m.remark)).toEqual(['break_answer']);
  });
});
