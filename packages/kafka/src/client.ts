import { createRequire } from 'node:module';
import { Kafka, logLevel, type ISocketFactory, type KafkaConfig, type SASLOptions } from 'kafkajs';
import { certificateFault, MeshError, retryable } from '@mesh/errors';
import { RepeatedLines } from '@mesh/telemetry';

/** How to reach the brokers. SASL and TLS are optional; both are needed for most managed clusters. */
export interface KafkaConnection {
  brokers: string[];
  clientId: string;
  ssl?: boolean | { rejectUnauthorized?: boolean; ca?: string[] };
  sasl?: {
    mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512';
    username: string;
    password: string;
  };
  /** How long one connection attempt may take; kafkajs's default of 1 s is short for a loaded CI box. */
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** How connections are opened (kafkajs's TCP or TLS by default): a proxy, or a test cutting the broker off. */
  socketFactory?: ISocketFactory;
  /** Log kafkajs's own messages (errors only by default; they go to the `log` sink). */
  log?: (
    level: 'error' | 'warn' | 'info' | 'debug',
    message: string,
    extra: Record<string, unknown>,
  ) => void;
}

const levelNames = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
  [logLevel.NOTHING]: 'debug',
} as const;

/** The broker's error codes, from kafkajs's protocol table (kafkajs is pinned and patched at install). */
const errorCodes = (
  createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
    errorCodes: { type: string; retriable: boolean; message: string }[];
  }
).errorCodes;

/**
 * The messages of the codes that a group's members get whenever it rebalances, and answer by
 * rejoining: a rebalance under way, and a heartbeat or commit of the generation before it. Every
 * scale up or down, rolling update and restart of a member causes them; the runtime tells the
 * partitions assigned after it.
 */
const rebalancing: ReadonlySet<string> = new Set(
  errorCodes
    .filter((code) => code.type === 'REBALANCE_IN_PROGRESS' || code.type === 'ILLEGAL_GENERATION')
    .map((code) => code.message),
);

/**
 * The messages of the other codes that kafkajs handles by itself: those it retries (a partition
 * whose leader moves, a group coordinator still loading after a restart, a topic created a moment
 * ago), and a member the coordinator no longer knows (it missed its session timeout, or the
 * coordinator moved), which rejoins.
 */
const handledByKafkajs: ReadonlySet<string> = new Set(
  errorCodes
    .filter((code) => code.retriable || code.type === 'UNKNOWN_MEMBER_ID')
    .map((code) => code.message),
);

/**
 * The level a kafkajs message is logged at. kafkajs logs every error answer of the broker at ERROR
 * ("Response Metadata(…)"), the ones it then handles too: those are warnings, or every deploy and
 * leader election would page whoever alerts on errors, and the answers of a rebalance are news, or
 * every scale up or down would warn. What kafkajs gives up on still fails the call, and is
 * reported by the caller.
 */
function kafkajsLogLevel(
  level: logLevel,
  message: string,
  extra: Record<string, unknown>,
): 'error' | 'warn' | 'info' | 'debug' {
  if (
    level === logLevel.ERROR &&
    message.startsWith('Response ') &&
    typeof extra.error === 'string'
  ) {
    if (rebalancing.has(extra.error)) return 'info';
    if (handledByKafkajs.has(extra.error)) return 'warn';
  }
  // The patched connection gives itself up after a request timed out; the retry reconnects.
  if (level === logLevel.ERROR && message.startsWith('Request timed out; closing the connection'))
    return 'warn';
  if (level === logLevel.ERROR && unreachable(message)) return 'warn';
  // kafkajs's producer says so only of errors it then retries (a broker away, a leader moved).
  if (level === logLevel.ERROR && message.startsWith('Failed to send messages: ')) return 'warn';
  // Every crash of a consumer reaches its `GroupConsumer`'s `crashed`, whose caller logs it at the
  // level it deserves (`crashNeedsAction`): kafkajs's lines about it would tell it twice, as errors.
  if (message.startsWith('Crash: ') || message.startsWith('Restarting the consumer in '))
    return 'debug';
  return levelNames[level];
}

/**
 * A kafkajs line about a broker the network did not let it reach — refused, reset, timed out, not
 * resolvable (a broker pod restarting) — which kafkajs tries again, on another broker first: every
 * rolling restart of the cluster does this. What it gives up on fails the call, which says so.
 */
function unreachable(message: string): boolean {
  return (
    /^(Connection error: |Failed to connect to seed broker|Connection timeout)/.test(message) &&
    /\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|ENOTFOUND|EAI_AGAIN)\b|Connection timeout/.test(
      message,
    )
  );
}

/** kafkajs errors that say a broker or coordinator is away or busy for now, not that a setting is wrong. */
const transientErrors = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSGroupCoordinatorNotFound',
  'KafkaJSBrokerNotFound',
  'KafkaJSNoBrokerAvailableError',
]);

/**
 * Whether a consumer's crash needs someone: false when it is Kafka away or busy (a broker
 * restarting, a coordinator loading or moving), which the member rides out by restarting and
 * rejoining; true for a login or certificate the broker refuses, a fault the broker will not retry
 * (not authorised), or an error that is not Kafka's at all (the mesh's own code).
 */
