/**
 * The operator's CLI (the package's bin, built) against the real server on 127.0.0.1:0, with the
 * fake engine and release stand-ins behind it: status, latest, update --watch, watch, history,
 * --json, exit codes; live progress on a terminal (under a pseudo-terminal from `script`) and piped;
 * a closed pipe; usage errors before any request; --help.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { StepContext } from "../../src/orchestrator/ports.js";
import { FakeEngine } from "../fakes/fake-engine.js";
import { type RunResult, run } from "../helpers/run.js";
import { startTestUpdater, type TestUpdater } from "../helpers/test-updater.js";

const bin = join(import.meta.dirname, "../../dist/src/cli/bin.js");
let u: TestUpdater | undefined;
afterEach(async () => {
  await u?.close();
  u = undefined;
});

/** `env -i ... node bin ARGS`: the CLI with only the environment the test gives it. */
const cliCommand = (args: string[], env: Record<string, string> = {}) => [
  "env",
  "-i",
  `PATH=${process.env.PATH}`,
  `PROCESSGIT_UPDATER_URL=${u?.url}`,
  `PROCESSGIT_UPDATER_TOKEN=${u?.token}`,
  ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
  process.execPath,
  bin,
  ...args,
];
const cli = (args: string[], env: Record<string, string> = {}) => {
  const [file = "", ...rest] = cliCommand(args, env);
  return run(file, rest);
};
const shellQuote = (words: string[]) => words.map((w) => `'${w.replaceAll("'", "'\\''")}'`).join(" ");

