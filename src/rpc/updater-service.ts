/**
 * UpdaterService handlers: convert the request, call the runner or the release source, convert
 * the answer. Errors go through `mapErrors`, the one place that picks RPC codes.
 */

import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  JobCountsSchema,
  StatusResponseSchema,
  type UpdaterService,
} from "../../gen/processgit/updater/v1/updater_pb.js";
import { errorMessage, UpdaterError } from "../errors.js";
import type { Logger } from "../log.js";
import type { AppInfo, ContainerEngine, ReleaseSource } from "../orchestrator/ports.js";
import type { JobRunner } from "../orchestrator/runner.js";
import { isNewer } from "../releases/version.js";
import { channelFromProto, jobToProto, releaseToProto, ts, updaterStateToProto } from "./convert.js";
import { mapErrors } from "./errors.js";

export interface UpdaterServiceDeps {
  runner: JobRunner;
  source: ReleaseSource;
  engine: ContainerEngine;
  appContainer: string;
  updaterVersion: string;
  log: Logger;
  /** How long Status waits for the container engine before answering without app details. */
  engineTimeoutMs?: number;
}

/** HistoryRequest.limit above this is refused; the store keeps 50 anyway. */
const MAX_HISTORY_LIMIT = 1000;

export function updaterService(deps: UpdaterServiceDeps): ServiceImpl<typeof UpdaterService> {
  const { runner, source, engine, log } = deps;
  const engineTimeoutMs = deps.engineTimeoutMs ?? 3000;

  async function app(signal: AbortSignal): Promise<{ info?: AppInfo; error?: string }> {
    try {
      return {
        info: await engine.inspectApp(AbortSignal.any([signal, AbortSignal.timeout(engineTimeoutMs)])),
      };
    } catch (err) {
      return { error: errorMessage(err) };
    }
  }

  return mapErrors<ServiceImpl<typeof UpdaterService>>(
    {
      async status(_req, ctx) {
        const { info, error } = await app(ctx.signal);
        const counts = runner.counts();
        const active = runner.activeJob();
        const blocking = runner.blockingJob();
        return create(StatusResponseSchema, {
          updaterVersion: deps.updaterVersion,
          state: updaterStateToProto(runner.state),
          appContainer: deps.appContainer,
          appImage: info?.image ?? "",
          appDigest: info?.digest ?? "",
          appVersion: info?.version ?? "",
          appError: error ?? (info && !info.running ? `container ${info.container} is not running` : ""),
          activeJob: active ? jobToProto(active) : undefined,
          counts: create(JobCountsSchema, {
            total: counts.total,
            committed: counts.committed,
            rolledBack: counts.rolledBack,
            failed: counts.failed,
            aborted: counts.aborted,
          }),
          lastCommittedAt: ts(counts.lastCommittedAt),
          blockingJob: blocking ? jobToProto(blocking) : undefined,
        });
      },

      async latestRelease(req, ctx) {
        const channel = channelFromProto(req.channel);
        const [release, running] = await Promise.all([source.latest(channel, ctx.signal), app(ctx.signal)]);
        const runningVersion = running.info?.version ?? "";
        return {
          release: releaseToProto(release),
          newerThanRunning: runningVersion ? (isNewer(release.tag, runningVersion) ?? false) : false,
          runningVersion,
        };
      },

      async startUpdate(req) {
        const job = await runner.start({ tag: req.tag, allowDowngrade: req.allowDowngrade });
        return { job: jobToProto(job) };
      },

      async getJob(req) {
        return { job: jobToProto(runner.get(req.id)) };
      },

      async history(req) {
        if (req.limit > MAX_HISTORY_LIMIT) {
          throw new UpdaterError(
            "invalid_argument",
            `limit ${req.limit} is too large; use 0 (all kept jobs) or at most ${MAX_HISTORY_LIMIT}`,
          );
        }
        return { jobs: runner.history(req.limit).map(jobToProto) };
      },

      async acknowledgeFailure(req) {
        const job = await runner.acknowledge(req.id, { by: req.acknowledgedBy, note: req.note });
        return { job: jobToProto(job) };
      },

      async *watchJob(req, ctx) {
        for await (const job of runner.watch(req.id, ctx.signal)) {
          yield { job: jobToProto(job) };
        }
        log.debug("watch ended", { job: req.id });
      },
    },
    log,
  );
}
