/**
 * Domain errors. Every failure the updater reports carries a closed `code` that says what kind of
 * failure it is; `src/rpc/errors.ts` is the one place that maps codes to RPC status codes.
 * Messages say what went wrong and what to fix; they never contain secrets.
 */

export type ErrorCode =
  /** The caller sent something invalid (bad tag, bad id, bad limit). */
  | "invalid_argument"
  /** The thing asked for does not exist (unknown job, release, tag). */
  | "not_found"
  /** Something with that identity already exists (a job is already active). */
  | "already_exists"
  /** The system is not in a state that allows the operation. */
  | "failed_precondition"
  /** A dependency cannot be reached or refused us for now (GitHub down, rate limited, shutting down). */
  | "unavailable"
  /** The dependency answered something we cannot use. */
  | "bad_gateway"
  /** The operation ran out of time. */
  | "deadline_exceeded"
  /** Our own bug or an unexpected state. */
  | "internal";

export interface UpdaterErrorOptions {
  cause?: unknown;
  /** The job error reason (UPPER_SNAKE_CASE) when this error ends a job, e.g. SIGNATURE_INVALID. */
  reason?: string;
  /** When a rollback cannot finish: what a human must do, one step per line. */
  manualSteps?: string;
}

export class UpdaterError extends Error {
  override readonly name = "UpdaterError";
  readonly code: ErrorCode;
  readonly reason: string | undefined;
  readonly manualSteps: string | undefined;

  constructor(code: ErrorCode, message: string, options?: UpdaterErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.reason = options?.reason;
    this.manualSteps = options?.manualSteps;
  }
}

/** Raised by `loadConfig` with every configuration problem found, one per line. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.problems = problems;
  }
}

/** Raised when the state file cannot be read or trusted; startup must stop and keep the file. */
export class StateFileError extends Error {
  override readonly name = "StateFileError";
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.path = path;
  }
}

/** The message of any thrown value, for logs and job records. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
