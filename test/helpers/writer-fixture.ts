/**
 * The writer fixture on the real engine (test/fixtures/writer, images by scripts/writer-fixtures.sh):
 * an app that acknowledges a write only once it is durable, with a data format number, a declared
 * migration and a `dump` of what its data holds (ids, format, SQLite's integrity_check, journal
 * files). With {@link AckWriter} it measures the data safety of an update: what each version
 * acknowledged against what the data holds afterwards.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import type { Fixture } from "./app-fixture.js";
import { type DockerJanitor, docker, labelArgs } from "./docker.js";
import { type RunResult, run } from "./run.js";

export type WriterStore = "log" | "sqlite";

/** One writer image, e.g. `log-v1`, `sqlite-rewrite-unhealthy`, `noshell-log-v2`. */
export interface WriterFixture extends Fixture {
  store: WriterStore;
  /** APP_MODE: good, rewrite-on-start, rewrite-then-unhealthy or unhealthy. */
  mode: string;
  /** The newest data format the version reads (and initialises an empty volume at). */
  format: number;
  /** `migrate` exits 3 half-way. */
  migrationFails: boolean;
  /** False for the FROM-scratch set: no /bin/sh in the image. */
  shell: boolean;
}

/** What `node /app/writer.mjs dump` prints. */
export interface WriterDump {
  store: WriterStore | null;
  /** log: /data/format; sqlite: PRAGMA user_version. Null when there is none. */
  format: number | null;
  count: number;
  duplicates: number;
  /** "ok", or sqlite's integrity_check rows / the log's damage (a torn last line, lines that are no record). */
  integrity: string;
  /** Inconsistencies between format and content (a half-done migration), duplicates, missing files. */
  problems: string[];
  /** records.db-wal, -shm, -journal (sqlite) or *.tmp (log) left in /data. */
  journal: string[];
  files: string[];
  /** Every record's id, sorted. */
  ids: number[];
}

export interface WriterApp {
  name: string;
  volume: string;
  port: number;
  fixture: WriterFixture;
}

export interface StartWriterOptions {
  /** STORE for the container, overriding the image's. */
  store?: WriterStore;
  /** SQLITE_JOURNAL for the container (the images default to wal). */
  journal?: "wal" | "delete";
  /** An existing volume to mount at /data; default a new, empty one. */
  volume?: string;
  /** More environment for the container. */
  env?: Record<string, string>;
  /** Wait until /version answers the fixture's version. Default true; false for a version expected to refuse its data. */
  wait?: boolean;
}

const root = [join(import.meta.dirname, "../.."), join(import.meta.dirname, "../../..")].find((dir) =>
  existsSync(join(dir, "scripts/writer-fixtures.sh")),
) as string;

/** Where the app keeps writer.mjs in every writer image. */
export const WRITER = "/app/writer.mjs";

