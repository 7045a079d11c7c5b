/**
 * kill -9 of the updater in the middle of an update, on a real engine, then a restart: the next
 * start reconciles the interrupted job before anything else, and the app ends up serving, with
 * exactly one app container and its data either byte-identical to before or fully migrated.
 *
 * The updater runs as its own process (test/helpers/update-process.ts, built to dist/): the
 * orchestrator, the Docker adapter and the file store, with the in-memory release stand-ins.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Job } from "../../src/orchestrator/job.js";
import {
  type App,
  appContainers,
  type Fixture,
  fingerprint,
  imageOf,
  serving,
  startApp,
  useEngineSuite,
  waitServing,
} from "../helpers/app-fixture.js";
import { docker, runOnce } from "../helpers/docker.js";
import type { UpdateProcessConfig } from "../helpers/update-process.js";

const root = join(import.meta.dirname, "../..");
const suite = useEngineSuite("crash");

const v1 = () => suite.fixtures.v1 as Fixture;
const v2 = () => suite.fixtures.v2 as Fixture;

interface Proc {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
}

function updater(config: UpdateProcessConfig): Proc {
  const child = spawn(
    process.execPath,
    [join(root, "dist/test/helpers/update-process.js"), JSON.stringify(config)],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        PATH: process.env.PATH,
        DOCKER_HOST: suite.env.dockerHost,
        ...(process.env.PGU_HELPER_IMAGE ? { PGU_HELPER_IMAGE: process.env.PGU_HELPER_IMAGE } : {}),
      },
    },
  );
  const lines: string[] = [];
  let buffer = "";
  child.stdout?.on("data", (d: Buffer) => {
    buffer += d.toString();
    const parts = buffer.split("\n");
    buffer = parts.pop() ?? "";
    lines.push(...parts.filter(Boolean));
  });
  child.stderr?.on("data", (d: Buffer) => lines.push(`stderr: ${d.toString()}`));
  return { child, lines, exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))) };
}

async function until(p: Proc, pattern: RegExp, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!p.lines.some((l) => pattern.test(l))) {
    if (Date.now() > deadline) throw new Error(`never saw ${pattern}:\n${p.lines.join("\n")}`);
    if (p.child.exitCode !== null)
      throw new Error(`the updater exited before ${pattern}:\n${p.lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function result(p: Proc): Job {
  const line = p.lines.find((l) => l.startsWith('{"result"'));
  if (!line) throw new Error(`no result:\n${p.lines.join("\n")}`);
  return (JSON.parse(line) as { result: Job }).result;
}

function configFor(
  app: App,
  migration: Record<string, unknown>,
): (mode: "update" | "reconcile") => UpdateProcessConfig {
  const dir = join(suite.work, app.name);
  return (mode) => ({
    mode,
    stateDir: join(dir, "state"),
    snapshotDir: join(dir, "snapshots"),
    dockerHost: suite.env.dockerHost,
    appContainer: app.name,
    tag: `v${v2().version}`,
    manifest: { image: imageOf(v2()), migration },
  });
}

/** Kills the updater with SIGKILL when `pattern` shows in its log (after `delayMs`), restarts it, and returns the reconciled job. */
async function killAndRestart(
  app: App,
  migration: Record<string, unknown>,
  pattern: RegExp,
  delayMs = 0,
  afterKill: () => Promise<void> = async () => {},
): Promise<Job> {
  const config = configFor(app, migration);
  const first = updater(config("update"));
  await until(first, pattern);
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  first.child.kill("SIGKILL");
  await first.exited;
  await afterKill();
  const second = updater(config("reconcile"));
  expect(await second.exited, second.lines.join("\n")).toBe(0);
  return result(second);
}

const MIGRATE = {
  required: true,
  command: ["/bin/sh", "/opt/app/migrate.sh"],
  downtime: true,
  estimated_downtime_seconds: 5,
};

/** Adds `mb` MiB of random data to the app's volume, so that copying it takes a while. */
async function addBigFile(app: App, mb: number): Promise<void> {
  await runOnce(
    suite.janitor,
    v1().ref,
    ["/bin/sh", "-c", `dd if=/dev/urandom of=/data/big bs=1M count=${mb} 2>/dev/null`],
    {
      mounts: [`${app.volume}:/data`],
    },
  );
}

