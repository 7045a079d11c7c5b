/**
 * The writer fixture on the real engine: the instrument the data-safety tests measure updates with
 * must itself be right. An app acknowledges a write only once it is durable, so after a clean stop
 * (and after SIGKILL) the data holds every acknowledged id; versions refuse data of a newer format
 * or half-migrated data; the failing variants fail as documented; the shell-less image has no shell
 * and still serves, probes and migrates.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AckWriter } from "../helpers/ack-writer.js";
import { DockerJanitor, docker, requireEngine } from "../helpers/docker.js";
import { run } from "../helpers/run.js";
import {
  buildWriterFixtures,
  containerState,
  dumpData,
  runWriter,
  startWriterApp,
  type WriterApp,
  type WriterFixture,
  type WriterStore,
  waitExit,
  waitHealth,
  waitWriter,
} from "../helpers/writer-fixture.js";

let janitor: DockerJanitor;
let fixtures: Record<string, WriterFixture>;

beforeAll(async () => {
  janitor = new DockerJanitor(await requireEngine());
  fixtures = buildWriterFixtures();
}, 300_000);
afterAll(async () => {
  await janitor?.cleanup();
});

function fx(name: string): WriterFixture {
  const f = fixtures[name];
  if (!f) throw new Error(`no writer fixture ${name} (have ${Object.keys(fixtures).join(", ")})`);
  return f;
}

/** Writes `n` records through `app` and returns the writer (all acknowledged, or the test fails). */
async function writeSome(app: WriterApp, n: number, firstId = 1): Promise<AckWriter> {
  // A generous timeout per write: the tests run concurrently on a CI machine with 2 cores.
  const writer = new AckWriter().start(app.port, { maxWrites: n, maxMs: 30_000, timeoutMs: 5000, firstId });
  await writer.done();
  expect(writer.failureCounts()).toEqual({});
  expect(writer.acked(app.fixture.version)).toHaveLength(n);
  return writer;
}

/** docker stop, then the exit status and log of the app. */
async function stop(app: WriterApp): Promise<{ exitCode: number; log: string }> {
  await docker(["stop", app.name]);
  return waitExit(app.name);
}

async function get(
  app: WriterApp,
  path: string,
): Promise<{ status: number; body: string; version: string | null }> {
  const res = await fetch(`http://127.0.0.1:${app.port}${path}`, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, body: (await res.text()).trim(), version: res.headers.get("x-app-version") };
}

const sorted = (ids: number[]) => [...ids].sort((a, b) => a - b);

const setups: Array<{ label: string; store: WriterStore; journal?: "wal" | "delete" }> = [
  { label: "log", store: "log" },
  { label: "sqlite (WAL)", store: "sqlite" },
  { label: "sqlite (rollback journal)", store: "sqlite", journal: "delete" },
];

