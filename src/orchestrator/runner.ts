/**
 * The job runner: drives one update job at a time through the state machine, through the ports
 * (release source, verifier, container engine, clock, store). It owns the in-memory view of the
 * jobs, persists every change before it takes effect, and fans snapshots out to watchers.
 *
 * Invariants:
 * - At most one job is active. The slot is taken synchronously in `start`, so concurrent calls race
 *   on nothing: exactly one wins, the others get `already_exists` naming the active job.
 * - A state change, a step start or end, and a journal entry are on disk before anyone sees them.
 *   Step output and progress are published at once and written within `outputFlushMs`.
 * - Readers always get copies; the runner never hands out the object it edits.
 * - Shutdown does not roll anything back: it stops at the next await and leaves the durable journal
 *   to the next start, which reconciles exactly as after a crash.
 * - The commit point is the health verdict (the engine journals `verdict.passed`): the job is saved
 *   `committed` before any cleanup, and from the verdict on a failure or a restart rolls forward,
 *   never back. The cleanup (engine.commit) runs on the committed job, best effort, as its last step;
 *   watchers get the committed snapshot once that step has ended, then the slot is released.
 * - A `failed` job blocks new updates until an operator acknowledges it, and is never pruned from
 *   the history while it stands.
 */
import { errorMessage, UpdaterError } from "../errors.js";
import type { Logger } from "../log.js";
import { validateManifest } from "../verify/manifest.js";
import {
  appendBounded,
  changesMayHaveHappened,
  cloneJob,
  dataRestoreFromFacts,
  isTerminal,
  JOB_ID_PATTERN,
  type Job,
  type JobError,
  type JobState,
  needsAcknowledgement,
  newJob,
  revise,
  TAG_PATTERN,
  transition,
  trimHistory,
  VERDICT_PASSED_FACT,
  verdictPassed,
} from "./job.js";
import type {
  ContainerEngine,
  JobStore,
  ReleaseManifest,
  ReleaseSource,
  ReleaseVerifier,
  StepContext,
} from "./ports.js";
import { type Clock, HISTORY_LIMIT } from "./ports.js";
import { WatchHub } from "./watch-hub.js";

export interface RunnerOptions {
  store: JobStore;
  source: ReleaseSource;
  verifier: ReleaseVerifier;
  engine: ContainerEngine;
  clock: Clock;
  newId: () => string;
  log: Logger;
  /** Largest release.json accepted (bytes). */
  maxManifestBytes?: number;
  /** Largest signature asset accepted (bytes). */
  maxSignatureBytes?: number;
  /** After this many restarts during one job, stop retrying and end it `failed`. */
  maxRecoveries?: number;
  /** How long step output may stay only in memory before it is written. */
  outputFlushMs?: number;
}

export type RunnerPhase = "starting" | "reconciling" | "idle" | "busy" | "stopping";

export interface JobCounts {
  total: number;
  committed: number;
  rolledBack: number;
  failed: number;
  aborted: number;
}

interface ActiveRun {
  job: Job;
  /** False until the job's first save landed: nobody sees the job before that. */
  persisted: boolean;
  /** Settles when the first save has landed or failed. */
  saved: Promise<void>;
  readonly abort: AbortController;
  manifest?: ReleaseManifest;
  done: Promise<void>;
  /** While set, changes are saved but not published (the cleanup after the commit). */
  quiet?: boolean;
}

const MANIFEST_ASSET = "release.json";

/** The title of the last step of a committed job: the best-effort cleanup after the commit. */
export const CLEANUP_STEP_TITLE = "clean up: remove the previous container";

/** Longest AcknowledgeFailure note and `by` accepted, in characters. */
export const ACK_NOTE_LIMIT = 2000;
export const ACK_BY_LIMIT = 200;

/** The reason recorded when a step of this state fails without a more specific one. */
const DEFAULT_REASON: Record<JobState, string> = {
  planning: "PLAN_FAILED",
  snapshotting: "SNAPSHOT_FAILED",
  pulling: "PULL_FAILED",
  verifying: "IMAGE_VERIFY_FAILED",
  migrating: "MIGRATION_FAILED",
  swapping: "SWAP_FAILED",
  healthchecking: "HEALTHCHECK_FAILED",
  committed: "COMMIT_FAILED",
  rolling_back: "ROLLBACK_FAILED",
  rolled_back: "ROLLBACK_FAILED",
  failed: "FAILED",
  aborted: "ABORTED",
};

export class JobRunner {
  private readonly opts: Required<RunnerOptions>;
  private jobs: Job[] = [];
  private active: ActiveRun | undefined;
  private readonly hub = new WatchHub();
  private phase: "starting" | "reconciling" | "ready" | "stopping" = "starting";
  private changes: Promise<unknown> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | undefined;
  private reconciliation: Promise<void> = Promise.resolve();

  constructor(options: RunnerOptions) {
    this.opts = {
      maxManifestBytes: 1024 * 1024,
      maxSignatureBytes: 1024 * 1024,
      maxRecoveries: 3,
      outputFlushMs: 1000,
      ...options,
    };
  }