/** Starts a program whose output the test can wait for while it runs. */
function started(file: string, args: string[]) {
  const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
  const result: RunResult = { code: -1, stdout: "", stderr: "" };
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    result.stdout += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    result.stderr += d;
  });
  const exited = new Promise<RunResult>((resolve) =>
    child.on("close", (code) => resolve({ ...result, code: code ?? -1 })),
  );
  return {
    exited,
    /** Resolves once stdout holds `text`, while the program still runs. */
    async printed(text: string): Promise<void> {
      const until = Date.now() + 10_000;
      while (!result.stdout.includes(text)) {
        if (Date.now() > until) throw new Error(`no ${JSON.stringify(text)} in:\n${result.stdout}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/** The CLI under a pseudo-terminal (util-linux `script`) COLUMNS wide, or 0 (unknown) wide. */
const onTerminal = (args: string[], columns = 0) =>
  started("script", [
    "-qec",
    `${columns ? `stty cols ${columns} && ` : ""}${shellQuote(cliCommand(args))}`,
    "/dev/null",
  ]);

const MiB = 1024 * 1024;
const EVIDENCE = "the new container: running=true restarts=0 healthcheck=healthy readiness=200 OK";

/** Stops in the pull at 12.3 MiB of 57.2 MiB, and in the health check after its evidence, until opened. */
class LiveEngine extends FakeEngine {
  readonly pullHeld = Promise.withResolvers<void>();
  readonly health = this.gate("healthcheck");
  constructor() {
    super();
    this.outputs.set("healthcheck", [
      "the new container: running=true restarts=0 healthcheck=starting readiness=503\n",
      `${EVIDENCE}\n`,
    ]);
  }
  override async pull(ctx: StepContext): Promise<void> {
    ctx.progress(Math.round(12.3 * MiB), Math.round(57.2 * MiB), "bytes");
    await this.pullHeld.promise;
    ctx.progress(Math.round(57.2 * MiB), Math.round(57.2 * MiB), "bytes");
  }
}

const CLEAR_LINE = "\r\x1b[2K";
/** What the CLI wrote in place on the terminal: the status lines (they end without a newline). */
const statusLines = (stdout: string) =>
  stdout.split(CLEAR_LINE).filter((segment) => segment !== "" && !segment.includes("\n"));

describe("processgit-updater CLI", () => {
  it("status, latest and history", async () => {
    u = await startTestUpdater();
    const status = await cli(["status"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain("updater 0.1.0: idle");
    expect(status.stdout).toContain("app processgit: registry.test/processgit:1.0.0 version 1.0.0");
    const latest = await cli(["latest"]);
    expect(latest.stdout).toContain("v1.2.0");
    expect(latest.stdout).toContain("newer than the running 1.0.0");
    expect(JSON.parse((await cli(["history", "--json"])).stdout)).toEqual({});
  });

  it("update --watch follows the job to the end and exits 0 only when it committed", async () => {
    u = await startTestUpdater();
    const ok = await cli(["update", "v1.2.0", "--watch"]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/\[planning\][\s\S]*\[pulling\][\s\S]*\[committed\]/);
    expect(ok.stdout).toContain("committed: v1.2.0 (1.2.0) runs");
    u.engine.failOn("healthcheck", "the new container never got healthy", "HEALTHCHECK_FAILED");
    const bad = await cli(["update", "v1.2.0", "--watch", "--allow-downgrade"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain("rolled_back: HEALTHCHECK_FAILED: the new container never got healthy");
    const history = await cli(["history"]);
    expect(history.stdout.trim().split("\n")).toHaveLength(2);
  });

  it("watch --json prints one job per line; errors have their code and exit 3", async () => {
    u = await startTestUpdater();
    const started = JSON.parse((await cli(["update", "v1.2.0", "--json"])).stdout) as { id: string };
    const watched = await cli(["watch", started.id, "--json"]);
    const last = JSON.parse(watched.stdout.trim().split("\n").at(-1) ?? "{}");
    expect(last.state).toBe("JOB_STATE_COMMITTED");
    const missing = await cli(["watch", "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain("NotFound");
    const badToken = await cli(["status"], { PROCESSGIT_UPDATER_TOKEN: "x".repeat(40) });
    expect(badToken.code).toBe(3);
    expect(badToken.stderr).toContain("Unauthenticated");
    const usage = await cli(["frobnicate"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("usage: processgit-updater");
  });

  it("--watch on a terminal rewrites one status line: state, step, pull bytes, health evidence", async () => {
    const engine = new LiveEngine();
    u = await startTestUpdater({ engine });
    const { id } = JSON.parse((await cli(["update", "v1.2.0", "--json"])).stdout) as { id: string };
    const wide = onTerminal(["watch", id], 200);
    const narrow = onTerminal(["watch", id]);
    // Both show the pull's progress, then the health evidence, while the step still runs.
    await wide.printed("12.3 MiB / 57.2 MiB (21%)");
    await narrow.printed("12.3 MiB / 57.2 MiB (21%)");
    engine.pullHeld.resolve();
    await engine.health.reached;
    await wide.printed(`| ${EVIDENCE}`);
    engine.health.open();
    const [w, n] = await Promise.all([wide.exited, narrow.exited]);
    expect(w.code, w.stdout).toBe(0);
    expect(n.code, n.stdout).toBe(0);
    const status = statusLines(w.stdout);
    expect(status).toContainEqual(
      expect.stringMatching(
        /^ {2}\.\.\. \[pulling\] pull registry\.test\/processgit@sha256:[0-9a-f]{64}: 12\.3 MiB \/ 57\.2 MiB \(21%\)$/,
      ),
    );
    expect(status).toContain(`  ... [healthchecking] health verdict of the new container | ${EVIDENCE}`);
    for (const line of status) expect(line.length).toBeLessThan(200);
    // Unknown width: 80 columns; the step's title gives way before the progress does.
    expect(statusLines(n.stdout)).toContain(
      "  ... [pulling] pull registry.test/processgit@sha25…: 12.3 MiB / 57.2 MiB (21%)",
    );
    for (const line of statusLines(n.stdout)) expect(line.length).toBeLessThan(80);
    // Permanent lines as when piped, and no status line left behind by the outcome.
    for (const out of [w.stdout, n.stdout]) {
      expect(out).toMatch(/\[pulling\][\s\S]*ok {2}pull registry[\s\S]*\[healthchecking\]/);
      expect(out.split(CLEAR_LINE).at(-1)).toMatch(
        /(^|\n)\[committed\]\r\n {2}ok {2}clean up: remove the previous container\r\ncommitted: v1\.2\.0 \(1\.2\.0\) runs\r\n$/,
      );
    }
    if (process.env.SHOW_TTY) console.log(JSON.stringify(n.stdout), JSON.stringify(w.stdout));
  });

  it("--watch piped prints the running step's output lines as they arrive, and its progress", async () => {
    const engine = new LiveEngine();
    u = await startTestUpdater({ engine });
    const [file = "", ...args] = cliCommand(["update", "v1.2.0", "--watch"]);
    const piped = started(file, args);
    await piped.printed("12.3 MiB / 57.2 MiB (21%)");
    engine.pullHeld.resolve();
    await engine.health.reached;
    await piped.printed(`    | ${EVIDENCE}\n`);
    engine.health.open();
    const done = await piped.exited;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).not.toContain("\r");
    expect(done.stdout).toMatch(
      / {2}\.\.\. pull registry\.test\/processgit@sha256:[0-9a-f]{64}: 12\.3 MiB \/ 57\.2 MiB \(21%\)\n/,
    );
    expect(done.stdout).toContain(
      `[healthchecking]\n    | the new container: running=true restarts=0 healthcheck=starting readiness=503\n    | ${EVIDENCE}\n  ok  health verdict of the new container\n`,
    );
    expect(done.stdout.split(EVIDENCE)).toHaveLength(2);
  });

  it("a closed pipe ends the CLI quietly with exit 0", async () => {
    // Longer than a pipe holds (64 KiB), so that head exits while the CLI still writes.
    const engine = new FakeEngine().failOn("preflight", "the disk is full", `PREFLIGHT_${"X".repeat(2000)}`);
    u = await startTestUpdater({ engine });
    for (let i = 0; i < 50; i++) {
      const job = await u.updater.runner.start({ tag: "v1.2.0" });
      for await (const seen of u.updater.runner.watch(job.id)) void seen;
    }
    const piped = await run("sh", [
      "-c",
      `{ ${shellQuote(cliCommand(["history"]))}; echo "node exited $?" >&2; } | head -c 10`,
    ]);
    expect(piped.stdout).toHaveLength(10);
    expect(piped.stderr).toBe("node exited 0\n");
  });

  it("refuses unknown flags and extra arguments before any request, and explains", async () => {
    u = await startTestUpdater();
    const typo = await cli(["update", "v1.2.0", "--wacth"]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain("unknown flag --wacth (did you mean --watch?)");
    const other = await cli(["latest", "--watch"]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain("unknown flag --watch (latest takes --prerelease, --json)");
    const extra = await cli(["update", "v1.2.0", "v1.1.0"]);
    expect(extra.code).toBe(2);
    expect(extra.stderr).toContain('unexpected argument "v1.1.0"');
    expect((await cli(["status", "now"])).code).toBe(2);
    expect((await cli(["history", "-n"])).code).toBe(2);
    const missing = await cli(["watch"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("watch needs a JOB_ID");
    // No request was made: no job started, and an unreachable server is not what they report.
    expect(JSON.parse((await cli(["history", "--json"])).stdout)).toEqual({});
    const offline = await cli(["update", "v1.2.0", "--wacth"], {
      PROCESSGIT_UPDATER_URL: "http://127.0.0.1:1",
    });
    expect(offline.code).toBe(2);
  });

  it("--help, -h and help print the usage to stdout and exit 0, with no server and no token", async () => {
    for (const args of [["--help"], ["-h"], ["help"], ["update", "--help"]]) {
      const help = await run("env", ["-i", `PATH=${process.env.PATH}`, process.execPath, bin, ...args]);
      expect(help.code, args.join(" ")).toBe(0);
      expect(help.stdout).toContain("usage: processgit-updater <command>");
      expect(help.stdout).toContain("update TAG [--watch] [--allow-downgrade]");
      expect(help.stdout).toContain("acknowledge JOB_ID [--note TEXT] [--by NAME]");
      expect(help.stderr).toBe("");
    }
  });

  it("a failed job: status and history flag it, update is refused, watch says what to do, acknowledge unblocks", async () => {
    u = await startTestUpdater();
    u.engine.failOn("healthcheck", "the new container never got healthy", "HEALTHCHECK_FAILED");
    u.engine.failOn(
      "rollback",
      "cannot start the previous container",
      undefined,
      "1. docker start processgit",
    );
    u.engine.restoreFacts = {
      "restore.needed": "true",
      "restore.snapshot": "snap-0001",
      "restore.pointAt": "2026-11-02T10:00:10.000Z",
      "restore.discardedFrom": "2026-11-02T10:00:12.000Z",
      "restore.discardedUntil": "2026-11-02T10:00:40.000Z",
      "restore.done": "false",
    };
    const failed = await cli(["update", "v1.2.0", "--watch"]);
    expect(failed.code).toBe(1);
    const id = /job (\S+) started/.exec(failed.stdout)?.[1] ?? "";
    expect(failed.stdout).toContain("failed: ROLLBACK_FAILED: the rollback failed");
    expect(failed.stdout).toContain(
      "data: the restore from snapshot snap-0001 (the data as of 2026-11-02T10:00:10.000Z) did NOT finish",
    );
    expect(failed.stdout).toContain("what to do:\n1. docker start processgit\n");
    expect(failed.stdout).toContain(
      `no update starts until this job is acknowledged; when the app is repaired: processgit-updater acknowledge ${id} --note 'what you did'`,
    );
    u.engine.failures.clear();

    const status = await cli(["status"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(
      new RegExp(
        `^updater 0\\.1\\.0: idle\nUPDATES BLOCKED: job ${id} \\(to v1\\.2\\.0\\) failed \\(ROLLBACK_FAILED\\) at \\S+ and is not acknowledged\n`,
      ),
    );
    expect(status.stdout).toContain(`  its manual steps: processgit-updater watch ${id}\n`);
    expect(JSON.parse((await cli(["status", "--json"])).stdout).blockingJob.id).toBe(id);
    expect((await cli(["history"])).stdout).toContain(
      "failed  ROLLBACK_FAILED  NOT ACKNOWLEDGED: blocks updates",
    );

    const refused = await cli(["update", "v1.2.0"]);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain(`FailedPrecondition: job ${id} (to v1.2.0) failed (ROLLBACK_FAILED)`);
    expect(refused.stderr).toContain(`processgit-updater acknowledge ${id} --note`);

    const watched = await cli(["watch", id]);
    expect(watched.code).toBe(1);
    expect(watched.stdout).toContain("what to do:\n1. docker start processgit");

    // Usage errors before any request.
    expect((await cli(["acknowledge"])).stderr).toContain("acknowledge needs the JOB_ID of a failed job");
    const noValue = await cli(["acknowledge", id, "--note"]);
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toContain("--note needs a value");
    expect((await cli(["acknowledge", id, "--note", "a", "--note", "b"])).stderr).toContain(
      "--note given twice",
    );
    expect((await cli(["status", "--note", "x"])).stderr).toContain("unknown flag --note");
    const wrongJob = await cli(["acknowledge", "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10"]);
    expect(wrongJob.code).toBe(3);
    expect(wrongJob.stderr).toContain("NotFound");

    const ack = await cli(["acknowledge", id, "--note=restored the volume from snap-0001", "--by", "alice"]);
    expect(ack.code, ack.stderr).toBe(0);
    expect(ack.stdout).toMatch(
      new RegExp(
        `^job ${id} acknowledged at \\S+ by alice: restored the volume from snap-0001\nupdates can start again\n$`,
      ),
    );
    const again = await cli(["acknowledge", id, "--json", "--note", "something else"]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).job.acknowledgement).toMatchObject({
      acknowledgedBy: "alice",
      note: "restored the volume from snap-0001",
    });
    expect((await cli(["status"])).stdout).not.toContain("BLOCKED");
    expect((await cli(["history"])).stdout).toMatch(/failed {2}ROLLBACK_FAILED {2}acknowledged \S+ by alice/);
    const next = await cli(["update", "v1.2.0", "--watch", "--allow-downgrade"]);
    expect(next.code, next.stderr).toBe(0);
  });

  it("a rolled-back job says what the restore discarded", async () => {
    u = await startTestUpdater();
    u.engine.failOn("healthcheck", "the new container never got healthy", "HEALTHCHECK_FAILED");
    u.engine.restoreFacts = {
      "restore.needed": "true",
      "restore.snapshot": "snap-0002",
      "restore.pointAt": "2026-11-02T10:00:10.000Z",
      "restore.discardedFrom": "2026-11-02T10:00:12.000Z",
      "restore.discardedUntil": "2026-11-02T10:00:40.000Z",
      "restore.done": "true",
    };
    const out = await cli(["update", "v1.2.0", "--watch"]);
    expect(out.code).toBe(1);
    expect(out.stdout).toContain(
      "data: restored from snapshot snap-0002 (the data as of 2026-11-02T10:00:10.000Z)\n" +
        "data: discarded what the new version wrote between 2026-11-02T10:00:12.000Z and 2026-11-02T10:00:40.000Z; changes made in it must be made again\n",
    );
  });

  it("names the token file it cannot read, and what to do", async () => {
    const missing = await cli(["status"], {
      PROCESSGIT_UPDATER_TOKEN: "",
      PROCESSGIT_UPDATER_TOKEN_FILE: "/run/secrets/no-such-updater-token",
    });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(
      "cannot read the token file /run/secrets/no-such-updater-token (PROCESSGIT_UPDATER_TOKEN_FILE): no such file;",
    );
    expect(missing.stderr).toContain("or set PROCESSGIT_UPDATER_TOKEN");
  });
});