export function crashNeedsAction(error: Error): boolean {
  if (connectFailure('the consumer', error).code !== 'kafka_unavailable') return true;
  for (const e of causes(error)) {
    if (transientErrors.has(e.name)) return false;
    if (e.name === 'KafkaJSProtocolError' && (e as { retriable?: boolean }).retriable === true)
      return false;
  }
  return true;
}

/**
 * What makes two kafkajs lines the same for `RepeatedLines`: their text and where they come from,
 * not their time, retry count or stack.
 */
function kafkajsLineKind(level: logLevel, message: string, extra: Record<string, unknown>): string {
  const { error, broker, groupId, topic } = extra;
  return JSON.stringify([level, message, error, broker, groupId, topic]);
}

/** Builds the one kafkajs client a process uses. Throws nothing: connecting happens on first use. */
export function createKafka(connection: KafkaConnection): Kafka {
  const config: KafkaConfig = {
    clientId: connection.clientId,
    brokers: connection.brokers,
    connectionTimeout: connection.connectionTimeoutMs ?? 5_000,
    requestTimeout: connection.requestTimeoutMs ?? 30_000,
    retry: { initialRetryTime: 200, retries: 8, maxRetryTime: 5_000 },
    logLevel: logLevel.ERROR,
    logCreator: () => {
      // kafkajs logs a broker that is down at every connection attempt and retry (several lines a
      // second from one idle service): each kind of line is let through once per window.
      const repeats = new RepeatedLines();
      return ({ level, log }) => {
        const { message, ...extra } = log;
        const text = String(message);
        const admitted = repeats.admit(kafkajsLineKind(level, text, extra));
        if (admitted === undefined) return;
        const as = kafkajsLogLevel(level, text, extra);
        // A line told below kafkajs's level loses its stack: for a refused connection or a crash
        // the service reports, it is kafkajs's socket or retry code, every time.
        if (as !== levelNames[level]) delete extra.stack;
        connection.log?.(as, text, { ...extra, ...admitted });
      };
    },
  };
  if (connection.ssl !== undefined) config.ssl = connection.ssl;
  if (connection.sasl !== undefined) config.sasl = connection.sasl as SASLOptions;
  if (connection.socketFactory !== undefined) config.socketFactory = connection.socketFactory;
  return new Kafka(config);
}

export type { Kafka };

/**
 * What the reason a connection failed suggests about the TLS and SASL settings, as a parenthesis
 * to append, or ''. The usual symptoms of a client whose settings do not match the listener, which
 * look like an outage to the client: kept retryable, but named.
 */
export function connectHint(reason: string): string {
  if (/before secure TLS connection was established/.test(reason))
    return ' (a listener without TLS does this: unset MESH_KAFKA_SSL, or use the TLS listener)';
  if (/Closed connection|Connection closed by the server/.test(reason))
    return (
      ' (a listener that needs TLS or SASL does this to a client without: see MESH_KAFKA_SSL ' +
      'and MESH_KAFKA_SASL_MECHANISM)'
    );
  return '';
}

/** The error and its causes, outermost first (kafkajs wraps the last attempt's error on giving up). */
function* causes(error: unknown): Generator<Error> {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth += 1) yield e;
}

/**
 * Why connecting to Kafka failed, when the answer is in the settings: a login the broker refused,
 * a certificate the client does not trust, SASL asked of a listener without it. These are
 * `config_invalid` (not retried: they do not pass by waiting), naming the variables to fix. Any
 * other failure is `kafka_unavailable` (retryable), with a hint where the symptom is the usual one
 * of a client whose TLS or SASL setting does not match the listener.
 */
export function connectFailure(what: string, error: unknown): MeshError {
  const reason = error instanceof Error ? error.message : String(error);
  const misconfigured = (message: string) =>
    new MeshError('config_invalid', message, { cause: error });
  for (const e of causes(error)) {
    const broker = 'broker' in e && typeof e.broker === 'string' ? ` at ${e.broker}` : '';
    const type = 'type' in e ? e.type : undefined;
    if (e.name === 'KafkaJSSASLAuthenticationError')
      return misconfigured(
        / mechanism is not supported/.test(e.message)
          ? `MESH_KAFKA_SASL_MECHANISM is not one the broker offers: ${e.message}`
          : `MESH_KAFKA_SASL_USERNAME or MESH_KAFKA_SASL_PASSWORD is wrong: ${e.message}`,
      );
    if (type === 'ILLEGAL_SASL_STATE' || type === 'UNSUPPORTED_SASL_MECHANISM')
      return misconfigured(
        `MESH_KAFKA_SASL_MECHANISM does not suit the listener${broker} (${e.message}): unset it ` +
          'for a listener without SASL, or point MESH_KAFKA_BROKERS at the SASL listener',
      );
    const certificate = certificateFault(e, `the broker${broker}`, {
      ca: 'MESH_KAFKA_SSL_CA_FILE',
      address: 'MESH_KAFKA_BROKERS',
    });
    if (certificate !== undefined) return misconfigured(certificate);
  }
  return retryable(
    'kafka_unavailable',
    `${what} could not connect: ${reason}${connectHint(reason)}`,
    {
      cause: error,
    },
  );
}
