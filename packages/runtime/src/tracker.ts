/**
 * Per-partition bookkeeping of the consumer runtime: which offsets were taken, which are finished,
 * and how far the partition may be committed. Pure logic, no I/O.
 *
 * Commit rule: the committed position of a partition is the lowest offset that is taken and not yet
 * finished (or one past the highest finished offset when none is open), so an offset is committed
 * only when it and every earlier offset of its partition have a durable outcome.
 */
import type { ConsumedRecord } from '@mesh/kafka';

export class PartitionTracker {
  readonly topic: string;
  readonly partition: number;
  /** Offsets taken, ascending; the head is the lowest not yet committed past. */
  readonly #open: number[] = [];
  readonly #finished = new Set<number>();
  #highestTaken = -1;
  #committed = -1;
  /** The committable position last computed; only moves forward. */
  #position = -1;
  /** Taken and not finished. */
  #pending = 0;
  paused = false;
  /** Taken events whose handler returned and whose outcome is being made durable. */
  finishing = 0;
  revoked = false;
  /** Records fetched beyond the bounds, waiting for room, in offset order (never taken yet). */
  backlog: ConsumedRecord[] = [];
  /** A paused partition is resumed once its backlog is down to this many records. */
  resumeAt = 0;

  constructor(topic: string, partition: number) {
    this.topic = topic;
    this.partition = partition;
  }

  get pending(): number {
    return this.#pending;
  }

  get highestTaken(): number {
    return this.#highestTaken;
  }

  get committed(): number {
    return this.#committed;
  }

  /** True when `offset` was already taken (a redelivery after a rejoin or a resume). */
  seen(offset: number): boolean {
    return offset <= this.#highestTaken;
  }

  /** Records a newly taken offset. Offsets must arrive in ascending order. */
  take(offset: number): void {
    if (offset <= this.#highestTaken)
      throw new Error(`offset ${offset} taken twice on ${this.topic}/${this.partition}`);
    this.#highestTaken = offset;
    this.#open.push(offset);
    this.#pending += 1;
  }

  /** Records that `offset` has a durable outcome. */
  finish(offset: number): void {
    // Already finished: still in the books, or dropped because the position has passed it.
    if (this.#finished.has(offset) || offset < this.#position || offset > this.#highestTaken)
      return;
    this.#finished.add(offset);
    this.#pending -= 1;
  }

  /**
   * The offset to commit (the next one to read) if it moved past the last successful commit, else
   * undefined. Finished offsets at the head are dropped from the books as the position passes them.
   */
  commitPosition(): number | undefined {
    while (this.#open.length > 0) {
      const head = this.#open[0] ?? -1;
      if (!this.#finished.has(head)) {
        this.#position = head;
        break;
      }
      this.#open.shift();
      this.#finished.delete(head);
      this.#position = head + 1;
    }
    return this.#position > this.#committed ? this.#position : undefined;
  }

  markCommitted(position: number): void {
    if (position > this.#committed) this.#committed = position;
  }
}
