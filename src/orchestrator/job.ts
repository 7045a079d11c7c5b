/**
 * The job model and its state machine: pure data and pure transitions, no I/O.
 * A Job is plain JSON (dates as ISO strings) so that the store can write it as it is.
 */
import type { ReleaseManifest } from "./release-manifest.js";

export const JOB_STATES = [
  "planning",
  "snapshotting",
  "pulling",
  "verifying",
  "migrating",
  "swapping",
  "healthchecking",
  "committed",
  "rolling_back",
  "rolled_back",
  "failed",
  "aborted",
] as const;
export type JobState = (typeof JOB_STATES)[number];

/** The forward path of a successful update, in order. */
export const FORWARD_STATES = [
  "planning",
  "snapshotting",
  "pulling",
  "verifying",
  "migrating",
  "swapping",
  "healthchecking",
  "committed",
] as const satisfies readonly JobState[];

export type TerminalState = "committed" | "rolled_back" | "failed" | "aborted";

export function isTerminal(state: JobState): state is TerminalState {
  return state === "committed" || state === "rolled_back" || state === "failed" || state === "aborted";
}

/**
 * States in which the app or its data may already have changed: a failure from here on needs a
 * rollback (restore the snapshot, bring the old container back) instead of a plain abort.
 */
export function changesMayHaveHappened(state: JobState): boolean {
  return (
    state === "migrating" || state === "swapping" || state === "healthchecking" || state === "rolling_back"
  );
}

const ALLOWED: Record<JobState, readonly JobState[]> = {
  planning: ["snapshotting", "aborted", "failed"],
  snapshotting: ["pulling", "aborted", "failed"],
  pulling: ["verifying", "aborted", "failed"],
  verifying: ["migrating", "aborted", "failed"],
  migrating: ["swapping", "rolling_back", "failed"],
  swapping: ["healthchecking", "rolling_back", "failed"],
  healthchecking: ["committed", "rolling_back", "failed"],
  rolling_back: ["rolled_back", "failed"],
  committed: [],
  rolled_back: [],
  failed: [],
  aborted: [],
};

export function canTransition(from: JobState, to: JobState): boolean {
  return ALLOWED[from].includes(to);
}

export type StepStatus = "running" | "succeeded" | "failed" | "skipped";

export interface Progress {
  done: number;
  total: number;
  unit: string;
}

export interface Step {
  state: JobState;
  title: string;
  status: StepStatus;
  startedAt: string;
  endedAt?: string;
  output: string;
  error?: string;
  progress?: Progress;
}

export interface JobError {
  /** Stable UPPER_SNAKE_CASE reason, e.g. SIGNATURE_INVALID, PREFLIGHT_FAILED, INTERRUPTED. */
  reason: string;
  message: string;
  failedIn: JobState;
  /** For `failed` jobs: what a human must do, one step per line. */
  manualSteps?: string;
}

export interface Verification {
  policy: "keyless" | "key";
  identity?: string;
  issuer?: string;
  keyFingerprint?: string;
  manifestSha256: string;
}

/**
 * What the crash-recovery code needs to know about side effects: written durably BEFORE each side
 * effect (`intent`), with the facts learned so far (container ids and names, snapshot id...).
 */
export interface Journal {
  intent?: string;
  facts: Record<string, string>;
  /** The verified manifest, kept so that a restarted updater can finish or undo the job. */
  manifest?: ReleaseManifest;
}

/**
 * An operator's word that the app was repaired after a `failed` job (AcknowledgeFailure). Until a
 * failed job has one, no new update starts and the job (record and snapshot) is never pruned.
 */
export interface Acknowledgement {
  /** When the acknowledgement was recorded (ISO 8601). */
  at: string;
  /** Who acknowledged, as the caller said (free text, not authenticated); "" when not given. */
  by: string;
  /** What the operator did, as the caller said; "" when not given. */
  note: string;
}

/**
 * What a rollback did to the app's data, from the facts the engine journals while it rolls back
 * (RESTORE_FACTS). Times are ISO 8601. The data the app has after the restore is the data as it was
 * at `pointAt`: everything written after that, in particular what the new version accepted between
 * `discardedFrom` and `discardedUntil`, was discarded.
 */
export interface DataRestore {
  /** Whether the data had to be restored (the new version's code had run on it). */
  needed: boolean;
  /** The snapshot the data was (or is being) restored from. */
  snapshot?: string;
  /** The snapshot's consistency point: when the previous version stopped writing. */
  pointAt?: string;
  /** When the new version's code first ran on the data (its migration, or its container's start). */
  discardedFrom?: string;
  /** When the new version was stopped. */
  discardedUntil?: string;
  /** True once the data is back as it was at `pointAt`. */
  done: boolean;
}

/**
 * Journal facts the engine writes and the runner reads (ctx.journal). All values are strings.
 * - `verdict.passed` = "true": journaled at the very end of a successful `healthcheck`. From then on
 *   the job commits: a failure or a restart rolls it forward, never back.
 * - `restore.*`: journaled by `rollback`, see DataRestore.
 */
export const VERDICT_PASSED_FACT = "verdict.passed";
export const RESTORE_FACTS = {
  needed: "restore.needed",
  snapshot: "restore.snapshot",
  pointAt: "restore.pointAt",
  discardedFrom: "restore.discardedFrom",
  discardedUntil: "restore.discardedUntil",
  done: "restore.done",
} as const;

/** Whether the engine journaled that the health verdict passed: the job is past its commit point. */
export function verdictPassed(job: Job): boolean {
  return job.journal.facts[VERDICT_PASSED_FACT] === "true";
}

