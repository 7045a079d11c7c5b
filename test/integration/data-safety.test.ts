/**
 * Point-in-time data, measured on the real engine with a writer that counts acknowledged writes:
 * the writer fixture (test/fixtures/writer) answers 200 only once a record is durable (log:
 * append + fsync; SQLite: its own transaction, synchronous=FULL), and a client writes every 20 ms
 * through the whole update. After a rollback, every record the old version acknowledged must be
 * in the data, no record the new version acknowledged may be (it was discarded, and the job says
 * when), and SQLite's integrity_check must say ok. After a commit, every acknowledged record is
 * there.
 */
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { DockerEngineApi } from "../../src/engine/docker-engine-api.js";
import { silentLogger } from "../../src/log.js";
import type { Job } from "../../src/orchestrator/job.js";
import { systemClock } from "../../src/orchestrator/ports.js";
import { JobRunner } from "../../src/orchestrator/runner.js";
import { FileJobStore } from "../../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../fakes/fake-release.js";
import { AckWriter } from "../helpers/ack-writer.js";
import { imageOf, useEngineSuite } from "../helpers/app-fixture.js";
import { docker, HELPER_IMAGE } from "../helpers/docker.js";
import { finished } from "../helpers/runner-harness.js";
import {
  buildWriterFixtures,
  dumpData,
  startWriterApp,
  type WriterApp,
  type WriterDump,
  type WriterFixture,
  waitWriter,
} from "../helpers/writer-fixture.js";

const suite = useEngineSuite("data");
let writers: Record<string, WriterFixture> = {};
beforeAll(() => {
  writers = buildWriterFixtures();
}, 600_000);

const runners: JobRunner[] = [];
afterEach(async () => {
  for (const r of runners.splice(0)) await r.shutdown(1000);
});

function fixture(name: string): WriterFixture {
  const f = writers[name];
  if (!f) throw new Error(`no writer fixture ${name}`);
  return f;
}

interface Scenario {
  app: WriterApp;
  target: WriterFixture;
  /** Declare a migration (`node /app/writer.mjs migrate`); `online` runs it while the app serves. */
  migration?: "downtime" | "online";
}

async function updateUnderLoad(s: Scenario): Promise<{ job: Job; writer: AckWriter; dump: WriterDump }> {
  const tag = `v${s.target.version}`;
  const source = new MemoryReleaseSource().add(tag, {
    manifest: manifestFor(tag, {
      image: imageOf(s.target),
      migration: s.migration
        ? {
            required: true,
            command: ["node", "/app/writer.mjs", "migrate"],
            downtime: s.migration === "downtime",
            estimated_downtime_seconds: s.migration === "downtime" ? 5 : 0,
          }
        : { required: false, command: [], estimated_downtime_seconds: 0 },
    }),
  });
  const runner = new JobRunner({
    store: new FileJobStore(join(suite.work, s.app.name, "state")),
    source,
    verifier: new FakeVerifier(),
    engine: new DockerEngineApi({
      dockerHost: suite.env.dockerHost,
      helperImage: HELPER_IMAGE,
      appContainer: s.app.name,
      snapshotDir: join(suite.work, s.app.name, "snapshots"),
      healthDeadlineMs: 6000,
      healthSoakMs: 1500,
      healthIntervalMs: 100,
      migrationTimeoutMs: 60_000,
    }),
    clock: systemClock,
    newId: () => crypto.randomUUID(),
    log: silentLogger,
  });
  runners.push(runner);
  await runner.open();
  const writer = new AckWriter().start(s.app.port, { everyMs: 20, maxWrites: 5000, maxMs: 90_000 });
  // Some writes before the update, so that the bulk copy has data to copy.
  await new Promise((r) => setTimeout(r, 500));
  const started = await runner.start({ tag });
  const job = await finished(runner, started.id, 90_000);
  // The app that serves after the job (v1 after a rollback) takes writes too.
  await waitWriter({ ...s.app, fixture: job.state === "committed" ? s.target : s.app.fixture });
  await new Promise((r) => setTimeout(r, 500));
  await writer.stop();
  // A stop flushes what the app holds; the dump then reads data at rest.
  await docker(["stop", s.app.name]);
  const dump = await dumpData(suite.janitor, s.app.fixture, s.app.volume);
  return { job, writer, dump };
}

function explain(job: Job, writer: AckWriter, dump: WriterDump): string {
  return JSON.stringify(
    {
      state: job.state,
      error: job.error,
      facts: job.journal.facts,
      steps: job.steps.map((st) => [st.title, st.status, st.error, st.output.slice(-600)]),
      acked: writer.versions().map((v) => [v, writer.acked(v).length]),
      failures: writer.failureCounts(),
      dump: { ...dump, ids: dump.ids.length },
    },
    null,
    1,
  );
}