/** Builds (or reuses, when up to date) and pushes the writer images; returns them by name. */
export function buildWriterFixtures(): Record<string, WriterFixture> {
  let out: string;
  try {
    out = execFileSync("bash", [join(root, "scripts/writer-fixtures.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 600_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`scripts/writer-fixtures.sh failed: ${e.stderr?.trim() || e.message}`);
  }
  return (JSON.parse(out) as { images: Record<string, WriterFixture> }).images;
}

const handedOut = new Set<number>();

/** A loopback port above 20000 that nothing listens on right now (21000-27999, clear of the other fixtures). */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 21_000 + Math.floor(Math.random() * 7000);
    // Never twice in one process: a stopped app keeps its port in its container's name until cleanup.
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no free port in 21000-27999 after 50 tries");
}

/**
 * Starts the writer app from `fixture` as startApp does (host network, --init, --restart no,
 * labelled for the janitor) with a named volume at /data, and, unless `wait` is false, waits until
 * it serves its version (not until the engine calls it healthy: see {@link waitHealth}).
 */
export async function startWriterApp(
  janitor: DockerJanitor,
  fixture: WriterFixture,
  options: StartWriterOptions = {},
): Promise<WriterApp> {
  const port = await freePort();
  const name = janitor.name(`writer-${port}`);
  const volume = options.volume ?? janitor.volume(`${name}-data`);
  if (!options.volume) await docker(["volume", "create", volume]);
  janitor.container(name); // registered after its volume: removed before it
  const env: Record<string, string> = { APP_PORT: String(port), ...options.env };
  if (options.store) env.STORE = options.store;
  if (options.journal) env.SQLITE_JOURNAL = options.journal;
  await docker([
    "run",
    "-d",
    "--name",
    name,
    ...labelArgs(janitor),
    "--network",
    "host",
    "--init",
    ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
    "-v",
    `${volume}:/data`,
    "--restart",
    "no",
    fixture.ref,
  ]);
  const app = { name, volume, port, fixture };
  if (options.wait ?? true) await waitWriter(app);
  return app;
}

/** Waits until the app answers /version with its fixture's version; fails at once (with its log) when the container exits. */
export async function waitWriter(app: WriterApp, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  for (let i = 0; Date.now() < until; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${app.port}/version`, { signal: AbortSignal.timeout(1000) });
      if (res.ok && (await res.text()).trim() === app.fixture.version) return;
    } catch {
      // not listening yet
    }
    if (i % 5 === 4 && (await containerState(app.name)).status === "exited") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const state = await containerState(app.name);
  const logs = await run("docker", ["logs", app.name]);
  throw new Error(
    `${app.name} (${app.fixture.ref}) does not serve ${app.fixture.version} on ${app.port}: ${state.status} (exit ${state.exitCode}); log: ${logs.stderr}${logs.stdout}`,
  );
}

export async function containerState(
  name: string,
): Promise<{ status: string; exitCode: number; health: string }> {
  const out = await docker([
    "inspect",
    "-f",
    "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
    name,
  ]);
  const [status = "", exitCode = "", health = ""] = out.trim().split(" ");
  return { status, exitCode: Number(exitCode), health };
}

/** Waits until the engine's health status of the container is `status` (healthy, unhealthy). */
export async function waitHealth(name: string, status: string, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  let last = await containerState(name);
  while (Date.now() < until) {
    if (last.health === status) return;
    if (last.status === "exited") break;
    await new Promise((r) => setTimeout(r, 200));
    last = await containerState(name);
  }
  throw new Error(`${name} is not ${status} after ${ms} ms: ${JSON.stringify(last)}`);
}

/** Waits until the container exits; resolves its exit code and its log (stdout and stderr together). */
export async function waitExit(name: string, ms = 20_000): Promise<{ exitCode: number; log: string }> {
  const until = Date.now() + ms;
  let state = await containerState(name);
  while (state.status !== "exited" && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    state = await containerState(name);
  }
  if (state.status !== "exited") throw new Error(`${name} did not exit within ${ms} ms (${state.status})`);
  const logs = await run("docker", ["logs", name]);
  return { exitCode: state.exitCode, log: logs.stdout + logs.stderr };
}

/**
 * Runs `node /app/writer.mjs ARGS` once in a new container of `image` with `volume` at /data
 * (network none, labelled), e.g. ["migrate"] as the updater would run the declared migration.
 * Resolves the exit code and output without throwing.
 */
export async function runWriter(
  janitor: DockerJanitor,
  image: WriterFixture | string,
  volume: string,
  args: string[],
  options: { env?: Record<string, string>; readOnly?: boolean; timeoutMs?: number } = {},
): Promise<RunResult> {
  const ref = typeof image === "string" ? image : image.ref;
  return run(
    "docker",
    [
      "run",
      "--rm",
      "--network",
      "none",
      ...labelArgs(janitor),
      ...Object.entries(options.env ?? {}).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
      "-v",
      `${volume}:/data${options.readOnly ? ":ro" : ""}`,
      ref,
      "node",
      WRITER,
      ...args,
    ],
    { timeoutMs: options.timeoutMs ?? 60_000 },
  );
}

/**
 * What the volume's data holds, by a one-shot container of `image` (any writer image: the dump reads
 * both stores and both formats) running `dump` on a read-only mount. Run it with the app stopped:
 * a dump of live data is a copy of a moving target.
 */
export async function dumpData(
  janitor: DockerJanitor,
  image: WriterFixture | string,
  volume: string,
): Promise<WriterDump> {
  const result = await runWriter(janitor, image, volume, ["dump"], { readOnly: true });
  if (result.code !== 0) throw new Error(`dump of ${volume} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as WriterDump;
}
