/**
 * The JobStore on disk: `<dir>/state.json`, the job history the updater keeps across restarts and
 * crashes. Owns the file format (schema, version, job shape), its validation, ordering and bounds,
 * and the rule that a file the updater cannot trust is never overwritten.
 */
import { mkdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { errorMessage, StateFileError, UpdaterError } from "../errors.js";
import {
  type Acknowledgement,
  cloneJob,
  type DataRestore,
  isTerminal,
  JOB_STATES,
  type Job,
  type JobError,
  type Journal,
  type Progress,
  type Step,
  type StepStatus,
  trimHistory,
  type Verification,
} from "../orchestrator/job.js";
import { HISTORY_LIMIT, type JobStore, type StoredState } from "../orchestrator/ports.js";
import type { ReleaseManifest } from "../orchestrator/release-manifest.js";
import { fsyncDirectory, removeStaleTempFiles, writeFileAtomic } from "./atomic-write.js";

export const STATE_FILE_NAME = "state.json";
export const STATE_SCHEMA = "processgit-updater/state";
export const STATE_VERSION = 1;

const STATE_DIR_MODE = 0o700;

/** What `state.json` holds, in this order. */
interface StateFile {
  schema: typeof STATE_SCHEMA;
  version: typeof STATE_VERSION;
  jobs: Job[];
}

/**
 * A JobStore backed by one JSON file, written atomically (temp file, fsync, rename, fsync dir).
 *
 * Invariants:
 * - The file and the in-memory copy hold jobs in the StoredState order (the non-terminal job, if
 *   any, first; then newest first by `createdAt`), at most HISTORY_LIMIT of them besides failed
 *   jobs not yet acknowledged, at most one non-terminal, ids unique. Trimming drops the oldest
 *   terminal jobs, never the non-terminal one and never a failed job that is not acknowledged.
 * - Jobs written before `acknowledgement` and `dataRestore` existed load as they are (both optional).
 * - Every `load` and `save` runs alone, in call order; a `save` resolves only once its write is
 *   durable, and the in-memory copy changes only after that.
 * - A file that fails validation is never written, renamed or removed: after `load` refuses it,
 *   every `save` throws StateFileError until a later `load` succeeds.
 * - Callers never share objects with the store: jobs are deep-copied on the way in and out.
 * - One process owns `dir` at a time (temp files of interrupted writes are removed on load).
 *
 * `save` before any `load` loads first, so it can also throw StateFileError.
 * Unknown fields inside a job are kept and written back; unknown top-level fields are not.
 */
export class FileJobStore implements JobStore {
  /** The state file, `<dir>/state.json`. */
  readonly path: string;
  private readonly dir: string;
  private jobs: Job[] | undefined;
  private refused: StateFileError | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.path = join(this.dir, STATE_FILE_NAME);
  }

  /**
   * Reads and validates the file (creating the directory, mode 0700, if missing). A missing file is
   * an empty history. Throws StateFileError, leaving the file as it is, when the file cannot be read
   * or trusted.
   */
  load(): Promise<StoredState> {
    return this.exclusive(async () => {
      this.jobs = await this.read();
      return { jobs: this.jobs.map(cloneJob) };
    });
  }

  /**
   * Inserts or replaces `job` by id and durably rewrites the file. Throws UpdaterError (`internal`)
   * for a job without the Job shape or a second non-terminal job, and (`unavailable`) when the
   * write fails; the in-memory state then stays as it was and the file is whole (old or new).
   */
  save(job: Job): Promise<void> {
    let incoming: Job;
    try {
      incoming = cloneJob(job);
    } catch (err) {
      return Promise.reject(
        new UpdaterError("internal", `cannot save job: it is not plain data (${errorMessage(err)})`, {
          cause: err,
        }),
      );
    }
    return this.exclusive(async () => {
      if (this.refused) {
        throw new StateFileError(this.path, `refusing to write: ${this.refused.message}`, {
          cause: this.refused,
        });
      }
      this.jobs ??= await this.read();
      const problem = jobProblem(incoming, "job");
      if (problem) throw new UpdaterError("internal", `cannot save job ${String(incoming.id)}: ${problem}`);
      const active = this.jobs.find((j) => j.id !== incoming.id && !isTerminal(j.state));
      if (active && !isTerminal(incoming.state)) {
        throw new UpdaterError(
          "internal",
          `cannot save job ${incoming.id} (${incoming.state}): job ${active.id} is still active (${active.state})`,
        );
      }
      const next = bound(order([incoming, ...this.jobs.filter((j) => j.id !== incoming.id)]));
      const file: StateFile = { schema: STATE_SCHEMA, version: STATE_VERSION, jobs: next };
      try {
        await writeFileAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`);
      } catch (err) {
        throw new UpdaterError(
          "unavailable",
          `cannot write state file ${this.path}: ${errorMessage(err)}; job ${incoming.id} revision ${incoming.revision} is not durably saved`,
          { cause: err },
        );
      }
      this.jobs = next;
    });
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => {});
    return result;
  }

  /** Reads the file; on refusal, records it (so that saves refuse too) and throws. */
  private async read(): Promise<Job[]> {
    try {
      await this.ensureDir();
      const text = await this.readText();
      const jobs = text === undefined ? [] : this.parse(text);
      this.refused = undefined;
      // Best effort: a leftover temp file is never read, so failing to remove it is harmless.
      await removeStaleTempFiles(this.path).catch(() => {});
      return jobs;
    } catch (err) {
      if (err instanceof StateFileError) this.refused = err;
      throw err;
    }
  }

  private async ensureDir(): Promise<void> {
    let created: string | undefined;
    try {
      created = await mkdir(this.dir, { recursive: true, mode: STATE_DIR_MODE });
    } catch (err) {
      throw new StateFileError(
        this.path,
        `cannot create state directory ${this.dir}: ${errorMessage(err)}. Create it (mode 0700) for the updater's user.`,
        { cause: err },
      );
    }
    if (created === undefined) return;
    // Make each new directory's entry in its parent durable.
    for (let dir = this.dir; dir !== dirname(dir); dir = dirname(dir)) {
      await fsyncDirectory(dirname(dir));
      if (dir === created) break;
    }
  }

  private async readText(): Promise<string | undefined> {
    try {
      return await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw this.refusal(`it cannot be read (${errorMessage(err)})`, err);
    }
  }

  private parse(text: string): Job[] {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw this.refusal(`it is not valid JSON (${errorMessage(err)})`, err);
    }
    if (!isRecord(value)) throw this.refusal(`it holds ${describe(value)}, not a JSON object`);
    if (value.schema !== STATE_SCHEMA) {
      throw this.refusal(
        `its schema is ${value.schema === undefined ? "missing" : JSON.stringify(value.schema)}, expected "${STATE_SCHEMA}"`,
      );
    }
    const version = value.version;
    if (typeof version === "number" && Number.isInteger(version) && version > STATE_VERSION) {
      throw this.refusal(`version ${version} is newer than this updater understands (${STATE_VERSION})`);
    }
    if (version !== STATE_VERSION) {
      throw this.refusal(
        `its version is ${describe(version)}; this updater understands version ${STATE_VERSION}`,
      );
    }
    if (!Array.isArray(value.jobs)) {
      throw this.refusal(`"jobs" is ${describe(value.jobs)}, expected an array`);
    }
    const jobs: unknown[] = value.jobs;
    const seen = new Set<string>();
    let active: Job | undefined;
    for (const [i, job] of jobs.entries()) {
      const problem = jobProblem(job, `jobs[${i}]`);
      if (problem) throw this.refusal(problem);
      const valid = job as Job;
      if (seen.has(valid.id)) throw this.refusal(`job ${valid.id} appears more than once`);
      seen.add(valid.id);
      if (!isTerminal(valid.state)) {
        if (active) {
          throw this.refusal(
            `it holds more than one active job (${active.id} is ${active.state}, ${valid.id} is ${valid.state})`,
          );
        }
        active = valid;
      }
    }
    return order(jobs as Job[]);
  }

  private refusal(what: string, cause?: unknown): StateFileError {
    return new StateFileError(
      this.path,
      `state file ${this.path} cannot be used: ${what}. The updater left the file untouched. ` +
        `To start with an empty job history, move it aside (e.g. mv ${this.path} ${this.path}.bad); ` +
        "or restore it from a backup. Then restart the updater.",
      cause === undefined ? undefined : { cause },
    );
  }
}

