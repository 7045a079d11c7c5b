/**
 * The fixture app on the real engine, as the container tests use it: built images (scripts/
 * fixtures.sh), an app container started from v1 with data in a named volume, what it serves, a
 * fingerprint of its data, and which app containers exist.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { DockerJanitor, docker, type EngineEnv, labelArgs, requireEngine, runOnce } from "./docker.js";

export interface Fixture {
  ref: string;
  repository: string;
  digest: string;
  version: string;
}

/** What a container test file shares: the engine, the janitor, the fixture images, a scratch folder. */
export interface EngineSuite {
  env: EngineEnv;
  janitor: DockerJanitor;
  fixtures: Record<string, Fixture>;
  work: string;
}

/**
 * Registers the file's beforeAll (engine required, fixture images built, scratch folder made) and
 * afterAll (everything the file created removed). The returned object is filled in beforeAll.
 */
export function useEngineSuite(prefix: string): EngineSuite {
  const suite = {} as EngineSuite;
  beforeAll(async () => {
    suite.env = await requireEngine();
    suite.janitor = new DockerJanitor(suite.env);
    suite.fixtures = buildFixtures();
    suite.work = await mkdtemp(join(tmpdir(), `pgu-${prefix}-`));
  }, 120_000);
  afterAll(async () => {
    await suite.janitor?.cleanup();
    if (suite.work) await rm(suite.work, { recursive: true, force: true });
  });
  return suite;
}

export interface App {
  name: string;
  volume: string;
  port: number;
}

/** The checkout's root, from the source tree or from dist/ (benchmarks run compiled). */
const root = [join(import.meta.dirname, "../.."), join(import.meta.dirname, "../../..")].find((dir) =>
  existsSync(join(dir, "scripts/fixtures.sh")),
) as string;
let nextPort = 28_200 + Math.floor(Math.random() * 1500);

/** Builds (or reuses) and pushes the fixture images; returns them by variant name. */
export function buildFixtures(): Record<string, Fixture> {
  const out = execFileSync("bash", [join(root, "scripts/fixtures.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
  return (JSON.parse(out) as { images: Record<string, Fixture> }).images;
}

/** Starts the app from `v1` with files, a symlink and odd owners/modes in its volume; waits until it serves. */
export async function startApp(janitor: DockerJanitor, v1: Fixture): Promise<App> {
  const port = nextPort++;
  const name = janitor.name(`app-${port}`);
  const volume = janitor.volume(`${name}-data`);
  await docker(["volume", "create", volume]);
  await runOnce(
    janitor,
    v1.ref,
    [
      "/bin/sh",
      "-c",
      "echo seed > /data/seed && chmod 640 /data/seed && mkdir -p /data/sub && echo deep > /data/sub/file && chown 1234:5678 /data/sub/file && ln -s seed /data/link && echo 1.0.0 > /data/schema",
    ],
    { mounts: [`${volume}:/data`] },
  );
  janitor.container(name);
  janitor.onCleanup(async () => {
    const ids = (await docker(["ps", "-aq", "--filter", `name=^/${name}`])).split("\n").filter(Boolean);
    if (ids.length > 0) await docker(["rm", "-f", ...ids]);
  });
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
    v1.ref,
  ]);
  await waitServing(port, v1.version);
  return { name, volume, port };
}

/** The version the app serves on `port`, or undefined when nothing answers 200. */
export async function serving(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/version`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? (await res.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}

export async function waitServing(port: number, version: string, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if ((await serving(port)) === version) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} does not serve version ${version} (serves ${await serving(port)})`);
}

/** Names, owners, modes, types, sizes, contents and link targets of everything in the volume. */
export function fingerprint(janitor: DockerJanitor, image: string, volume: string): Promise<string> {
  return runOnce(
    janitor,
    image,
    [
      "/bin/sh",
      "-c",
      'cd /data && find . | sort | while read -r f; do stat -c "%n %u:%g %a %F %s" "$f"; if [ -L "$f" ]; then readlink "$f"; elif [ -f "$f" ]; then md5sum "$f"; fi; done',
    ],
    { mounts: [`${volume}:/data`] },
  );
}

/** Every container whose name starts with the app's: "name state image" (the configured image). */
export async function appContainers(name: string): Promise<string[]> {
  const ids = (await docker(["ps", "-aq", "--filter", `name=^/${name}`])).split("\n").filter(Boolean);
  if (ids.length === 0) return [];
  const out = await docker(["inspect", "-f", "{{.Name}} {{.State.Status}} {{.Config.Image}}", ...ids]);
  return out
    .split("\n")
    .filter(Boolean)
    .map((l) => l.replace(/^\//, ""))
    .sort();
}

/** The release.json image section for a fixture. */
export function imageOf(f: Fixture): Record<string, unknown> {
  const [registry, ...rest] = f.repository.split("/");
  return {
    registry,
    repository: rest.join("/"),
    tag: f.version,
    digest: f.digest,
    platforms: ["linux/amd64"],
  };
}