  /**
   * Loads the store (throws StateFileError for a file it cannot trust) and, when a job was left
   * active by a crash or restart, starts reconciling it. StartUpdate is refused until that ends;
   * `reconciled` resolves then.
   */
  async open(): Promise<void> {
    const state = await this.opts.store.load();
    this.jobs = state.jobs.map(cloneJob);
    const unfinished = await this.closeInterruptedCleanups();
    const interrupted = this.jobs.find((job) => !isTerminal(job.state));
    if (!interrupted) {
      if (!unfinished) {
        this.phase = "ready";
        return;
      }
      // The cleanup of a committed job was cut short: it runs again before anything else (a new
      // job's snapshot must not meet a prune of the old one's).
      this.phase = "reconciling";
      this.reconciliation = this.retryCleanup(unfinished).finally(() => {
        if (this.phase === "reconciling") this.phase = "ready";
      });
      return;
    }
    this.phase = "reconciling";
    const run: ActiveRun = {
      job: interrupted,
      persisted: true,
      saved: Promise.resolve(),
      abort: new AbortController(),
      done: Promise.resolve(),
    };
    this.active = run;
    this.reconciliation = run.done = this.reconcile(run).finally(() => {
      if (this.phase === "reconciling") this.phase = "ready";
    });
  }

  /** Resolves when the reconciliation of an interrupted job (if any) has ended. */
  get reconciled(): Promise<void> {
    return this.reconciliation;
  }

  get state(): RunnerPhase {
    if (this.phase === "ready") return this.active ? "busy" : "idle";
    return this.phase;
  }

  /** A copy of the active job, if any. */
  activeJob(): Job | undefined {
    return this.active?.persisted ? cloneJob(this.active.job) : undefined;
  }

