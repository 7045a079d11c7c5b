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
