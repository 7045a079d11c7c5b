/**
 * FileJobStore on real files in a temp directory: format, order, bounds, concurrency, refusal of
 * files it cannot trust, copies, and durability across a real SIGKILL of a writing process.
 */
import { spawn } from "node:child_process";
import { randomInt, randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StateFileError, UpdaterError } from "../../src/errors.js";
import type { Job } from "../../src/orchestrator/job.js";
import { HISTORY_LIMIT } from "../../src/orchestrator/ports.js";
import type { ReleaseManifest } from "../../src/orchestrator/release-manifest.js";
import { FileJobStore, STATE_SCHEMA } from "../../src/store/file-job-store.js";

let dir: string;
let file: string;
let seq = 0;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "file-job-store-"));
  file = join(dir, "state.json");
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A valid terminal job, created one minute after the previous one made here. */
function job(overrides: Partial<Job> = {}): Job {
  seq += 1;
  const at = new Date(Date.UTC(2025, 0, 1) + seq * 60_000).toISOString();
  return {
    id: randomUUID(),
    state: "committed",
    targetTag: `v1.${seq}.0`,
    createdAt: at,
    updatedAt: at,
    finishedAt: at,
    steps: [
      { state: "planning", title: "Plan", status: "succeeded", startedAt: at, endedAt: at, output: "ok\n" },
    ],
    allowDowngrade: false,
    revision: 3,
    recoveries: 0,
    journal: { facts: { snapshot: "snap-1" } },
    ...overrides,
  };
}

const MANIFEST: ReleaseManifest = {
  name: "ProcessGit",
  version: "1.4.0",
  tag: "v1.4.0",
  image: {
    registry: "ghcr.io",
    repository: "processgit/processgit",
    tag: "1.4.0",
    digest: `sha256:${"a".repeat(64)}`,
    platforms: ["linux/amd64", "linux/arm64"],
  },
  migration: { required: true, command: ["migrate", "up"], downtime: false, estimatedDowntimeSeconds: 0 },
  prerelease: false,
  breakingChanges: [],
  releaseNotes: "Fixes.",
};

function activeJob(overrides: Partial<Job> = {}): Job {
  const { finishedAt: _, ...rest } = job({ state: "pulling", ...overrides });
  return rest;
}