/**
 * The DataRestore the journal facts describe, or undefined when they hold no `restore.*` fact.
 * A time that does not parse is left out (the fact itself stays in the journal).
 */
export function dataRestoreFromFacts(facts: Record<string, string>): DataRestore | undefined {
  if (!Object.values(RESTORE_FACTS).some((name) => facts[name] !== undefined)) return undefined;
  const time = (name: string): string | undefined => {
    const value = facts[name];
    if (value === undefined) return undefined;
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
  };
  const restore: DataRestore = {
    needed: facts[RESTORE_FACTS.needed] === "true",
    done: facts[RESTORE_FACTS.done] === "true",
  };
  const snapshot = facts[RESTORE_FACTS.snapshot];
  if (snapshot) restore.snapshot = snapshot;
  const pointAt = time(RESTORE_FACTS.pointAt);
  if (pointAt) restore.pointAt = pointAt;
  const from = time(RESTORE_FACTS.discardedFrom);
  if (from) restore.discardedFrom = from;
  const until = time(RESTORE_FACTS.discardedUntil);
  if (until) restore.discardedUntil = until;
  return restore;
}

/** A `failed` job no operator has acknowledged yet: it blocks new updates and is never pruned. */
export function needsAcknowledgement(job: Job): boolean {
  return job.state === "failed" && job.acknowledgement === undefined;
}

/**
 * Bounds a history ordered as the store keeps it (active first, then newest first) to `limit` jobs,
 * dropping the oldest jobs that may go: never the active job, never a failed job that is not
 * acknowledged (those stay even beyond the limit). Keeps the order.
 */
export function trimHistory(jobs: readonly Job[], limit: number): Job[] {
  let surplus = jobs.length - limit;
  if (surplus <= 0) return [...jobs];
  const drop = new Set<number>();
  for (let i = jobs.length - 1; i >= 0 && surplus > 0; i--) {
    const job = jobs[i] as Job;
    if (!isTerminal(job.state) || needsAcknowledgement(job)) continue;
    drop.add(i);
    surplus--;
  }
  return jobs.filter((_, i) => !drop.has(i));
}

export interface Job {
  id: string;
  state: JobState;
  targetTag: string;
  targetVersion?: string;
  targetImage?: string;
  targetDigest?: string;
  previousImage?: string;
  previousDigest?: string;
  previousVersion?: string;
  createdAt: string;
  updatedAt: string;
  finishedAt?: string;
  steps: Step[];
  error?: JobError;
  verification?: Verification;
  allowDowngrade: boolean;
  /** Increases on every change; a watcher that skipped snapshots can tell how many. */
  revision: number;
  /** How often the updater restarted while this job was active. */
  recoveries: number;
  journal: Journal;
  /** For a `failed` job: set once an operator acknowledged it (AcknowledgeFailure). */
  acknowledgement?: Acknowledgement;
  /** What a rollback did to the data, from the engine's `restore.*` journal facts; unset without them. */
  dataRestore?: DataRestore;
}

/** The most output a step keeps; beyond it, the middle is elided (head and tail kept). */
export const STEP_OUTPUT_LIMIT = 64 * 1024;
const ELISION = "\n[... output elided ...]\n";

/** Appends `text` to `output`, keeping the first and the last part when it grows past `limit`. */
export function appendBounded(output: string, text: string, limit = STEP_OUTPUT_LIMIT): string {
  const joined = output + text;
  if (joined.length <= limit) return joined;
  const half = Math.floor((limit - ELISION.length) / 2);
  const markerAt = joined.indexOf(ELISION);
  const head = markerAt >= 0 && markerAt <= half ? joined.slice(0, markerAt) : joined.slice(0, half);
  return head + ELISION + joined.slice(joined.length - (limit - ELISION.length - head.length));
}

export function newJob(params: {
  id: string;
  tag: string;
  allowDowngrade: boolean;
  now: Date;
  previous?: { image?: string; digest?: string; version?: string };
}): Job {
  const at = params.now.toISOString();
  const job: Job = {
    id: params.id,
    state: "planning",
    targetTag: params.tag,
    createdAt: at,
    updatedAt: at,
    steps: [],
    allowDowngrade: params.allowDowngrade,
    revision: 1,
    recoveries: 0,
    journal: { facts: {} },
  };
  if (params.previous?.image) job.previousImage = params.previous.image;
  if (params.previous?.digest) job.previousDigest = params.previous.digest;
  if (params.previous?.version) job.previousVersion = params.previous.version;
  return job;
}

/** A deep copy: what readers get, never the live object. */
export function cloneJob(job: Job): Job {
  return structuredClone(job);
}

/** Returns a copy of `job` moved to `to`, or throws if the state machine does not allow it. */
export function transition(job: Job, to: JobState, now: Date, error?: JobError): Job {
  if (!canTransition(job.state, to)) {
    throw new Error(`job ${job.id}: transition ${job.state} -> ${to} is not allowed`);
  }
  const next = cloneJob(job);
  next.state = to;
  next.updatedAt = now.toISOString();
  next.revision += 1;
  if (error) next.error = error;
  if (isTerminal(to)) next.finishedAt = next.updatedAt;
  return next;
}

/** Returns a copy of `job` changed by `edit` (steps, journal, fields) with a new revision. */
export function revise(job: Job, now: Date, edit: (draft: Job) => void): Job {
  const next = cloneJob(job);
  edit(next);
  next.updatedAt = now.toISOString();
  next.revision += 1;
  return next;
}

/** The id format: a lowercase UUID. */
export const JOB_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Release tags we accept: a letter or digit, then letters, digits, '.', '-', '_', '+'; at most 128. */
export const TAG_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