/** Waits until the journal's last intent contains `intent` (polled every 5 ms), then kills the updater. */
async function killAtIntent(p: Proc, app: App, intent: string, delayMs = 0): Promise<void> {
  const stateFile = join(suite.work, app.name, "state", "state.json");
  const deadline = Date.now() + 60_000;
  for (;;) {
    const text = await readFile(stateFile, "utf8").catch(() => "");
    const m = /"intent":\s*"([^"]*)"/.exec(text);
    if (m?.[1]?.includes(intent)) break;
    if (Date.now() > deadline) throw new Error(`never saw the intent ${intent}:\n${p.lines.join("\n")}`);
    if (p.child.exitCode !== null)
      throw new Error(`the updater exited before ${intent}:\n${p.lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  p.child.kill("SIGKILL");
  await p.exited;
}

/** sha256 of every file of a snapshot's trees, to prove a later job leaves it untouched. */
async function snapshotPrint(app: App, id: string): Promise<string> {
  return runOnce(
    suite.janitor,
    v1().ref,
    ["/bin/sh", "-c", "cd /s && find . -type f | sort | xargs sha256sum"],
    { mounts: [`${join(suite.work, app.name, "snapshots", id)}:/s:ro`] },
  );
}

async function leftovers(app: App): Promise<{ helpers: string; partials: string[] }> {
  const helpers = (
    await docker([
      "ps",
      "-aq",
      "--filter",
      "label=io.processgit.updater.role=snapshot",
      "--filter",
      `name=pgu-snapshot-`,
    ])
  ).trim();
  const { readdir } = await import("node:fs/promises");
  const partials = (
    await readdir(join(suite.work, app.name, "snapshots")).catch(() => [] as string[])
  ).filter((n) => n.endsWith(".partial"));
  return { helpers, partials };
}

describe("kill -9 of the updater mid-update, then a restart", () => {
  it("during the pull: the job is closed, nothing changed, v1 serves on its data", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const job = await killAndRestart(app, MIGRATE, /"state":"pulling"/);
    expect(["aborted", "rolled_back"]).toContain(job.state);
    expect(job.error?.reason).toBe("INTERRUPTED");
    expect(job.recoveries).toBe(1);
    expect(await serving(app.port)).toBe("1.0.0");
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
  }, 120_000);

  it("during a migration that stopped the app and already changed the data: restored, v1 serves", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    // The migration changes the data, then keeps running: the kill lands in the middle of it.
    const slowMigration = {
      required: true,
      command: ["/bin/sh", "-c", "/bin/sh /opt/app/migrate.sh && sleep 30"],
      estimated_downtime_seconds: 60,
    };
    const job = await killAndRestart(app, slowMigration, /"state":"migrating"/, 1500, async () => {
      // The kill left the data half-way: migrated, with the app stopped.
      expect(await fingerprint(suite.janitor, v1().ref, app.volume)).not.toBe(before);
      expect(await serving(app.port)).toBeUndefined();
    });
    expect(job.state, JSON.stringify(job.error)).toBe("rolled_back");
    expect(job.error?.reason).toBe("INTERRUPTED");
    await waitServing(app.port, "1.0.0");
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
  }, 120_000);

  it("right after the swap: exactly one app container ends up serving", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const job = await killAndRestart(app, MIGRATE, /"state":"healthchecking"/);
    expect(["rolled_back", "committed"]).toContain(job.state);
    const version = job.state === "committed" ? "2.0.0" : "1.0.0";
    await waitServing(app.port, version);
    const containers = await appContainers(app.name);
    expect(containers).toHaveLength(1);
    expect(containers[0]).toMatch(new RegExp(`^${app.name} running `));
    if (version === "1.0.0") expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
  }, 120_000);

  it("after the rollback re-created a removed previous container: the restart uses that one, v1 serves on its data", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const config = configFor(app, MIGRATE);
    const neverHealthy = (mode: "update" | "reconcile") => ({
      ...config(mode),
      tag: `v${(suite.fixtures["never-healthy"] as Fixture).version}`,
      manifest: { image: imageOf(suite.fixtures["never-healthy"] as Fixture), migration: MIGRATE },
    });
    const first = updater(neverHealthy("update"));
    await until(first, /"state":"healthchecking"/);
    // Someone removes the kept previous container while the new one is judged (as up -d can).
    const old = (await docker(["ps", "-aq", "--filter", `name=^/${app.name}-pgu-old-`])).trim();
    expect(old).not.toBe("");
    await docker(["rm", "-f", old]);
    // The rollback re-creates it; the kill lands right after that is journaled.
    const stateFile = join(suite.work, app.name, "state", "state.json");
    const deadline = Date.now() + 60_000;
    while (!(await readFile(stateFile, "utf8").catch(() => "")).includes("previous.recreated")) {
      if (Date.now() > deadline) throw new Error(`never re-created:\n${first.lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    first.child.kill("SIGKILL");
    await first.exited;
    const second = updater(neverHealthy("reconcile"));
    expect(await second.exited, second.lines.join("\n")).toBe(0);
    const job = result(second);
    expect(job.state, JSON.stringify(job.error)).toBe("rolled_back");
    expect(job.recoveries).toBe(1);
    await waitServing(app.port, "1.0.0");
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
  }, 120_000);

  it("during the bulk copy of the snapshot: aborted, the helper and the partial snapshot are gone, v1 serves", async () => {
    const app = await startApp(suite.janitor, v1());
    await addBigFile(app, 300);
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const config = configFor(app, MIGRATE);
    const first = updater(config("update"));
    await killAtIntent(first, app, "live bulk copy", 150);
    const second = updater(config("reconcile"));
    expect(await second.exited, second.lines.join("\n")).toBe(0);
    const job = result(second);
    expect(job.state, JSON.stringify(job.error)).toBe("aborted");
    expect(await serving(app.port)).toBe("1.0.0");
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
    expect(await leftovers(app)).toEqual({ helpers: "", partials: [] });
  }, 180_000);

  it("at the consistency point (the final pass): rolled back without a restore, the previous snapshot untouched", async () => {
    const app = await startApp(suite.janitor, v1());
    await addBigFile(app, 200);
    const config = configFor(app, MIGRATE);
    // A first update that rolls back leaves a complete snapshot behind.
    const neverHealthy = (mode: "update" | "reconcile") => ({
      ...config(mode),
      tag: `v${(suite.fixtures["never-healthy"] as Fixture).version}`,
      manifest: { image: imageOf(suite.fixtures["never-healthy"] as Fixture), migration: MIGRATE },
    });
    const warmup = updater(neverHealthy("update"));
    expect(await warmup.exited, warmup.lines.join("\n")).toBe(0);
    const firstJob = result(warmup);
    expect(firstJob.state).toBe("rolled_back");
    const kept = firstJob.journal.facts["snapshot.id"] as string;
    const keptPrint = await snapshotPrint(app, kept);
    // The big file changes after the bulk copy, so the final pass has 200 MiB to compare.
    await runOnce(suite.janitor, v1().ref, ["/bin/sh", "-c", "echo changed >> /data/big"], {
      mounts: [`${app.volume}:/data`],
    });
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const first = updater(config("update"));
    await killAtIntent(first, app, "the consistency point", 30);
    const second = updater(config("reconcile"));
    expect(await second.exited, second.lines.join("\n")).toBe(0);
    const job = result(second);
    expect(job.state, JSON.stringify(job.error)).toBe("rolled_back");
    expect(job.journal.facts["restore.needed"]).toBe("false");
    await waitServing(app.port, "1.0.0");
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
    expect(await snapshotPrint(app, kept)).toBe(keptPrint);
    expect(await leftovers(app)).toEqual({ helpers: "", partials: [] });
  }, 240_000);

  it("during the restore: the restart restores again, v1 serves on exactly its data", async () => {
    const app = await startApp(suite.janitor, v1());
    await addBigFile(app, 200);
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    // The migration rewrites the big file, so the restore has 200 MiB to put back.
    const rewrite = {
      ...MIGRATE,
      command: [
        "/bin/sh",
        "-c",
        "/bin/sh /opt/app/migrate.sh && dd if=/dev/urandom of=/data/big bs=1M count=200 conv=notrunc 2>/dev/null",
      ],
    };
    const config = configFor(app, rewrite);
    const neverHealthy = (mode: "update" | "reconcile") => ({
      ...config(mode),
      tag: `v${(suite.fixtures["never-healthy"] as Fixture).version}`,
      manifest: { image: imageOf(suite.fixtures["never-healthy"] as Fixture), migration: rewrite },
    });
    const first = updater(neverHealthy("update"));
    await killAtIntent(first, app, "restore the snapshot", 100);
    const second = updater(neverHealthy("reconcile"));
    expect(await second.exited, second.lines.join("\n")).toBe(0);
    const job = result(second);
    expect(job.state, JSON.stringify(job.error)).toBe("rolled_back");
    expect(job.recoveries).toBe(1);
    expect(job.journal.facts["restore.done"]).toBe("true");
    await waitServing(app.port, "1.0.0");
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
  }, 240_000);

  it("after the health verdict passed (before the commit is recorded, or during the cleanup): the restart rolls forward, v2 serves on the migrated data, the previous container is removed", async () => {
    const app = await startApp(suite.janitor, v1());
    const config = configFor(app, MIGRATE);
    const first = updater(config("update"));
    // The kill lands as soon as the verdict is journaled: before the commit is on disk, or during
    // the cleanup after it (a few milliseconds apart); either way the update must stand.
    const stateFile = join(suite.work, app.name, "state", "state.json");
    const deadline = Date.now() + 60_000;
    while (!(await readFile(stateFile, "utf8").catch(() => "")).includes('"verdict.passed"')) {
      if (Date.now() > deadline || first.child.exitCode !== null)
        throw new Error(`never saw the verdict:\n${first.lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 2));
    }
    first.child.kill("SIGKILL");
    await first.exited;
    const second = updater(config("reconcile"));
    expect(await second.exited, second.lines.join("\n")).toBe(0);
    const job = result(second);
    expect(job.state, JSON.stringify(job.error)).toBe("committed");
    await waitServing(app.port, "2.0.0");
    const containers = await appContainers(app.name);
    expect(containers, JSON.stringify(job.steps.slice(-3), null, 1)).toEqual([
      `${app.name} running ${v2().repository}@${v2().digest}`,
    ]);
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toContain("./log.txt");
  }, 120_000);
});