  /**
   * Creates a job for `tag` and starts it in the background; resolves once the job is on disk.
   * The work is not tied to the caller: it goes on when the caller disconnects.
   */
  async start(request: { tag: string; allowDowngrade?: boolean }): Promise<Job> {
    const tag = request.tag;
    if (tag.trim() === "") {
      throw new UpdaterError(
        "invalid_argument",
        "tag is empty: give the release tag to install, e.g. v1.4.0",
      );
    }
    if (!TAG_PATTERN.test(tag)) {
      throw new UpdaterError(
        "invalid_argument",
        `tag ${JSON.stringify(tag.slice(0, 140))} is malformed: a release tag starts with a letter or digit and holds only letters, digits, '.', '-', '_' and '+' (at most 128 characters), e.g. v1.4.0`,
      );
    }
    if (this.phase === "stopping") {
      throw new UpdaterError("unavailable", "the updater is shutting down; try again once it is back");
    }
    if (this.phase === "starting") {
      throw new UpdaterError("unavailable", "the updater is starting; try again in a moment");
    }
    if (this.phase === "reconciling") {
      throw new UpdaterError(
        "unavailable",
        `the updater is reconciling job ${this.active?.job.id ?? "(unknown)"}, interrupted by a restart; try again when it is idle`,
      );
    }
    // A job being recorded right now: wait until it is readable (or gone), so that the answer
    // names a job that GetJob and WatchJob can find.
    while (this.active && !this.active.persisted) {
      await this.active.saved.catch(() => {});
      if (this.state === "stopping") {
        throw new UpdaterError("unavailable", "the updater is shutting down; try again once it is back");
      }
    }
    if (this.active) {
      const a = this.active.job;
      if (isTerminal(a.state)) {
        throw new UpdaterError(
          "already_exists",
          `update job ${a.id} (to ${a.targetTag}) has ${a.state} and is cleaning up after itself; try again in a moment`,
        );
      }
      throw new UpdaterError(
        "already_exists",
        `update job ${a.id} (to ${a.targetTag}) is already active in state ${a.state}; watch it or wait for it to finish`,
      );
    }
    const blocking = this.jobs.find(needsAcknowledgement);
    if (blocking) {
      throw new UpdaterError("failed_precondition", blockedMessage(blocking));
    }
    const job = newJob({
      id: this.opts.newId(),
      tag,
      allowDowngrade: request.allowDowngrade ?? false,
      now: this.opts.clock.now(),
    });
    const run: ActiveRun = {
      job,
      persisted: false,
      saved: Promise.resolve(),
      abort: new AbortController(),
      done: Promise.resolve(),
    };
    this.active = run;
    run.saved = this.enqueue(() => this.persist(run, job, { publish: false }));
    try {
      await run.saved;
    } catch (err) {
      this.active = undefined;
      throw new UpdaterError(
        "unavailable",
        `could not record the new job in the state directory: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    run.persisted = true;
    if (this.state === "stopping") {
      // Shutdown began while the job was being recorded: it stays on disk in planning, and the
      // next start closes it as aborted ("interrupted before any change").
      this.active = undefined;
      throw new UpdaterError(
        "unavailable",
        `the updater is shutting down; job ${job.id} was recorded but not started, and will be closed as aborted at the next start`,
      );
    }
    this.opts.log.info("job created", { job: job.id, tag, state: job.state });
    this.hub.publish(job);
    run.done = this.execute(run);
    return cloneJob(job);
  }

  /** A copy of the job with this id; `not_found` when there is none. */
  get(id: string): Job {
    checkJobId(id);
    const job = this.jobs.find((j) => j.id === id);
    if (!job)
      throw new UpdaterError(
        "not_found",
        `no job with id ${id} (the history keeps the last ${HISTORY_LIMIT})`,
      );
    return cloneJob(job);
  }

  /** Copies of the most recent jobs, newest first. `limit` 0 means all that are kept. */
  history(limit = 0): Job[] {
    const jobs = limit > 0 ? this.jobs.slice(0, limit) : this.jobs;
    return jobs.map(cloneJob);
  }

  counts(): JobCounts & { lastCommittedAt?: string } {
    const counts: JobCounts & { lastCommittedAt?: string } = {
      total: this.jobs.length,
      committed: 0,
      rolledBack: 0,
      failed: 0,
      aborted: 0,
    };
    for (const job of this.jobs) {
      if (job.state === "committed") {
        counts.committed += 1;
        if (job.finishedAt && (!counts.lastCommittedAt || job.finishedAt > counts.lastCommittedAt)) {
          counts.lastCommittedAt = job.finishedAt;
        }
      } else if (job.state === "rolled_back") counts.rolledBack += 1;
      else if (job.state === "failed") counts.failed += 1;
      else if (job.state === "aborted") counts.aborted += 1;
    }
    return counts;
  }

  /**
   * The failed job that blocks new updates until an operator acknowledges it (the newest, when
   * there are several), or undefined.
   */
  blockingJob(): Job | undefined {
    const job = this.jobs.find(needsAcknowledgement);
    return job ? cloneJob(job) : undefined;
  }

  /**
   * Records that an operator repaired the app after the `failed` job `id` (who and what, as given),
   * durably, and returns the job. Idempotent: a job already acknowledged is returned as it is (the
   * first acknowledgement stands). `failed_precondition` for a job in any other state, `not_found`
   * for an unknown id, `invalid_argument` for a malformed id or an over-long or control-character
   * `by` or `note`.
   */
  async acknowledge(id: string, request: { by?: string; note?: string } = {}): Promise<Job> {
    checkJobId(id);
    const by = (request.by ?? "").trim();
    const note = (request.note ?? "").trim();
    checkFreeText("acknowledged_by", by, ACK_BY_LIMIT, false);
    checkFreeText("note", note, ACK_NOTE_LIMIT, true);
    if (this.phase === "starting") {
      throw new UpdaterError("unavailable", "the updater is starting; try again in a moment");
    }
    const current = this.get(id);
    if (current.state !== "failed") throw notAcknowledgeable(current);
    return this.enqueue(async () => {
      const job = this.jobs.find((j) => j.id === id);
      if (!job) throw new UpdaterError("not_found", `job ${id} is no longer in the history`);
      if (job.acknowledgement) return cloneJob(job);
      const now = this.opts.clock.now();
      const next = revise(job, now, (draft) => {
        draft.acknowledgement = { at: now.toISOString(), by, note };
      });
      try {
        await this.opts.store.save(next);
      } catch (err) {
        throw new UpdaterError(
          "unavailable",
          `could not record the acknowledgement of job ${id} in the state directory: ${errorMessage(err)}; the job still blocks updates`,
          { cause: err },
        );
      }
      const at = this.jobs.findIndex((j) => j.id === id);
      if (at >= 0) this.jobs[at] = next;
      this.hub.publish(next);
      this.opts.log.info("failed job acknowledged", {
        job: id,
        by: by || "(not given)",
        note_chars: note.length,
        still_blocking: this.jobs.find(needsAcknowledgement)?.id ?? "",
      });
      return cloneJob(next);
    });
  }

  /**
   * Snapshots of a job: the current one at once, then one per change, ending after the terminal
   * one. A slow consumer skips intermediate snapshots. Throws `unavailable` when the updater shuts
   * down mid-watch, `not_found` for an unknown id. Ends quietly when `signal` aborts.
   */
  async *watch(id: string, signal?: AbortSignal): AsyncGenerator<Job> {
    checkJobId(id);
    const subscription = this.hub.subscribe(id);
    try {
      const current = this.get(id);
      // Read before yielding: the caller owns (and may change) what it receives.
      let revision = current.revision;
      const ended = isTerminal(current.state);
      yield current;
      if (ended) return;
      for (;;) {
        const next = await subscription.take(signal);
        if (next === "closed") return;
        if (next === "shutdown") {
          throw new UpdaterError(
            "unavailable",
            "the updater is shutting down; watch the job again once it is back",
          );
        }
        if (next.revision <= revision) continue;
        revision = next.revision;
        yield cloneJob(next);
        if (isTerminal(next.state)) return;
      }
    } finally {
      subscription.close();
    }
  }

  /** Number of open watches. */
  get watchers(): number {
    return this.hub.size;
  }

  /**
   * Stops: refuses new jobs, ends every watch with `unavailable`, stops the active job at its next
   * await (its journal stays on disk for the next start) and flushes pending output.
   * Resolves when the active job's task has returned or `graceMs` has passed.
   */
  async shutdown(graceMs = 5000): Promise<void> {
    if (this.phase === "stopping") return;
    this.phase = "stopping";
    this.hub.shutdown();
    const run = this.active;
    const stop = () => run?.abort.abort(new UpdaterError("unavailable", "the updater is shutting down"));
    // A rollback in progress is the way back to a serving app: it gets the grace period to finish
    // (a `docker stop` would otherwise leave the app on the failed version until the next start).
    // Anything else stops at once and is reconciled from the journal by the next start.
    const finishing = run?.job.state === "rolling_back";
    if (finishing)
      this.opts.log.info("shutting down: letting the rollback finish", { job: run?.job.id, graceMs });
    else stop();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      run?.done ?? Promise.resolve(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
    if (finishing && this.active === run) stop();
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
      if (run) await this.enqueue(() => this.persist(run, run.job, { publish: false })).catch(() => {});
    }
  }

  // ---- the job itself ----

  private async execute(run: ActiveRun): Promise<void> {
    const { engine } = this.opts;
    try {
      const manifest = await this.plan(run);
      const phases: Array<[JobState, string, (ctx: StepContext) => Promise<unknown>]> = [
        [
          "snapshotting",
          "snapshot the app's data while it serves (bulk copy)",
          (ctx) => engine.snapshot(ctx),
        ],
        [
          "pulling",
          `pull ${manifest.image.registry}/${manifest.image.repository}@${manifest.image.digest}`,
          (ctx) => engine.pull(ctx),
        ],
        [
          "verifying",
          `confirm the pulled image is ${manifest.image.digest}`,
          (ctx) => engine.verifyImage(ctx),
        ],
        ["migrating", "run the migration", (ctx) => engine.migrate(ctx)],
        ["swapping", "swap the app container to the new image", (ctx) => engine.swap(ctx)],
        [
          "healthchecking",
          "health verdict of the new container",
          async (ctx) => {
            await engine.healthcheck(ctx);
            // The engine journals the verdict as its last act; make sure it is on disk either way.
            if (!verdictPassed(run.job)) {
              await ctx.journal("health verdict passed", { [VERDICT_PASSED_FACT]: "true" });
            }
          },
        ],
      ];
      for (const [state, title, work] of phases) {
        await this.move(run, state);
        await this.step(run, title, work);
      }
      await this.commit(run);
    } catch (err) {
      if (this.stoppedByShutdown(run)) {
        this.opts.log.warn("job left for reconciliation at next start", {
          job: run.job.id,
          state: run.job.state,
        });
        return;
      }
      await this.fail(run, err);
    } finally {
      this.release(run);
    }
  }

  /** Planning: fetch the release and its assets, verify, validate, pre-flight. Returns the manifest. */
  private async plan(run: ActiveRun): Promise<ReleaseManifest> {
    const { source, verifier, engine } = this.opts;
    const signal = run.abort.signal;
    const tag = run.job.targetTag;
    const assets = await this.step(run, `fetch release ${tag}`, async (ctx) => {
      const release = await source.release(tag, signal);
      const manifestAsset = release.assets.find((a) => a.name === MANIFEST_ASSET);
      const signatureAsset = release.assets.find((a) => a.name === verifier.signatureAsset);
      const missing = [
        manifestAsset ? "" : MANIFEST_ASSET,
        signatureAsset ? "" : verifier.signatureAsset,
      ].filter(Boolean);
      if (!manifestAsset || !signatureAsset) {
        throw new UpdaterError(
          "failed_precondition",
          `release ${tag} lacks the asset(s) ${missing.join(", ")}; the release must publish release.json and its signature`,
          { reason: "RELEASE_ASSET_MISSING" },
        );
      }
      if (manifestAsset.size > this.opts.maxManifestBytes) {
        throw new UpdaterError(
          "failed_precondition",
          `release ${tag}'s release.json is ${manifestAsset.size} bytes; the updater accepts at most ${this.opts.maxManifestBytes}`,
          { reason: "MANIFEST_TOO_LARGE" },
        );
      }
      const manifestBytes = await source
        .download(manifestAsset, this.opts.maxManifestBytes, signal)
        .catch((err: unknown) => {
          throw asReason(err, "RELEASE_DOWNLOAD_FAILED");
        });
      const signatureBytes = await source.download(signatureAsset, this.opts.maxSignatureBytes, signal);
      ctx.output(
        `downloaded ${MANIFEST_ASSET} (${manifestBytes.byteLength} bytes) and ${signatureAsset.name} (${signatureBytes.byteLength} bytes)\n`,
      );
      return { manifestBytes, signatureBytes };
    });
    const verification = await this.step(
      run,
      "verify the release signature against the pinned signer policy",
      async (ctx) => {
        try {
          const v = await verifier.verify(assets.manifestBytes, assets.signatureBytes);
          ctx.output(describeVerification(v));
          return v;
        } catch (err) {
          throw asReason(err, "SIGNATURE_INVALID");
        }
      },
    );
    await this.update(run, (draft) => {
      draft.verification = verification;
    });
    const app = await this.step(run, "read the running app", async (ctx) => {
      const info = await engine.inspectApp(signal).catch((err: unknown) => {
        throw asReason(err, "PREFLIGHT_FAILED");
      });
      ctx.output(
        `container ${info.container}: image ${info.image}${info.version ? `, version ${info.version}` : ""}${info.running ? ", running" : ", NOT running"}\n`,
      );
      return info;
    });
    const manifest = await this.step(run, "validate release.json", async (ctx) => {
      try {
        const m = validateManifest(assets.manifestBytes, {
          tag,
          runningVersion: app.version,
          allowDowngrade: run.job.allowDowngrade,
        });
        ctx.output(
          `release ${m.tag}: version ${m.version}, image ${m.image.registry}/${m.image.repository}@${m.image.digest}\n`,
        );
        return m;
      } catch (err) {
        throw asReason(err, "MANIFEST_INVALID");
      }
    });
    run.manifest = manifest;
    await this.update(run, (draft) => {
      draft.targetVersion = manifest.version;
      draft.targetImage = `${manifest.image.registry}/${manifest.image.repository}:${manifest.image.tag}`;
      draft.targetDigest = manifest.image.digest;
      draft.previousImage = app.image;
      if (app.digest) draft.previousDigest = app.digest;
      if (app.version) draft.previousVersion = app.version;
      draft.journal.manifest = manifest;
    });
    await this.step(run, "pre-flight checks", (ctx) =>
      engine.preflight(ctx).catch((err: unknown) => {
        throw asReason(err, "PREFLIGHT_FAILED");
      }),
    );
    return manifest;
  }

  /** After a failure: abort when nothing changed yet, else roll back; `failed` if that fails too. */
  private async fail(run: ActiveRun, err: unknown): Promise<void> {
    const state = run.job.state;
    const error: JobError = {
      reason: (err instanceof UpdaterError && err.reason) || DEFAULT_REASON[state],
      message: errorMessage(err),
      failedIn: state,
    };
    this.opts.log.warn("job step failed", {
      job: run.job.id,
      state,
      reason: error.reason,
      error: error.message,
    });
    try {
      if (state === "healthchecking" && verdictPassed(run.job)) {
        // Past the commit point (the failure was in recording it): forward, never back.
        this.opts.log.warn("the health verdict had passed: recording the commit instead of rolling back", {
          job: run.job.id,
        });
        await this.commit(run);
        return;
      }
      if (!changesMayHaveHappened(state)) {
        await this.discard(run);
        await this.move(run, "aborted", error);
        return;
      }
      await this.rollBack(run, error);
    } catch (persistErr) {
      this.opts.log.error("could not record the end of the job", {
        job: run.job.id,
        error: errorMessage(persistErr),
      });
    }
  }

  private async rollBack(run: ActiveRun, error: JobError): Promise<void> {
    if (run.job.state !== "rolling_back") await this.move(run, "rolling_back", error);
    try {
      await this.step(run, "roll back to the previous container and data", (ctx) =>
        this.opts.engine.rollback(ctx),
      );
      await this.move(run, "rolled_back");
      // The recorded reason: the first failure's, also when a restart interrupted its rollback.
      this.opts.log.warn("job rolled back", {
        job: run.job.id,
        reason: run.job.error?.reason ?? error.reason,
        recoveries: run.job.recoveries,
        ...restoreLogFields(run.job),
      });
    } catch (rbErr) {
      if (this.stoppedByShutdown(run)) return;
      await this.move(run, "failed", {
        reason: "ROLLBACK_FAILED",
        message: `the rollback failed: ${errorMessage(rbErr)}. The update had failed first: ${error.reason}: ${error.message}`,
        failedIn: "rolling_back",
        manualSteps: (rbErr instanceof UpdaterError && rbErr.manualSteps) || genericManualSteps(run.job),
      });
      this.opts.log.error("job failed: rollback did not finish, a human must act", {
        job: run.job.id,
        ...restoreLogFields(run.job),
      });
    }
  }

  private async discard(run: ActiveRun): Promise<void> {
    // Planning changes nothing, so there is nothing to clean up after it.
    if (!run.manifest || run.job.state === "planning") return;
    try {
      await this.opts.engine.discard(this.context(run, run.manifest, { output() {}, progress() {} }));
    } catch (err) {
      this.opts.log.warn("cleanup after abort failed", { job: run.job.id, error: errorMessage(err) });
    }
  }

  /** Finishes or undoes a job left active by a crash or restart. */
  private async reconcile(run: ActiveRun): Promise<void> {
    const job = run.job;
    this.opts.log.warn("reconciling a job interrupted by a restart", { job: job.id, state: job.state });
    try {
      await this.update(run, (draft) => {
        draft.recoveries += 1;
      });
      if (job.state === "healthchecking" && verdictPassed(job)) {
        // Past the commit point: roll forward, whatever the restart count (committing changes
        // nothing in the app; a restart during the cleanup finds the job already committed).
        this.opts.log.warn("rolling forward: the health verdict had passed before the restart", {
          job: job.id,
        });
        run.manifest = run.job.journal.manifest;
        await this.closeOpenSteps(
          run,
          "interrupted: the updater stopped while this step ran",
          "the health verdict had passed (journaled) before the updater restarted",
        );
        await this.commit(run);
        return;
      }
      await this.closeOpenSteps(run, "interrupted: the updater stopped while this step ran");
      if (run.job.recoveries > this.opts.maxRecoveries) {
        await this.move(run, "failed", {
          reason: "RECOVERY_LOOP",
          message: `the updater restarted ${run.job.recoveries} times during this job; it stopped retrying so as not to loop`,
          failedIn: job.state,
          manualSteps: genericManualSteps(run.job),
        });
        return;
      }
      run.manifest = run.job.journal.manifest;
      const error: JobError = {
        reason: "INTERRUPTED",
        message: `the updater restarted while the job was ${job.state}`,
        failedIn: job.state,
      };
      if (!changesMayHaveHappened(job.state)) {
        await this.discard(run);
        error.message += "; nothing had changed yet";
        await this.move(run, "aborted", error);
        return;
      }
      await this.rollBack(run, error);
    } catch (err) {
      this.opts.log.error("reconciliation could not be recorded", { job: job.id, error: errorMessage(err) });
    } finally {
      this.release(run);
    }
  }

  // ---- steps and changes ----

  /**
   * Marks steps left running (by a crash or a shutdown) as failed, so no finished job shows one
   * running. With `verdict`, the health verdict step is marked succeeded instead, with that note.
   */
  private async closeOpenSteps(run: ActiveRun, why: string, verdict?: string): Promise<void> {
    if (!run.job.steps.some((s) => s.status === "running")) return;
    const at = this.opts.clock.now().toISOString();
    await this.update(run, (draft) => {
      for (const s of draft.steps) {
        if (s.status !== "running") continue;
        s.endedAt = at;
        if (verdict && s.state === "healthchecking") {
          s.status = "succeeded";
          s.output = appendBounded(s.output, `${verdict}\n`);
          continue;
        }
        s.status = "failed";
        s.error = why;
      }
    });
  }

  /**
   * At start: steps of ended jobs left running by a stop. The cleanup of the newest committed job
   * is returned to be run again (the update stands either way; the retry only tidies up).
   */
  private async closeInterruptedCleanups(): Promise<Job | undefined> {
    let retry: Job | undefined;
    for (const [i, job] of this.jobs.entries()) {
      if (!isTerminal(job.state) || !job.steps.some((s) => s.status === "running")) continue;
      const committed = job.state === "committed";
      const newest = committed && !retry && this.jobs.slice(0, i).every((j) => j.state !== "committed");
      const why = committed
        ? newest
          ? "interrupted: the updater stopped before this cleanup finished; it runs again at the next start (below)"
          : "interrupted: the updater stopped before this cleanup finished; the previous container (and image) may still be there: docker ps -a lists it, remove it with docker rm when you no longer need it"
        : "interrupted: the updater stopped while this step ran";
      const now = this.opts.clock.now();
      const next = revise(job, now, (draft) => {
        for (const s of draft.steps) {
          if (s.status !== "running") continue;
          s.status = "failed";
          s.error = why;
          s.endedAt = now.toISOString();
        }
      });
      if (committed) {
        this.opts.log.warn(
          "job committed, but the updater stopped before its cleanup finished: the previous container is left in place; it is not retried",
          { job: job.id },
        );
      }
      try {
        await this.opts.store.save(next);
        this.jobs[i] = next;
        if (newest) retry = next;
      } catch (err) {
        this.opts.log.warn("could not record the interrupted cleanup", {
          job: job.id,
          error: errorMessage(err),
        });
      }
    }
    return retry;
  }

  /** Runs the cleanup of a committed job again (best effort) and records how it went, as a step. */
  private async retryCleanup(job: Job): Promise<void> {
    const manifest = job.journal.manifest;
    if (!manifest) return;
    let output = "";
    const ctx: StepContext = {
      job: cloneJob(job),
      manifest,
      signal: new AbortController().signal,
      keepSnapshotsOf: Object.freeze(this.jobs.filter(needsAcknowledgement).map((j) => j.id)),
      output: (text) => {
        output = appendBounded(output, text);
      },
      progress: () => {},
      // The job is committed: nothing here can change its outcome, so there is nothing to journal.
      journal: async () => {},
    };
    const startedAt = this.opts.clock.now().toISOString();
    let error: string | undefined;
    try {
      await this.opts.engine.commit(ctx);
    } catch (err) {
      error = errorMessage(err);
    }
    const at = this.jobs.findIndex((j) => j.id === job.id);
    const current = this.jobs[at];
    if (!current) return;
    const next = revise(current, this.opts.clock.now(), (draft) => {
      draft.steps.push({
        state: "committed",
        title: `${CLEANUP_STEP_TITLE} (again, after a restart)`,
        status: error ? "failed" : "succeeded",
        startedAt,
        endedAt: this.opts.clock.now().toISOString(),
        output,
        ...(error ? { error } : {}),
      });
    });
    this.opts.log[error ? "warn" : "info"]("cleanup of a committed job run again after a restart", {
      job: job.id,
      ...(error ? { error } : {}),
    });
    await this.opts.store
      .save(next)
      .then(() => {
        this.jobs[at] = next;
      })
      .catch((err: unknown) =>
        this.opts.log.warn("could not record the cleanup", { job: job.id, error: errorMessage(err) }),
      );
  }

  /**
   * The commit point: saves the job `committed` (with its cleanup step started) before anything is
   * removed, then runs the cleanup (engine.commit) best effort. Watchers get the committed snapshot
   * when the cleanup step has ended (or could not be recorded), so their last snapshot says how the
   * cleanup went; get() and history() see `committed` as soon as it is on disk.
   */
  private async commit(run: ActiveRun): Promise<void> {
    const now = this.opts.clock.now();
    const next = transition(run.job, "committed", now);
    next.steps.push({
      state: "committed",
      title: CLEANUP_STEP_TITLE,
      status: "running",
      startedAt: now.toISOString(),
      output: "",
    });
    run.quiet = true;
    try {
      await this.enqueue(() => this.persist(run, next));
      this.opts.log.info("job state", { job: run.job.id, state: "committed" });
      this.opts.log.info("job committed", {
        job: run.job.id,
        tag: run.job.targetTag,
        version: run.job.targetVersion ?? "",
      });
      try {
        await this.runStep(run, run.job.steps.length - 1, CLEANUP_STEP_TITLE, (ctx) =>
          this.opts.engine.commit(ctx),
        );
      } catch (err) {
        if (this.stoppedByShutdown(run)) {
          this.opts.log.warn(
            "shutting down during the cleanup after the commit: the previous container may be left in place",
            { job: run.job.id },
          );
          return;
        }
        this.opts.log.warn("the update stands, but the cleanup after the commit failed", {
          job: run.job.id,
          reason: "CLEANUP_FAILED",
          error: errorMessage(err),
        });
      }
    } finally {
      run.quiet = false;
      if (isTerminal(run.job.state)) this.hub.publish(run.job);
    }
  }

  private async step<T>(run: ActiveRun, title: string, work: (ctx: StepContext) => Promise<T>): Promise<T> {
    run.abort.signal.throwIfAborted();
    const startedAt = this.opts.clock.now().toISOString();
    await this.update(run, (draft) => {
      draft.steps.push({ state: draft.state, title, status: "running", startedAt, output: "" });
    });
    return this.runStep(run, run.job.steps.length - 1, title, work);
  }

  /** Runs `work` as the step at `index` (already recorded as running) and records how it ended. */
  private async runStep<T>(
    run: ActiveRun,
    index: number,
    title: string,
    work: (ctx: StepContext) => Promise<T>,
  ): Promise<T> {
    const ctx = this.context(run, run.manifest, {
      output: (text) =>
        this.lazyUpdate(run, (d) => {
          const s = d.steps[index];
          if (s) s.output = appendBounded(s.output, text);
        }),
      progress: (done, total, unit) =>
        this.lazyUpdate(run, (d) => {
          const s = d.steps[index];
          if (s) s.progress = { done, total, unit };
        }),
    });
    const started = performance.now();
    const logEnd = (status: string) =>
      this.opts.log.info("step ended", {
        job: run.job.id,
        state: run.job.steps[index]?.state ?? run.job.state,
        step: title,
        status,
        duration_ms: Math.round(performance.now() - started),
      });
    try {
      const result = await work(ctx);
      await this.update(run, (draft) => {
        const s = draft.steps[index];
        if (!s) return;
        s.status = result === false ? "skipped" : "succeeded";
        s.endedAt = this.opts.clock.now().toISOString();
      });
      logEnd(result === false ? "skipped" : "succeeded");
      return result;
    } catch (err) {
      logEnd("failed");
      if (!this.stoppedByShutdown(run)) {
        // Record the failure; if even that cannot be written, the step's own error still wins.
        await this.update(run, (draft) => {
          const s = draft.steps[index];
          if (!s) return;
          s.status = "failed";
          s.error = errorMessage(err);
          s.endedAt = this.opts.clock.now().toISOString();
        }).catch((recordErr: unknown) =>
          this.opts.log.error("could not record a step failure", {
            job: run.job.id,
            error: errorMessage(recordErr),
          }),
        );
      }
      throw err;
    }
  }

  private context(
    run: ActiveRun,
    manifest: ReleaseManifest | undefined,
    sinks: Pick<StepContext, "output" | "progress">,
  ): StepContext {
    const job = cloneJob(run.job);
    return {
      job,
      get manifest(): ReleaseManifest {
        if (!manifest) throw new UpdaterError("internal", "no verified manifest yet at this step");
        return manifest;
      },
      signal: run.abort.signal,
      output: sinks.output,
      progress: sinks.progress,
      journal: (intent, facts) =>
        this.enqueue(() => {
          const next = cloneJob(run.job);
          next.journal.intent = intent;
          Object.assign(next.journal.facts, facts ?? {});
          const restore = dataRestoreFromFacts(next.journal.facts);
          if (restore) next.dataRestore = restore;
          return this.persist(run, next, { publish: false });
        }),
      keepSnapshotsOf: Object.freeze(this.jobs.filter(needsAcknowledgement).map((j) => j.id)),
    };
  }

  private async move(run: ActiveRun, to: JobState, error?: JobError): Promise<void> {
    await this.enqueue(() => this.persist(run, transition(run.job, to, this.opts.clock.now(), error)));
    this.opts.log.info("job state", {
      job: run.job.id,
      state: to,
      ...(error ? { reason: error.reason } : {}),
    });
  }

  /** A durable change: on disk before it is published. */
  private update(run: ActiveRun, edit: (draft: Job) => void): Promise<void> {
    return this.enqueue(() => this.persist(run, revise(run.job, this.opts.clock.now(), edit)));
  }

  /** A change published at once and written within outputFlushMs. Never throws, never waits. */
  private lazyUpdate(run: ActiveRun, edit: (draft: Job) => void): void {
    void this.enqueue(async () => {
      const next = revise(run.job, this.opts.clock.now(), edit);
      this.adopt(run, next);
      if (!run.quiet) this.hub.publish(next);
      this.scheduleFlush(run);
    }).catch((err) =>
      this.opts.log.warn("step output dropped", { job: run.job.id, error: errorMessage(err) }),
    );
  }

  private scheduleFlush(run: ActiveRun): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.enqueue(() => this.persist(run, run.job, { publish: false })).catch((err) =>
        this.opts.log.warn("could not write step output", { job: run.job.id, error: errorMessage(err) }),
      );
    }, this.opts.outputFlushMs);
    this.flushTimer.unref();
  }

  private async persist(
    run: ActiveRun,
    next: Job,
    opts: { publish: boolean } = { publish: true },
  ): Promise<void> {
    await this.opts.store.save(next);
    this.adopt(run, next);
    if (opts.publish && !run.quiet) this.hub.publish(next);
  }

  private adopt(run: ActiveRun, next: Job): void {
    run.job = next;
    const at = this.jobs.findIndex((j) => j.id === next.id);
    if (at >= 0) this.jobs[at] = next;
    else this.jobs = trimHistory([next, ...this.jobs], HISTORY_LIMIT);
  }

  /** Runs changes one after another so that none is lost or reordered. */
  private enqueue<T>(change: () => Promise<T>): Promise<T> {
    const result = this.changes.then(change);
    this.changes = result.catch(() => {});
    return result;
  }

  private release(run: ActiveRun): void {
    if (isTerminal(run.job.state) && this.flushTimer) {
      // The terminal save holds all of this job's output; a pending flush of it would only keep
      // the next job's output from being scheduled (scheduleFlush skips while a timer is set).
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    if (this.active === run && (isTerminal(run.job.state) || this.phase === "stopping"))
      this.active = undefined;
    if (this.active === run && !isTerminal(run.job.state)) {
      // The end of the job could not be recorded: keep the slot taken so that nothing starts on
      // top of an unknown state; a restart reconciles from the journal.
      this.opts.log.error("job is stuck without a terminal state; restart the updater to reconcile it", {
        job: run.job.id,
      });
    }
  }

  private stoppedByShutdown(run: ActiveRun): boolean {
    return this.phase === "stopping" && run.abort.signal.aborted;
  }
}

