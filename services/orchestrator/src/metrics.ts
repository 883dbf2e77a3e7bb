/**
 * The orchestrator's metrics beside the contract's: how many tasks each status holds and how old the
 * oldest unfinished one is, read from the task store's status indexes at each scrape.
 */
import type { MeshRuntime } from '@mesh/runtime';
import { Gauge } from 'prom-client';
import { taskStatuses, terminalStatuses, type TaskStore } from './store.ts';

/** Statuses a task should leave: the age of the oldest task in one is how long work has waited. */
const unfinished = taskStatuses.filter((status) => !terminalStatuses.includes(status));

/**
 * `mesh_tasks{status}` and `mesh_task_oldest_age_seconds{status}`, read from the status indexes at
 * each scrape: an alert on the second finds a stuck task without listing tasks. Until the indexes
 * hold every task, and while Redis does not answer, the gauges keep their last values.
 */
export function registerTaskMetrics(runtime: MeshRuntime, store: TaskStore): void {
  const registers = [runtime.metrics.registry];
  // One read of the indexes serves both gauges of a scrape.
  let last: { at: number; read: ReturnType<TaskStore['statusCounts']> } | undefined;
  const counts = async () => {
    const now = Date.now();
    if (last === undefined || now - last.at > 1_000) last = { at: now, read: store.statusCounts() };
    try {
      return await last.read;
    } catch (error) {
      runtime.log.debug({ err: String(error) }, 'task counts unavailable for this scrape');
      return undefined;
    }
  };
  new Gauge({
    name: 'mesh_tasks',
    help: 'Tasks kept in Redis, by status (ended ones for MESH_TASK_RETENTION).',
    labelNames: ['status'],
    registers,
    async collect() {
      const read = await counts();
      if (read !== undefined)
        for (const status of taskStatuses) this.set({ status }, read[status].count);
    },
  });
  new Gauge({
    name: 'mesh_task_oldest_age_seconds',
    help: 'Age of the oldest task in each unfinished status (0 when there is none).',
    labelNames: ['status'],
    registers,
    async collect() {
      const read = await counts();
      if (read === undefined) return;
      const now = Date.now();
      for (const status of unfinished) {
        const created = read[status].oldestCreatedAt;
        this.set({ status }, created === undefined ? 0 : Math.max(0, (now - created) / 1_000));
      }
    },
  });
}
