/**
 * A JobStore in memory for unit tests. It records every saved revision in order, can be made to
 * fail, and can hold saves at a gate to prove that nothing is published before it is stored.
 */
import { cloneJob, type Job, trimHistory } from "../../src/orchestrator/job.js";
import { HISTORY_LIMIT, type JobStore, type StoredState } from "../../src/orchestrator/ports.js";

export class MemoryJobStore implements JobStore {
  jobs: Job[] = [];
  readonly saved: Job[] = [];
  failWith: Error | undefined;
  /** When set, each save waits for this promise before it lands. */
  hold: Promise<void> | undefined;

  constructor(initial: Job[] = []) {
    this.jobs = initial.map(cloneJob);
  }

  async load(): Promise<StoredState> {
    return { jobs: this.jobs.map(cloneJob) };
  }

  async save(job: Job): Promise<void> {
    if (this.hold) await this.hold;
    if (this.failWith) throw this.failWith;
    const copy = cloneJob(job);
    this.saved.push(copy);
    const at = this.jobs.findIndex((j) => j.id === job.id);
    if (at >= 0) this.jobs[at] = copy;
    else this.jobs.unshift(copy);
    this.jobs.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
    this.jobs = trimHistory(this.jobs, HISTORY_LIMIT);
  }
}
