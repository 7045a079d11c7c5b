/**
 * Compose consistency, with Debian's docker-compose 1.29 and with Compose v2 (built by
 * scripts/setup.sh) on the real engine: an app deployed by
 * Compose, updated by the updater (JobRunner + Docker Engine API adapter with the project's .env
 * configured), and then the operator's routine `docker-compose up -d`. It must keep the version
 * the update installed (Compose resolves the service to the image the updater recorded in .env),
 * keep the data, and leave Compose consistent: a second `up -d` has nothing to do.
 *
 * The deployment here uses host networking (the loopback rule of this machine); deploy/docker-
 * compose.yml itself is checked with `docker-compose config` at the end.
 */
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
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
  type Fixture,
  fingerprint,
  imageOf,
  serving,
  useEngineSuite,
  waitServing,
} from "../helpers/app-fixture.js";
import { docker, HELPER_IMAGE, RUN_LABEL, TEST_LABEL } from "../helpers/docker.js";
import { finished } from "../helpers/runner-harness.js";

const suite = useEngineSuite("compose");
const runners: JobRunner[] = [];
afterEach(async () => {
  for (const r of runners.splice(0)) await r.shutdown(1000);
});

const COMPOSE_FILE = `# The fixture app as an operator deploys it, on host networking (loopback only here).
services:
  app:
    image: \${PROCESSGIT_IMAGE:?set PROCESSGIT_IMAGE in .env}
    container_name: \${APP_CONTAINER}
    network_mode: host
    init: true
    restart: "no"
    environment:
      APP_PORT: \${APP_PORT}
    volumes:
      - data:/data
    labels:
      ${TEST_LABEL}: "1"
      ${RUN_LABEL}: \${RUN_ID}
volumes:
  data: {}
`;

interface Project {
  dir: string;
  name: string;
  container: string;
  port: number;
  env: string;
  envInode?: number;
  impl?: Implementation;
}

let nextPort = 27_200 + Math.floor(Math.random() * 700);

interface Implementation {
  name: string;
  bin: string;
  flags: string[];
  /** What `up -d` prints for a container it leaves alone. */
  upToDate: RegExp;
}

const IMPLEMENTATIONS: Implementation[] = [
  {
    name: "docker-compose 1.29 (Debian)",
    bin: "docker-compose",
    flags: ["--no-ansi"],
    upToDate: /is up-to-date/,
  },
  {
    name: "Compose v2",
    bin: join(import.meta.dirname, "../../.tools/bin/docker-compose-v2"),
    flags: ["--ansi", "never"],
    upToDate: /Container \S+\s+Running/,
  },
];

function compose(
  project: Project,
  args: string[],
  impl: Implementation = IMPLEMENTATIONS[0] as Implementation,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      impl.bin,
      [...impl.flags, ...args],
      { cwd: project.dir, env: { ...process.env, DOCKER_HOST: suite.env.dockerHost }, timeout: 120_000 },
      (err, stdout, stderr) =>
        err
          ? reject(new Error(`docker-compose ${args.join(" ")}: ${stderr || err.message}`))
          : resolve(stdout + stderr),
    );
  });
}

async function deploy(v1: Fixture, impl: Implementation): Promise<Project> {
  const port = nextPort++;
  const name = `pgucompose${suite.janitor.runId}${port}`;
  const dir = join(suite.work, name);
  await mkdir(dir);
  const container = suite.janitor.name(`compose-app-${port}`);
  // The operator's .env: a secret, a comment and the image by tag, as first deployed.
  const env = [
    "# ProcessGit deployment settings",
    `COMPOSE_PROJECT_NAME=${name}`,
    "PROCESSGIT_UPDATER_TOKEN=compose-test-token-0123456789abcdef0123456789",
    `PROCESSGIT_IMAGE=${v1.ref}`,
    `APP_CONTAINER=${container}`,
    `APP_PORT=${port}`,
    `RUN_ID=${suite.janitor.runId}`,
    "",
  ].join("\n");
  await writeFile(join(dir, "docker-compose.yml"), COMPOSE_FILE);
  await writeFile(join(dir, ".env"), env, { mode: 0o640 });
  const project = { dir, name, container, port, env, impl, envInode: (await stat(join(dir, ".env"))).ino };
  suite.janitor.onCleanup(() => compose(project, ["down", "-v", "--remove-orphans"], impl));
  suite.janitor.onCleanup(async () => {
    const ids = (await docker(["ps", "-aq", "--filter", `name=^/${container}`])).split("\n").filter(Boolean);
    if (ids.length > 0) await docker(["rm", "-f", ...ids]);
  });
  await compose(project, ["up", "-d"], impl);
  await waitServing(port, v1.version);
  return project;
}

