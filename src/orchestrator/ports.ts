/**
 * The orchestrator's view of the outside world. Adapters in src/store, src/releases, src/verify and
 * src/engine implement these interfaces for real; unit tests pass fakes through constructors.
 * Nothing here does I/O.
 */
import type { Job, Verification } from "./job.js";
import type { ReleaseManifest } from "./release-manifest.js";

export type { ReleaseManifest };

export type Channel = "stable" | "prerelease";

/** A published release as the release source reports it. Informational: not trusted for updates. */
export interface ReleaseInfo {
  tag: string;
  name: string;
  prerelease: boolean;
  url: string;
  /** ISO 8601; absent when the source does not say. */
  publishedAt?: string;
  notes: string;
}

/** One downloadable file of a release. */
export interface ReleaseAsset {
  name: string;
  size: number;
  /** Source-specific locator (the API asset URL for GitHub, a path for a local directory). */
  locator: string;
}

export interface ReleaseWithAssets extends ReleaseInfo {
  assets: ReleaseAsset[];
}

/**
 * Where releases come from (GitHub Releases, or a local directory for air-gapped sites).
 * Errors are UpdaterErrors: `not_found` for a missing repository, tag or channel, `unavailable` for an
 * unreachable or rate-limiting source, `bad_gateway` for an answer we cannot use.
 */
export interface ReleaseSource {
  /** The newest published (never draft) release of the channel. */
  latest(channel: Channel, signal?: AbortSignal): Promise<ReleaseInfo>;
  /** The published release with exactly this tag, with its assets. */
  release(tag: string, signal?: AbortSignal): Promise<ReleaseWithAssets>;
  /** The bytes of one asset, refusing more than `maxBytes`. */
  download(asset: ReleaseAsset, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array>;
}

/**
 * Checks release.json against the signer policy pinned in the updater's own configuration.
 * Pure: no network, no clock beyond what the trust material holds. Throws an UpdaterError
 * (`failed_precondition`) that says why a signature is refused.
 */
export interface ReleaseVerifier {
  /** The asset name holding the signature this verifier checks, e.g. "release.json.sigstore.json". */
  readonly signatureAsset: string;
  verify(manifest: Uint8Array, signature: Uint8Array): Promise<Verification>;
}

/** What runs now. */
export interface AppInfo {
  container: string;
  running: boolean;
  /** The image reference as configured on the container. */
  image: string;
  /** The registry digest of that image (sha256:...), when the engine knows one. */
  digest?: string;
  /** The app version, from the image's org.opencontainers.image.version label, when set. */
  version?: string;
}

/**
 * What a step can do besides its work: report output and progress, and journal facts durably
 * before it acts (the journal survives a crash and drives reconciliation).
 */
export interface StepContext {
  /** A copy of the job as it was when the step started. */
  readonly job: Job;
  readonly manifest: ReleaseManifest;
  readonly signal: AbortSignal;
  output(text: string): void;
  progress(done: number, total: number, unit: string): void;
  /** Durably records `intent` (and facts) before a side effect; resolves once it is on disk. */
  journal(intent: string, facts?: Record<string, string>): Promise<void>;
  /**
   * Ids of the jobs whose snapshots must be kept whatever the snapshot retention says: the `failed`
   * jobs no operator has acknowledged yet (their snapshot is what a human restores from). Read at
   * the start of the step. A new update cannot start while such a job exists, so this is usually
   * empty during a forward update; it matters to pruning done at any other time.
   */
  readonly keepSnapshotsOf: readonly string[];
}

/**
 * The container engine, in domain verbs. The Docker Engine API adapter implements it over the
 * socket. Every verb is idempotent: repeating it after a crash is safe. Failures are UpdaterErrors.
 */
export interface ContainerEngine {
  /** The app container as it runs now. */
  inspectApp(signal?: AbortSignal): Promise<AppInfo>;
  /** Checks before anything changes (app exists and runs, disk, engine answers). Changes nothing. */
  preflight(ctx: StepContext): Promise<void>;
  snapshot(ctx: StepContext): Promise<void>;
  pull(ctx: StepContext): Promise<void>;
  verifyImage(ctx: StepContext): Promise<void>;
  /** Returns false when the release has no migration (the step is then recorded as skipped). */
  migrate(ctx: StepContext): Promise<boolean>;
  swap(ctx: StepContext): Promise<void>;
  /**
   * The health verdict of the new container. As its last act on success it journals the fact
   * `verdict.passed` = "true" (VERDICT_PASSED_FACT): from then on the job is committed, and a
   * failure or a restart rolls it forward, never back. (The runner also journals the fact once this
   * resolves, in case an adapter did not.)
   */
  healthcheck(ctx: StepContext): Promise<void>;
  /**
   * Cleanup after the commit, which is already on disk when this runs (the job is `committed`):
   * remove the previous container, its image when so configured, prune. Best effort: a failure is
   * recorded on the job's cleanup step and logged; the update stands. Not retried after a restart.
   */
  commit(ctx: StepContext): Promise<void>;
  /**
   * Undo whatever the journal says happened; bring the old container back on the old data. Journals
   * what it does to the data as `restore.*` facts (RESTORE_FACTS in job.ts: needed, snapshot,
   * pointAt, discardedFrom, discardedUntil, done); the runner turns them into `Job.dataRestore`.
   */
  rollback(ctx: StepContext): Promise<void>;
  /** Clean up after an abort before any change (partial snapshot, pulled image). Must not throw. */
  discard(ctx: StepContext): Promise<void>;
}

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/**
 * What the store holds: jobs newest first, the active one (if any) first, at most `HISTORY_LIMIT`
 * besides the failed jobs not yet acknowledged, which are never pruned (`trimHistory` in job.ts).
 */
export interface StoredState {
  jobs: Job[];
}

export const HISTORY_LIMIT = 50;

/**
 * Durable job storage. `save` resolves only once the job is on disk (write temp, fsync, rename,
 * fsync the directory); the caller publishes a change only after that. `load` throws
 * StateFileError for a corrupt or unknown-version file and never overwrites it.
 */
export interface JobStore {
  load(): Promise<StoredState>;
  /** Inserts or replaces `job` (by id), keeps jobs newest first, bounded by `trimHistory`. */
  save(job: Job): Promise<void>;
}