function checkJobId(id: string): void {
  if (id === "")
    throw new UpdaterError("invalid_argument", "job id is empty: give the id StartUpdate returned");
  if (!JOB_ID_PATTERN.test(id)) {
    throw new UpdaterError(
      "invalid_argument",
      `job id ${JSON.stringify(id.slice(0, 80))} is malformed: job ids are lowercase UUIDs such as 0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10`,
    );
  }
}

/** Refuses free text that is too long or holds control characters (`multiline` allows \n and \t). */
function checkFreeText(field: string, text: string, limit: number, multiline: boolean): void {
  if (text.length > limit) {
    throw new UpdaterError(
      "invalid_argument",
      `${field} is ${text.length} characters long; at most ${limit} are kept: say briefly what was done`,
    );
  }
  const control = multiline ? /[\p{Cc}--[\n\t]]/v : /\p{Cc}/u;
  if (control.test(text)) {
    throw new UpdaterError(
      "invalid_argument",
      `${field} holds a control character${multiline ? " (only line breaks and tabs are allowed)" : ""}`,
    );
  }
}

/** The answer to AcknowledgeFailure for a job that is not `failed`. */
function notAcknowledgeable(job: Job): UpdaterError {
  const why: Partial<Record<JobState, string>> = {
    committed: "it committed: nothing needs repairing",
    rolled_back:
      "it was rolled back: the previous version runs on the previous data, nothing needs repairing",
    aborted: "it stopped before it changed anything: nothing needs repairing",
  };
  return new UpdaterError(
    "failed_precondition",
    `job ${job.id} is ${job.state}, not failed, so there is nothing to acknowledge: ${
      why[job.state] ?? "it is still running; watch it, and acknowledge it only if it ends failed"
    }`,
  );
}