describe.concurrent.each(setups)("the $label writer", ({ store, journal }) => {
  const start = (name: string, options: Parameters<typeof startWriterApp>[2] = {}) =>
    startWriterApp(janitor, fx(`${store}-${name}`), { ...(journal ? { journal } : {}), ...options });

  it("acknowledges writes; after docker stop the data holds exactly the acknowledged ids, intact", async () => {
    const app = await start("v1");
    await waitHealth(app.name, "healthy");
    const writer = await writeSome(app, 60);
    expect(writer.versions()).toEqual(["1.0.0"]);
    expect(writer.lastAckedBy("1.0.0")?.id).toBe(60);
    expect(await get(app, "/count")).toEqual({ status: 200, body: "60", version: "1.0.0" });
    expect(await get(app, "/health")).toMatchObject({ status: 200, body: "ok" });

    const stopped = await stop(app);
    expect(stopped.exitCode).toBe(0);
    expect(stopped.log).toContain("stopped on SIGTERM");
    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump).toMatchObject({ store, format: 1, count: 60, integrity: "ok", problems: [], journal: [] });
    expect(dump.ids).toEqual(writer.acked());
  }, 60_000);

  it("after SIGKILL under write load the data still holds every acknowledged id", async () => {
    const app = await start("v1");
    const writer = new AckWriter().start(app.port, { everyMs: 5, maxWrites: 5000, maxMs: 15_000 });
    await new Promise((r) => setTimeout(r, 1500));
    await docker(["kill", app.name]);
    await writer.stop();
    expect(writer.acked().length).toBeGreaterThan(20);
    expect(writer.failures.length).toBeGreaterThan(0); // the writes after the kill
    expect(Object.keys(writer.failureCounts())).toContain("ECONNREFUSED");
    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump.integrity).toBe("ok");
    expect(dump.problems).toEqual([]);
    // Everything acknowledged is there; at most the one write in flight at the kill is there unacknowledged.
    expect(dump.ids).toEqual(expect.arrayContaining(writer.acked()));
    expect(dump.count - writer.acked().length).toBeLessThanOrEqual(1);
    if (store === "sqlite" && journal !== "delete") expect(dump.journal).toContain("records.db-wal");
  }, 60_000);

  it("v2's declared migration rewrites the data to format 2; v1 then refuses to start; v2 serves it", async () => {
    const app = await start("v1");
    const writer = await writeSome(app, 25);
    expect((await stop(app)).exitCode).toBe(0);

    const migrated = await runWriter(janitor, fx(`${store}-v2`), app.volume, ["migrate"]);
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(migrated.stdout).toContain("done: the data is at format 2");
    const dump = await dumpData(janitor, fx(`${store}-v1`), app.volume);
    expect(dump).toMatchObject({ store, format: 2, integrity: "ok", problems: [] });
    expect(dump.ids).toEqual(writer.acked());

    const refused = await start("v1", { volume: app.volume, wait: false });
    const exit = await waitExit(refused.name);
    expect(exit.exitCode).toBe(1);
    expect(exit.log).toMatch(
      /has format 2, newer than format 1 that version 1\.0\.0 reads: refusing to start/,
    );

    const v2 = await start("v2", { volume: app.volume });
    const more = await writeSome(v2, 10, 26);
    expect(more.versions()).toEqual(["2.0.0"]);
    await stop(v2);
    const after = await dumpData(janitor, fx(`${store}-v1`), app.volume);
    expect(after).toMatchObject({ format: 2, integrity: "ok", problems: [] });
    expect(after.ids).toEqual([...writer.acked(), ...more.acked()]);
  }, 90_000);

  it("v2 good serves format-1 data without rewriting it (v1 can still start on it)", async () => {
    const app = await start("v1");
    const writer = await writeSome(app, 10);
    await stop(app);
    const v2 = await start("v2", { volume: app.volume });
    const more = await writeSome(v2, 10, 11);
    await stop(v2);
    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump).toMatchObject({ format: 1, integrity: "ok", problems: [] });
    expect(dump.ids).toEqual([...writer.acked(), ...more.acked()]);
    await start("v1", { volume: app.volume });
  }, 60_000);

  it("rewrite-then-unhealthy rewrites the data to format 2, accepts writes, and the engine calls it unhealthy", async () => {
    const app = await start("v1");
    const writer = await writeSome(app, 20);
    await stop(app);

    const bad = await start("rewrite-unhealthy", { volume: app.volume });
    const during = new AckWriter().start(bad.port, {
      maxWrites: 2000,
      maxMs: 30_000,
      timeoutMs: 5000,
      firstId: 21,
    });
    await waitHealth(bad.name, "unhealthy");
    await during.stop();
    expect(during.versions()).toEqual(["2.0.1"]);
    expect(during.failures).toEqual([]);
    expect(await get(bad, "/health")).toEqual({ status: 503, body: "unhealthy", version: "2.0.1" });
    await stop(bad);

    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump).toMatchObject({ format: 2, integrity: "ok", problems: [] });
    expect(dump.ids).toEqual(sorted([...writer.acked(), ...during.acked()]));
    const refused = await waitExit((await start("v1", { volume: app.volume, wait: false })).name);
    expect(refused.exitCode).toBe(1);
  }, 90_000);

  it("a migration that fails half-way exits 3 and leaves data that v1 and v2 both refuse", async () => {
    const app = await start("v1");
    const writer = await writeSome(app, 15);
    await stop(app);
    const failed = await runWriter(janitor, fx(`${store}-migration-fails`), app.volume, ["migrate"]);
    expect(failed.code).toBe(3);
    expect(failed.stderr).toContain("migration failed half-way (on purpose)");
    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump.format).toBe(1);
    expect(dump.problems.length).toBeGreaterThan(0);
    expect(dump.ids).toEqual(writer.acked());
    for (const version of ["v1", "v2"]) {
      const exit = await waitExit((await start(version, { volume: app.volume, wait: false })).name);
      expect(exit.exitCode).toBe(1);
      expect(exit.log).toContain("is inconsistent (a migration stopped half-way?)");
    }
  }, 90_000);
});

