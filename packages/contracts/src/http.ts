import { request as httpRequest, type Agent as HttpAgent } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';

export interface ExchangeInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  /** For https, the agent that trusts the registry's CA; undefined: the global agent. */
  agent: HttpAgent | HttpsAgent | undefined;
  timeoutMs: number;
}

/**
 * One HTTP(S) request and its whole answer. node:http rather than fetch because fetch cannot be
 * given a CA to trust without a second copy of undici; the registry library takes the same agent.
 * Rejects on a network or TLS failure (the error keeps Node's `code`) or after `timeoutMs`.
 */
export function exchange(url: URL, init: ExchangeInit): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send(
      url,
      {
        method: init.method,
        headers: init.headers,
        ...(init.agent === undefined ? {} : { agent: init.agent }),
        timeout: init.timeoutMs,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    request.on('timeout', () =>
      request.destroy(new Error(`no answer within ${init.timeoutMs} ms`)),
    );
    request.on('error', reject);
    request.end(init.body);
  });
}