async function update(project: Project, variant: string, during?: (job: Job) => Promise<void>): Promise<Job> {
  const fixture = suite.fixtures[variant] as Fixture;
  const tag = `v${fixture.version}`;
  const source = new MemoryReleaseSource().add(tag, {
    manifest: manifestFor(tag, {
      image: imageOf(fixture),
      migration: {
        required: true,
        command: ["/bin/sh", "/opt/app/migrate.sh"],
        // The app stops for it: a rollback brings back the data exactly as before the update.
        downtime: true,
        estimated_downtime_seconds: 5,
      },
    }),
  });
  const runner = new JobRunner({
    store: new FileJobStore(join(project.dir, "state")),
    source,
    verifier: new FakeVerifier(),
    engine: new DockerEngineApi({
      dockerHost: suite.env.dockerHost,
      helperImage: HELPER_IMAGE,
      appContainer: project.container,
      snapshotDir: join(project.dir, "snapshots"),
      healthDeadlineMs: 15_000,
      healthSoakMs: 1500,
      healthIntervalMs: 100,
      migrationTimeoutMs: 60_000,
      composeEnv: { file: join(project.dir, ".env"), variable: "PROCESSGIT_IMAGE" },
    }),
    clock: systemClock,
    newId: () => crypto.randomUUID(),
    log: silentLogger,
  });
  runners.push(runner);
  await runner.open();
  const job = await runner.start({ tag });
  if (!during) return finished(runner, job.id, 90_000);
  let end = job;
  for await (const next of runner.watch(job.id)) {
    await during(next);
    end = next;
  }
  return end;
}

/** "name image-id" of every container named like the app, running or not. */
async function containers(project: Project): Promise<string[]> {
  const ids = (await docker(["ps", "-aq", "--filter", `name=^/${project.container}`]))
    .split("\n")
    .filter(Boolean);
  if (ids.length === 0) return [];
  return (await docker(["inspect", "-f", "{{.Name}} {{.Image}}", ...ids])).split("\n").filter(Boolean).sort();
}

const containerId = async (project: Project) =>
  (await docker(["inspect", "-f", "{{.Id}}", project.container])).trim();
const imageId = async (ref: string) => (await docker(["image", "inspect", "-f", "{{.Id}}", ref])).trim();
const dataOf = (project: Project) => docker(["exec", project.container, "cat", "/data/schema"]);

describe.each(IMPLEMENTATIONS)("up -d after an update, with $name", (impl) => {
  it("keeps the updated version and its data, and a second up -d has nothing to do", async () => {
    const v2 = suite.fixtures.v2 as Fixture;
    const project = await deploy(suite.fixtures.v1 as Fixture, impl);
    const job = await update(project, "v2");
    expect(job.state, JSON.stringify(job.error)).toBe("committed");
    expect(await serving(project.port)).toBe("2.0.0");
    const health = job.steps.find((s) => s.state === "healthchecking");
    expect(health?.output).toContain(`recorded PROCESSGIT_IMAGE=${v2.repository}@${v2.digest}`);

    // Only the image line changed; the secret, the comment and the mode are as the operator left them.
    const envFile = join(project.dir, ".env");
    expect(await readFile(envFile, "utf8")).toBe(
      project.env.replace(/^PROCESSGIT_IMAGE=.*$/m, `PROCESSGIT_IMAGE=${v2.repository}@${v2.digest}`),
    );
    expect((await stat(envFile)).mode & 0o777).toBe(0o640);
    expect((await stat(envFile)).ino).toBe(project.envInode);
    const migrated = await dataOf(project);

    // The operator's routine: Compose re-creates the drifted container from the image .env names,
    // which is the version the update installed.
    const first = await compose(project, ["up", "-d"], impl);
    await waitServing(project.port, "2.0.0");
    const v2Id = await imageId(`${v2.repository}@${v2.digest}`);
    expect(await containers(project)).toEqual([`/${project.container} ${v2Id}`]);
    expect(await dataOf(project)).toBe(migrated);

    // And Compose agrees with what runs: nothing left to do, the container is left as it is.
    const id = await containerId(project);
    const second = await compose(project, ["up", "-d"], impl);
    expect(second, `first up -d said: ${first}`).toMatch(impl.upToDate);
    expect(second).not.toMatch(/Recreat/);
    expect(await containerId(project)).toBe(id);
    expect(await serving(project.port)).toBe("2.0.0");
  }, 180_000);

  it("a rolled back update leaves .env untouched, and up -d keeps the previous version", async () => {
    const v1 = suite.fixtures.v1 as Fixture;
    const project = await deploy(v1, impl);
    const before = await stat(join(project.dir, ".env"));
    const job = await update(project, "never-healthy");
    expect(job.state).toBe("rolled_back");
    expect(await readFile(join(project.dir, ".env"), "utf8")).toBe(project.env);
    expect((await stat(join(project.dir, ".env"))).ino).toBe(before.ino);
    const id = await containerId(project);
    const out = await compose(project, ["up", "-d"], impl);
    expect(out).toMatch(impl.upToDate);
    expect(await containerId(project)).toBe(id);
    expect(await serving(project.port)).toBe("1.0.0");
    expect(await containers(project)).toEqual([`/${project.container} ${await imageId(v1.ref)}`]);
  }, 180_000);
});

