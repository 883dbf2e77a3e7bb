/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, or `bench/run.ts runtime --profile-dir`): self time
 * by function and by package, and total (inclusive) time of the functions that match `--focus`.
 *
 *   node bench/profile.ts /tmp/prof/*.cpuprofile [--top 30] [--focus encode,decode,claim]
 *
 * Several files are summed. Prints JSON, so figures can be pasted or compared.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Which package a frame belongs to: a node_modules package, a mesh package, node itself, or V8. */
export function packageOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (modules !== null) return modules[1] ?? url;
  const mesh = /\/(packages|services)\/([^/]+)\//.exec(url);
  if (mesh !== null) return `@mesh/${mesh[2] ?? ''}`;
  if (url.includes('/bench/')) return 'bench';
  if (url.startsWith('node:')) return 'node:internal';
  return url;
}

function frameName(frame: CallFrame): string {
  const where =
    frame.url === ''
      ? ''
      : ` ${frame.url.replace(/^.*\/(node_modules|packages|services|bench)\//, '$1/')}:${frame.lineNumber + 1}`;
  return `${frame.functionName || '(anonymous)'}${where}`;
}

interface Summary {
  totalMs: number;
  byFunction: Map<string, { selfMs: number; pkg: string }>;
  byPackage: Map<string, number>;
  inclusive: Map<string, number>;
}

function summarise(profile: CpuProfile, focus: string[], into: Summary): void {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  // A sample lasts until the next one; the last one gets the profile's end.
  const times: number[] = [];
  let t = profile.startTime;
  for (const delta of profile.timeDeltas) {
    t += delta;
    times.push(t);
  }
  for (let i = 0; i < profile.samples.length; i += 1) {
    const id = profile.samples[i] as number;
    const start = times[i] as number;
    const end = times[i + 1] ?? profile.endTime;
    const ms = Math.max(0, end - start) / 1_000;
    const node = byId.get(id);
    if (node === undefined) continue;
    into.totalMs += ms;
    const name = frameName(node.callFrame);
    const pkg = packageOf(node.callFrame.url, node.callFrame.functionName);
    const entry = into.byFunction.get(name) ?? { selfMs: 0, pkg };
    entry.selfMs += ms;
    into.byFunction.set(name, entry);
    into.byPackage.set(pkg, (into.byPackage.get(pkg) ?? 0) + ms);
    if (focus.length === 0) continue;
    const counted = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)?.callFrame;
      if (frame === undefined) break;
      const match = focus.find((f) => frame.functionName === f || frame.functionName === `#${f}`);
      if (match === undefined) continue;
      const key = frameName(frame);
      if (counted.has(key)) continue;
      counted.add(key);
      into.inclusive.set(key, (into.inclusive.get(key) ?? 0) + ms);
    }
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '30' }, focus: { type: 'string', default: '' } },
  });
  if (positionals.length === 0) {
    process.stderr.write(
      'usage: node bench/profile.ts <file.cpuprofile>... [--top N] [--focus fn,fn]\n',
    );
    process.exitCode = 2;
    return;
  }
  const focus = values.focus.split(',').filter(Boolean);
  const summary: Summary = {
    totalMs: 0,
    byFunction: new Map(),
    byPackage: new Map(),
    inclusive: new Map(),
  };
  for (const file of positionals) {
    summarise(JSON.parse(await readFile(file, 'utf8')) as CpuProfile, focus, summary);
  }
  const pct = (ms: number): number => Math.round((ms / summary.totalMs) * 1_000) / 10;
  const idle = summary.byPackage.get('(idle)') ?? 0;
  const busy = summary.totalMs - idle;
  // Share of the time the process was working: a service profiled over its whole life idles a lot.
  const busyPct = (ms: number): number => Math.round((ms / busy) * 1_000) / 10;
  const top = Number(values.top);
  process.stdout.write(
    `${JSON.stringify(
      {
        files: positionals.length,
        total_ms: Math.round(summary.totalMs),
        busy_ms: Math.round(busy),
        idle_pct: pct(idle),
        by_package: [...summary.byPackage]
          .sort((a, b) => b[1] - a[1])
          .slice(0, top)
          .map(([pkg, ms]) => ({
            pkg,
            self_ms: Math.round(ms),
            pct: pct(ms),
            pct_busy: pkg === '(idle)' ? null : busyPct(ms),
          })),
        top_self: [...summary.byFunction]
          .sort((a, b) => b[1].selfMs - a[1].selfMs)
          .slice(0, top)
          .map(([fn, { selfMs, pkg }]) => ({
            fn,
            pkg,
            self_ms: Math.round(selfMs),
            pct: pct(selfMs),
            pct_busy: pkg === '(idle)' ? null : busyPct(selfMs),
          })),
        inclusive: [...summary.inclusive]
          .sort((a, b) => b[1] - a[1])
          .map(([fn, ms]) => ({
            fn,
            total_ms: Math.round(ms),
            pct: pct(ms),
            pct_busy: busyPct(ms),
          })),
      },
      null,
      2,
    )}\n`,
  );
}

await main();