/** Every record the old version acknowledged is there; none the new version acknowledged is. */
function expectOldVersionsData(job: Job, writer: AckWriter, dump: WriterDump, oldVersion: string): void {
  const why = explain(job, writer, dump);
  expect(job.state, why).toBe("rolled_back");
  expect(dump.integrity, why).toBe("ok");
  expect(dump.problems, why).toEqual([]);
  const have = new Set(dump.ids);
  const oldAcks = writer.acked(oldVersion);
  expect(oldAcks.length, why).toBeGreaterThan(20);
  const missing = oldAcks.filter((id) => !have.has(id));
  expect(missing, why).toEqual([]);
  const newAcks = writer.acked().filter((id) => !oldAcks.includes(id));
  const kept = newAcks.filter((id) => have.has(id));
  expect(kept, why).toEqual([]);
  // Nothing that nobody acknowledged, beyond writes whose answer was lost while the app stopped.
  const unacked = dump.ids.filter((id) => !oldAcks.includes(id));
  const inFlight = new Set(writer.failures.map((f) => f.id));
  expect(
    unacked.filter((id) => !inFlight.has(id)),
    why,
  ).toEqual([]);
  // The record says what the rollback discarded.
  const f = job.journal.facts;
  if (newAcks.length > 0) {
    expect(f["restore.needed"], why).toBe("true");
    expect(f["restore.done"], why).toBe("true");
    const from = Date.parse(f["restore.discardedFrom"] ?? "");
    const until = Date.parse(f["restore.discardedUntil"] ?? "");
    const acks = writer.acks.filter((a) => a.version !== oldVersion);
    for (const a of acks) {
      expect(a.at, why).toBeGreaterThanOrEqual(from);
      expect(a.at - a.ms, why).toBeLessThanOrEqual(until);
    }
  }
}

describe.each(["log", "sqlite"] as const)(
  "acknowledged writes survive every rollback (%s store)",
  (store) => {
    it("a declared migration (the app stopped for it), then a failed health check", async () => {
      const app = await startWriterApp(suite.janitor, fixture(`${store}-v1`));
      const { job, writer, dump } = await updateUnderLoad({
        app,
        target: fixture(`${store}-unhealthy`),
        migration: "downtime",
      });
      expectOldVersionsData(job, writer, dump, "1.0.0");
      expect(dump.format).toBe(1);
    }, 180_000);

    it("no migration declared, the new version rewrites its data on start and then fails", async () => {
      const app = await startWriterApp(suite.janitor, fixture(`${store}-v1`));
      const { job, writer, dump } = await updateUnderLoad({
        app,
        target: fixture(`${store}-rewrite-unhealthy`),
      });
      expectOldVersionsData(job, writer, dump, "1.0.0");
      expect(dump.format).toBe(1);
      expect(
        writer.acked("2.0.1").length,
        "the new version took writes during its health check",
      ).toBeGreaterThan(0);
    }, 180_000);

    it("a clean start that fails its health check", async () => {
      const app = await startWriterApp(suite.janitor, fixture(`${store}-v1`));
      const { job, writer, dump } = await updateUnderLoad({ app, target: fixture(`${store}-unhealthy`) });
      expectOldVersionsData(job, writer, dump, "1.0.0");
    }, 180_000);

    it("a successful update keeps every acknowledged record", async () => {
      const app = await startWriterApp(suite.janitor, fixture(`${store}-v1`));
      const { job, writer, dump } = await updateUnderLoad({
        app,
        target: fixture(`${store}-v2`),
        migration: "downtime",
      });
      const why = explain(job, writer, dump);
      expect(job.state, why).toBe("committed");
      expect(dump.integrity, why).toBe("ok");
      expect(dump.format, why).toBe(2);
      const have = new Set(dump.ids);
      expect(
        writer.acked().filter((id) => !have.has(id)),
        why,
      ).toEqual([]);
      expect(writer.acked("2.0.0").length, why).toBeGreaterThan(0);
    }, 180_000);
  },
);

describe("SQLite in rollback-journal (DELETE) mode", () => {
  it("a rewrite on start, then a failed health check: integrity ok, every acknowledged row there, no stale journal", async () => {
    const app = await startWriterApp(suite.janitor, fixture("sqlite-v1"), { journal: "delete" });
    const { job, writer, dump } = await updateUnderLoad({ app, target: fixture("sqlite-rewrite-unhealthy") });
    expectOldVersionsData(job, writer, dump, "1.0.0");
    expect(dump.format).toBe(1);
    expect(dump.journal).toEqual([]);
  }, 180_000);
});

describe("an app image without a shell", () => {
  it("rolls back with its data restored (the copying needs nothing from the app's image)", async () => {
    const app = await startWriterApp(suite.janitor, fixture("noshell-log-v1"));
    const { job, writer, dump } = await updateUnderLoad({
      app,
      target: fixture("noshell-log-rewrite-unhealthy"),
    });
    expectOldVersionsData(job, writer, dump, "1.0.0");
    expect(dump.format).toBe(1);
  }, 180_000);
});
