/**
 * Fan-out of job snapshots to watchers without ever blocking the publisher.
 * Each watcher holds only the newest snapshot it has not read yet: a slow reader skips
 * intermediate snapshots instead of making the runner wait or buffering without bound.
 */
import type { Job } from "./job.js";

export type WatchEnd = "closed" | "shutdown";

class Mailbox {
  pending: Job | undefined;
  ended: WatchEnd | undefined;
  private wake: (() => void) | undefined;

  put(job: Job): void {
    if (this.ended) return;
    if (!this.pending || job.revision > this.pending.revision) this.pending = job;
    this.notify();
  }

  end(reason: WatchEnd): void {
    if (!this.ended) this.ended = reason;
    this.notify();
  }

  /** The next snapshot, or the reason the watch ended. */
  async take(signal?: AbortSignal): Promise<Job | WatchEnd> {
    for (;;) {
      const job = this.pending;
      if (job) {
        this.pending = undefined;
        return job;
      }
      if (this.ended) return this.ended;
      if (signal?.aborted) return "closed";
      await new Promise<void>((resolve) => {
        const onAbort = () => resolve();
        signal?.addEventListener("abort", onAbort, { once: true });
        this.wake = () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

export class WatchHub {
  private readonly boxes = new Map<string, Set<Mailbox>>();
  private shutDown = false;

  /** Delivers `job` to its watchers. Never waits. */
  publish(job: Job): void {
    for (const box of this.boxes.get(job.id) ?? []) box.put(job);
  }

  subscribe(jobId: string): Subscription {
    const box = new Mailbox();
    if (this.shutDown) box.end("shutdown");
    let set = this.boxes.get(jobId);
    if (!set) {
      set = new Set();
      this.boxes.set(jobId, set);
    }
    set.add(box);
    return {
      take: (signal) => box.take(signal),
      close: () => {
        const current = this.boxes.get(jobId);
        current?.delete(box);
        if (current?.size === 0) this.boxes.delete(jobId);
        box.end("closed");
      },
    };
  }

  /** Ends every watch with "shutdown" and refuses new ones the same way. */
  shutdown(): void {
    this.shutDown = true;
    for (const set of this.boxes.values()) for (const box of set) box.end("shutdown");
  }

  /** Number of open subscriptions (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const set of this.boxes.values()) n += set.size;
    return n;
  }
}

export interface Subscription {
  take(signal?: AbortSignal): Promise<Job | WatchEnd>;
  close(): void;
}