/** Why StartUpdate is refused while `job` (failed, not acknowledged) stands, and what to do. */
export function blockedMessage(job: Job): string {
  return (
    `job ${job.id} (to ${job.targetTag}) failed${job.error ? ` (${job.error.reason})` : ""} and no operator has acknowledged it: ` +
    "no update starts over an app that may need repair. Follow the job's manual steps " +
    `(processgit-updater watch ${job.id} prints them; GetJob returns them in error.manual_steps), ` +
    `then acknowledge it: processgit-updater acknowledge ${job.id} --note 'what you did', or ` +
    `curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"id":"${job.id}","note":"what you did"}' ` +
    '"$PROCESSGIT_UPDATER_URL/processgit.updater.v1.UpdaterService/AcknowledgeFailure"'
  );
}

/** Log fields saying what a rollback did to the data, when the journal says. */
function restoreLogFields(job: Job): Record<string, unknown> {
  const r = job.dataRestore;
  if (!r) return {};
  return {
    data_restore_needed: r.needed,
    data_restored: r.done,
    ...(r.snapshot ? { snapshot: r.snapshot } : {}),
    ...(r.pointAt ? { data_as_of: r.pointAt } : {}),
    ...(r.discardedFrom ? { discarded_from: r.discardedFrom } : {}),
    ...(r.discardedUntil ? { discarded_until: r.discardedUntil } : {}),
  };
}

function asReason(err: unknown, reason: string): unknown {
  if (err instanceof UpdaterError && !err.reason) {
    return new UpdaterError(err.code, err.message, { cause: err.cause, reason });
  }
  return err;
}

function describeVerification(v: Job["verification"] & object): string {
  const who =
    v.policy === "keyless" ? `identity ${v.identity} issued by ${v.issuer}` : `key ${v.keyFingerprint}`;
  return `signature verified (${v.policy}): ${who}; release.json sha256 ${v.manifestSha256}\n`;
}

function genericManualSteps(job: Job): string {
  const facts = Object.entries(job.journal.facts)
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
  return [
    `1. Inspect the app containers: docker ps -a --filter label=io.processgit.updater.job=${job.id}`,
    `2. Make sure exactly one app container runs the previous image${job.previousImage ? ` (${job.previousImage})` : ""} and serves.`,
    "3. If the data volumes were migrated, restore them from the snapshot named in the journal before starting the previous version.",
    `4. Last recorded intent: ${job.journal.intent ?? "(none)"}${facts ? `; facts: ${facts}` : ""}.`,
  ].join("\n");
}
