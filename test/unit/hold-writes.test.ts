import net from 'node:net';
import { setImmediate as nextIteration } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { holdWrites } from '../../src/ws/hold-writes.ts';

/** Writes held until the event loop comes round, on real loopback TCP connections. */
describe('holdWrites', () => {
  const closers: Array<() => void> = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  /** a connected pair: the server's socket (written to) and what its peer received */
  async function pair(): Promise<{ socket: net.Socket; received: () => string; chunks: () => number }> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const socket = await accepted;
    let text = '';
    let chunks = 0;
    peer.setEncoding('utf8').on('data', (d: string) => { text += d; chunks++; });
    closers.push(() => { peer.destroy(); socket.destroy(); server.close(); });
    return { socket, received: () => text, chunks: () => chunks };
  }

  it('sends what one iteration wrote to a connection at once, when the loop comes round', async () => {
    const a = await pair();
    const b = await pair();
    holdWrites(a.socket);
    a.socket.write('one,');
    holdWrites(a.socket);
    a.socket.write('two,');
    holdWrites(b.socket);
    b.socket.write('other');
    // held: nothing has left either socket yet
    expect(a.socket.writableCorked).toBe(1);
    expect([a.socket.writableLength, b.socket.writableLength]).toEqual([8, 5]);
    await nextIteration();
    expect([a.socket.writableCorked, b.socket.writableCorked]).toEqual([0, 0]);
    expect([a.socket.writableLength, b.socket.writableLength]).toEqual([0, 0]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(a.received()).toBe('one,two,');
    expect(b.received()).toBe('other');
    // the next iteration's writes are held again, and sent
    holdWrites(a.socket);
    a.socket.write('three');
    expect(a.socket.writableCorked).toBe(1);
    await nextIteration();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(a.received()).toBe('one,two,three');
  });

  it('a connection ended or destroyed while held is no trouble', async () => {
    const a = await pair();
    const b = await pair();
    holdWrites(a.socket);
    a.socket.write('bye');
    a.socket.end();
    holdWrites(b.socket);
    b.socket.write('lost');
    b.socket.destroy();
    await nextIteration();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(a.received()).toBe('bye');
  });
});
