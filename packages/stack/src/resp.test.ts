import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import { encodeCommand, parseSimpleReplies, redisPing } from './resp.ts';

test('encodeCommand writes arrays of bulk strings, counting bytes not characters', () => {
  assert.equal(encodeCommand(['AUTH', 'pé']).toString('utf8'), '*2\r\n$4\r\nAUTH\r\n$3\r\npé\r\n');
});

test('parseSimpleReplies keeps an incomplete tail for the next chunk', () => {
  assert.deepEqual(parseSimpleReplies('+OK\r\n-ERR bad\r\n:3\r\n+PO'), {
    replies: [
      { kind: 'ok', value: 'OK' },
      { kind: 'error', message: 'ERR bad' },
      { kind: 'ok', value: '3' },
    ],
    rest: '+PO',
  });
  assert.throws(() => parseSimpleReplies('$3\r\nabc\r\n'), /unexpected RESP reply/);
});

/** A stand-in server answering each AUTH/PING pair with `replies`, split across two writes. */
async function fakeRedis(replies: string): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('data', () => {
      socket.write(replies.slice(0, 3));
      setTimeout(() => socket.write(replies.slice(3)), 10);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

test('redisPing resolves on OK + PONG', async (t) => {
  const server = await fakeRedis('+OK\r\n+PONG\r\n');
  t.after(server.close);
  await redisPing('127.0.0.1', server.port, 'pw', 2_000);
});

test('redisPing rejects with the server error for a wrong password', async (t) => {
  const server = await fakeRedis(
    '-WRONGPASS invalid username-password pair\r\n-NOAUTH Authentication required.\r\n',
  );
  t.after(server.close);
  await assert.rejects(redisPing('127.0.0.1', server.port, 'pw', 2_000), /AUTH failed: WRONGPASS/);
});

test('redisPing rejects when nothing listens', async () => {
  const server = await fakeRedis('');
  const { port } = server;
  await server.close();
  await assert.rejects(redisPing('127.0.0.1', port, 'pw', 2_000), /ECONNREFUSED/);
});
