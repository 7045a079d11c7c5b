/**
 * `processgit-updater`, the operator's CLI: status, latest, update TAG [--watch], watch JOB_ID,
 * history, each talking to the server through the generated client (Connect protocol).
 * Server URL from PROCESSGIT_UPDATER_URL (default: the server's own PROCESSGIT_UPDATER_LISTEN
 * reached on loopback, so it works inside the updater's container; else http://127.0.0.1:9000), token from
 * PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE. `--json` prints the answers as JSON.
 * Exit status: 0 when the command did what was asked (for update/watch: the job committed),
 * 1 when the job ended otherwise (the reason is printed), 2 for usage or configuration errors,
 * 3 when the server refused or could not be reached.
 */
import { readFileSync } from "node:fs";
import { toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  Channel,
  HistoryResponseSchema,
  type Job,
  JobSchema,
  JobState,
  LatestReleaseResponseSchema,
  StatusResponseSchema,
  StepStatus,
  UpdaterService,
  UpdaterState,
} from "../../gen/processgit/updater/v1/updater_pb.js";
import { loopbackUrlFor } from "../config.js";

const USAGE = `usage: processgit-updater <command> [--json]
  status                 the updater, the app it manages, the active job
  latest [--prerelease]  the newest release and whether it is newer than what runs
  update TAG [--watch] [--allow-downgrade]
                         start an update; --watch follows it until it ends
  watch JOB_ID           follow a job until it ends
  history                the recent jobs, newest first
environment: PROCESSGIT_UPDATER_URL (default http://127.0.0.1:9000, or the port of
             PROCESSGIT_UPDATER_LISTEN when that is set),
             PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE`;

class UsageError extends Error {}

const stateName = (s: JobState) => (JobState[s] ?? "UNKNOWN").toLowerCase();

function token(env: NodeJS.ProcessEnv): string {
  if (env.PROCESSGIT_UPDATER_TOKEN) return env.PROCESSGIT_UPDATER_TOKEN.trim();
  if (env.PROCESSGIT_UPDATER_TOKEN_FILE) {
    try {
      return readFileSync(env.PROCESSGIT_UPDATER_TOKEN_FILE, "utf8").trim();
    } catch (err) {
      throw new UsageError(
        `cannot read PROCESSGIT_UPDATER_TOKEN_FILE: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`,
      );
    }
  }
  throw new UsageError("set PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE");
}

