/**
 * `processgit-updater`, the operator's CLI: status, latest, update TAG [--watch], watch JOB_ID,
 * history, acknowledge JOB_ID [--note TEXT] [--by NAME], each talking to the server through the generated client (Connect protocol).
 * Server URL from PROCESSGIT_UPDATER_URL (default: the server's own PROCESSGIT_UPDATER_LISTEN
 * reached on loopback, so it works inside the updater's container; else http://127.0.0.1:9000), token from
 * PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE. `--json` prints the answers as JSON.
 * Exit status: 0 when the command did what was asked (for update/watch: the job committed),
 * 1 when the job ended otherwise (the reason is printed), 2 for usage or configuration errors,
 * 3 when the server refused or could not be reached. `--help`, `-h` or `help` prints the usage
 * (exit 0); an unknown flag or an extra argument is a usage error, found before any request.
 * `--watch` on a terminal keeps one status line rewritten in place (state, running step, progress,
 * its latest output line); piped, it prints plain lines, the running step's output as it arrives.
 */
import { readFileSync } from "node:fs";
import { toJson } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  AcknowledgeFailureResponseSchema,
  Channel,
  type DataRestore,
  HistoryResponseSchema,
  type Job,
  JobSchema,
  JobState,
  LatestReleaseResponseSchema,
  type Progress,
  StatusResponseSchema,
  type Step,
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
  acknowledge JOB_ID [--note TEXT] [--by NAME]
                         record that you repaired the app after a failed job (its manual
                         steps are done); until then no update starts
  help, --help, -h       this text
