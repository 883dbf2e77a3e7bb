/**
 * What the idempotency claim and the registry codec cost per event, measured inside the consumer
 * runtime with each switched on and off, in one run, on one partition:
 *
 * - `full`: the runtime's normal path — decode (CloudEvents binding, registry wire format, ajv),
 *   loop guards, Redis claim, a handler that derives one `io.mesh.subtask.completed`, encode (ajv,
 *   wire format), produce (acks=all), Redis done marker, commit;
 * - `no-claim`: the same with `idempotency: false`;
 * - `no-codec`: the runtime's raw mode (no decode, guards, derive or encode) whose handler claims the
 *   event in Redis by its `ce_id`, produces the record as it is, and marks it done;
 * - `neither`: raw mode, the record produced as it is, no Redis.
 *
 * Each variant is a fresh group reading the same pre-filled topic; rounds rotate the order. Per
 * event: wall µs (measured window ÷ events) and CPU µs of this process (`process.cpuUsage`), where
 * the runtime runs. The claim's cost is `full − no-claim` (and `no-codec − neither`), the codec's is
 * `full − no-codec` (and `no-claim − neither`). Isolated figures come with them: `codec.decode`,
 * `codec.encode` and a claim + done round trip to Redis, each timed in a loop.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '@mesh/config';
import { waitForRedis } from '@mesh/redis';
import { MeshRuntime, topicSpecs, type ConsumeOptions } from '@mesh/runtime';
import { silentLogger } from '@mesh/telemetry';
import { meshEnv } from '@mesh/testkit';
import { header } from './pipeline.ts';
import {
  describeMachine,
  describeSource,
  environmentOf,
  median,
  removeKeys,
  round,
  progress,
  benchOptions,
  intOption,
} from './support.ts';
import { assignedEvent, completeAssigned } from './noop.ts';

export const usage = `usage: npm run bench -- overhead [options]
  --events N      events of each variant's run (default 10000)
  --rounds N      rounds, each running every variant, in rotated order (default 3)
  --micro N       iterations of each isolated measurement (default 20000; claims: N / 10)`;

const variants = ['full', 'no-claim', 'no-codec', 'neither'] as const;
type Variant = (typeof variants)[number];

const keys = 1024;

function options(args: string[]) {
  const values = benchOptions(
    args,
    {
      events: { type: 'string', default: '10000' },
      rounds: { type: 'string', default: '3' },
      micro: { type: 'string', default: '20000' },
    },
    usage,
  );
  const count = (name: keyof typeof values, min: number): number =>
    intOption(name, values[name], min, usage);
  return { events: count('events', 100), rounds: count('rounds', 1), micro: count('micro', 100) };
}

export async function run(args: string[]): Promise<Record<string, unknown> & { partial: boolean }> {
  const opts = options(args);
  const log = progress('overhead');
  const stack = await meshEnv();
  const machine = await describeMachine();
  const source = await describeSource();
  const prefix = `bench-overhead-${randomUUID().slice(0, 8)}.`;
  const config = loadConfig(
    {
      ...stack,
      MESH_TOPIC_PREFIX: prefix,
      MESH_PARTITIONS: '1',
      MESH_LOG_LEVEL: 'warn',
      MESH_IDEMPOTENCY_TTL: '1h',
    },
    { service: 'bench', defaultHttpPort: 0 },
  );
  const runtime = new MeshRuntime(config, { agents: ['noop'], logger: silentLogger() });
  const input = runtime.topics.work('noop');
  const output = runtime.topics.results;
  const endOffset = async (): Promise<number> =>
    (await runtime.admin.endOffsets(output)).reduce((sum, p) => sum + p.high, 0);
  try {
    await runtime.start();
    await waitForRedis(runtime.redis);
    log(`producing ${opts.events} events on ${keys} keys`);
    for (let start = 0; start < opts.events; start += 1_000) {
      const emits = [];
      for (let i = start; i < Math.min(opts.events, start + 1_000); i += 1)
        emits.push({ topic: input, event: assignedEvent('noop', i, keys) });
      await runtime.publish(emits);
    }

    const consumeOptions = (
      variant: Variant,
      groupId: string,
      first: () => void,
    ): ConsumeOptions => {
      if (variant === 'full' || variant === 'no-claim') {
        return {
          groupId,
          topics: [input],
          idempotency: variant === 'full',
          handlers: {
            'io.mesh.subtask.assigned': async (ctx) => {
              first();
              return completeAssigned(ctx, output);
            },
          },
        };
      }
      const group = runtime.groupId(groupId);
      return {
        groupId,
        topics: [input],
        handlers: {},
        raw: async (record) => {
          first();
          const outgoing = {
            topic: output,
            key: record.key?.toString() ?? null,
            value: record.value ?? Buffer.alloc(0),
            headers: Object.fromEntries(
              Object.entries(record.headers).flatMap(([name, value]) => {
                const one = Array.isArray(value) ? value[value.length - 1] : value;
                return one === undefined ? [] : [[name, one]];
              }),
            ) as Record<string, string | Buffer>,
          };
          if (variant === 'neither') {
            await runtime.producer.send([outgoing]);
            return;
          }
          const claim = await runtime.idempotency.claim(group, header(record, 'ce_id') ?? '');
          if (claim.state !== 'claimed') return;
          await runtime.producer.send([outgoing]);
          await runtime.idempotency.complete(claim.lease, 'ok');
        },
      };
    };

    const measure = async (variant: Variant, r: number) => {
      const base = await endOffset();
      let first: number | undefined;
      let cpu0: NodeJS.CpuUsage | undefined;
      const consumer = await runtime.consume(
        consumeOptions(variant, `${variant}-${r}`, () => {
          if (first !== undefined) return;
          first = performance.now();
          cpu0 = process.cpuUsage();
        }),
      );
      let last: number;
      let cpu: NodeJS.CpuUsage;
      try {
        let seen = base;
        let movedAt = performance.now();
        for (;;) {
          const high = await endOffset();
          if (high >= base + opts.events) {
            last = performance.now();
            cpu = process.cpuUsage(cpu0);
            break;
          }
          if (high !== seen) {
            seen = high;
            movedAt = performance.now();
          } else if (performance.now() - movedAt > 60_000) {
            throw new Error(`${variant}: stuck at ${high - base} of ${opts.events}`);
          }
          await sleep(20);
        }
      } finally {
        await consumer.stop();
      }
      const n = opts.events;
      return {
        wall_us: round(((last - (first ?? last)) * 1_000) / n, 1),
        cpu_us: round((cpu.user + cpu.system) / n, 1),
        events_per_s: round(n / ((last - (first ?? last)) / 1_000), 1),
      };
    };

    const rounds: Record<string, unknown>[] = [];
    const byVariant = Object.fromEntries(
      variants.map((v) => [v, [] as { wall_us: number; cpu_us: number; events_per_s: number }[]]),
    ) as Record<Variant, { wall_us: number; cpu_us: number; events_per_s: number }[]>;
    for (let r = 1; r <= opts.rounds; r += 1) {
      const order = variants.map((_, i) => variants[(i + r - 1) % variants.length] as Variant);
      const entry: Record<string, unknown> = { round: r, order };
      for (const variant of order) {
        log(`round ${r}: ${variant}`);
        const figures = await measure(variant, r);
        byVariant[variant].push(figures);
        entry[variant] = figures;
        log(`round ${r}: ${variant} ${figures.wall_us} µs/event wall, ${figures.cpu_us} µs CPU`);
      }
      rounds.push(entry);
    }
    const med = (variant: Variant, field: 'wall_us' | 'cpu_us' | 'events_per_s'): number =>
      median(byVariant[variant].map((f) => f[field])) ?? Number.NaN;
    const perEvent = Object.fromEntries(
      variants.map((v) => [
        v,
        {
          wall_us: med(v, 'wall_us'),
          cpu_us: med(v, 'cpu_us'),
          events_per_s: med(v, 'events_per_s'),
        },
      ]),
    );
    const diff = (a: Variant, b: Variant, field: 'wall_us' | 'cpu_us'): number =>
      round(med(a, field) - med(b, field), 1);

    // Isolated: the codec and a claim round trip, each in a loop of this process.
    log('isolated: codec.encode, codec.decode, claim + done');
    const event = assignedEvent('noop', 1, keys);
    const message = await runtime.codec.encode(event);
    const record = {
      topic: input,
      partition: 0,
      offset: '0',
      key: message.key === null ? null : Buffer.from(message.key),
      value: message.value,
      headers: message.headers,
      timestamp: '0',
    };
    const loop = async (n: number, fn: () => unknown): Promise<number> => {
      for (let i = 0; i < Math.min(2_000, n); i += 1) await fn();
      const started = performance.now();
      for (let i = 0; i < n; i += 1) await fn();
      return round(((performance.now() - started) * 1_000) / n, 2);
    };
    const encodeUs = await loop(opts.micro, () => runtime.codec.encode(event));
    const decodeUs = await loop(opts.micro, () => runtime.codec.decode(record));
    const newEventUs = await loop(opts.micro, () => assignedEvent('noop', 1, keys));
    const jsonUs = await loop(opts.micro, () =>
      JSON.parse(Buffer.from(JSON.stringify(event.data)).toString()),
    );
    const claims = Math.max(100, Math.floor(opts.micro / 10));
    const claimGroup = runtime.groupId('micro');
    const claimUs = await loop(claims, async () => {
      const claim = await runtime.idempotency.claim(claimGroup, randomUUID());
      if (claim.state === 'claimed') await runtime.idempotency.complete(claim.lease, 'ok');
    });
    const pipelined = async (): Promise<number> => {
      const started = performance.now();
      await Promise.all(
        Array.from({ length: claims }, async () => {
          const claim = await runtime.idempotency.claim(claimGroup, randomUUID());
          if (claim.state === 'claimed') await runtime.idempotency.complete(claim.lease, 'ok');
        }),
      );
      return round(((performance.now() - started) * 1_000) / claims, 2);
    };
    const claimPipelinedUs = await pipelined();

    return {
      partial: false,
      bench: 'overhead',
      timestamp: new Date().toISOString(),
      claim_us: {
        wall: diff('full', 'no-claim', 'wall_us'),
        cpu: diff('full', 'no-claim', 'cpu_us'),
      },
      codec_us: {
        wall: diff('full', 'no-codec', 'wall_us'),
        cpu: diff('full', 'no-codec', 'cpu_us'),
      },
      second_estimates: {
        claim_us: {
          wall: diff('no-codec', 'neither', 'wall_us'),
          cpu: diff('no-codec', 'neither', 'cpu_us'),
        },
        codec_us: {
          wall: diff('no-claim', 'neither', 'wall_us'),
          cpu: diff('no-claim', 'neither', 'cpu_us'),
        },
      },
      ratios: {
        full_vs_neither_throughput: round(
          med('full', 'events_per_s') / med('neither', 'events_per_s'),
          3,
        ),
        no_claim_vs_full_throughput: round(
          med('no-claim', 'events_per_s') / med('full', 'events_per_s'),
          3,
        ),
        no_codec_vs_full_throughput: round(
          med('no-codec', 'events_per_s') / med('full', 'events_per_s'),
          3,
        ),
      },
      per_event: perEvent,
      isolated_us: {
        'codec.encode (ajv + wire format + binding)': encodeUs,
        'codec.decode (binding + wire format + ajv)': decodeUs,
        'newEvent (ids, traceparent, time)': newEventUs,
        'JSON.stringify + parse of the same data (reference)': jsonUs,
        'claim + done, sequential round trips': claimUs,
        [`claim + done, ${claims} at once (per claim)`]: claimPipelinedUs,
      },
      counts: { events_per_variant_run: opts.events, rounds: opts.rounds, keys, micro: opts.micro },
      how: {
        per_event:
          "wall: from the first handler call to the output end offset reaching N (polled every 20 ms) ÷ N; cpu: this process's user + system CPU over the same window ÷ N; medians over rounds",
        claim_us: 'full − no-claim (second estimate: no-codec − neither)',
        codec_us:
          'full − no-codec: decode, loop guards, derive and encode with the registry (second estimate: no-claim − neither)',
        variants: {
          full: 'runtime normal path: decode, guards, claim, handler derives an event, encode, produce acks=all, done marker, commit',
          'no-claim': 'the same with idempotency: false',
          'no-codec':
            'runtime raw mode: claim by ce_id, the record produced as it is, done marker, commit',
          neither: 'runtime raw mode: the record produced as it is, commit',
        },
      },
      environment: await environmentOf(stack.MESH_KAFKA_BROKERS, machine),
      source,
      config: {
        partitions: 1,
        concurrency: config.concurrency,
        partition_concurrency: config.partitionConcurrency,
        topic_prefix: prefix,
      },
      rounds,
    };
  } finally {
    await runtime.admin
      .deleteTopics(topicSpecs(config, ['noop']).map((s) => s.topic))
      .catch(() => undefined);
    await runtime.close();
    await removeKeys(config, `${runtime.keyPrefix}*`).catch(() => undefined);
  }
}
