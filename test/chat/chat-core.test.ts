/**
 * The chat core driven directly, as a transport drives it (ChatService and the bus), without an
 * HTTP or WebSocket server: built by the composition root on a SQLite file, with the offline demo
 * model and a clock the tests move instead of sleeping.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatService } from '../../src/chat/chat-service.ts';
import type { ChatTarget } from '../../src/chat/targets.ts';
import { isLost, TurnRegistry } from '../../src/chat/turn-registry.ts';
import { TurnSeqs } from '../../src/chat/turn-seqs.ts';
import { TurnSweeper } from '../../src/chat/turn-sweeper.ts';
import { TurnEvents } from '../../src/chat/watch.ts';
import { loadConfig } from '../../src/config/config.ts';
import type { ChatEvent } from '../../src/domain/events.ts';
import type { Principal } from '../../src/domain/types.ts';
import { createServer, type ServerHandle } from '../../src/server.ts';
import { newChatId } from '../helpers/apps.ts';
import { ManualClock } from '../helpers/clock.ts';
import { demoApp } from '../helpers/seed.ts';
import type { TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/wait.ts';

const REPLAY_TTL_S = 60;
const INPUT_TIMEOUT_MIN = 5;

describe('the chat core, without a server', () => {
  const clock = new ManualClock();
  let dataDir: string;
  let handle: ServerHandle;
  let chat: ChatService;
  let alice: Principal;
  let bob: Principal;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'parley-core-'));
    const { config } = loadConfig({
      file: null, env: {},
      overrides: {
        server: { data_dir: dataDir, database_url: '' }, auth: { admin_password: 'admin-pass-123' }, log: { level: 'silent' },
        chat: { replay_ttl: REPLAY_TTL_S }, workflow: { input_timeout: INPUT_TIMEOUT_MIN },
        llm: { providers: { default: { type: 'demo', token_delay_ms: 0 } } },
      },
    });
    handle = await createServer(config, { clock });
    chat = handle.services.chat;
    const user = async (name: string): Promise<Principal> => {
      const row = await handle.services.auth.createUser(name, `${name}-password`, 'user');
      return { id: row.id, user_name: row.user_name, role: row.role };
    };
    alice = await user('alice');
    bob = await user('bob');
  });
  afterAll(async () => {
    await handle?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const target = async (p: Principal, kind: 'chat' | 'workflow', chatId: string | null): Promise<ChatTarget> =>
    chat.resolveTarget(p, (await demoApp({ handle } as TestServer, kind)).id, { chatId, stateless: chatId === null });

  /** The events of the turn `start` begins on bus key `key`, through its close. */
  const turnOf = async (key: string, p: Principal, start: () => Promise<{ fromSeq: number; duplicate: boolean }>): Promise<ChatEvent[]> => {
    const events = new TurnEvents(handle.services.bus, key, p.id);
    const started = await start();
    events.start(started.fromSeq);
    const seen: ChatEvent[] = [];
    await events.each((e) => { seen.push(e); });
    return seen;
  };
  const kinds = (events: ChatEvent[]) => events.map((e) => e.body.kind);
  /** Until the turn of `key` has settled (its close comes first): the conversation is free again. */
  const settled = (key: string) => eventually(() => (chat.isRunning(key) ? undefined : true), 'the turn to settle');

  it('a question is answered and stored; a repeated client_message_id is the same turn until replay_ttl', async () => {
    const chatId = newChatId();
    const t = await target(alice, 'chat', chatId);
    const ask = () => chat.ask({ principal: alice, target: t, text: 'Hello core', inputs: { input: 'Hello core' }, clientMessageId: 'q-1' });
    const events = await turnOf(chatId, alice, ask);
    expect(kinds(events)[0]).toBe('begin');
    expect(kinds(events).slice(-3)).toEqual(['answer_start', 'answer_end', 'close']);
    const rows = await handle.services.repos.messages.all(chatId);
    expect(rows.map((r) => r.category)).toEqual(['question', 'answer']);

    const again = await ask();
    expect(again).toMatchObject({ duplicate: true, fromSeq: events[0]!.seq - 1 });
    expect(await handle.services.repos.messages.all(chatId)).toHaveLength(2);

    clock.advance(REPLAY_TTL_S * 1000);
    const later = await turnOf(chatId, alice, ask);
    expect(later[0]!.seq).toBe(events.at(-1)!.seq + 1);
    expect(await handle.services.repos.messages.all(chatId)).toHaveLength(4);
  });

  it("someone else's conversation is one outcome, conversation_denied, and nothing of the question is stored", async () => {
    const chatId = newChatId();
    await turnOf(chatId, alice, async () => chat.ask({ principal: alice, target: await target(alice, 'chat', chatId), text: 'mine', inputs: { input: 'mine' } }));
    await expect(target(bob, 'chat', chatId)).rejects.toMatchObject({ code: 'conversation_denied' });
    // a target resolved before the conversation existed is checked again when its turn stores the question
    const early = { ...(await target(bob, 'chat', newChatId())), chatId, conversation: null };
    const published: ChatEvent[] = [];
    const unsubscribe = handle.services.bus.subscribe(chatId, (e) => published.push(e));
    await expect(chat.ask({ principal: bob, target: early, text: 'let me in', inputs: { input: 'let me in' } })).rejects.toMatchObject({ code: 'conversation_denied' });
    await eventually(() => (chat.isRunning(chatId) ? undefined : true), 'the refused turn to end');
    unsubscribe();
    expect(published).toEqual([]);
    expect((await handle.services.repos.messages.all(chatId)).map((r) => r.user_id)).toEqual([alice.id, alice.id]);
  });

  it('a workflow answer after workflow.input_timeout fails the run with 10527 (the clock moved, nobody slept)', async () => {
    const chatId = newChatId();
    const t = await target(alice, 'workflow', chatId);
    const first = await turnOf(chatId, alice, () => chat.startWorkflow({ principal: alice, target: t }));
    const request = first.find((e) => e.body.kind === 'input_request')!;
    expect(request.body).toMatchObject({ node: { nodeId: 'ask' }, schema: { kind: 'form' } });
    expect(first.at(-1)!.body).toMatchObject({ kind: 'close', extra: { run_status: 'input' } });

    clock.advance(INPUT_TIMEOUT_MIN * 60_000 + 1);
    const late = await turnOf(chatId, alice, () => chat.answerWorkflow({ principal: alice, target: t, nodeId: 'ask', data: { topic: 'tea', length: 'short' } }));
    expect(kinds(late)).toEqual(['begin', 'node_end', 'error', 'close']);
    expect(late[2]!.body).toMatchObject({ code: 'workflow_input_timeout', data: { node_id: 'ask' } });
    expect(late.at(-1)!.body).toMatchObject({ extra: { run_status: 'failed' } });
    expect(await handle.services.repos.workflowRuns.get(chatId)).toMatchObject({ status: 'failed' });
  });

  it('an unstored workflow run waits in memory under its scratch key: stopped by stopScratch, gone after forgetScratch', async () => {
    const key = chat.newScratchKey();
    const t = await target(alice, 'workflow', null);
    const first = await turnOf(key, alice, () => chat.startWorkflow({ principal: alice, target: t, scratchKey: key }));
    expect(first.at(-1)!.body).toMatchObject({ extra: { run_status: 'input' } });
    expect(first.every((e) => e.chatId === '')).toBe(true);
    // check_status sends the pending request again, in a segment of its own
    const resent = await turnOf(key, alice, async () => (await chat.checkWorkflow(alice, t, key)).started!);
    expect(kinds(resent)).toEqual(['begin', 'input_request', 'close']);
    expect(resent[1]!.body).toMatchObject(first.find((e) => e.body.kind === 'input_request')!.body);

    const stopped: ChatEvent[] = [];
    const unsubscribe = handle.services.bus.subscribe(key, (e) => stopped.push(e));
    expect(await chat.stopScratch(key)).toBe(true);
    unsubscribe();
    expect(stopped.at(-1)!.body).toMatchObject({ kind: 'close', extra: { run_status: 'stopped' } });
    expect(await chat.checkWorkflow(alice, t, key)).toMatchObject({ started: null, run_status: null });

    await turnOf(key, alice, () => chat.startWorkflow({ principal: alice, target: t, scratchKey: key }));
    chat.forgetScratch(key);
    expect(await chat.checkWorkflow(alice, t, key)).toMatchObject({ started: null, run_id: null });
  });

  it('a stop of a waiting run while another instance runs a segment of it reaches that instance, and the run still waits', async () => {
    const { repos, bus } = handle.services;
    const chatId = newChatId();
    const t = await target(alice, 'workflow', chatId);
    await turnOf(chatId, alice, () => chat.startWorkflow({ principal: alice, target: t }));
    await settled(chatId);
    // another instance sends the pending request again (check_status): the conversation is taken there
    const elsewhere = 'f'.repeat(32);
    const fromSeq = (await repos.conversations.reserveSeq(chatId, 10_000, { id: elsewhere, owner: 'other', lease: new Date(clock.now() + 30_000).toISOString() }))!;
    const stops: Array<{ key: string; turnId?: string | undefined }> = [];
    const off = bus.onControl((m) => {
      stops.push({ key: m.key, turnId: m.turnId });
      // that instance ends its segment when the stop reaches it
      void repos.conversations.settleSeq(chatId, elsewhere, fromSeq + 1).then(() => {
        bus.publish({ seq: fromSeq + 1, key: chatId, chatId, turnId: elsewhere, flowId: t.app.id, userId: alice.id, body: { kind: 'close' } });
      });
    });
    try {
      expect(await chat.stop(chatId)).toBe(true);
    } finally {
      off();
    }
    expect(stops).toEqual([{ key: chatId, turnId: elsewhere }]);
    // this instance's attempt to stop the waiting run itself gave its claim back
    expect(await repos.workflowRuns.get(chatId)).toMatchObject({ status: 'input' });
  });

  it('a turn whose lease was taken over (it ran out) stops here at once: the instance that took it stored and published its end', async () => {
    const { repos, bus } = handle.services;
    const chatId = newChatId();
    await turnOf(chatId, alice, async () => chat.ask({ principal: alice, target: await target(alice, 'chat', chatId), text: 'first', inputs: { input: 'first' } }));
    await settled(chatId);
    const owner = { id: 'this one', leaseMs: 30_000, clock };
    const seqs = new TurnSeqs(repos.conversations, owner);
    const turns = new TurnRegistry({ bus, seqs, clock, replayTtl: 60 });
    const sweeper = new TurnSweeper({ repos, bus, turns, seqs, owner, replayTtl: 60 });
    const published: ChatEvent[] = [];
    const unsubscribe = bus.subscribe(chatId, (e) => published.push(e));
    let aborted: AbortSignal | null = null;
    const started = (await turns.begin(chatId, async (turn) => {
      aborted = turn.signal;
      return {
        ids: { chatId, flowId: 'app', userId: alice.id }, floor: await seqs.floor(chatId, chatId, turn.turnId),
        work: async (emit) => {
          emit({ kind: 'delta', content: 'streaming', reasoning: '' });
          await new Promise((resolve) => turn.signal.addEventListener('abort', resolve));
          emit({ kind: 'delta', content: 'after the end', reasoning: '' });
        },
      };
    }))!;
    await eventually(() => (turns.leasedTurns().length === 1 ? true : undefined), 'the lease held');
    await sweeper.renew();
    expect(turns.isRunning(chatId)).toBe(true);
    // the lease ran out (this process stalled) and another instance's sweep took the turn over
    const row = (await repos.conversations.get(chatId))!;
    expect(await repos.conversations.claimTurn(chatId, started.turnId, row.turn_lease!, 'the sweeper', new Date(clock.now() + 30_000).toISOString())).toBe(true);
    await sweeper.renew();
    await turns.settled(chatId);
    unsubscribe();
    expect(isLost(aborted!)).toBe(true);
    expect(published.map((e) => e.body.kind)).toEqual(['begin', 'delta']);
    // the conversation stays the sweeper's to settle
    expect(await repos.conversations.get(chatId)).toMatchObject({ turn_id: started.turnId, turn_owner: 'the sweeper' });
    await repos.conversations.settleSeq(chatId, started.turnId, started.fromSeq + 4);
  });

  it("a turn whose instance stopped renewing its lease is ended by a sweep: partial answer stored once, watchers told, the conversation free", async () => {
    const { repos, bus } = handle.services;
    const chatId = newChatId();
    await turnOf(chatId, alice, async () => chat.ask({ principal: alice, target: await target(alice, 'chat', chatId), text: 'first', inputs: { input: 'first' } }));
    await settled(chatId);
    const app = await demoApp({ handle } as TestServer, 'chat');
    // what a dead instance leaves: the conversation taken, the question stored, a few events published
    const lease = (ms: number) => new Date(clock.now() + ms).toISOString();
    const fromSeq = (await repos.conversations.reserveSeq(chatId, 10_000, { id: 'd'.repeat(32), owner: 'dead', lease: lease(30_000) }))!;
    await repos.messages.insert({
      chat_id: chatId, flow_id: app.id, user_id: alice.id, is_bot: 0, type: 'human', category: 'question', message: '{"input":"second"}',
      intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: 'd'.repeat(32),
    });
    const ev = (seq: number, body: ChatEvent['body']): ChatEvent => ({ seq, key: chatId, chatId, turnId: 'd'.repeat(32), flowId: app.id, userId: alice.id, body });
    bus.publish(ev(fromSeq + 1, { kind: 'begin' }));
    bus.publish(ev(fromSeq + 2, { kind: 'delta', content: 'half an ', reasoning: '' }));
    bus.publish(ev(fromSeq + 3, { kind: 'delta', content: 'answer', reasoning: '' }));
    const watcher: ChatEvent[] = [];
    bus.subscribe(chatId, (e) => watcher.push(e));
    await expect(chat.ask({ principal: alice, target: await target(alice, 'chat', chatId), text: 'third', inputs: { input: 'third' } })).rejects.toMatchObject({ code: 'conflict' });

    const turns = new TurnRegistry({ bus, seqs: new TurnSeqs(repos.conversations, { id: 'sweeper', leaseMs: 30_000, clock }), clock, replayTtl: 60 });
    const sweeper = new TurnSweeper({ repos, bus, turns, seqs: new TurnSeqs(repos.conversations, { id: 'sweeper', leaseMs: 30_000, clock }), owner: { id: 'sweeper', leaseMs: 30_000, clock }, replayTtl: 60 });
    expect(await sweeper.sweep(false)).toBe(0);
    clock.advance(30_001);
    expect(await sweeper.sweep(false)).toBe(1);
    expect(await sweeper.sweep(false)).toBe(0);

    expect(watcher.map((e) => [e.seq - fromSeq, e.body.kind])).toEqual([[4, 'error'], [5, 'close']]);
    const rows = await repos.messages.byTurn(chatId, 'd'.repeat(32));
    expect(rows.map((r) => r.category)).toEqual(['question', 'answer']);
    expect(await repos.messages.get(rows[1]!.id)).toMatchObject({ message: 'half an answer', remark: 'break_answer', parent_message_id: rows[0]!.id });
    expect(await repos.conversations.get(chatId)).toMatchObject({ turn_id: null, last_seq: fromSeq + 5 });
    // the conversation takes questions again, and its seqs go on
    const next = await turnOf(chatId, alice, async () => chat.ask({ principal: alice, target: await target(alice, 'chat', chatId), text: 'third', inputs: { input: 'third' } }));
    expect(next[0]!.seq).toBe(fromSeq + 6);
  });

  it('a single instance ends at start every turn it finds running (nothing else can be running one)', async () => {
    const { repos } = handle.services;
    const chatId = newChatId();
    await turnOf(chatId, alice, async () => chat.ask({ principal: alice, target: await target(alice, 'chat', chatId), text: 'before the crash', inputs: { input: 'before the crash' } }));
    await settled(chatId);
    const app = await demoApp({ handle } as TestServer, 'chat');
    // what a crashed process leaves: its turn holds the conversation with a lease still running
    const fromSeq = (await repos.conversations.reserveSeq(chatId, 10_000, { id: 'e'.repeat(32), owner: 'crashed', lease: new Date(clock.now() + 600_000).toISOString() }))!;
    await repos.messages.insert({
      chat_id: chatId, flow_id: app.id, user_id: alice.id, is_bot: 0, type: 'human', category: 'question', message: '{"input":"during"}',
      intermediate_steps: '', files: '[]', extra: '{}', source: 0, sender: '', receiver: null, remark: '', parent_message_id: null, turn_id: 'e'.repeat(32),
    });
    await handle.close();
    handle = await createServer(handle.services.config, { clock });
    chat = handle.services.chat;
    const after = handle.services.repos;
    await eventually(async () => ((await after.conversations.get(chatId))?.turn_id === null ? true : undefined), 'the start-up sweep');
    expect((await after.messages.byTurn(chatId, 'e'.repeat(32))).map((r) => r.category)).toEqual(['question', 'answer']);
    expect((await after.conversations.get(chatId))!.last_seq).toBe(fromSeq + 2);
  });
});