describe.concurrent("the other variants", () => {
  it("unhealthy starts clean on format-1 data, answers 503 on /health and accepts writes in format 1", async () => {
    const app = await startWriterApp(janitor, fx("log-v1"));
    const writer = await writeSome(app, 5);
    await stop(app);
    const sick = await startWriterApp(janitor, fx("log-unhealthy"), { volume: app.volume });
    const more = await writeSome(sick, 5, 6);
    await waitHealth(sick.name, "unhealthy");
    await stop(sick);
    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump).toMatchObject({ format: 1, integrity: "ok", problems: [] });
    expect(dump.ids).toEqual([...writer.acked(), ...more.acked()]);
  }, 60_000);

  it("rewrite-on-start rewrites the data to format 2 and is healthy", async () => {
    const app = await startWriterApp(janitor, fx("sqlite-v1"));
    const writer = await writeSome(app, 5);
    await stop(app);
    const next = await startWriterApp(janitor, fx("sqlite-rewrite-on-start"), { volume: app.volume });
    await waitHealth(next.name, "healthy");
    await stop(next);
    const dump = await dumpData(janitor, app.fixture, app.volume);
    expect(dump).toMatchObject({ format: 2, integrity: "ok", problems: [] });
    expect(dump.ids).toEqual(writer.acked());
  }, 60_000);

  it("a v2 on an empty volume initialises it at format 2", async () => {
    const app = await startWriterApp(janitor, fx("log-v2"));
    await stop(app);
    expect(await dumpData(janitor, app.fixture, app.volume)).toMatchObject({ format: 2, count: 0 });
  }, 60_000);
});

describe("the shell-less image", () => {
  it("has no /bin/sh, yet serves, passes its exec-form HEALTHCHECK, migrates and dumps", async () => {
    const v1 = fx("noshell-log-v1");
    expect(v1.shell).toBe(false);
    const sh = await run("docker", ["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", v1.ref]);
    expect(sh.code).not.toBe(0);
    expect(sh.stderr).toMatch(/\/bin\/sh.*no such file or directory/);

    const app = await startWriterApp(janitor, v1);
    await waitHealth(app.name, "healthy");
    const writer = await writeSome(app, 20);
    expect((await stop(app)).exitCode).toBe(0);
    const migrated = await runWriter(janitor, fx("noshell-log-v2"), app.volume, ["migrate"]);
    expect(migrated.code, migrated.stderr).toBe(0);
    const dump = await dumpData(janitor, v1, app.volume);
    expect(dump).toMatchObject({ store: "log", format: 2, integrity: "ok", problems: [] });
    expect(dump.ids).toEqual(writer.acked());

    const v2 = await startWriterApp(janitor, fx("noshell-log-v2"), { volume: app.volume });
    await waitWriter(v2);
    expect((await containerState(v2.name)).status).toBe("running");
  }, 90_000);
});
