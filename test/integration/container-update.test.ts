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
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DockerEngineApi } from "../../src/engine/docker-engine-api.js";
import { silentLogger } from "../../src/log.js";
import type { Job } from "../../src/orchestrator/job.js";
import { systemClock } from "../../src/orchestrator/ports.js";
import { JobRunner } from "../../src/orchestrator/runner.js";
import { FileJobStore } from "../../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../fakes/fake-release.js";
import {
  DockerJanitor,
  docker,
  type EngineEnv,
  labelArgs,
  requireEngine,
  runOnce,
} from "../helpers/docker.js";
import { finished } from "../helpers/runner-harness.js";

const root = join(import.meta.dirname, "../..");

interface Fixture {
  ref: string;
  repository: string;
  digest: string;
  version: string;
}
let fixtures: Record<string, Fixture>;
let env: EngineEnv;
let janitor: DockerJanitor;
let work: string;
let nextPort = 28_200 + Math.floor(Math.random() * 500);

beforeAll(async () => {
  env = await requireEngine();
  janitor = new DockerJanitor(env);
  const out = execFileSync("bash", [join(root, "scripts/fixtures.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
  fixtures = (JSON.parse(out) as { images: Record<string, Fixture> }).images;
  work = await mkdtemp(join(tmpdir(), "pgu-update-"));
}, 120_000);

afterAll(async () => {
  await janitor?.cleanup();
  await rm(work, { recursive: true, force: true });
});

const runners: JobRunner[] = [];
afterEach(async () => {
  for (const r of runners.splice(0)) await r.shutdown(1000);
});

interface App {
  name: string;
  volume: string;
  port: number;
}

/** Starts the app from fixture v1 with data in a named volume, and waits until it serves. */
async function startApp(): Promise<App> {
  const port = nextPort++;
  const name = janitor.name(`app-${port}`);
  const volume = janitor.volume(`${name}-data`);
  await docker(["volume", "create", volume]);
  await runOnce(
    janitor,
    fixtures.v1?.ref ?? "",
    [
      "/bin/sh",
      "-c",
      "echo seed > /data/seed && chmod 640 /data/seed && mkdir -p /data/sub && echo deep > /data/sub/file && chown 1234:5678 /data/sub/file && ln -s seed /data/link && echo 1.0.0 > /data/schema",
    ],
    { mounts: [`${volume}:/data`] },
  );
  janitor.container(name);
  janitor.onCleanup(() =>
    docker(["ps", "-aq", "--filter", `name=${name}`]).then((ids) =>
      Promise.all(
        ids
          .split("\n")
          .filter(Boolean)
          .map((id) => docker(["rm", "-f", id])),
      ),
    ),
  );
  await docker([
    "run",
    "-d",
    "--name",
    name,
    ...labelArgs(janitor),
    "--network",
    "host",
    "--init",
    "-e",
    `APP_PORT=${port}`,
    "-v",
    `${volume}:/data`,
    "--restart",
    "no",
    fixtures.v1?.ref ?? "",
  ]);
  await waitServing(port, "1.0.0");
  return { name, volume, port };
}

async function serving(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/version`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? (await res.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}

async function waitServing(port: number, version: string, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if ((await serving(port)) === version) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} does not serve version ${version} (serves ${await serving(port)})`);
}

/** Names, owners, modes, types, sizes, contents and link targets of everything in the volume. */
function fingerprint(volume: string): Promise<string> {
  return runOnce(
    janitor,
    fixtures.v1?.ref ?? "",
    [
      "/bin/sh",
      "-c",
      'cd /data && find . | sort | while read -r f; do stat -c "%n %u:%g %a %F %s" "$f"; if [ -L "$f" ]; then readlink "$f"; elif [ -f "$f" ]; then md5sum "$f"; fi; done',
    ],
    { mounts: [`${volume}:/data`] },
  );
}

/** Every container whose name starts with the app's: "name state image" (the configured image). */
async function appContainers(name: string): Promise<string[]> {
  const ids = (await docker(["ps", "-aq", "--filter", `name=^/${name}`])).split("\n").filter(Boolean);
  if (ids.length === 0) return [];
  const out = await docker(["inspect", "-f", "{{.Name}} {{.State.Status}} {{.Config.Image}}", ...ids]);
  return out
    .split("\n")
    .filter(Boolean)
    .map((l) => l.replace(/^\//, ""))
    .sort();
}

function runnerFor(
  app: App,
  variant: string,
  options: { soakMs?: number } = {},
): { runner: JobRunner; tag: string } {
  const fixture = fixtures[variant];
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
      migration: {
        required: true,
        command: ["/bin/sh", "/opt/app/migrate.sh"],
        estimated_downtime_seconds: 0,
      },
    }),
  });
  const runner = new JobRunner({
    store: new FileJobStore(join(work, app.name, "state")),
    source,
    verifier: new FakeVerifier(),
    engine: new DockerEngineApi({
      dockerHost: env.dockerHost,
      appContainer: app.name,
      snapshotDir: join(work, app.name, "snapshots"),
      healthDeadlineMs: 15_000,
      healthSoakMs: options.soakMs ?? 1500,
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

async function update(app: App, variant: string): Promise<Job> {
  const { runner, tag } = runnerFor(app, variant);
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
    const app = await startApp();
    const before = await fingerprint(app.volume);
    const job = await update(app, "v2");
    expect(job.state, explain(job)).toBe("committed");
    expect(await serving(app.port)).toBe("2.0.0");
    expect(await appContainers(app.name)).toEqual([
      `${app.name} running ${fixtures.v2?.repository}@${fixtures.v2?.digest}`,
    ]);
    const after = await fingerprint(app.volume);
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
      const app = await startApp();
      const before = await fingerprint(app.volume);
      const job = await update(app, variant);
      expect(job.state, explain(job)).toBe("rolled_back");
      expect(job.error?.reason).toBe(reason);
      await waitServing(app.port, "1.0.0");
      expect(await fingerprint(app.volume)).toBe(before);
      expect(await appContainers(app.name)).toEqual([`${app.name} running ${fixtures.v1?.ref}`]);
      expect(job.steps.find((s) => s.state === "rolling_back")?.output).toContain("restored /data");
    }, 120_000);
  }

  it("a release that gets healthy slowly commits once the health check passes", async () => {
    const app = await startApp();
    const job = await update(app, "slow");
    expect(job.state, explain(job)).toBe("committed");
    expect(await serving(app.port)).toBe("2.0.3");
  }, 120_000);

  it("a failed pre-flight (app container missing) aborts and touches nothing", async () => {
    const app = { name: janitor.name("missing"), volume: "", port: 1 };
    const job = await update(app, "v2");
    expect(job.state).toBe("aborted");
    expect(job.error?.reason).toBe("PREFLIGHT_FAILED");
    expect(job.error?.message).toContain("does not exist");
  }, 60_000);
});
