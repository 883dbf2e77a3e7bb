import { connect } from 'node:net';

/**
 * Just enough of the Redis serialization protocol (RESP2) to probe a server without a client library:
 * commands are sent as arrays of bulk strings, replies read as simple strings, errors or integers.
 */

export function encodeCommand(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

export type SimpleReply = { kind: 'ok'; value: string } | { kind: 'error'; message: string };

/**
 * Splits `text` into complete one-line replies (`+`, `-`, `:`); `rest` is an incomplete tail to keep for the next chunk.
 * Throws on a reply type this parser does not handle (bulk strings, arrays): the probe never asks for those.
 */
export function parseSimpleReplies(text: string): { replies: SimpleReply[]; rest: string } {
  const replies: SimpleReply[] = [];
  let offset = 0;
  for (;;) {
    const end = text.indexOf('\r\n', offset);
    if (end === -1) break;
    const line = text.slice(offset, end);
    offset = end + 2;
    const type = line[0];
    const body = line.slice(1);
    if (type === '+' || type === ':') replies.push({ kind: 'ok', value: body });
    else if (type === '-') replies.push({ kind: 'error', message: body });
    else throw new Error(`unexpected RESP reply ${JSON.stringify(line.slice(0, 40))}`);
  }
  return { replies, rest: text.slice(offset) };
}

/**
 * Sends `commands` pipelined on one connection and resolves with one reply per command.
 * Rejects on connection errors, on a timeout, or when the server closes early; error replies are returned, not thrown.
 */
export function redisExchange(
  host: string,
  port: number,
  commands: readonly (readonly string[])[],
  timeoutMs: number,
): Promise<SimpleReply[]> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const replies: SimpleReply[] = [];
    let buffered = '';
    const finish = (error: Error | undefined) => {
      socket.destroy();
      if (error === undefined) resolve(replies);
      else reject(error);
    };
    socket.setTimeout(timeoutMs, () =>
      finish(new Error(`redis at ${host}:${port} did not answer within ${timeoutMs} ms`)),
    );
    socket.on('error', finish);
    socket.on('close', () =>
      finish(
        new Error(`redis at ${host}:${port} closed the connection after ${replies.length} replies`),
      ),
    );
    socket.on('connect', () => socket.write(Buffer.concat(commands.map(encodeCommand))));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      try {
        const parsed = parseSimpleReplies(buffered + chunk);
        buffered = parsed.rest;
        replies.push(...parsed.replies);
        if (replies.length >= commands.length) finish(undefined);
      } catch (error) {
        finish(error instanceof Error ? error : new Error(String(error)));
      }
    });
  });
}

/** Resolves when `AUTH password` then `PING` answer `OK` and `PONG`; rejects with the server's error otherwise. */
export async function redisPing(
  host: string,
  port: number,
  password: string,
  timeoutMs: number,
): Promise<void> {
  const [auth, ping] = await redisExchange(host, port, [['AUTH', password], ['PING']], timeoutMs);
  if (auth?.kind !== 'ok')
    throw new Error(`redis AUTH failed: ${auth?.kind === 'error' ? auth.message : 'no reply'}`);
  if (ping?.kind !== 'ok' || ping.value !== 'PONG') {
    throw new Error(
      `redis PING failed: ${ping?.kind === 'error' ? ping.message : (ping?.value ?? 'no reply')}`,
    );
  }
}