export async function run(
  argv: string[],
  env: NodeJS.ProcessEnv,
  out: NodeJS.WritableStream & { isTTY?: boolean },
): Promise<number> {
  const flags = new Set(argv.filter((a) => a.startsWith("--")));
  const args = argv.filter((a) => !a.startsWith("--"));
  const json = flags.has("--json");
  const print = (line: string) => out.write(`${line}\n`);
  const [command, arg] = args;
  try {
    if (!command || flags.has("--help")) throw new UsageError(USAGE);
    const baseUrl = (
      env.PROCESSGIT_UPDATER_URL ??
      loopbackUrlFor(env.PROCESSGIT_UPDATER_LISTEN || "0.0.0.0:9000") ??
      "http://127.0.0.1:9000"
    ).replace(/\/+$/, "");
    const bearer = token(env);
    const client = createClient(
      UpdaterService,
      createConnectTransport({
        baseUrl,
        httpVersion: "1.1",
        interceptors: [
          (next) => async (req) => {
            req.header.set("authorization", `Bearer ${bearer}`);
            return next(req);
          },
        ],
      }),
    );
    const follow = async (id: string): Promise<number> => {
      let last: Job | undefined;
      let shown = 0;
      let lastState: JobState | undefined;
      let lastProgress = "";
      for await (const res of client.watchJob({ id })) {
        const job = res.job;
        if (!job) continue;
        last = job;
        if (json) {
          print(JSON.stringify(toJson(JobSchema, job)));
          continue;
        }
        if (job.state !== lastState) {
          print(`[${stateName(job.state)}]`);
          lastState = job.state;
        }
        for (const step of job.steps.slice(shown)) {
          if (step.status === StepStatus.RUNNING) {
            const p = step.progress;
            const text = p && p.total > 0n ? `  ... ${step.title}: ${p.done}/${p.total} ${p.unit}` : "";
            if (text && text !== lastProgress && !out.isTTY) {
              print(text);
              lastProgress = text;
            }
            break;
          }
          print(
            `  ${step.status === StepStatus.SUCCEEDED ? "ok" : (StepStatus[step.status] ?? "").toLowerCase()}  ${step.title}`,
          );
          for (const line of step.output.trim().split("\n").filter(Boolean).slice(-3)) print(`      ${line}`);
          if (step.error) print(`      error: ${step.error}`);
          shown++;
        }
      }
      if (!last) return 1;
      if (last.state === JobState.COMMITTED) {
        if (!json) print(`committed: ${last.targetTag} (${last.targetVersion}) runs`);
        return 0;
      }
      if (!json) {
        print(`${stateName(last.state)}: ${last.error?.reason ?? ""}: ${last.error?.message ?? ""}`);
        if (last.error?.manualSteps) print(`what to do:\n${last.error.manualSteps}`);
      }
      return 1;
    };
    switch (command) {
      case "status": {
        const s = await client.status({});
        if (json) {
          print(JSON.stringify(toJson(StatusResponseSchema, s)));
          return 0;
        }
        print(`updater ${s.updaterVersion}: ${(UpdaterState[s.state] ?? "").toLowerCase()}`);
        print(`app ${s.appContainer}: ${s.appError || `${s.appImage} version ${s.appVersion || "unknown"}`}`);
        if (s.activeJob)
          print(`active job ${s.activeJob.id}: ${stateName(s.activeJob.state)} to ${s.activeJob.targetTag}`);
        print(
          `jobs: ${s.counts?.committed ?? 0} committed, ${s.counts?.rolledBack ?? 0} rolled back, ${s.counts?.failed ?? 0} failed, ${s.counts?.aborted ?? 0} aborted`,
        );
        return 0;
      }
      case "latest": {
        const r = await client.latestRelease({
          channel: flags.has("--prerelease") ? Channel.PRERELEASE : Channel.STABLE,
        });
        if (json) {
          print(JSON.stringify(toJson(LatestReleaseResponseSchema, r)));
          return 0;
        }
        const when = r.release?.publishedAt ? timestampDate(r.release.publishedAt).toISOString() : "unknown";
        print(
          `${r.release?.tag} (${r.release?.name}), published ${when}${r.release?.prerelease ? ", prerelease" : ""}`,
        );
        print(
          r.newerThanRunning
            ? `newer than the running ${r.runningVersion}`
            : `not newer than the running ${r.runningVersion || "(unknown)"}`,
        );
        return 0;
      }
      case "update": {
        if (!arg) throw new UsageError("update needs a TAG, e.g. processgit-updater update v1.4.0");
        const started = await client.startUpdate({
          tag: arg,
          allowDowngrade: flags.has("--allow-downgrade"),
        });
        const id = started.job?.id ?? "";
        if (!flags.has("--watch")) {
          print(
            json
              ? JSON.stringify({ id })
              : `job ${id} started; follow it with: processgit-updater watch ${id}`,
          );
          return 0;
        }
        if (!json) print(`job ${id} started`);
        return await follow(id);
      }
      case "watch":
        if (!arg) throw new UsageError("watch needs a JOB_ID");
        return await follow(arg);
      case "history": {
        const h = await client.history({});
        if (json) {
          print(JSON.stringify(toJson(HistoryResponseSchema, h)));
          return 0;
        }
        for (const j of h.jobs) {
          const at = j.createdAt ? timestampDate(j.createdAt).toISOString() : "";
          print(
            `${j.id}  ${at}  ${j.targetTag}  ${stateName(j.state)}${j.error ? `  ${j.error.reason}` : ""}`,
          );
        }
        return 0;
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    const e = ConnectError.from(err);
    process.stderr.write(`processgit-updater: ${Code[e.code] ?? "error"}: ${e.rawMessage}\n`);
    return 3;
  }
}