environment: PROCESSGIT_UPDATER_URL (default http://127.0.0.1:9000, or the port of
             PROCESSGIT_UPDATER_LISTEN when that is set),
             PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE`;

class UsageError extends Error {}

/**
 * The flags each command takes, the options that take a value (`--note TEXT` or `--note=TEXT`),
 * and the one argument it needs (described for the error).
 */
const COMMANDS: Record<string, { flags: string[]; options?: string[]; arg?: string }> = {
  status: { flags: ["--json"] },
  latest: { flags: ["--prerelease", "--json"] },
  update: {
    flags: ["--watch", "--allow-downgrade", "--json"],
    arg: "a TAG, e.g. processgit-updater update v1.4.0",
  },
  watch: { flags: ["--json"], arg: "a JOB_ID (processgit-updater history lists them)" },
  history: { flags: ["--json"] },
  acknowledge: {
    flags: ["--json"],
    options: ["--note", "--by"],
    arg: "the JOB_ID of a failed job (processgit-updater status names the one that blocks updates)",
  },
};

/** Every option that takes a value, whatever the command: its value is never read as a word. */
const VALUE_OPTIONS = new Set(Object.values(COMMANDS).flatMap((c) => c.options ?? []));

/** Edit distance (insertions, deletions, substitutions) between two short words. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitute = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min((previous[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, substitute));
    }
    previous = row;
  }
  return previous[b.length] ?? 0;
}

/** " (did you mean X?)" when one of `known` is a likely typo of `word`. */
function suggestion(word: string, known: string[]): string {
  const close = known.find((k) => distance(word, k) <= 2);
  return close ? ` (did you mean ${close}?)` : "";
}

interface Parsed {
  command: string;
  arg: string;
  flags: Set<string>;
  options: Map<string, string>;
}

/** The command, its argument, flags and options; a UsageError for anything the command does not take. */
function parse(argv: string[]): Parsed {
  const words: string[] = [];
  const flags: string[] = [];
  const given: Array<[string, string]> = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    if (!a.startsWith("-")) {
      words.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (!VALUE_OPTIONS.has(name)) {
      flags.push(a);
      continue;
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined)
      throw new UsageError(`${name} needs a value, e.g. ${name} 'restored the volume'`);
    given.push([name, value]);
  }
  const [command, ...rest] = words;
  if (!command) throw new UsageError(USAGE);
  const spec = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!spec) {
    throw new UsageError(
      `unknown command ${JSON.stringify(command)}${suggestion(command, Object.keys(COMMANDS))}\n${USAGE}`,
    );
  }
  const takes = [...spec.flags, ...(spec.options ?? [])];
  const options = new Map<string, string>();
  for (const flag of [...flags, ...given.map(([name]) => name)]) {
    if (!takes.includes(flag)) {
      const hint = suggestion(flag, takes) || ` (${command} takes ${takes.join(", ")})`;
      throw new UsageError(`processgit-updater ${command}: unknown flag ${flag}${hint}`);
    }
  }
  for (const [name, value] of given) {
    if (options.has(name)) throw new UsageError(`processgit-updater ${command}: ${name} given twice`);
    options.set(name, value);
  }
  if (spec.arg && rest.length === 0) throw new UsageError(`${command} needs ${spec.arg}`);
  const extra = rest[spec.arg ? 1 : 0];
  if (extra !== undefined) {
    throw new UsageError(`processgit-updater ${command}: unexpected argument ${JSON.stringify(extra)}`);
  }
  return { command, arg: rest[0] ?? "", flags: new Set(flags), options };
}

const stateName = (s: JobState) => (JobState[s] ?? "UNKNOWN").toLowerCase();

const iso = (t: Timestamp | undefined) => (t ? timestampDate(t).toISOString() : "(unknown)");

/** The commands that get a failed job out of the way, once its manual steps are done. */
const acknowledgeHint = (id: string) =>
  `when the app is repaired: processgit-updater acknowledge ${id} --note 'what you did'`;

/** What a rollback did to the data, in a few lines. */
function describeRestore(r: DataRestore): string[] {
  if (!r.needed) return ["data: not restored: the new version never ran on it, nothing was discarded"];
  const from = `snapshot ${r.snapshot || "(unknown)"} (the data as of ${iso(r.pointAt)})`;
  const window = `between ${iso(r.discardedFrom)} and ${iso(r.discardedUntil)}`;
  if (!r.done) return [`data: the restore from ${from} did NOT finish; follow the manual steps`];
  return [
    `data: restored from ${from}`,
    `data: discarded what the new version wrote ${window}; changes made in it must be made again`,
  ];
}

/** "failed, not acknowledged: blocks updates" for the history and status lines. */
function acknowledgement(job: Job): string {
  if (job.state !== JobState.FAILED) return "";
  const a = job.acknowledgement;
  return a
    ? `  acknowledged ${iso(a.acknowledgedAt)}${a.acknowledgedBy ? ` by ${a.acknowledgedBy}` : ""}`
    : "  NOT ACKNOWLEDGED: blocks updates";
}

const FILE_ERRORS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EISDIR: "it is a directory",
};

function token(env: NodeJS.ProcessEnv): string {
  if (env.PROCESSGIT_UPDATER_TOKEN) return env.PROCESSGIT_UPDATER_TOKEN.trim();
  const file = env.PROCESSGIT_UPDATER_TOKEN_FILE;
  if (file) {
    try {
      return readFileSync(file, "utf8").trim();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
      throw new UsageError(
        `cannot read the token file ${file} (PROCESSGIT_UPDATER_TOKEN_FILE): ${FILE_ERRORS[code] ?? code}; ` +
          "point PROCESSGIT_UPDATER_TOKEN_FILE at a readable file holding the updater's token, " +
          "or set PROCESSGIT_UPDATER_TOKEN",
      );
    }
  }
  throw new UsageError("set PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE");
}

type Out = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/** "12.3 MiB" */
function bytes(n: bigint): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** "12.3 MiB / 57.2 MiB (21%)" or "3/10 layers (30%)"; the percentage is undefined while the total is. */
function progressOf(p: Progress | undefined): { text: string; percent?: number } {
  if (!p || (p.done === 0n && p.total === 0n)) return { text: "" };
  const show = (n: bigint) => (p.unit === "bytes" ? bytes(n) : String(n));
  if (p.total === 0n) return { text: `${show(p.done)}${p.unit === "bytes" ? "" : ` ${p.unit}`}` };
  const percent = Number((p.done * 100n) / p.total);
  const figures =
    p.unit === "bytes" ? `${bytes(p.done)} / ${bytes(p.total)}` : `${p.done}/${p.total} ${p.unit}`;
  return { text: `${figures} (${percent}%)`, percent };
}

/**
 * The text `next` holds beyond `seen`. A step's output only grows, except that past 64 KiB the
 * server elides its middle: then what follows the end of `seen` in `next`, if it is still there.
 */
function added(seen: string, next: string): string {
  if (next.startsWith(seen)) return next.slice(seen.length);
  const tail = seen.slice(-200);
  const at = next.lastIndexOf(tail);
  return at >= 0 ? next.slice(at + tail.length) : next;
}

/** `text` on one line of at most `width` columns (control characters blanked, "…" where cut). */
function cut(text: string, width: number): string {
  const line = text.replace(/\p{Cc}/gu, " ");
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}

const CLEAR_LINE = "\r\x1b[2K";
const REDRAW_MS = 100;
const PROGRESS_EVERY_MS = 2000;

/**
 * Shows a followed job as it changes. Always: a line per state, a line per ended step (under its
 * state) with its last output lines not shown yet. On a terminal, below them, one status line
 * rewritten in place, at most every REDRAW_MS: the state, the running step, its progress and its
 * latest output line (the health evidence, for example). Piped: the running step's output lines
 * as they arrive ("    | ") and its progress when it moved 10% or every PROGRESS_EVERY_MS.
 */
class JobView {
  private readonly tty: boolean;
  private state: JobState | undefined;
  /** Steps shown for good; the next one is running, if any. */
  private ended = 0;
  /** Piped: the running step's output already printed, up to its last complete line. */
  private streamed = "";
  private progress = { text: "", percent: undefined as number | undefined, at: 0 };
  /** Terminal: the status line on the screen, the one wanted there, when it was last drawn. */
  private drawn = "";
  private wanted = "";
  private drawnAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly out: Out) {
    this.tty = out.isTTY === true;
  }

  show(job: Job): void {
    for (const step of job.steps.slice(this.ended)) {
      this.heading(step.state);
      if (step.status === StepStatus.RUNNING) {
        if (!this.tty) this.stream(step);
        break;
      }
      const status =
        step.status === StepStatus.SUCCEEDED ? "ok" : (StepStatus[step.status] ?? "").toLowerCase();
      this.line(`  ${status}  ${step.title}`);
      const unseen = added(this.streamed, step.output).trim().split("\n").filter(Boolean);
      for (const text of unseen.slice(-3)) this.line(`      ${text}`);
      if (step.error) this.line(`      error: ${step.error}`);
      this.ended++;
      this.streamed = "";
      this.progress = { text: "", percent: undefined, at: 0 };
    }
    this.heading(job.state);
    if (this.tty) {
      this.wanted = this.statusLine(job);
      this.draw();
    }
  }

  /** "[pulling]" when the steps (or the job) entered another state. */
  private heading(state: JobState): void {
    if (state !== this.state) this.line(`[${stateName(state)}]`);
    this.state = state;
  }

  /** Clears the status line; the view prints nothing more. */
  end(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.wanted = "";
    if (this.drawn) this.out.write(CLEAR_LINE);
    this.drawn = "";
  }

  private line(text: string): void {
    this.out.write(`${this.drawn ? CLEAR_LINE : ""}${text}\n`);
    this.drawn = "";
  }

  /** Piped: the running step's new complete output lines, and its progress when it moved enough. */
  private stream(step: Step): void {
    const fresh = added(this.streamed, step.output);
    const complete = fresh.slice(0, fresh.lastIndexOf("\n") + 1);
    for (const text of complete.split("\n").filter(Boolean)) this.line(`    | ${text}`);
    this.streamed = step.output.slice(0, step.output.length - (fresh.length - complete.length));
    const { text, percent } = progressOf(step.progress);
    const now = Date.now();
    const moved =
      percent !== undefined &&
      (this.progress.percent === undefined || Math.abs(percent - this.progress.percent) >= 10);
    if (text && text !== this.progress.text && (moved || now - this.progress.at >= PROGRESS_EVERY_MS)) {
      this.line(`  ... ${step.title}: ${text}`);
      this.progress = { text, percent, at: now };
    }
  }

  /** "  ... [pulling] pull IMAGE: 12.3 MiB / 57.2 MiB (21%) | latest output line", cut to the width. */
  private statusLine(job: Job): string {
    const width = (this.out.columns || 80) - 1;
    const state = `  ... [${stateName(job.state)}]`;
    const step = job.steps[this.ended];
    if (step?.status !== StepStatus.RUNNING) return cut(state, width);
    const progress = progressOf(step.progress).text;
    const latest = step.output.trimEnd().split("\n").at(-1) ?? "";
    const rest = `${progress ? `: ${progress}` : ""}${latest ? ` | ${latest}` : ""}`;
    // The title gives way first, so that the progress and the evidence stay in sight.
    const title = cut(step.title, Math.max(width - state.length - 1 - rest.length, 16));
    return cut(`${state} ${title}${rest}`, width);
  }

  /** Rewrites the status line, at most every REDRAW_MS (a timer draws the latest wanted one). */
  private draw(): void {
    if (this.timer || this.wanted === this.drawn) return;
    const wait = this.drawnAt + REDRAW_MS - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.draw();
      }, wait);
      return;
    }
    this.out.write(`${CLEAR_LINE}${this.wanted}`);
    this.drawn = this.wanted;
    this.drawnAt = Date.now();
  }
}

export async function run(argv: string[], env: NodeJS.ProcessEnv, out: Out): Promise<number> {
  const print = (line: string) => out.write(`${line}\n`);
  if (argv.includes("--help") || argv.includes("-h") || argv.find((a) => !a.startsWith("-")) === "help") {
    print(USAGE);
    return 0;
  }
  try {
    const { command, arg, flags, options } = parse(argv);
    const json = flags.has("--json");
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
      const view = new JobView(out);
      try {
        for await (const res of client.watchJob({ id })) {
          if (!res.job) continue;
          last = res.job;
          if (json) print(JSON.stringify(toJson(JobSchema, last)));
          else view.show(last);
        }
      } finally {
        view.end();
      }
      if (!last) return 1;
      if (last.state === JobState.COMMITTED) {
        if (!json) {
          print(`committed: ${last.targetTag} (${last.targetVersion}) runs`);
          const cleanup = last.steps.at(-1);
          if (cleanup?.state === JobState.COMMITTED && cleanup.status === StepStatus.FAILED) {
            print(`note: the cleanup after the commit did not finish (${cleanup.error}); the update stands`);
          }
        }
        return 0;
      }
      if (!json) {
        print(`${stateName(last.state)}: ${last.error?.reason ?? ""}: ${last.error?.message ?? ""}`);
        if (last.dataRestore) for (const line of describeRestore(last.dataRestore)) print(line);
        if (last.error?.manualSteps) print(`what to do:\n${last.error.manualSteps}`);
        if (last.state === JobState.FAILED) {
          const ack = acknowledgement(last).trim();
          print(
            last.acknowledgement
              ? ack
              : `no update starts until this job is acknowledged; ${acknowledgeHint(last.id)}`,
          );
        }
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
        const b = s.blockingJob;
        if (b) {
          print(
            `UPDATES BLOCKED: job ${b.id} (to ${b.targetTag}) failed${b.error ? ` (${b.error.reason})` : ""} at ${iso(b.finishedAt)} and is not acknowledged`,
          );
          print(`  its manual steps: processgit-updater watch ${b.id}`);
          print(`  ${acknowledgeHint(b.id)}`);
        }
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
            `${j.id}  ${at}  ${j.targetTag}  ${stateName(j.state)}${j.error ? `  ${j.error.reason}` : ""}${acknowledgement(j)}`,
          );
        }
        return 0;
      }
      case "acknowledge": {
        const r = await client.acknowledgeFailure({
          id: arg,
          note: options.get("--note") ?? "",
          acknowledgedBy: options.get("--by") ?? env.USER ?? env.LOGNAME ?? "",
        });
        if (json) {
          print(JSON.stringify(toJson(AcknowledgeFailureResponseSchema, r)));
          return 0;
        }
        const a = r.job?.acknowledgement;
        print(
          `job ${arg} acknowledged at ${iso(a?.acknowledgedAt)}${a?.acknowledgedBy ? ` by ${a.acknowledgedBy}` : ""}${a?.note ? `: ${a.note}` : ""}`,
        );
        const status = await client.status({}).catch(() => undefined);
        const still = status?.blockingJob;
        if (still) print(`job ${still.id} still blocks updates: ${acknowledgeHint(still.id)}`);
        else if (status) print("updates can start again");
        return 0;
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
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
