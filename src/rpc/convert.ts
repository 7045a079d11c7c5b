/**
 * Domain values to protobuf messages, at the RPC edge only. Domain code speaks string unions;
 * the contract speaks enums and Timestamps.
 */
import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Channel,
  type Job as JobMessage,
  JobSchema,
  JobState as JobStateEnum,
  type Release as ReleaseMessage,
  ReleaseSchema,
  StepStatus as StepStatusEnum,
  UpdaterState,
} from "../../gen/processgit/updater/v1/updater_pb.js";
import { UpdaterError } from "../errors.js";
import type { Job, JobState, StepStatus } from "../orchestrator/job.js";
import type { Channel as DomainChannel, ReleaseInfo } from "../orchestrator/ports.js";
import type { RunnerPhase } from "../orchestrator/runner.js";

const JOB_STATE: Record<JobState, JobStateEnum> = {
  planning: JobStateEnum.PLANNING,
  snapshotting: JobStateEnum.SNAPSHOTTING,
  pulling: JobStateEnum.PULLING,
  verifying: JobStateEnum.VERIFYING,
  migrating: JobStateEnum.MIGRATING,
  swapping: JobStateEnum.SWAPPING,
  healthchecking: JobStateEnum.HEALTHCHECKING,
  committed: JobStateEnum.COMMITTED,
  rolling_back: JobStateEnum.ROLLING_BACK,
  rolled_back: JobStateEnum.ROLLED_BACK,
  failed: JobStateEnum.FAILED,
  aborted: JobStateEnum.ABORTED,
};

const STEP_STATUS: Record<StepStatus, StepStatusEnum> = {
  running: StepStatusEnum.RUNNING,
  succeeded: StepStatusEnum.SUCCEEDED,
  failed: StepStatusEnum.FAILED,
  skipped: StepStatusEnum.SKIPPED,
};

const UPDATER_STATE: Record<RunnerPhase, UpdaterState> = {
  starting: UpdaterState.RECONCILING,
  reconciling: UpdaterState.RECONCILING,
  idle: UpdaterState.IDLE,
  busy: UpdaterState.BUSY,
  stopping: UpdaterState.STOPPING,
};

export function ts(iso: string | undefined): Timestamp | undefined {
  return iso ? timestampFromDate(new Date(iso)) : undefined;
}

export function jobToProto(job: Job): JobMessage {
  return create(JobSchema, {
    id: job.id,
    state: JOB_STATE[job.state],
    targetTag: job.targetTag,
    targetVersion: job.targetVersion ?? "",
    targetImage: job.targetImage ?? "",
    targetDigest: job.targetDigest ?? "",
    previousImage: job.previousImage ?? "",
    previousDigest: job.previousDigest ?? "",
    previousVersion: job.previousVersion ?? "",
    createdAt: ts(job.createdAt),
    updatedAt: ts(job.updatedAt),
    finishedAt: ts(job.finishedAt),
    steps: job.steps.map((s) => ({
      state: JOB_STATE[s.state],
      title: s.title,
      status: STEP_STATUS[s.status],
      startedAt: ts(s.startedAt),
      endedAt: ts(s.endedAt),
      output: s.output,
      error: s.error ?? "",
      progress: s.progress
        ? { done: BigInt(s.progress.done), total: BigInt(s.progress.total), unit: s.progress.unit }
        : undefined,
    })),
    error: job.error
      ? {
          reason: job.error.reason,
          message: job.error.message,
          failedIn: JOB_STATE[job.error.failedIn],
          manualSteps: job.error.manualSteps ?? "",
        }
      : undefined,
    verification: job.verification
      ? {
          policy: job.verification.policy,
          identity: job.verification.identity ?? "",
          issuer: job.verification.issuer ?? "",
          keyFingerprint: job.verification.keyFingerprint ?? "",
          manifestSha256: job.verification.manifestSha256,
        }
      : undefined,
    allowDowngrade: job.allowDowngrade,
    revision: BigInt(job.revision),
    recoveries: job.recoveries,
    acknowledgement: job.acknowledgement
      ? {
          acknowledgedAt: ts(job.acknowledgement.at),
          acknowledgedBy: job.acknowledgement.by,
          note: job.acknowledgement.note,
        }
      : undefined,
    dataRestore: job.dataRestore
      ? {
          needed: job.dataRestore.needed,
          snapshot: job.dataRestore.snapshot ?? "",
          pointAt: ts(job.dataRestore.pointAt),
          discardedFrom: ts(job.dataRestore.discardedFrom),
          discardedUntil: ts(job.dataRestore.discardedUntil),
          done: job.dataRestore.done,
        }
      : undefined,
  });
}

export function updaterStateToProto(phase: RunnerPhase): UpdaterState {
  return UPDATER_STATE[phase];
}

export function channelFromProto(channel: Channel): DomainChannel {
  if (channel === Channel.PRERELEASE) return "prerelease";
  if (channel === Channel.STABLE || channel === Channel.UNSPECIFIED) return "stable";
  throw new UpdaterError(
    "invalid_argument",
    `channel ${channel} is unknown: use CHANNEL_STABLE or CHANNEL_PRERELEASE`,
  );
}

export function releaseToProto(release: ReleaseInfo): ReleaseMessage {
  return create(ReleaseSchema, {
    tag: release.tag,
    name: release.name,
    prerelease: release.prerelease,
    url: release.url,
    publishedAt: ts(release.publishedAt),
    notes: release.notes,
  });
}