function stateText(jobs: unknown[], extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify({ schema: STATE_SCHEMA, version: 1, jobs, ...extra }, null, 2)}\n`;
}

async function fileJobs(): Promise<Job[]> {
  return JSON.parse(await readFile(file, "utf8")).jobs;
}

describe("FileJobStore basics", () => {
  it("creates a missing directory (0700), treats a missing file as empty and writes nothing", async () => {
    const nested = join(dir, "a", "b");
    const store = new FileJobStore(nested);
    expect(await store.load()).toEqual({ jobs: [] });
    expect((await stat(nested)).mode & 0o777).toBe(0o700);
    expect(await readdir(nested)).toEqual([]);
  });

  it("round-trips jobs through the file in the documented, readable format", async () => {
    const a = job({ targetVersion: "1.2.0", verification: { policy: "key", manifestSha256: "ab" } });
    const b = activeJob({ error: undefined, journal: { intent: "pull", facts: {}, manifest: MANIFEST } });
    const store = new FileJobStore(dir);
    await store.load();
    await store.save(a);
    await store.save(b);

    expect(await new FileJobStore(dir).load()).toEqual({ jobs: [b, a] });
    const text = await readFile(file, "utf8");
    expect(text).toBe(stateText([b, a]));
    expect(text).not.toContain('"error"');
    expect(
      text.startsWith('{\n  "schema": "processgit-updater/state",\n  "version": 1,\n  "jobs": [\n'),
    ).toBe(true);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["state.json"]);
  });

  it("replaces a job by id", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const a = activeJob();
    await store.save(a);
    await store.save({ ...a, state: "committed", revision: 9, finishedAt: a.createdAt });
    const { jobs } = await new FileJobStore(dir).load();
    expect(jobs.map((j) => [j.id, j.state, j.revision])).toEqual([[a.id, "committed", 9]]);
  });

  it("keeps jobs newest first by createdAt, the active job first", async () => {
    const jobs = Array.from({ length: 8 }, () => job());
    const active = jobs[0] as Job;
    active.state = "verifying";
    delete active.finishedAt;
    const store = new FileJobStore(dir);
    await store.load();
    for (const i of [3, 0, 7, 1, 5, 2, 6, 4]) await store.save(jobs[i] as Job);

    const expected = [
      active.id,
      ...jobs
        .slice(1)
        .reverse()
        .map((j) => j.id),
    ];
    expect((await fileJobs()).map((j) => j.id)).toEqual(expected);
    expect((await new FileJobStore(dir).load()).jobs.map((j) => j.id)).toEqual(expected);
  });

  it(`keeps at most ${HISTORY_LIMIT} jobs, dropping the oldest terminal ones and never the active one`, async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const active = activeJob();
    await store.save(active);
    const finished = Array.from({ length: 60 }, () => job());
    for (const j of finished) await store.save(j);
    await store.save({ ...active, revision: active.revision + 1 });

    const expected = [
      active.id,
      ...finished
        .slice(-(HISTORY_LIMIT - 1))
        .reverse()
        .map((j) => j.id),
    ];
    expect((await fileJobs()).map((j) => j.id)).toEqual(expected);
    const { jobs } = await new FileJobStore(dir).load();
    expect(jobs).toHaveLength(HISTORY_LIMIT);
    expect(jobs.map((j) => j.id)).toEqual(expected);
    expect(jobs[0]?.revision).toBe(active.revision + 1);
  });

  it("loads before the first save when save() is called without load()", async () => {
    const first = job();
    await writeFile(file, stateText([first]));
    const second = job();
    await new FileJobStore(dir).save(second);
    expect((await fileJobs()).map((j) => j.id)).toEqual([second.id, first.id]);
  });

  it("ignores and removes temp files left by an interrupted write", async () => {
    const kept = job();
    await writeFile(file, stateText([kept]));
    await writeFile(join(dir, "state.json.4242.deadbeef.tmp"), '{"schema":"processgit-up');
    await writeFile(join(dir, "notes.txt"), "operator's file");
    const { jobs } = await new FileJobStore(dir).load();
    expect(jobs.map((j) => j.id)).toEqual([kept.id]);
    expect((await readdir(dir)).sort()).toEqual(["notes.txt", "state.json"]);
  });

  it("accepts and keeps unknown fields inside jobs", async () => {
    const future = { ...job(), futureField: { nested: [1, 2] } };
    await writeFile(file, stateText([future], { writtenBy: "a newer 1.x updater" }));
    const store = new FileJobStore(dir);
    const { jobs } = await store.load();
    expect(jobs[0]).toEqual(future);
    await store.save(job());
    expect((await fileJobs())[1]).toEqual(future);
  });
});

describe("FileJobStore copies", () => {
  it("returns copies: mutating a loaded job does not change the store", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const original = job();
    await store.save(original);
    const loaded = (await store.load()).jobs[0] as Job;
    loaded.state = "failed";
    loaded.steps.push({
      state: "pulling",
      title: "x",
      status: "failed",
      startedAt: loaded.createdAt,
      output: "",
    });
    loaded.journal.facts.snapshot = "changed";
    await store.save(job());
    expect((await fileJobs())[1]).toEqual(original);
    expect((await store.load()).jobs[1]).toEqual(original);
  });

  it("copies on save: mutating the saved object afterwards does not change the store", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const saved = job();
    const snapshot = structuredClone(saved);
    const pending = store.save(saved);
    saved.revision = 1000;
    saved.journal.facts.snapshot = "changed";
    await pending;
    await store.save(job());
    expect((await store.load()).jobs[1]).toEqual(snapshot);
    expect((await fileJobs())[1]).toEqual(snapshot);
  });
});

describe("FileJobStore concurrency", () => {
  it("serializes 100 parallel saves of one job in call order", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const base = activeJob();
    await Promise.all(Array.from({ length: 100 }, (_, i) => store.save({ ...base, revision: i + 1 })));
    const jobs = await fileJobs();
    expect(jobs.map((j) => [j.id, j.revision])).toEqual([[base.id, 100]]);
    expect(await readdir(dir)).toEqual(["state.json"]);
  });

  it("lands 100 parallel saves of distinct jobs, each on disk when its save resolves", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const jobs = Array.from({ length: 100 }, () => job());
    const seenOnResolve: boolean[] = [];
    await Promise.all(
      jobs.map((j, i) =>
        store.save(j).then(async () => {
          const onDisk = JSON.parse(await readFile(file, "utf8")).jobs as Job[];
          seenOnResolve[i] = onDisk.some((d) => d.id === j.id);
        }),
      ),
    );
    expect(seenOnResolve).toEqual(jobs.map(() => true));
    const expected = jobs.slice(-HISTORY_LIMIT).reverse();
    expect(await fileJobs()).toEqual(expected);
    expect((await new FileJobStore(dir).load()).jobs).toEqual(expected);
    expect(await readdir(dir)).toEqual(["state.json"]);
  });
});

describe("FileJobStore refuses to save jobs that would make the file unloadable", () => {
  it("rejects a job without the Job shape and leaves the file alone", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    await store.save(job());
    const before = await readFile(file);
    const bad = { ...job(), state: "bogus" } as unknown as Job;
    await expect(store.save(bad)).rejects.toThrow(/job\.state is string "bogus", expected one of planning/);
    await expect(store.save({ ...job(), id: "" })).rejects.toThrow(/job\.id is empty/);
    const notData = { ...job(), callback: () => {} } as unknown as Job;
    await expect(store.save(notData)).rejects.toThrow(/it is not plain data/);
    expect(await readFile(file)).toEqual(before);
  });

  it("rejects a second active job", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    const first = activeJob();
    await store.save(first);
    const before = await readFile(file);
    const error = await store.save(activeJob()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpdaterError);
    expect((error as UpdaterError).code).toBe("internal");
    expect((error as Error).message).toContain(`job ${first.id} is still active`);
    expect(await readFile(file)).toEqual(before);

    await store.save({ ...first, state: "aborted", finishedAt: first.createdAt });
    await store.save(activeJob());
    expect((await fileJobs()).filter((j) => j.state !== "aborted" && j.state !== "committed")).toHaveLength(
      1,
    );
  });
});

describe("FileJobStore write failures", () => {
  it("reports a failed write as unavailable and keeps the in-memory state as it was", async () => {
    const store = new FileJobStore(dir);
    await store.load();
    await mkdir(file);
    const lost = job();
    const error = await store.save(lost).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpdaterError);
    expect((error as UpdaterError).code).toBe("unavailable");
    expect((error as Error).message).toContain(`cannot write state file ${file}: `);
    expect(await readdir(dir)).toEqual(["state.json"]);

    await rm(file, { recursive: true });
    const kept = job();
    await store.save(kept);
    expect(await fileJobs()).toEqual([kept]);
  });
});

describe("FileJobStore refuses a state file it cannot trust", () => {
  const valid = (): Record<string, unknown> => ({ ...job() });
  const cases: { name: string; text: () => string; says: string }[] = [
    { name: "truncated JSON", text: () => stateText([valid()]).slice(0, 120), says: "it is not valid JSON" },
    { name: "an empty file", text: () => "", says: "it is not valid JSON" },
    { name: "a JSON array", text: () => "[]\n", says: "it holds an array, not a JSON object" },
    {
      name: "a wrong schema",
      text: () => JSON.stringify({ schema: "someone-else/state", version: 1, jobs: [] }),
      says: 'its schema is "someone-else/state", expected "processgit-updater/state"',
    },
    {
      name: "no schema",
      text: () => JSON.stringify({ version: 1, jobs: [] }),
      says: "its schema is missing",
    },
    {
      name: "a newer version",
      text: () => JSON.stringify({ schema: STATE_SCHEMA, version: 2, jobs: [] }),
      says: "version 2 is newer than this updater understands (1)",
    },
    {
      name: "a version that is a string",
      text: () => JSON.stringify({ schema: STATE_SCHEMA, version: "1", jobs: [] }),
      says: 'its version is string "1"; this updater understands version 1',
    },
    {
      name: "jobs that are not an array",
      text: () => JSON.stringify({ schema: STATE_SCHEMA, version: 1, jobs: {} }),
      says: '"jobs" is an object, expected an array',
    },
    {
      name: "a job without an id",
      text: () => stateText([job(), { ...valid(), id: undefined }]),
      says: "jobs[1].id is missing, expected a string",
    },
    {
      name: "a job in an unknown state",
      text: () => stateText([{ ...valid(), state: "exploded" }]),
      says: 'jobs[0].state is string "exploded", expected one of planning, snapshotting',
    },
    {
      name: "a step with a bad status",
      text: () => {
        const j = job();
        return stateText([{ ...j, steps: [{ ...j.steps[0], status: "done" }] }]);
      },
      says: 'jobs[0].steps[0].status is string "done", expected one of running, succeeded, failed, skipped',
    },
    {
      name: "a revision that is a string",
      text: () => stateText([{ ...valid(), revision: "3" }]),
      says: 'jobs[0].revision is string "3", expected a non-negative integer',
    },
    {
      name: "a journal fact that is not a string",
      text: () => stateText([{ ...valid(), journal: { facts: { port: 8080 } } }]),
      says: "jobs[0].journal.facts.port is number 8080, expected a string",
    },
    {
      name: "a journal manifest with a bad field",
      text: () => {
        const image = { ...MANIFEST.image, platforms: "linux/amd64" };
        return stateText([{ ...valid(), journal: { facts: {}, manifest: { ...MANIFEST, image } } }]);
      },
      says: 'jobs[0].journal.manifest.image.platforms is string "linux/amd64", expected an array',
    },
    {
      name: "an unparseable createdAt",
      text: () => stateText([{ ...valid(), createdAt: "yesterday" }]),
      says: 'jobs[0].createdAt is string "yesterday", expected an ISO 8601 timestamp',
    },
    {
      name: "a job that is null",
      text: () => stateText([null]),
      says: "jobs[0] is null, expected an object",
    },
    {
      name: "two active jobs",
      text: () => stateText([activeJob(), job(), activeJob({ state: "migrating" })]),
      says: "it holds more than one active job",
    },
    {
      name: "a duplicated job id",
      text: () => {
        const j = job({ id: "11111111-1111-4111-8111-111111111111" });
        return stateText([j, job(), { ...j, revision: 4 }]);
      },
      says: "job 11111111-1111-4111-8111-111111111111 appears more than once",
    },
  ];

  it.each(cases)("refuses $name, naming the file, and never writes it", async ({ text, says }) => {
    await writeFile(file, text());
    const leftover = join(dir, "state.json.7.abcdef.tmp");
    await writeFile(leftover, "leftover");
    const bytes = await readFile(file);
    const { ino, mtimeMs } = await stat(file);
    const unchanged = async () => {
      expect(await readFile(file)).toEqual(bytes);
      expect(await stat(file)).toMatchObject({ ino, mtimeMs });
      expect((await readdir(dir)).sort()).toEqual(["state.json", "state.json.7.abcdef.tmp"]);
    };

    const store = new FileJobStore(dir);
    const error = await store.load().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateFileError);
    expect((error as StateFileError).path).toBe(file);
    const message = (error as Error).message;
    expect(message).toContain(`state file ${file} cannot be used: ${says}`);
    expect(message).toContain("left the file untouched");
    expect(message).toContain(`move it aside (e.g. mv ${file} ${file}.bad)`);
    expect(message).toContain("restore it from a backup");
    await unchanged();

    await expect(store.save(job())).rejects.toBeInstanceOf(StateFileError);
    await expect(store.save(job())).rejects.toThrow(`refusing to write: state file ${file} cannot be used`);
    await unchanged();

    await expect(new FileJobStore(dir).save(job())).rejects.toBeInstanceOf(StateFileError);
    await unchanged();
  });

  it("refuses a state file that cannot be read", async () => {
    await mkdir(file);
    const error = await new FileJobStore(dir).load().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateFileError);
    expect((error as Error).message).toContain(`state file ${file} cannot be used: it cannot be read (`);
    expect((await stat(file)).isDirectory()).toBe(true);
  });

  it("works again once the operator fixes the file and load() succeeds", async () => {
    await writeFile(file, "{ not json");
    const store = new FileJobStore(dir);
    await expect(store.load()).rejects.toBeInstanceOf(StateFileError);
    await expect(store.save(job())).rejects.toBeInstanceOf(StateFileError);
    await rm(file);
    expect(await store.load()).toEqual({ jobs: [] });
    const j = job();
    await store.save(j);
    expect(await fileJobs()).toEqual([j]);
  });
});

/**
 * The child loads the store, reports "ready", then saves the active job with revisions +1, +2, ...
 * and prints each revision once its save has resolved. Node strips the types of the .ts sources;
 * the resolve hook maps the sources' NodeNext `.js` specifiers to the `.ts` files next to them.
 */
const CRASH_CHILD = `
import { registerHooks } from "node:module";
registerHooks({
  resolve(specifier, context, nextResolve) {
    try {
      return nextResolve(specifier, context);
    } catch (err) {
      if (err?.code !== "ERR_MODULE_NOT_FOUND" || !specifier.startsWith(".") || !specifier.endsWith(".js")) throw err;
      return nextResolve(specifier.slice(0, -3) + ".ts", context);
    }
  },
});
const { FileJobStore } = await import(process.argv[2]);
const store = new FileJobStore(process.argv[3]);
const { jobs } = await store.load();
let job = jobs.find((j) => j.id === process.argv[4]);
if (!job) throw new Error("active job missing");
process.stdout.write("ready\\n");
for (;;) {
  job = { ...job, revision: job.revision + 1, updatedAt: new Date().toISOString() };
  await store.save(job);
  process.stdout.write(job.revision + "\\n");
}
`;

describe("FileJobStore survives SIGKILL", () => {
  it("always loads after a kill -9 mid-save, holding every revision reported durable", async () => {
    const storeUrl = new URL("../../src/store/file-job-store.ts", import.meta.url).href;
    const script = join(dir, "crash-child.mjs");
    await writeFile(script, CRASH_CHILD);
    const stateDir = join(dir, "state");
    const seed = new FileJobStore(stateDir);
    await seed.load();
    const output = "log line\n".repeat(500);
    for (let i = 0; i < HISTORY_LIMIT - 1; i++) {
      const j = job();
      await seed.save({ ...j, steps: [{ ...(j.steps[0] as Job["steps"][number]), output }] });
    }
    const active = activeJob({ revision: 1 });
    await seed.save(active);

    let lastDurable = 1;
    let totalReported = 0;
    for (let round = 0; round < 10; round++) {
      const child = spawn(process.execPath, [script, storeUrl, stateDir, active.id], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
      });
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
      });
      const closed = once(child, "close");
      const deadline = Date.now() + 15_000;
      while (!stdout.startsWith("ready\n")) {
        if (child.exitCode !== null || Date.now() > deadline)
          throw new Error(`child did not start: ${stderr}`);
        await sleep(5);
      }
      await sleep(randomInt(20, 201));
      child.kill("SIGKILL");
      const [code, signal] = await closed;
      expect({ code, signal, stderr }).toEqual({ code: null, signal: "SIGKILL", stderr: "" });

      const reported = stdout
        .split("\n")
        .slice(1, -1)
        .map((line) => Number(line));
      totalReported += reported.length;
      const lastReported = reported.at(-1) ?? lastDurable;
      expect(reported).toEqual(reported.map((_, i) => lastDurable + 1 + i));

      const { jobs } = await new FileJobStore(stateDir).load();
      expect(jobs).toHaveLength(HISTORY_LIMIT);
      const revision = jobs[0]?.id === active.id ? jobs[0].revision : undefined;
      // The save after the last reported one may have become durable before the kill; no later one can have started.
      expect(revision).toBeGreaterThanOrEqual(lastReported);
      expect(revision).toBeLessThanOrEqual(lastReported + 1);
      expect(await readdir(stateDir)).toEqual(["state.json"]);
      lastDurable = revision ?? lastDurable;
    }
    expect(totalReported).toBeGreaterThan(0);
  }, 120_000);
});
