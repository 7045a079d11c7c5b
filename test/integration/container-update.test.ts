/**
 * Real updates on a real engine: the JobRunner with the Docker Engine API adapter, a real file
 * store and fixture app images pulled by digest from the loopback registry. Only the release
 * source and the signature check are stand-ins here (issue 4 covers them for real).
 *
 * Each test starts an app container from fixture v1 (busybox httpd on 127.0.0.1:<port>, host
 * network, a named data volume with files, a symlink and odd modes), runs an update through the
 * runner, and checks what an operator would: which version serves, how many app containers exist,
 * and whether the data is byte-identical (after a rollback) or migrated (after a commit).
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DockerEngineApi } from "../../src/engine/docker-engine-api.js";
import { silentLogger } from "../../src/log.js";
import type { Job } from "../../src/orchestrator/job.js";
import { systemClock } from "../../src/orchestrator/ports.js";
import { JobRunner } from "../../src/orchestrator/runner.js";
import { FileJobStore } from "../../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../fakes/fake-release.js";
import {
  type App,
  appContainers,
  type Fixture,
  fingerprint,
  serving,
  startApp,
  useEngineSuite,
  waitServing,
} from "../helpers/app-fixture.js";
import { docker, HELPER_IMAGE, labelArgs, runOnce } from "../helpers/docker.js";
import { run } from "../helpers/run.js";
import { finished } from "../helpers/runner-harness.js";

const suite = useEngineSuite("update");

const runners: JobRunner[] = [];
afterEach(async () => {
  for (const r of runners.splice(0)) await r.shutdown(1000);
});

const v1 = () => suite.fixtures.v1 as Fixture;

function runnerFor(
  app: App,
  variant: string,
  options: {
    soakMs?: number;
    healthUrl?: string;
    deadlineMs?: number;
    online?: boolean;
    snapshotKeep?: number;
    snapshotDir?: string;
  } = {},
): { runner: JobRunner; tag: string } {
  const fixture = suite.fixtures[variant];
  if (!fixture) throw new Error(`no fixture ${variant}`);
  const tag = `v${fixture.version}`;
  const [registry, ...rest] = fixture.repository.split("/");
  const source = new MemoryReleaseSource().add(tag, {
    manifest: manifestFor(tag, {
      image: {
        registry,
        repository: rest.join("/"),
        tag: fixture.version,
        digest: fixture.digest,
        platforms: ["linux/amd64"],
      },
      // The app stops for the migration: the consistency point is that stop, so a rollback
      // brings back the data exactly as it was before the update (the online case is below).
      migration: {
        required: true,
        command: ["/bin/sh", "/opt/app/migrate.sh"],
        downtime: options.online !== true,
        estimated_downtime_seconds: options.online ? 0 : 5,
      },
    }),
  });
  const runner = new JobRunner({
    store: new FileJobStore(join(suite.work, app.name, "state")),
    source,
    verifier: new FakeVerifier(),
    engine: new DockerEngineApi({
      dockerHost: suite.env.dockerHost,
      helperImage: HELPER_IMAGE,
      appContainer: app.name,
      snapshotDir: options.snapshotDir ?? join(suite.work, app.name, "snapshots"),
      ...(options.snapshotKeep ? { snapshotKeep: options.snapshotKeep } : {}),
      healthDeadlineMs: options.deadlineMs ?? 15_000,
      healthSoakMs: options.soakMs ?? 1500,
      ...(options.healthUrl ? { healthUrl: options.healthUrl } : {}),
      healthIntervalMs: 100,
      migrationTimeoutMs: 60_000,
    }),
    clock: systemClock,
    newId: () => crypto.randomUUID(),
    log: silentLogger,
  });
  runners.push(runner);
  return { runner, tag };
}

async function update(
  app: App,
  variant: string,
  options: Parameters<typeof runnerFor>[2] = {},
): Promise<Job> {
  const { runner, tag } = runnerFor(app, variant, options);
  await runner.open();
  const job = await runner.start({ tag });
  return finished(runner, job.id, 90_000);
}

function explain(job: Job): string {
  return JSON.stringify(
    {
      state: job.state,
      error: job.error,
      steps: job.steps.map((s) => [s.title, s.status, s.error, s.output.slice(-400)]),
    },
    null,
    1,
  );
}

describe("updates on a real engine", () => {
  it("v1 -> v2 commits: v2 serves, the data is migrated, one app container is left", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    // Snapshot helpers left by a killed updater: this app's goes at pre-flight, another app's stays.
    const stale = async (forApp: string) => {
      const name = suite.janitor.name(`stale-helper-${forApp.slice(-6)}`);
      suite.janitor.container(name);
      await docker([
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--label",
        "io.processgit.updater.role=snapshot",
        "--label",
        `io.processgit.updater.app=${forApp}`,
        "--label",
        "io.processgit.updater.job=00000000-0000-4000-8000-000000000000",
        ...labelArgs(suite.janitor),
        v1().ref,
        "sleep",
        "300",
      ]);
      return name;
    };
    const ours = await stale(app.name);
    const theirs = await stale(`${app.name}-other`);
    const job = await update(app, "v2");
    expect(job.state, explain(job)).toBe("committed");
    expect(await docker(["ps", "-aq", "--filter", `name=^/${ours}$`])).toBe("");
    expect(await docker(["ps", "-aq", "--filter", `name=^/${theirs}$`])).not.toBe("");
    expect(job.steps.find((s) => s.title === "pre-flight checks")?.output).toContain(
      "removed a snapshot helper left by job 00000000-0000-4000-8000-000000000000",
    );
    expect(await serving(app.port)).toBe("2.0.0");
    expect(await appContainers(app.name)).toEqual([
      `${app.name} running ${suite.fixtures.v2?.repository}@${suite.fixtures.v2?.digest}`,
    ]);
    const after = await fingerprint(suite.janitor, v1().ref, app.volume);
    expect(after).not.toBe(before);
    expect(after).toContain("./seed 0:0 640");
    expect(after).toContain("./sub/file 1234:5678");
    const pull = job.steps.find((s) => s.state === "pulling");
    expect(pull?.progress?.unit).toBe("bytes");
    const health = job.steps.find((s) => s.state === "healthchecking");
    expect(health?.output).toContain("healthcheck=healthy");
  }, 120_000);

  for (const [variant, reason] of [
    ["never-healthy", "HEALTHCHECK_FAILED"],
    ["crash", "HEALTHCHECK_FAILED"],
    ["migration-fails", "MIGRATION_FAILED"],
  ] as const) {
    it(`${variant}: rolled back, v1 serves, the data is byte-identical to before`, async () => {
      const app = await startApp(suite.janitor, v1());
      const before = await fingerprint(suite.janitor, v1().ref, app.volume);
      const job = await update(app, variant);
      expect(job.state, explain(job)).toBe("rolled_back");
      expect(job.error?.reason).toBe(reason);
      await waitServing(app.port, "1.0.0");
      expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
      expect(await appContainers(app.name)).toEqual([`${app.name} running ${suite.fixtures.v1?.ref}`]);
      expect(job.steps.find((s) => s.state === "rolling_back")?.output).toContain("restored /data");
    }, 120_000);
  }

  it("the readiness URL is part of the verdict, and must answer for the running version before anything changes", async () => {
    const app = await startApp(suite.janitor, v1());
    const good = await update(app, "v2", { healthUrl: `http://127.0.0.1:${app.port}/health` });
    expect(good.state, explain(good)).toBe("committed");
    expect(good.steps.find((s) => s.state === "healthchecking")?.output).toContain("readiness=200");

    const other = await startApp(suite.janitor, v1());
    const bad = await update(other, "v2", {
      healthUrl: `http://127.0.0.1:${other.port}/not-there`,
      deadlineMs: 4000,
    });
    expect(bad.state, explain(bad)).toBe("aborted");
    expect(bad.error?.reason).toBe("PREFLIGHT_FAILED");
    expect(bad.error?.message).toContain("answers 404 for the running version");
    expect(await serving(other.port)).toBe("1.0.0");
    expect(await appContainers(other.name)).toEqual([`${other.name} running ${v1().ref}`]);
  }, 120_000);

  it("a rollback that cannot finish ends failed, with the exact manual steps", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const { runner, tag } = runnerFor(app, "never-healthy");
    await runner.open();
    const started = await runner.start({ tag });
    let end: Job | undefined;
    let sabotaged = false;
    for await (const job of runner.watch(started.id)) {
      if (!sabotaged && job.state === "healthchecking") {
        // Someone removes the kept previous container while the new one is being judged, and the
        // configuration saved to re-create it with.
        await docker(["rm", "-f", job.journal.facts["app.id"] ?? ""]);
        await rm(job.journal.facts["previous.saved"] ?? "");
        sabotaged = true;
      }
      end = job;
    }
    expect(sabotaged).toBe(true);
    expect(end?.state, end && explain(end)).toBe("failed");
    expect(end?.error?.reason).toBe("ROLLBACK_FAILED");
    expect(end?.error?.message).toContain("HEALTHCHECK_FAILED");
    expect(end?.error?.manualSteps).toContain(
      `docker ps -a --filter label=io.processgit.updater.job=${started.id}`,
    );
    expect(end?.error?.manualSteps).toContain("restore the data");
    // A command that copies the snapshot's tree back, with the store mounted where it is.
    expect(end?.error?.manualSteps).toContain(`${join(suite.work, app.name, "snapshots")}:/pgu/store:ro`);
    expect(end?.error?.manualSteps).toContain(`cp -a /pgu/store/${started.id}/m0/. /restore/`);
    // The new container was not removed: the previous one could not be brought back.
    expect(await appContainers(app.name)).toHaveLength(1);
    // Nothing starts over the unrepaired app until a human acknowledges the job.
    await expect(runner.start({ tag })).rejects.toThrow(/acknowledge/);
    // The printed restore command works as written, without the updater: the data comes back.
    const command = /docker run --rm --user 0 (.*?) \(mount \/data\)/.exec(end?.error?.manualSteps ?? "");
    expect(command, end?.error?.manualSteps).not.toBeNull();
    await docker(["rm", "-f", app.name]);
    await run("sh", ["-c", `docker run --rm --user 0 ${command?.[1]}`]);
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
  }, 120_000);

  it("the previous container removed mid-health-check: the rollback re-creates it from its saved configuration", async () => {
    const app = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, app.volume);
    const { runner, tag } = runnerFor(app, "never-healthy");
    await runner.open();
    const started = await runner.start({ tag });
    let end: Job | undefined;
    let removed = false;
    for await (const job of runner.watch(started.id)) {
      if (!removed && job.state === "healthchecking") {
        await docker(["rm", "-f", job.journal.facts["app.id"] ?? ""]);
        removed = true;
      }
      end = job;
    }
    expect(removed).toBe(true);
    expect(end?.state, end && explain(end)).toBe("rolled_back");
    expect(end?.steps.at(-1)?.output).toContain("was gone; re-created it as");
    expect(await serving(app.port)).toBe("1.0.0");
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v1().ref}`]);
    expect(await fingerprint(suite.janitor, v1().ref, app.volume)).toBe(before);
  }, 120_000);

  it("an online migration (the app serves through it): a failed migration restores the point taken before it; a failed new version restores the one taken at the swap", async () => {
    const failing = await startApp(suite.janitor, v1());
    const before = await fingerprint(suite.janitor, v1().ref, failing.volume);
    const failed = await update(failing, "migration-fails", { online: true });
    expect(failed.state, explain(failed)).toBe("rolled_back");
    expect(failed.journal.facts["restore.snapshot"]).toBe(failed.id);
    await waitServing(failing.port, "1.0.0");
    expect(await fingerprint(suite.janitor, v1().ref, failing.volume)).toBe(before);
    const migrate = failed.steps.find((s) => s.state === "migrating");
    expect(migrate?.output).toContain("the app has been frozen for");

    // The migration succeeds and the previous version serves on the migrated data until the swap:
    // that is the data it last wrote, and what a failed new version gives back.
    const app = await startApp(suite.janitor, v1());
    const job = await update(app, "never-healthy", { online: true });
    expect(job.state, explain(job)).toBe("rolled_back");
    expect(job.journal.facts["restore.snapshot"]).toBe(`${job.id}.2`);
    await waitServing(app.port, "1.0.0");
    const after = await fingerprint(suite.janitor, v1().ref, app.volume);
    expect(after).toContain("./log.txt");
    expect(after).toContain("./seed 0:0 640");
  }, 180_000);

  it("only app data is restored: a read-only bind and a single-file bind are left alone, the restart policy is parked while the previous container is kept", async () => {
    const port = 28_000 + Math.floor(Math.random() * 150);
    const name = suite.janitor.name(`mounts-${port}`);
    const volume = suite.janitor.volume(`${name}-data`);
    const host = join(suite.work, name);
    const { mkdir, writeFile, readFile: read } = await import("node:fs/promises");
    await mkdir(join(host, "ro"), { recursive: true });
    await mkdir(join(host, "rw"), { recursive: true });
    await writeFile(join(host, "ro", "config"), "read-only config\n");
    await writeFile(join(host, "rw", "state"), "rw state v1\n");
    await writeFile(join(host, "app.conf"), "single file\n");
    await writeFile(join(host, "timezone"), "Etc/UTC\n");
    await docker(["volume", "create", volume]);
    suite.janitor.container(name);
    suite.janitor.onCleanup(async () => {
      const ids = (await docker(["ps", "-aq", "--filter", `name=^/${name}`])).split("\n").filter(Boolean);
      if (ids.length > 0) await docker(["rm", "-f", ...ids]);
    });
    await docker([
      "run",
      "-d",
      "--name",
      name,
      "--network",
      "host",
      "--init",
      "--restart",
      "always",
      "-e",
      `APP_PORT=${port}`,
      "-v",
      `${volume}:/data`,
      "-v",
      `${join(host, "ro")}:/etc/app-ro:ro`,
      "-v",
      `${join(host, "rw")}:/srv/rw`,
      "-v",
      `${join(host, "app.conf")}:/etc/app.conf:ro`,
      "-v",
      `${join(host, "timezone")}:/etc/timezone`,
      v1().ref,
    ]);
    await waitServing(port, "1.0.0");
    const app = { name, volume, port };
    const { runner, tag } = runnerFor(app, "never-healthy");
    await runner.open();
    const started = await runner.start({ tag });
    let parked = "";
    let end: Job | undefined;
    for await (const job of runner.watch(started.id)) {
      if (!parked && job.state === "healthchecking") {
        parked = (
          await docker([
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}}",
            job.journal.facts["app.id"] ?? "",
          ])
        ).trim();
        // The new version writes to every mount it can.
        await writeFile(join(host, "rw", "state"), "rw state written by v2\n");
      }
      end = job;
    }
    expect(end?.state, end && explain(end)).toBe("rolled_back");
    expect(parked).toBe("no");
    expect((await docker(["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name])).trim()).toBe(
      "always",
    );
    await waitServing(port, "1.0.0");
    expect(await read(join(host, "rw", "state"), "utf8")).toBe("rw state v1\n");
    expect(await read(join(host, "ro", "config"), "utf8")).toBe("read-only config\n");
    expect(await read(join(host, "app.conf"), "utf8")).toBe("single file\n");
    expect(await read(join(host, "timezone"), "utf8")).toBe("Etc/UTC\n");
    const bulk = end?.steps.find((s) => s.state === "snapshotting")?.output ?? "";
    expect(bulk).toContain(
      "left out (not directories: single-file binds are configuration, not data): /etc/timezone",
    );
    const preflight = end?.steps.find((s) => s.title === "pre-flight checks")?.output ?? "";
    expect(preflight).toContain("/etc/app-ro (bind");
    expect(preflight).toMatch(/\/etc\/app-ro \(bind [^)]*read-only\): not app data/);
    expect(preflight).toMatch(/\/srv\/rw \(bind [^)]*\): app data/);
  }, 180_000);

  it("snapshots: the newest are kept and share unchanged files; pre-flight refuses when what the snapshot adds does not fit", async () => {
    const { readdir, stat, mkdir } = await import("node:fs/promises");
    const app = await startApp(suite.janitor, v1());
    await runOnce(
      suite.janitor,
      v1().ref,
      ["/bin/sh", "-c", "dd if=/dev/urandom of=/data/big bs=1M count=20 2>/dev/null"],
      {
        mounts: [`${app.volume}:/data`],
      },
    );
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const job = await update(app, "never-healthy", { snapshotKeep: 2 });
      expect(job.state, explain(job)).toBe("rolled_back");
      ids.push(job.id);
    }
    const dir = join(suite.work, app.name, "snapshots");
    const names = (await readdir(dir)).sort();
    expect(names).toEqual([ids[1], ids[2], ".jobs"].sort());
    expect((await readdir(join(dir, ".jobs"))).sort()).toEqual([ids[1], ids[2]].sort());
    // The big file did not change: one file, two names.
    const a = await stat(join(dir, ids[1] as string, "m0", "big"));
    const b = await stat(join(dir, ids[2] as string, "m0", "big"));
    expect(a.ino).toBe(b.ino);
    expect(a.nlink).toBeGreaterThanOrEqual(2);
    const snapshotStep = (await update(app, "never-healthy", { snapshotKeep: 2 })).steps.find(
      (s) => s.state === "snapshotting",
    );
    expect(snapshotStep?.output).toContain("shared");

    // A snapshot directory too small for what the new snapshot adds (a fresh store: all of it).
    const small = join(suite.work, `${app.name}-small`);
    await mkdir(small, { recursive: true });
    await run("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", small]);
    try {
      const refused = await update(app, "v2", { snapshotDir: small });
      expect(refused.state, explain(refused)).toBe("aborted");
      expect(refused.error?.reason).toBe("PREFLIGHT_FAILED");
      expect(refused.error?.message).toContain("not enough disk for the snapshot");
      expect(await serving(app.port)).toBe("1.0.0");
    } finally {
      await run("umount", [small]);
    }
  }, 240_000);

  it("a release that gets healthy slowly commits once the health check passes", async () => {
    const app = await startApp(suite.janitor, v1());
    const job = await update(app, "slow");
    expect(job.state, explain(job)).toBe("committed");
    expect(await serving(app.port)).toBe("2.0.3");
  }, 120_000);

  it("a failed pre-flight (app container missing) aborts and touches nothing", async () => {
    const app = { name: suite.janitor.name("missing"), volume: "", port: 1 };
    const job = await update(app, "v2");
    expect(job.state).toBe("aborted");
    expect(job.error?.reason).toBe("PREFLIGHT_FAILED");
    expect(job.error?.message).toContain("does not exist");
  }, 60_000);
});
