/**
 * FileJobStore and the fields of issue 9: state files written before `acknowledgement` and
 * `dataRestore` existed load unchanged; the fields round-trip and are validated; the history bound
 * never drops a failed job that is not acknowledged.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StateFileError } from "../../src/errors.js";
import type { Job, JobState } from "../../src/orchestrator/job.js";
import { HISTORY_LIMIT } from "../../src/orchestrator/ports.js";
import { FileJobStore, STATE_SCHEMA, STATE_VERSION } from "../../src/store/file-job-store.js";

let dir: string;
let seq = 0;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "file-job-store-fields-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A terminal job as an updater before issue 9 wrote it (no acknowledgement, no dataRestore). */
function oldJob(state: JobState = "committed"): Job {
  seq += 1;
  const at = new Date(Date.UTC(2025, 0, 1) + seq * 60_000).toISOString();
  return {
    id: `00000000-0000-4000-8000-${String(seq).padStart(12, "0")}`,
    state,
    targetTag: `v1.${seq}.0`,
    createdAt: at,
    updatedAt: at,
    finishedAt: at,
    steps: [],
    allowDowngrade: false,
    revision: 3,
    recoveries: 0,
    journal: { facts: {} },
  };
}

async function writeState(jobs: unknown[]): Promise<void> {
  await writeFile(
    join(dir, "state.json"),
    `${JSON.stringify({ schema: STATE_SCHEMA, version: STATE_VERSION, jobs }, null, 2)}\n`,
  );
}

describe("FileJobStore: acknowledgement and dataRestore", () => {
  it("loads a state file written before the fields existed, as it is", async () => {
    const jobs = [oldJob("failed"), oldJob("rolled_back")].reverse();
    await writeState(jobs);
    const loaded = await new FileJobStore(dir).load();
    expect(loaded.jobs).toEqual(jobs);
    expect(loaded.jobs[1]?.acknowledgement).toBeUndefined();
    expect(loaded.jobs[0]?.dataRestore).toBeUndefined();
  });

  it("writes and reads both fields back", async () => {
    const store = new FileJobStore(dir);
    const job: Job = {
      ...oldJob("failed"),
      acknowledgement: { at: "2026-11-02T10:00:00.000Z", by: "ops", note: "restored mount-0 by hand" },
      dataRestore: {
        needed: true,
        snapshot: "snap-1",
        pointAt: "2026-11-02T09:00:00.000Z",
        discardedFrom: "2026-11-02T09:00:02.000Z",
        discardedUntil: "2026-11-02T09:01:00.000Z",
        done: false,
      },
    };
    await store.save(job);
    const text = JSON.parse(await readFile(join(dir, "state.json"), "utf8"));
    expect(text.jobs[0].acknowledgement).toEqual(job.acknowledgement);
    expect((await new FileJobStore(dir).load()).jobs).toEqual([job]);
  });

  it("refuses a file whose fields have the wrong shape, and says where", async () => {
    await writeState([{ ...oldJob("failed"), acknowledgement: { at: "yesterday", by: "ops", note: "" } }]);
    const err = await new FileJobStore(dir).load().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StateFileError);
    expect((err as Error).message).toContain("jobs[0].acknowledgement.at");
    await writeState([{ ...oldJob("rolled_back"), dataRestore: { needed: "yes", done: true } }]);
    const err2 = await new FileJobStore(dir).load().catch((e: unknown) => e);
    expect((err2 as Error).message).toContain("jobs[0].dataRestore.needed");
  });

  it("never prunes a failed job that is not acknowledged; prunes it once acknowledged", async () => {
    const store = new FileJobStore(dir);
    const failed = oldJob("failed");
    await store.save(failed);
    for (let i = 0; i < HISTORY_LIMIT + 5; i++) await store.save(oldJob("committed"));
    // The newer committed jobs made room for it: the oldest job is the failed one, still there.
    let jobs = (await new FileJobStore(dir).load()).jobs;
    expect(jobs).toHaveLength(HISTORY_LIMIT);
    expect(jobs.at(-1)?.id).toBe(failed.id);
    await store.save({ ...failed, acknowledgement: { at: failed.updatedAt, by: "", note: "" } });
    expect((await new FileJobStore(dir).load()).jobs.at(-1)?.acknowledgement).toBeDefined();
    await store.save(oldJob("committed"));
    jobs = (await new FileJobStore(dir).load()).jobs;
    expect(jobs).toHaveLength(HISTORY_LIMIT);
    expect(jobs.some((j) => j.id === failed.id)).toBe(false);
  });
});