/** The StoredState order: the non-terminal job first, then newest first; stable for ties. */
function order(jobs: Job[]): Job[] {
  return jobs.toSorted(
    (a, b) =>
      Number(isTerminal(a.state)) - Number(isTerminal(b.state)) ||
      Date.parse(b.createdAt) - Date.parse(a.createdAt),
  );
}

/**
 * At most HISTORY_LIMIT jobs, dropping the oldest terminal ones but never a failed job that is not
 * acknowledged; `jobs` must be ordered.
 */
function bound(jobs: Job[]): Job[] {
  return trimHistory(jobs, HISTORY_LIMIT);
}

// ---- Job shape validation: a Check returns the first problem ("<where> is <what>, expected ...") or undefined.

type Check = (value: unknown, at: string) => string | undefined;

const STEP_STATUSES: Record<StepStatus, true> = {
  running: true,
  succeeded: true,
  failed: true,
  skipped: true,
};
const POLICIES: Record<Verification["policy"], true> = { keyless: true, key: true };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  const json = typeof value === "string" ? JSON.stringify(value) : String(value);
  return `${typeof value} ${json.length > 60 ? `${json.slice(0, 57)}...` : json}`;
}

const str: Check = (v, at) =>
  typeof v === "string" ? undefined : `${at} is ${describe(v)}, expected a string`;