describe("deploy/", () => {
  it("deploy/docker-compose.yml with a filled-in .env.example is valid, and names what is missing", async () => {
    const deploy = join(import.meta.dirname, "../../deploy");
    const example = await readFile(join(deploy, ".env.example"), "utf8");
    const dir = join(suite.work, "deploy-config");
    await mkdir(dir);
    const project: Project = { dir, name: "deploy-config", container: "", port: 0, env: "" };
    const filled = example
      .replace(/^PROCESSGIT_UPDATER_TOKEN=$/m, "PROCESSGIT_UPDATER_TOKEN=0123456789abcdef0123456789abcdef")
      .replace(/^DOCKER_GID=$/m, "DOCKER_GID=998");
    await writeFile(join(dir, "filled.env"), filled);
    await writeFile(join(dir, "example.env"), example);
    const file = join(deploy, "docker-compose.yml");
    const config = await compose(project, ["-f", file, "--env-file", join(dir, "filled.env"), "config"]);
    expect(config).toContain("PROCESSGIT_UPDATER_COMPOSE_ENV_FILE: /deploy/.env");
    expect(config).toMatch(/group_add:\n\s+- '998'/);
    // Compose v2 reads the same files the same way (it quotes differently when printing).
    const v2 = IMPLEMENTATIONS[1] as Implementation;
    const configV2 = await compose(
      project,
      ["-f", file, "--env-file", join(dir, "filled.env"), "config"],
      v2,
    );
    expect(configV2).toContain("PROCESSGIT_UPDATER_COMPOSE_ENV_FILE: /deploy/.env");
    expect(configV2).toMatch(/group_add:\n\s+- "998"/);
    expect(configV2).toContain(
      "PROCESSGIT_UPDATER_SIGNER_IDENTITY: https://github\\.com/Algomation-AI/ProcessGit/\\.github/workflows/release\\.yml@refs/tags/v.*",
    );
    // The updater publishes no port; only ProcessGit does.
    expect(config.match(/published:/g)?.length).toBe(2);
    await expect(
      compose(project, ["-f", file, "--env-file", join(dir, "example.env"), "config"]),
    ).rejects.toThrow(/set (PROCESSGIT_UPDATER_TOKEN|DOCKER_GID) in .env/);
  });
});

describe("a failed rollback of a Compose-managed app", () => {
  it("ends failed, and the manual steps first say not to run up -d (Compose would remove the previous container)", async () => {
    const project = await deploy(suite.fixtures.v1 as Fixture, IMPLEMENTATIONS[0] as Implementation);
    let sabotaged = false;
    const end = await update(project, "never-healthy", async (job) => {
      if (!sabotaged && job.state === "healthchecking") {
        // The kept previous container and its saved configuration both disappear mid-verdict.
        await docker(["rm", "-f", job.journal.facts["app.id"] ?? ""]);
        await rm(job.journal.facts["previous.saved"] ?? "");
        sabotaged = true;
      }
    });
    expect(sabotaged).toBe(true);
    expect(end.state).toBe("failed");
    expect(end.error?.manualSteps).toMatch(
      new RegExp(
        `^1\\. Do not run docker compose up -d \\(project ${project.name}\\) before these steps are done`,
      ),
    );
    expect(end.error?.manualSteps).toMatch(/\n2\. See what this job left/);
    // The health verdict never passed, so .env was never touched.
    expect(await readFile(join(project.dir, ".env"), "utf8")).toBe(project.env);
  }, 180_000);
});

describe("docker-compose up -d in the middle of an update", () => {
  it("Compose removes one of the two containers; the update rolls back to v1 on its own data, and Compose is content", async () => {
    const v1 = suite.fixtures.v1 as Fixture;
    const impl = IMPLEMENTATIONS[0] as Implementation;
    const project = await deploy(v1, impl);
    const volume = `${project.name}_data`;
    const before = await fingerprint(suite.janitor, v1.ref, volume);
    let ran = "";
    // A release that would pass: the operator's up -d during its verdict is what breaks it.
    const end = await update(project, "v2", async (job) => {
      if (!ran && job.state === "healthchecking") ran = await compose(project, ["up", "-d"], impl);
    });
    expect(ran, "up -d ran during the health verdict").toMatch(/Removing/);
    expect(end.state, JSON.stringify(end.error)).toBe("rolled_back");
    expect(await serving(project.port)).toBe("1.0.0");
    expect(await containers(project)).toEqual([`/${project.container} ${await imageId(v1.ref)}`]);
    expect(await fingerprint(suite.janitor, v1.ref, volume)).toBe(before);
    expect(await readFile(join(project.dir, ".env"), "utf8")).toBe(project.env);
    const id = await containerId(project);
    expect(await compose(project, ["up", "-d"], impl)).toMatch(impl.upToDate);
    expect(await containerId(project)).toBe(id);
  }, 180_000);
});
