/**
 * Builds a JobRunner over the in-memory fakes, with a deterministic id generator and a manual clock,
 * plus the small waiting helpers the runner tests share. Nothing here sleeps for a fixed time: every
 * wait is on a condition, bounded by a timeout.
 */
import { UpdaterError } from "../../src/errors.js";
import { silentLogger } from "../../src/log.js";
import type { Job, JobState } from "../../src/orchestrator/job.js";
import type { Clock } from "../../src/orchestrator/ports.js";
import { JobRunner, type RunnerOptions } from "../../src/orchestrator/runner.js";
import { FakeEngine } from "../fakes/fake-engine.js";
import { FakeVerifier, MemoryReleaseSource } from "../fakes/fake-release.js";
import { MemoryJobStore } from "../fakes/memory-store.js";

/** The n-th id of `idFactory` (1-based): a valid lowercase UUID. */
export function testId(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;
}

/** Ids 00000000-0000-4000-8000-000000000001, ...002, ... in order. */
export function idFactory(): () => string {
  let n = 0;
  return () => testId(++n);
}

/** A clock that moves one second forward every time it is read. */
export class ManualClock implements Clock {
  private t: number;
  constructor(start = "2026-11-02T10:00:00.000Z") {
    this.t = Date.parse(start);
  }
  now(): Date {
    this.t += 1000;
    return new Date(this.t);
  }
}

export interface Harness {
  runner: JobRunner;
  store: MemoryJobStore;
  source: MemoryReleaseSource;
  verifier: FakeVerifier;
  engine: FakeEngine;
  clock: ManualClock;
}

/**
 * A runner over fresh fakes (or the ones given). The release source holds v2.0.0 and v3.0.0; the
 * engine runs version 1.0.0. The runner is not opened: call `open()` (or use `openHarness`).
 */
export function makeHarness(
  parts: Partial<Omit<Harness, "runner">> & { options?: Partial<RunnerOptions> } = {},
): Harness {
  const store = parts.store ?? new MemoryJobStore();
  const source = parts.source ?? new MemoryReleaseSource().add("v2.0.0").add("v3.0.0");
  const verifier = parts.verifier ?? new FakeVerifier();
  const engine = parts.engine ?? new FakeEngine();
  const clock = parts.clock ?? new ManualClock();
  const runner = new JobRunner({
    store,
    source,
    verifier,
    engine,
    clock,
    newId: idFactory(),
    log: silentLogger,
    ...parts.options,
  });
  return { runner, store, source, verifier, engine, clock };
}

/** `makeHarness`, opened, with any reconciliation finished. */
export async function openHarness(parts: Parameters<typeof makeHarness>[0] = {}): Promise<Harness> {
  const h = makeHarness(parts);
  await h.runner.open();
  await h.runner.reconciled;
  return h;
}

/** Rejects with a clear message when `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms = 5000, what = "operation"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `condition` on every macrotask until it holds; fails after `ms`. */
export async function waitFor(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Lets every pending microtask and a few macrotasks run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Every snapshot of `watch`, until it ends. */
export async function collect(watch: AsyncGenerator<Job>, ms = 5000): Promise<Job[]> {
  const seen: Job[] = [];
  await within(
    (async () => {
      for await (const job of watch) seen.push(job);
    })(),
    ms,
    "watch",
  );
  return seen;
}

/** Watches job `id` to its end and returns the terminal snapshot. */
export async function finished(runner: JobRunner, id: string, ms = 5000): Promise<Job> {
  const seen = await collect(runner.watch(id), ms);
  const last = seen.at(-1);
  if (!last) throw new Error(`watch of ${id} yielded nothing`);
  return last;
}

/** States of job `id` as they were saved, with consecutive repeats collapsed. */
export function savedStates(store: MemoryJobStore, id: string): JobState[] {
  const states: JobState[] = [];
  for (const job of store.saved) {
    if (job.id === id && states.at(-1) !== job.state) states.push(job.state);
  }
  return states;
}

/** A promise with its resolve function, for store holds. */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** The UpdaterError `fn` throws or `promise` rejects with; fails the test when there is none. */
export async function updaterError(action: Promise<unknown> | (() => unknown)): Promise<UpdaterError> {
  try {
    await (typeof action === "function" ? action() : action);
  } catch (err) {
    if (err instanceof UpdaterError) return err;
    throw new Error(`expected an UpdaterError, got ${String(err)}`);
  }
  throw new Error("expected an UpdaterError, but nothing was thrown");
}