const bool: Check = (v, at) =>
  typeof v === "boolean" ? undefined : `${at} is ${describe(v)}, expected true or false`;

const count: Check = (v, at) =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0
    ? undefined
    : `${at} is ${describe(v)}, expected a non-negative integer`;

const num: Check = (v, at) =>
  typeof v === "number" && Number.isFinite(v) ? undefined : `${at} is ${describe(v)}, expected a number`;

const timestamp: Check = (v, at) =>
  typeof v === "string" && !Number.isNaN(Date.parse(v))
    ? undefined
    : `${at} is ${describe(v)}, expected an ISO 8601 timestamp`;

function oneOf(allowed: readonly string[]): Check {
  return (v, at) =>
    typeof v === "string" && allowed.includes(v)
      ? undefined
      : `${at} is ${describe(v)}, expected one of ${allowed.join(", ")}`;
}

const jobState = oneOf(JOB_STATES);
const stepStatus = oneOf(Object.keys(STEP_STATUSES));
const policy = oneOf(Object.keys(POLICIES));

function optional(check: Check): Check {
  return (v, at) => (v === undefined ? undefined : check(v, at));
}

/**
 * Checks every field of `T` (the compiler insists the shape lists them all, so a field added to the
 * model fails to compile here until it is validated); fields `T` does not declare are allowed.
 */
function fields<T>(shape: Record<keyof T, Check>): Check {
  return (v, at) => {
    if (!isRecord(v)) return `${at} is ${describe(v)}, expected an object`;
    for (const [key, check] of Object.entries<Check>(shape)) {
      const problem = check(v[key], `${at}.${key}`);
      if (problem) return problem;
    }
    return undefined;
  };
}

function list(check: Check): Check {
  return (v, at) => {
    if (!Array.isArray(v)) return `${at} is ${describe(v)}, expected an array`;
    for (const [i, item] of v.entries()) {
      const problem = check(item, `${at}[${i}]`);
      if (problem) return problem;
    }
    return undefined;
  };
}

const stringMap: Check = (v, at) => {
  if (!isRecord(v)) return `${at} is ${describe(v)}, expected an object`;
  for (const [key, item] of Object.entries(v)) {
    const problem = str(item, `${at}.${key}`);
    if (problem) return problem;
  }
  return undefined;
};

const strings = list(str);

const manifest = fields<ReleaseManifest>({
  name: str,
  version: str,
  tag: str,
  image: fields<ReleaseManifest["image"]>({
    registry: str,
    repository: str,
    tag: str,
    digest: str,
    platforms: strings,
  }),
  migration: fields<ReleaseManifest["migration"]>({
    required: bool,
    command: strings,
    downtime: bool,
    estimatedDowntimeSeconds: num,
  }),
  minUpgradeFrom: optional(str),
  prerelease: bool,
  breakingChanges: strings,
  releaseNotes: str,
});

const step = fields<Step>({
  state: jobState,
  title: str,
  status: stepStatus,
  startedAt: timestamp,
  endedAt: optional(timestamp),
  output: str,
  error: optional(str),
  progress: optional(fields<Progress>({ done: num, total: num, unit: str })),
});

const jobShape = fields<Job>({
  id: str,
  state: jobState,
  targetTag: str,
  targetVersion: optional(str),
  targetImage: optional(str),
  targetDigest: optional(str),
  previousImage: optional(str),
  previousDigest: optional(str),
  previousVersion: optional(str),
  createdAt: timestamp,
  updatedAt: timestamp,
  finishedAt: optional(timestamp),
  steps: list(step),
  error: optional(
    fields<JobError>({ reason: str, message: str, failedIn: jobState, manualSteps: optional(str) }),
  ),
  verification: optional(
    fields<Verification>({
      policy,
      identity: optional(str),
      issuer: optional(str),
      keyFingerprint: optional(str),
      manifestSha256: str,
    }),
  ),
  allowDowngrade: bool,
  revision: count,
  recoveries: count,
  journal: fields<Journal>({ intent: optional(str), facts: stringMap, manifest: optional(manifest) }),
  acknowledgement: optional(fields<Acknowledgement>({ at: timestamp, by: str, note: str })),
  dataRestore: optional(
    fields<DataRestore>({
      needed: bool,
      snapshot: optional(str),
      pointAt: optional(timestamp),
      discardedFrom: optional(timestamp),
      discardedUntil: optional(timestamp),
      done: bool,
    }),
  ),
});

/** Why `value` is not a Job (its first problem), or undefined when it is one. */
function jobProblem(value: unknown, at: string): string | undefined {
  const problem = jobShape(value, at);
  if (problem) return problem;
  const id = (value as Job).id;
  return id === "" ? `${at}.id is empty` : undefined;
}
