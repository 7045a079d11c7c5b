/**
 * JobRunner over in-memory fakes: one job at a time, the state machine end to end, persistence
 * before publication, watchers, history, reconciliation after a restart, and shutdown.
 */
import { createHash } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { UpdaterError } from "../../src/errors.js";
import { createLogger } from "../../src/log.js";
import {
  cloneJob,
  FORWARD_STATES,
  type Job,
  type JobError,
  type JobState,
  newJob,
  transition,
} from "../../src/orchestrator/job.js";
import { CLEANUP_STEP_TITLE, type JobRunner } from "../../src/orchestrator/runner.js";
import { validateManifest } from "../../src/verify/manifest.js";
import type { Verb } from "../fakes/fake-engine.js";
import { DIGEST_V2, MemoryReleaseSource, manifestFor, signatureFor } from "../fakes/fake-release.js";
import { MemoryJobStore } from "../fakes/memory-store.js";
import {
  collect,
  deferred,
  finished,
  type Harness,
  ManualClock,
  makeHarness,
  openHarness,
  savedStates,
  settle,
  testId,
  updaterError,
  waitFor,
  within,
} from "../helpers/runner-harness.js";

const MUTATING: readonly Verb[] = [
  "snapshot",
  "pull",
  "verifyImage",
  "migrate",
  "swap",
  "healthcheck",
  "commit",
  "rollback",
  "discard",
];
const PREVIOUS_DIGEST = `sha256:${"a".repeat(64)}`;
const STORED_ID = "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10";

/** Runners still open at the end of a test are shut down so that no timer or task outlives it. */
const open: JobRunner[] = [];
afterEach(async () => {
  for (const runner of open.splice(0)) await runner.shutdown(100);
});

async function harness(parts: Parameters<typeof makeHarness>[0] = {}): Promise<Harness> {
  const h = await openHarness(parts);
  open.push(h.runner);
  return h;
}

/** Starts an update to `tag` and watches it to its end. */
async function runJob(h: Harness, tag = "v2.0.0", allowDowngrade = false): Promise<Job> {
  const job = await h.runner.start({ tag, allowDowngrade });
  return finished(h.runner, job.id);
}

function stepsOf(job: Job): Array<[JobState, string, string]> {
  return job.steps.map((s) => [s.state, s.title, s.status]);
}

/** A job as a crashed updater left it: moved along `path` from planning, not finished. */
function storedJob(
  path: JobState[],
  options: { recoveries?: number; withManifest?: boolean; error?: JobError } = {},
): Job {
  const clock = new ManualClock("2026-11-01T08:00:00.000Z");
  let job = newJob({ id: STORED_ID, tag: "v2.0.0", allowDowngrade: false, now: clock.now() });
  for (const state of path) {
    job = transition(job, state, clock.now(), state === "rolling_back" ? options.error : undefined);
  }
  job.recoveries = options.recoveries ?? 0;
  job.previousImage = "registry.test/processgit:1.0.0";
  job.journal.intent = `about to ${path.at(-1)}`;
  if (options.withManifest) {
    job.journal.manifest = validateManifest(manifestFor("v2.0.0"), { tag: "v2.0.0", allowDowngrade: false });
  }
  return job;
}

/** An older job that ended long ago; reconciliation must leave it alone. */
function oldCommittedJob(): Job {
  const clock = new ManualClock("2026-10-01T08:00:00.000Z");
  let job = newJob({
    id: "11111111-2222-4333-8444-555555555555",
    tag: "v1.0.0",
    allowDowngrade: false,
    now: clock.now(),
  });
  for (const state of FORWARD_STATES.slice(1)) job = transition(job, state, clock.now());
  return job;
}

describe("start: one job at a time", () => {
  it("of 50 concurrent starts exactly one wins; the others are told which job is active", async () => {
    const h = await harness();
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => h.runner.start({ tag: "v2.0.0" })),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(49);
    const winner = (won[0] as PromiseFulfilledResult<Job>).value;
    expect(winner.id).toBe(testId(1));
    for (const err of lost) {
      expect(err).toBeInstanceOf(UpdaterError);
      expect((err as UpdaterError).code).toBe("already_exists");
      expect((err as UpdaterError).message).toContain(testId(1));
    }
    expect(h.runner.history()).toHaveLength(1);
    expect((await finished(h.runner, winner.id)).state).toBe("committed");
    // The slot is free again once the job has ended.
    const next = await h.runner.start({ tag: "v3.0.0" });
    expect(next.id).toBe(testId(2));
    expect((await finished(h.runner, next.id)).state).toBe("committed");
  });

  it("returns at once with the planning job; the work goes on in the background", async () => {
    const h = await harness();
    const gate = h.engine.gate("preflight");
    expect(h.runner.state).toBe("idle");
    const job = await within(h.runner.start({ tag: "v2.0.0" }), 1000, "start");
    expect(job).toMatchObject({
      id: testId(1),
      state: "planning",
      targetTag: "v2.0.0",
      allowDowngrade: false,
      revision: 1,
      recoveries: 0,
      steps: [],
    });
    await within(gate.reached, 2000, "preflight");
    expect(h.runner.state).toBe("busy");
    expect(h.runner.activeJob()?.id).toBe(job.id);
    expect(h.runner.get(job.id).steps.map((s) => s.title)).toContain("pre-flight checks");
    gate.open();
    expect((await finished(h.runner, job.id)).state).toBe("committed");
    expect(h.runner.state).toBe("idle");
    expect(h.runner.activeJob()).toBeUndefined();
  });

  it.each([
    ["", "tag is empty"],
    ["   ", "tag is empty"],
    ["v 1.0", "is malformed"],
    ["../x", "is malformed"],
    ["a".repeat(200), "is malformed"],
    ["a".repeat(129), "is malformed"],
    ["-rc1", "is malformed"],
    ["v1/2", "is malformed"],
    ["v1.0\n", "is malformed"],
  ])("refuses the tag %j and says what a tag looks like", async (tag, what) => {
    const h = await harness();
    const err = await updaterError(h.runner.start({ tag }));
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain(what);
    expect(err.message).toContain("e.g. v1.4.0");
    if (what === "is malformed") {
      expect(err.message).toContain("starts with a letter or digit");
      expect(err.message).toContain("at most 128 characters");
    }
    expect(h.runner.history()).toEqual([]);
    expect(h.store.saved).toEqual([]);
    expect(h.runner.state).toBe("idle");
  });

  it("accepts a 128-character tag (the release then is not found)", async () => {
    const h = await harness();
    const job = await h.runner.start({ tag: "a".repeat(128) });
    const end = await finished(h.runner, job.id);
    expect(end.state).toBe("aborted");
    expect(end.error?.message).toContain("not found");
  });

  it("when the store cannot record the new job: unavailable, and the slot is free again", async () => {
    const h = await harness();
    h.store.failWith = new Error("disk full");
    const err = await updaterError(h.runner.start({ tag: "v2.0.0" }));
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("disk full");
    expect(h.runner.activeJob()).toBeUndefined();
    expect(h.runner.history()).toEqual([]);
    expect(h.runner.state).toBe("idle");
    h.store.failWith = undefined;
    const job = await h.runner.start({ tag: "v2.0.0" });
    expect(job.id).toBe(testId(2));
    expect((await finished(h.runner, job.id)).state).toBe("committed");
    expect(h.runner.history().map((j) => j.id)).toEqual([testId(2)]);
  });

  it("refuses to start before open()", async () => {
    const h = makeHarness();
    const err = await updaterError(h.runner.start({ tag: "v2.0.0" }));
    expect(err.code).toBe("unavailable");
    expect(h.runner.state).toBe("starting");
  });
});

describe("the happy path", () => {
  it("goes through every state, records each step, and fills the job from the manifest and the engine", async () => {
    const h = await harness();
    h.engine.app = { ...h.engine.app, digest: PREVIOUS_DIGEST };
    h.engine.outputs.set("migrate", ["applying 0001_init\n", "applying 0002_users\n"]);
    const start = await h.runner.start({ tag: "v2.0.0" });
    const end = await finished(h.runner, start.id);

    expect(end.state).toBe("committed");
    expect(end.error).toBeUndefined();
    // finishedAt is the commit point; the cleanup step after it moves updatedAt on.
    expect(end.finishedAt).toBe(end.steps.at(-1)?.startedAt);
    expect(Date.parse(end.finishedAt ?? "")).toBeLessThan(Date.parse(end.updatedAt));
    expect(end).toMatchObject({
      targetTag: "v2.0.0",
      targetVersion: "2.0.0",
      targetImage: "registry.test/processgit:2.0.0",
      targetDigest: DIGEST_V2,
      previousImage: "registry.test/processgit:1.0.0",
      previousDigest: PREVIOUS_DIGEST,
      previousVersion: "1.0.0",
      recoveries: 0,
    });
    expect(end.verification).toEqual({
      policy: "key",
      keyFingerprint: "SHA256:fake",
      manifestSha256: createHash("sha256").update(manifestFor("v2.0.0")).digest("hex"),
    });
    expect(stepsOf(end)).toEqual([
      ["planning", "fetch release v2.0.0", "succeeded"],
      ["planning", "verify the release signature against the pinned signer policy", "succeeded"],
      ["planning", "read the running app", "succeeded"],
      ["planning", "validate release.json", "succeeded"],
      ["planning", "pre-flight checks", "succeeded"],
      ["snapshotting", "snapshot the app's data while it serves (bulk copy)", "succeeded"],
      ["pulling", `pull registry.test/processgit@${DIGEST_V2}`, "succeeded"],
      ["verifying", `confirm the pulled image is ${DIGEST_V2}`, "succeeded"],
      ["migrating", "run the migration", "succeeded"],
      ["swapping", "swap the app container to the new image", "succeeded"],
      ["healthchecking", "health verdict of the new container", "succeeded"],
      ["committed", CLEANUP_STEP_TITLE, "succeeded"],
    ]);
    for (const step of end.steps) {
      expect(step.endedAt).toBeDefined();
      expect(step.error).toBeUndefined();
    }
    const step = (title: string) => end.steps.find((s) => s.title.startsWith(title));
    expect(step("fetch release")?.output).toContain("downloaded release.json");
    expect(step("verify the release")?.output).toContain("signature verified (key): key SHA256:fake");
    expect(step("validate")?.output).toBe(
      `release v2.0.0: version 2.0.0, image registry.test/processgit@${DIGEST_V2}\n`,
    );
    expect(step("pull")?.progress).toEqual({ done: 100, total: 100, unit: "bytes" });
    expect(step("run the migration")?.output).toBe("applying 0001_init\napplying 0002_users\n");
    expect(end.journal.manifest?.version).toBe("2.0.0");
    expect(end.journal.facts).toMatchObject({
      "snapshot.started": "yes",
      "verdict.passed": "true",
      "commit.started": "yes",
    });
    expect(end.acknowledgement).toBeUndefined();
    expect(end.dataRestore).toBeUndefined();

    expect(h.engine.calls).toEqual([
      "preflight",
      "snapshot",
      "pull",
      "verifyImage",
      "migrate",
      "swap",
      "healthcheck",
      "commit",
    ]);
    // Every state reached the store, in order, and the store ends with what readers see.
    expect(savedStates(h.store, start.id)).toEqual([...FORWARD_STATES]);
    expect(h.store.saved[0]).toEqual(start);
    expect(h.store.jobs[0]).toEqual(h.runner.get(start.id));
    const revisions = h.store.saved.map((j) => j.revision);
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b));
  });

  it("records the migration as skipped when the release has none to run", async () => {
    const h = await harness();
    h.engine.migrationRuns = false;
    const end = await runJob(h);
    expect(end.state).toBe("committed");
    expect(end.steps.find((s) => s.state === "migrating")?.status).toBe("skipped");
    expect(end.steps.filter((s) => s.status === "skipped")).toHaveLength(1);
  });
});

describe("failures while planning: aborted, nothing touched", () => {
  async function plannedFailure(h: Harness, tag = "v2.0.0", allowDowngrade = false): Promise<Job> {
    const end = await runJob(h, tag, allowDowngrade);
    expect(end.state).toBe("aborted");
    expect(end.error?.failedIn).toBe("planning");
    expect(end.finishedAt).toBeDefined();
    expect(h.engine.calls.filter((v) => MUTATING.includes(v))).toEqual([]);
    expect(savedStates(h.store, end.id)).toEqual(["planning", "aborted"]);
    expect(end.steps.at(-1)?.status).toBe("failed");
    expect(end.steps.at(-1)?.error).toBe(end.error?.message);
    return end;
  }

  it("a release without its signature asset: RELEASE_ASSET_MISSING", async () => {
    const h = await harness({ source: new MemoryReleaseSource().add("v2.0.0", { signature: null }) });
    const end = await plannedFailure(h);
    expect(end.error?.reason).toBe("RELEASE_ASSET_MISSING");
    expect(end.error?.message).toContain("release.json.fake-sig");
    expect(end.steps.map((s) => s.title)).toEqual(["fetch release v2.0.0"]);
  });

  it("a tampered manifest: SIGNATURE_INVALID, nothing from it recorded", async () => {
    const original = manifestFor("v2.0.0");
    const tampered = manifestFor("v2.0.0", {
      image: { registry: "evil.test", repository: "processgit", tag: "2.0.0", digest: DIGEST_V2 },
    });
    const source = new MemoryReleaseSource().add("v2.0.0", {
      manifest: tampered,
      signature: signatureFor(original),
    });
    const h = await harness({ source });
    const end = await plannedFailure(h);
    expect(end.error?.reason).toBe("SIGNATURE_INVALID");
    expect(end.steps.at(-1)?.title).toBe("verify the release signature against the pinned signer policy");
    expect(end.verification).toBeUndefined();
    expect(end.targetImage).toBeUndefined();
    expect(end.targetDigest).toBeUndefined();
  });

  it("a manifest for another tag: MANIFEST_TAG_MISMATCH", async () => {
    const source = new MemoryReleaseSource().add("v2.0.1", { manifest: manifestFor("v2.0.0") });
    const h = await harness({ source });
    const end = await plannedFailure(h, "v2.0.1");
    expect(end.error?.reason).toBe("MANIFEST_TAG_MISMATCH");
    expect(end.steps.at(-1)?.title).toBe("validate release.json");
  });

  it("an older version than the one running: DOWNGRADE_REFUSED, unless allowed", async () => {
    const h = await harness();
    h.engine.app = { ...h.engine.app, image: "registry.test/processgit:3.0.0", version: "3.0.0" };
    const end = await plannedFailure(h);
    expect(end.error?.reason).toBe("DOWNGRADE_REFUSED");
    expect(end.error?.message).toContain("3.0.0");

    const allowed = await runJob(h, "v2.0.0", true);
    expect(allowed.state).toBe("committed");
    expect(allowed.allowDowngrade).toBe(true);
    expect(allowed.previousVersion).toBe("3.0.0");
    expect(allowed.targetVersion).toBe("2.0.0");
  });

  it("a pre-flight failure: PREFLIGHT_FAILED with the engine's message", async () => {
    const h = await harness();
    h.engine.failOn("preflight", "only 1 GiB free on /var/lib/docker, 5 GiB needed");
    const end = await plannedFailure(h);
    expect(end.error?.reason).toBe("PREFLIGHT_FAILED");
    expect(end.error?.message).toBe("only 1 GiB free on /var/lib/docker, 5 GiB needed");
    expect(end.steps.at(-1)?.title).toBe("pre-flight checks");
    expect(h.engine.calls).toEqual(["preflight"]);
    // Planning had read the manifest: what was learned stays on the record.
    expect(end.targetDigest).toBe(DIGEST_V2);
  });

  it("a pre-flight failure keeps the engine's own reason", async () => {
    const h = await harness();
    h.engine.failOn("preflight", "cannot reach the Docker engine", "ENGINE_UNAVAILABLE");
    const end = await plannedFailure(h);
    expect(end.error?.reason).toBe("ENGINE_UNAVAILABLE");
  });

  it("a release that does not exist, and a manifest over the size limit", async () => {
    const h = await harness({ options: { maxManifestBytes: 64 } });
    const missing = await plannedFailure(h, "v9.9.9");
    expect(missing.error?.message).toContain("release v9.9.9 not found");
    const big = await plannedFailure(h, "v2.0.0");
    expect(big.error?.reason).toBe("MANIFEST_TOO_LARGE");
    expect(big.error?.message).toMatch(
      /release v2\.0\.0's release.json is \d+ bytes; the updater accepts at most 64$/,
    );
    expect(big.verification).toBeUndefined();
  });
});

describe("failures after planning", () => {
  it.each<[Verb, JobState, string]>([
    ["snapshot", "snapshotting", "SNAPSHOT_FAILED"],
    ["pull", "pulling", "PULL_FAILED"],
    ["verifyImage", "verifying", "IMAGE_VERIFY_FAILED"],
  ])("%s fails: aborted in %s with %s, and the partial work discarded", async (verb, state, reason) => {
    const h = await harness();
    h.engine.failOn(verb, `${verb} went wrong`);
    const end = await runJob(h);
    expect(end.state).toBe("aborted");
    expect(end.error).toEqual({ reason, message: `${verb} went wrong`, failedIn: state });
    expect(h.engine.calls.at(-1)).toBe("discard");
    expect(h.engine.calls).not.toContain("rollback");
    expect(h.engine.calls).not.toContain("migrate");
    expect(h.engine.calls).not.toContain("swap");
    const path = FORWARD_STATES.slice(
      0,
      FORWARD_STATES.indexOf(state as (typeof FORWARD_STATES)[number]) + 1,
    );
    expect(savedStates(h.store, end.id)).toEqual([...path, "aborted"]);
    expect(end.steps.at(-1)).toMatchObject({ state, status: "failed", error: `${verb} went wrong` });
  });

  it.each<[Verb, JobState, string]>([
    ["migrate", "migrating", "MIGRATION_FAILED"],
    ["swap", "swapping", "SWAP_FAILED"],
    ["healthcheck", "healthchecking", "HEALTHCHECK_FAILED"],
  ])("%s fails: rolled back from %s, the reason %s kept", async (verb, state, reason) => {
    const h = await harness();
    h.engine.failOn(verb, `${verb} went wrong`);
    const end = await runJob(h);
    expect(end.state).toBe("rolled_back");
    expect(end.error).toEqual({ reason, message: `${verb} went wrong`, failedIn: state });
    expect(end.finishedAt).toBeDefined();
    expect(h.engine.calls.at(-1)).toBe("rollback");
    expect(h.engine.calls).not.toContain("discard");
    expect(h.engine.calls).not.toContain("commit");
    const path = FORWARD_STATES.slice(
      0,
      FORWARD_STATES.indexOf(state as (typeof FORWARD_STATES)[number]) + 1,
    );
    expect(savedStates(h.store, end.id)).toEqual([...path, "rolling_back", "rolled_back"]);
    expect(stepsOf(end).slice(-2)).toEqual([
      [state, end.steps.at(-2)?.title, "failed"],
      ["rolling_back", "roll back to the previous container and data", "succeeded"],
    ]);
  });

  it("keeps a reason the engine gives", async () => {
    const h = await harness();
    h.engine.failOn("healthcheck", "no answer on /healthz within 60 s", "HEALTH_TIMEOUT");
    const end = await runJob(h);
    expect(end.state).toBe("rolled_back");
    expect(end.error?.reason).toBe("HEALTH_TIMEOUT");
  });

  it("a failed cleanup after the commit leaves the update standing: committed, the cleanup step failed, CLEANUP_FAILED in the log", async () => {
    const lines: string[] = [];
    const h = await harness({ options: { log: createLogger("info", (line) => lines.push(line)) } });
    h.engine.failOn("commit", "cannot remove the previous container");
    const end = await runJob(h);
    expect(end.state).toBe("committed");
    expect(end.error).toBeUndefined();
    expect(end.steps.at(-1)).toMatchObject({
      state: "committed",
      title: CLEANUP_STEP_TITLE,
      status: "failed",
      error: "cannot remove the previous container",
    });
    expect(h.engine.calls).not.toContain("rollback");
    expect(h.engine.calls.at(-1)).toBe("commit");
    const warning = lines.map((l) => JSON.parse(l)).find((e) => e.reason === "CLEANUP_FAILED");
    expect(warning).toMatchObject({
      level: "warn",
      msg: "the update stands, but the cleanup after the commit failed",
      job: end.id,
      error: "cannot remove the previous container",
    });
  });

  it("a failing rollback ends failed with ROLLBACK_FAILED and the engine's manual steps", async () => {
    const h = await harness();
    const manual = "1. docker start processgit-previous\n2. restore snapshot snap-42";
    h.engine.failOn("healthcheck", "unhealthy");
    h.engine.failOn("rollback", "cannot start the previous container", undefined, manual);
    const end = await runJob(h);
    expect(end.state).toBe("failed");
    expect(end.error?.reason).toBe("ROLLBACK_FAILED");
    expect(end.error?.failedIn).toBe("rolling_back");
    expect(end.error?.manualSteps).toBe(manual);
    expect(end.error?.message).toContain("cannot start the previous container");
    expect(end.error?.message).toContain("HEALTHCHECK_FAILED: unhealthy");
    expect(savedStates(h.store, end.id)).toEqual([...FORWARD_STATES.slice(0, 7), "rolling_back", "failed"]);
    expect(end.steps.at(-1)).toMatchObject({ state: "rolling_back", status: "failed" });
  });

  it("a failing rollback without manual steps from the engine still tells a human what to do", async () => {
    const h = await harness();
    h.engine.failOn("swap", "swap failed");
    h.engine.failOn("rollback", "rollback failed");
    const end = await runJob(h);
    expect(end.state).toBe("failed");
    expect(end.error?.reason).toBe("ROLLBACK_FAILED");
    const steps = end.error?.manualSteps ?? "";
    expect(steps.split("\n").length).toBeGreaterThanOrEqual(3);
    expect(steps).toContain(end.id);
    expect(steps).toContain("registry.test/processgit:1.0.0");
    expect(steps).toContain("about to rollback");
  });
});

describe("persistence before publication", () => {
  it("a start that races a shutdown is refused, stays recorded in planning, and starts nothing", async () => {
    const h = await harness();
    const hold = deferred();
    h.store.hold = hold.promise;
    const starting = updaterError(h.runner.start({ tag: "v2.0.0" }));
    await settle();
    const stopping = h.runner.shutdown(1000);
    h.store.hold = undefined;
    hold.resolve();
    const err = await within(starting, 2000, "start");
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain(testId(1));
    await within(stopping, 2000, "shutdown");
    expect(h.engine.calls).toEqual([]);
    expect(h.store.jobs.map((j) => [j.id, j.state])).toEqual([[testId(1), "planning"]]);
  });

  it("the new job is visible only once it is stored; the slot is taken meanwhile", async () => {
    const h = await harness();
    const hold = deferred();
    h.store.hold = hold.promise;
    let started: Job | undefined;
    const starting = h.runner.start({ tag: "v2.0.0" }).then((j) => {
      started = j;
    });
    await settle();
    expect(started).toBeUndefined();
    expect((await updaterError(() => h.runner.get(testId(1)))).code).toBe("not_found");
    expect((await updaterError(h.runner.watch(testId(1)).next())).code).toBe("not_found");
    expect(h.runner.history()).toEqual([]);
    expect(h.runner.activeJob()).toBeUndefined();
    // A second caller waits until the first job is readable, then learns its id.
    let loserSettled = false;
    const loser = updaterError(h.runner.start({ tag: "v3.0.0" })).finally(() => {
      loserSettled = true;
    });
    await settle();
    expect(loserSettled).toBe(false);
    h.store.hold = undefined;
    hold.resolve();
    await within(starting, 2000, "start");
    expect(started?.id).toBe(testId(1));
    const refused = await within(loser, 2000, "the second start");
    expect(refused.code).toBe("already_exists");
    expect(refused.message).toContain(testId(1));
    expect(h.runner.get(testId(1)).id).toBe(testId(1));
    expect((await finished(h.runner, testId(1))).state).toBe("committed");
  });

  it("a step's end and a state change are seen by get() and watchers only after the save lands", async () => {
    const h = await harness();
    const gate = h.engine.gate("snapshot");
    const job = await h.runner.start({ tag: "v2.0.0" });
    const seen: Job[] = [];
    const watching = (async () => {
      for await (const j of h.runner.watch(job.id)) seen.push(j);
    })();
    await within(gate.reached, 2000, "snapshot");
    await waitFor(() => seen.some((j) => j.state === "snapshotting"), "the watcher to see snapshotting");
    const attempts: Job[] = [];
    const save = h.store.save.bind(h.store);
    vi.spyOn(h.store, "save").mockImplementation((j: Job) => {
      attempts.push(cloneJob(j));
      return save(j);
    });
    const snapshotStep = (j: Job) => j.steps.find((s) => s.state === "snapshotting");

    // 1. The end of the snapshot step is being saved, and held.
    const first = deferred();
    h.store.hold = first.promise;
    gate.open();
    await waitFor(() => attempts.some((j) => snapshotStep(j)?.status === "succeeded"), "the step-end save");
    await settle();
    expect(snapshotStep(h.runner.get(job.id))?.status).toBe("running");
    expect(seen.some((j) => snapshotStep(j)?.status === "succeeded")).toBe(false);
    expect(h.store.saved.some((j) => snapshotStep(j)?.status === "succeeded")).toBe(false);

    // 2. It lands; the move to pulling is being saved, and held.
    const second = deferred();
    h.store.hold = second.promise;
    first.resolve();
    await waitFor(() => attempts.some((j) => j.state === "pulling"), "the save of the move to pulling");
    await settle();
    expect(snapshotStep(h.runner.get(job.id))?.status).toBe("succeeded");
    expect(h.runner.get(job.id).state).toBe("snapshotting");
    expect(h.runner.activeJob()?.state).toBe("snapshotting");
    expect(h.runner.history()[0]?.state).toBe("snapshotting");
    expect(seen.some((j) => j.state === "pulling")).toBe(false);
    expect(h.store.saved.some((j) => j.state === "pulling")).toBe(false);

    // 3. It lands: now everyone sees pulling, and the job runs to its end.
    h.store.hold = undefined;
    second.resolve();
    await within(watching, 5000, "watch");
    expect(seen.some((j) => j.state === "pulling")).toBe(true);
    expect(seen.at(-1)?.state).toBe("committed");
    expect(savedStates(h.store, job.id)).toEqual([...FORWARD_STATES]);
  });
});

describe("step output is written within outputFlushMs", () => {
  function storedOutput(h: Harness, id: string, state: JobState): string | undefined {
    return h.store.jobs.find((j) => j.id === id)?.steps.find((s) => s.state === state)?.output;
  }

  it("while the step still runs", async () => {
    const h = await harness({ options: { outputFlushMs: 20 } });
    h.engine.outputs.set("snapshot", ["copied volume data\n"]);
    const gate = h.engine.gate("snapshot");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "snapshot");
    await waitFor(
      () => storedOutput(h, job.id, "snapshotting") === "copied volume data\n",
      "the flush",
      2000,
    );
    expect(h.store.jobs.find((j) => j.id === job.id)?.steps.at(-1)?.status).toBe("running");
    gate.open();
    expect((await finished(h.runner, job.id)).state).toBe("committed");
  });

  it("also for a job started right after one that wrote output at its end", async () => {
    // Long enough that the second job writes its output while the first job's flush is still due.
    const h = await harness({ options: { outputFlushMs: 200 } });
    h.engine.outputs.set("commit", ["removed the previous container\n"]);
    const first = await runJob(h);
    expect(first.steps.at(-1)?.output).toBe("removed the previous container\n");
    h.engine.outputs.clear();
    h.engine.outputs.set("snapshot", ["copied volume data\n"]);
    const gate = h.engine.gate("snapshot");
    const job = await h.runner.start({ tag: "v3.0.0" });
    await within(gate.reached, 2000, "snapshot");
    await waitFor(
      () => storedOutput(h, job.id, "snapshotting") === "copied volume data\n",
      "the flush",
      2000,
    );
    gate.open();
    expect((await finished(h.runner, job.id)).state).toBe("committed");
  });
});

describe("watch", () => {
  it("yields the current snapshot, then every change in order, and ends after the terminal one", async () => {
    const h = await harness();
    const job = await h.runner.start({ tag: "v2.0.0" });
    const seen = await collect(h.runner.watch(job.id));
    expect(seen[0]?.state).toBe("planning");
    expect(seen.at(-1)?.state).toBe("committed");
    expect(seen.at(-1)).toEqual(h.runner.get(job.id));
    for (let i = 1; i < seen.length; i++) {
      expect(seen[i]?.revision).toBeGreaterThan(seen[i - 1]?.revision ?? Number.POSITIVE_INFINITY);
    }
    const states = seen.map((j) => j.state).filter((s, i, all) => all[i - 1] !== s);
    // An attentive watcher misses no state.
    expect(states).toEqual([...FORWARD_STATES]);
    expect(h.runner.watchers).toBe(0);
  });

  it("streams step output and progress while the step still runs", async () => {
    const h = await harness();
    h.engine.outputs.set("pull", ["layer 1/2 done\n", "layer 2/2 done\n"]);
    const gate = h.engine.gate("pull");
    const job = await h.runner.start({ tag: "v2.0.0" });
    const seen: Job[] = [];
    const watching = (async () => {
      for await (const j of h.runner.watch(job.id)) seen.push(j);
    })();
    await within(gate.reached, 2000, "pull");
    const pullStep = (j: Job) => j.steps.find((s) => s.state === "pulling");
    await waitFor(
      () => seen.some((j) => pullStep(j)?.output === "layer 1/2 done\nlayer 2/2 done\n"),
      "the pull output to reach the watcher",
    );
    const live = seen.find((j) => pullStep(j)?.output === "layer 1/2 done\nlayer 2/2 done\n");
    expect(live?.state).toBe("pulling");
    expect(pullStep(live as Job)?.status).toBe("running");
    expect(pullStep(live as Job)?.progress).toEqual({ done: 100, total: 100, unit: "bytes" });
    expect(seen.some((j) => pullStep(j)?.progress?.done === 50 || pullStep(j)?.progress?.done === 100)).toBe(
      true,
    );
    gate.open();
    await within(watching, 5000, "watch");
    expect(seen.at(-1)?.state).toBe("committed");
  });

  it("a watcher that stops reading never holds the job back, and then gets the latest snapshot", async () => {
    const h = await harness();
    const gate = h.engine.gate("preflight");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "preflight");
    const slow = h.runner.watch(job.id);
    const first = await slow.next();
    expect(first.done).toBe(false);
    expect((first.value as Job).state).toBe("planning");
    const neverRead = h.runner.watch(job.id);

    gate.open();
    const end = await finished(h.runner, job.id);
    expect(end.state).toBe("committed");
    expect(h.store.saved.filter((j) => j.id === job.id).length).toBeGreaterThan(10);

    const second = await within(slow.next(), 1000, "slow watcher");
    expect(second.done).toBe(false);
    expect(second.value).toEqual(end);
    expect((second.value as Job).revision).toBeGreaterThan((first.value as Job).revision);
    expect((await slow.next()).done).toBe(true);

    const late = await collect(neverRead);
    expect(late).toEqual([end]);
    expect(h.runner.watchers).toBe(0);
  });

  it("a finished job yields one snapshot and ends", async () => {
    const h = await harness();
    const end = await runJob(h);
    expect(await collect(h.runner.watch(end.id))).toEqual([end]);
  });

  it("refuses an unknown id with not_found and a malformed one with invalid_argument", async () => {
    const h = await harness();
    const unknown = await updaterError(h.runner.watch(testId(99)).next());
    expect(unknown.code).toBe("not_found");
    expect(unknown.message).toContain(testId(99));
    for (const bad of ["", "nope", STORED_ID.toUpperCase(), `${testId(1)}x`, "../../etc/passwd"]) {
      expect((await updaterError(h.runner.watch(bad).next())).code).toBe("invalid_argument");
      expect((await updaterError(() => h.runner.get(bad))).code).toBe("invalid_argument");
    }
    expect((await updaterError(() => h.runner.get(testId(99)))).code).toBe("not_found");
    expect(h.runner.watchers).toBe(0);
  });

  it("ends quietly when the caller's signal aborts", async () => {
    const h = await harness();
    const gate = h.engine.gate("snapshot");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "snapshot");
    const abort = new AbortController();
    const seen: Job[] = [];
    const watching = (async () => {
      for await (const j of h.runner.watch(job.id, abort.signal)) seen.push(j);
    })();
    await waitFor(() => seen.length > 0, "the first snapshot");
    expect(h.runner.watchers).toBe(1);
    abort.abort();
    await within(watching, 1000, "aborted watch");
    expect(h.runner.watchers).toBe(0);
    gate.open();
    expect((await finished(h.runner, job.id)).state).toBe("committed");
  });
});

describe("readers get copies", () => {
  function vandalize(job: Job | undefined): void {
    if (!job) throw new Error("nothing to vandalize");
    job.state = "committed";
    job.targetTag = "v6.6.6";
    job.steps.length = 0;
    job.steps.push({ state: "planning", title: "injected", status: "failed", startedAt: "", output: "" });
    job.journal.facts.injected = "yes";
    job.revision = 10_000;
  }

  it("mutating what start, get, history, activeJob and watch return changes nothing", async () => {
    const h = await harness();
    h.engine.outputs.set("pull", ["layer 1/1\n"]);
    const gate = h.engine.gate("pull");
    const started = await h.runner.start({ tag: "v2.0.0" });
    vandalize(started);
    const watch = h.runner.watch(testId(1));
    // The first snapshot (the current one) and a later one (a change the watch was sent).
    vandalize((await watch.next()).value as Job);
    await within(gate.reached, 2000, "pull");
    await waitFor(() => h.runner.get(testId(1)).steps.at(-1)?.output === "layer 1/1\n", "the pull output");
    const before = h.runner.get(testId(1));
    expect(before.state).toBe("pulling");
    const later = (await watch.next()).value as Job;
    expect(later).toEqual(before);
    vandalize(later);
    vandalize(h.runner.get(testId(1)));
    vandalize(h.runner.history()[0]);
    vandalize(h.runner.activeJob());
    expect(h.runner.get(testId(1))).toEqual(before);
    expect(h.runner.activeJob()).toEqual(before);
    expect(h.runner.history()).toEqual([before]);
    gate.open();
    const rest: Job[] = [];
    for await (const j of watch) rest.push(j);
    const end = rest.at(-1);
    expect(end?.state).toBe("committed");
    expect(end?.targetTag).toBe("v2.0.0");
    expect(end?.steps.some((s) => s.title === "injected")).toBe(false);
    expect(end?.journal.facts.injected).toBeUndefined();
    expect(h.store.jobs[0]).toEqual(end);
  });
});

describe("history and counts", () => {
  it("keeps the last 50 jobs, newest first, and limit picks the newest", async () => {
    const h = await harness();
    for (let i = 0; i < 55; i++) expect((await runJob(h)).state).toBe("committed");
    const all = h.runner.history();
    expect(all).toHaveLength(50);
    expect(all.map((j) => j.id)).toEqual(Array.from({ length: 50 }, (_, i) => testId(55 - i)));
    expect(h.runner.history(0)).toHaveLength(50);
    expect(h.runner.history(3).map((j) => j.id)).toEqual([testId(55), testId(54), testId(53)]);
    expect(h.runner.history(500)).toHaveLength(50);
    expect((await updaterError(() => h.runner.get(testId(5)))).code).toBe("not_found");
    expect(h.runner.get(testId(6)).state).toBe("committed");
    const counts = h.runner.counts();
    expect(counts).toEqual({
      total: 50,
      committed: 50,
      rolledBack: 0,
      failed: 0,
      aborted: 0,
      lastCommittedAt: h.runner.get(testId(55)).finishedAt,
    });
    // The store kept the same 50, and a restarted runner sees them.
    expect(h.store.jobs.map((j) => j.id)).toEqual(all.map((j) => j.id));
    const again = await harness({ store: h.store });
    expect(again.runner.history()).toEqual(all);
  });

  it("counts each outcome", async () => {
    const h = await harness();
    expect(h.runner.counts()).toEqual({ total: 0, committed: 0, rolledBack: 0, failed: 0, aborted: 0 });
    const committed = await runJob(h);
    h.engine.failOn("pull");
    expect((await runJob(h)).state).toBe("aborted");
    h.engine.failures.clear();
    h.engine.failOn("swap");
    expect((await runJob(h)).state).toBe("rolled_back");
    h.engine.failOn("rollback");
    const failed = await runJob(h);
    expect(failed.state).toBe("failed");
    await h.runner.acknowledge(failed.id, { note: "restored by hand" });
    h.engine.failures.clear();
    h.engine.failOn("snapshot");
    expect((await runJob(h)).state).toBe("aborted");
    expect(h.runner.counts()).toEqual({
      total: 5,
      committed: 1,
      rolledBack: 1,
      failed: 1,
      aborted: 2,
      lastCommittedAt: committed.finishedAt,
    });
    expect(h.runner.history().map((j) => j.state)).toEqual([
      "aborted",
      "failed",
      "rolled_back",
      "aborted",
      "committed",
    ]);
  });
});

describe("reconciliation of a job left active by a restart", () => {
  it("a job interrupted while pulling is aborted with INTERRUPTED; recoveries counted and stored", async () => {
    const old = oldCommittedJob();
    const store = new MemoryJobStore([storedJob(["snapshotting", "pulling"]), old]);
    const h = await harness({ store });
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("aborted");
    expect(end.error).toEqual({
      reason: "INTERRUPTED",
      message: "the updater restarted while the job was pulling; nothing had changed yet",
      failedIn: "pulling",
    });
    expect(end.recoveries).toBe(1);
    expect(h.engine.calls).toEqual([]);
    expect(savedStates(store, STORED_ID)).toEqual(["pulling", "aborted"]);
    expect(store.saved[0]).toMatchObject({ state: "pulling", recoveries: 1 });
    expect(store.jobs.find((j) => j.id === STORED_ID)).toEqual(end);
    expect(h.runner.get(old.id)).toEqual(old);
    expect(store.saved.some((j) => j.id === old.id)).toBe(false);
    expect(h.runner.state).toBe("idle");
  });

  it("closes the step the restart interrupted, so no finished job shows a step still running", async () => {
    const stuck = storedJob(["snapshotting", "pulling"]);
    stuck.steps.push({
      state: "pulling",
      title: "pull",
      status: "running",
      startedAt: stuck.updatedAt,
      output: "50%",
    });
    const store = new MemoryJobStore([stuck]);
    const h = await harness({ store });
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("aborted");
    expect(end.steps).toEqual([
      expect.objectContaining({
        title: "pull",
        status: "failed",
        error: "interrupted: the updater stopped while this step ran",
        endedAt: expect.any(String),
        output: "50%",
      }),
    ]);
  });

  it("discards the partial work when the journal holds the manifest", async () => {
    const store = new MemoryJobStore([storedJob(["snapshotting", "pulling"], { withManifest: true })]);
    const h = await harness({ store });
    expect(h.runner.get(STORED_ID).state).toBe("aborted");
    expect(h.engine.calls).toEqual(["discard"]);
  });

  it.each<[string, JobState[]]>([
    ["migrating", ["snapshotting", "pulling", "verifying", "migrating"]],
    ["swapping", ["snapshotting", "pulling", "verifying", "migrating", "swapping"]],
    ["healthchecking", ["snapshotting", "pulling", "verifying", "migrating", "swapping", "healthchecking"]],
  ])("a job interrupted while %s is rolled back", async (state, path) => {
    const store = new MemoryJobStore([storedJob(path, { withManifest: true })]);
    const h = await harness({ store });
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("rolled_back");
    expect(end.error).toEqual({
      reason: "INTERRUPTED",
      message: `the updater restarted while the job was ${state}`,
      failedIn: state,
    });
    expect(end.recoveries).toBe(1);
    expect(h.engine.calls).toEqual(["rollback"]);
    expect(savedStates(store, STORED_ID)).toEqual([state, "rolling_back", "rolled_back"]);
    expect(end.steps.at(-1)).toMatchObject({ state: "rolling_back", status: "succeeded" });
  });

  it("a job interrupted while rolling back is rolled back again, its first error kept", async () => {
    const error: JobError = { reason: "SWAP_FAILED", message: "swap failed", failedIn: "swapping" };
    const store = new MemoryJobStore([
      storedJob(["snapshotting", "pulling", "verifying", "migrating", "swapping", "rolling_back"], { error }),
    ]);
    const h = await harness({ store });
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("rolled_back");
    expect(end.error).toEqual(error);
    expect(h.engine.calls).toEqual(["rollback"]);
  });

  it("a failing rollback during reconciliation ends failed with manual steps", async () => {
    const store = new MemoryJobStore([storedJob(["snapshotting", "pulling", "verifying", "migrating"])]);
    const h = makeHarness({ store });
    open.push(h.runner);
    h.engine.failOn("rollback", "volume restore failed", undefined, "1. restore the volume by hand");
    await h.runner.open();
    await within(h.runner.reconciled, 5000, "reconciliation");
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("failed");
    expect(end.error?.reason).toBe("ROLLBACK_FAILED");
    expect(end.error?.manualSteps).toBe("1. restore the volume by hand");
    expect(end.error?.message).toContain("INTERRUPTED");
  });

  it("refuses start while reconciling, and accepts it once reconciled", async () => {
    const store = new MemoryJobStore([
      storedJob(["snapshotting", "pulling", "verifying", "migrating", "swapping"]),
    ]);
    const h = makeHarness({ store });
    open.push(h.runner);
    const gate = h.engine.gate("rollback");
    await h.runner.open();
    expect(h.runner.state).toBe("reconciling");
    await within(gate.reached, 2000, "rollback");
    const err = await updaterError(h.runner.start({ tag: "v2.0.0" }));
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain(STORED_ID);
    expect(h.runner.activeJob()?.id).toBe(STORED_ID);
    expect(h.runner.get(STORED_ID).state).toBe("rolling_back");
    gate.open();
    await within(h.runner.reconciled, 2000, "reconciliation");
    expect(h.runner.state).toBe("idle");
    expect(h.runner.get(STORED_ID).state).toBe("rolled_back");
    const job = await h.runner.start({ tag: "v2.0.0" });
    expect(job.id).toBe(testId(1));
    expect((await finished(h.runner, job.id)).state).toBe("committed");
    expect(h.runner.history().map((j) => j.id)).toEqual([testId(1), STORED_ID]);
  });

  it("stops a restart loop: at maxRecoveries the job fails with RECOVERY_LOOP, no rollback tried", async () => {
    const store = new MemoryJobStore([
      storedJob(["snapshotting", "pulling", "verifying", "migrating"], { recoveries: 3, withManifest: true }),
    ]);
    const h = await harness({ store });
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("failed");
    expect(end.error?.reason).toBe("RECOVERY_LOOP");
    expect(end.error?.failedIn).toBe("migrating");
    expect(end.error?.message).toContain("4 times");
    expect(end.error?.manualSteps).toContain(STORED_ID);
    expect(end.error?.manualSteps).toContain("about to migrating");
    expect(end.recoveries).toBe(4);
    expect(h.engine.calls).toEqual([]);
    expect(store.jobs[0]).toEqual(end);
  });

  it("still recovers one restart below the limit", async () => {
    const store = new MemoryJobStore([
      storedJob(["snapshotting", "pulling", "verifying", "migrating"], { recoveries: 2 }),
    ]);
    const h = await harness({ store });
    expect(h.runner.get(STORED_ID)).toMatchObject({ state: "rolled_back", recoveries: 3 });
    expect(h.engine.calls).toEqual(["rollback"]);
  });

  it("honours a configured maxRecoveries", async () => {
    const store = new MemoryJobStore([storedJob(["snapshotting", "pulling"], { recoveries: 1 })]);
    const h = await harness({ store, options: { maxRecoveries: 1 } });
    expect(h.runner.get(STORED_ID).error?.reason).toBe("RECOVERY_LOOP");
  });

  it("a store with only finished jobs needs no reconciliation", async () => {
    const old = oldCommittedJob();
    const store = new MemoryJobStore([old]);
    const h = await harness({ store });
    expect(h.runner.state).toBe("idle");
    expect(store.saved).toEqual([]);
    expect(h.runner.history()).toEqual([old]);
  });
});

describe("shutdown", () => {
  it("leaves a running job for the next start, ends every watcher with unavailable, refuses new jobs", async () => {
    const h = await harness();
    const gate = h.engine.gate("pull");
    const job = await h.runner.start({ tag: "v2.0.0" });
    const outcomes = [h.runner.watch(job.id), h.runner.watch(job.id)].map(async (w) => {
      try {
        for await (const _ of w) {
          // keep reading
        }
        return "ended without error";
      } catch (err) {
        return err;
      }
    });
    await within(gate.reached, 2000, "pull");
    await waitFor(() => h.runner.watchers === 2, "two watchers");

    await within(h.runner.shutdown(), 2000, "shutdown");
    for (const outcome of await Promise.all(outcomes)) {
      expect(outcome).toBeInstanceOf(UpdaterError);
      expect((outcome as UpdaterError).code).toBe("unavailable");
    }
    expect(h.runner.watchers).toBe(0);
    expect(h.runner.state).toBe("stopping");
    expect(h.runner.activeJob()).toBeUndefined();

    const stored = h.store.jobs.find((j) => j.id === job.id);
    expect(stored?.state).toBe("pulling");
    expect(h.store.saved.some((j) => j.id === job.id && j.state === "aborted")).toBe(false);
    expect(h.engine.calls).not.toContain("discard");
    expect(h.engine.calls).not.toContain("rollback");
    expect(stored?.steps.at(-1)?.status).toBe("running");

    expect((await updaterError(h.runner.start({ tag: "v3.0.0" }))).code).toBe("unavailable");
    const late = h.runner.watch(job.id);
    expect(((await late.next()).value as Job).state).toBe("pulling");
    expect((await updaterError(late.next())).code).toBe("unavailable");
    await h.runner.shutdown();

    // The next updater reconciles it from the journal.
    const next = await harness({ store: h.store });
    const end = next.runner.get(job.id);
    expect(end.state).toBe("aborted");
    expect(end.error?.reason).toBe("INTERRUPTED");
    expect(end.recoveries).toBe(1);
    expect(next.engine.calls).toEqual(["discard"]);
  });

  it("a rollback in progress gets the grace period to finish: the job ends rolled_back", async () => {
    const h = await harness();
    h.engine.failOn("healthcheck", "the new container never got healthy", "HEALTHCHECK_FAILED");
    const gate = h.engine.gate("rollback");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "rollback");
    const stopping = h.runner.shutdown(2000);
    setTimeout(gate.open, 50);
    await within(stopping, 3000, "shutdown");
    const stored = h.store.jobs.find((j) => j.id === job.id);
    expect(stored?.state).toBe("rolled_back");
    expect(stored?.error?.reason).toBe("HEALTHCHECK_FAILED");
  });

  it("a rollback that outlasts the grace period is stopped and left for the next start", async () => {
    const h = await harness();
    h.engine.failOn("healthcheck", "the new container never got healthy", "HEALTHCHECK_FAILED");
    const gate = h.engine.gate("rollback");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "rollback");
    await within(h.runner.shutdown(100), 2000, "shutdown");
    expect(h.store.jobs.find((j) => j.id === job.id)?.state).toBe("rolling_back");
    const next = await harness({ store: h.store });
    const end = await finished(next.runner, job.id);
    expect(end.state).toBe("rolled_back");
    expect(next.engine.calls).toContain("rollback");
  });

  it("with no job running, resolves at once and refuses new jobs", async () => {
    const h = await harness();
    await within(h.runner.shutdown(), 1000, "shutdown");
    const err = await updaterError(h.runner.start({ tag: "v2.0.0" }));
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("shutting down");
  });
});

describe("logs", () => {
  it("one JSON line per event: job id, state and step with its duration, never the token or a secret", async () => {
    const lines: string[] = [];
    const h = await openHarness({ options: { log: createLogger("info", (line) => lines.push(line)) } });
    const job = await h.runner.start({ tag: "v2.0.0" });
    expect((await finished(h.runner, job.id)).state).toBe("committed");
    const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.every((l) => l.endsWith("\n") && !l.slice(0, -1).includes("\n"))).toBe(true);
    const steps = events.filter((e) => e.msg === "step ended");
    expect(steps.length).toBeGreaterThanOrEqual(7);
    for (const e of steps) {
      expect(e).toMatchObject({ job: job.id, status: expect.stringMatching(/^(succeeded|skipped)$/) });
      expect(typeof e.state).toBe("string");
      expect(typeof e.step).toBe("string");
      expect(e.duration_ms).toBeGreaterThanOrEqual(0);
    }
    expect(steps.map((e) => e.state)).toEqual(
      expect.arrayContaining(["planning", "snapshotting", "pulling", "swapping", "healthchecking"]),
    );
    expect(events.filter((e) => e.msg === "job state").map((e) => e.state)).toContain("committed");
  });
});

describe("the commit point: committed on disk before the cleanup", () => {
  it("saves committed before engine.commit runs; watchers get it once the cleanup step ended; the slot is held until then", async () => {
    const h = await harness();
    h.engine.outputs.set("commit", ["removed the previous container abc123\n"]);
    const gate = h.engine.gate("commit");
    const job = await h.runner.start({ tag: "v2.0.0" });
    const seen: Job[] = [];
    const watching = (async () => {
      for await (const j of h.runner.watch(job.id)) seen.push(j);
    })();
    await within(gate.reached, 2000, "commit");
    // On disk and readable: committed, the verdict journaled, the cleanup step running.
    const stored = h.store.jobs.find((j) => j.id === job.id);
    expect(stored?.state).toBe("committed");
    expect(stored?.journal.facts["verdict.passed"]).toBe("true");
    expect(stored?.steps.at(-1)).toMatchObject({ state: "committed", title: CLEANUP_STEP_TITLE });
    expect(h.runner.get(job.id).state).toBe("committed");
    expect(h.runner.counts().committed).toBe(1);
    // The first save in state committed already holds the running cleanup step.
    const firstCommitted = h.store.saved.find((j) => j.id === job.id && j.state === "committed");
    expect(firstCommitted?.steps.at(-1)).toMatchObject({ title: CLEANUP_STEP_TITLE, status: "running" });
    expect(firstCommitted?.finishedAt).toBeDefined();
    // Watchers have not been sent the terminal snapshot yet (it would end their watch).
    await settle();
    expect(seen.some((j) => j.state === "committed")).toBe(false);
    // The slot stays taken during the cleanup, with a message that says so.
    const busy = await updaterError(h.runner.start({ tag: "v3.0.0" }));
    expect(busy.code).toBe("already_exists");
    expect(busy.message).toContain(`${job.id} (to v2.0.0) has committed and is cleaning up`);
    expect(h.runner.state).toBe("busy");
    gate.open();
    await within(watching, 2000, "watch");
    const last = seen.at(-1) as Job;
    expect(last.state).toBe("committed");
    expect(last.steps.at(-1)).toMatchObject({
      title: CLEANUP_STEP_TITLE,
      status: "succeeded",
      output: "removed the previous container abc123\n",
    });
    // No snapshot a watcher got shows a committed job with a step still running.
    expect(seen.filter((j) => j.state === "committed")).toEqual([last]);
    expect(last).toEqual(h.runner.get(job.id));
    expect(h.runner.state).toBe("idle");
  });

  it("when the adapter did not journal the verdict, the runner does, before the commit", async () => {
    const h = await harness();
    h.engine.journalsVerdict = false;
    const gate = h.engine.gate("commit");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "commit");
    const healthEnd = h.store.saved.find(
      (j) => j.id === job.id && j.steps.some((s) => s.state === "healthchecking" && s.status === "succeeded"),
    );
    expect(healthEnd?.journal.facts["verdict.passed"]).toBe("true");
    expect(healthEnd?.state).toBe("healthchecking");
    gate.open();
    expect((await finished(h.runner, job.id)).state).toBe("committed");
  });

  it("a failed health verdict journals no verdict and rolls back", async () => {
    const h = await harness();
    h.engine.failOn("healthcheck", "unhealthy");
    const end = await runJob(h);
    expect(end.state).toBe("rolled_back");
    expect(end.journal.facts["verdict.passed"]).toBeUndefined();
  });

  it("when the commit cannot be saved at first, the job still commits: forward, never back", async () => {
    const store = new (class extends MemoryJobStore {
      refusals = 1;
      override async save(job: Job): Promise<void> {
        if (job.state === "committed" && this.refusals > 0) {
          this.refusals -= 1;
          throw new Error("disk hiccup");
        }
        return super.save(job);
      }
    })();
    const h = await harness({ store });
    const end = await runJob(h);
    expect(end.state).toBe("committed");
    expect(end.error).toBeUndefined();
    expect(h.engine.calls).not.toContain("rollback");
    expect(h.engine.calls.at(-1)).toBe("commit");
    expect(savedStates(store, end.id)).toEqual([...FORWARD_STATES]);
  });

  it("when the commit can never be saved, nothing is rolled back and the slot stays taken for a restart to roll forward", async () => {
    const store = new (class extends MemoryJobStore {
      override async save(job: Job): Promise<void> {
        if (job.state === "committed") throw new Error("disk full");
        return super.save(job);
      }
    })();
    const h = await harness({ store });
    const job = await h.runner.start({ tag: "v2.0.0" });
    await waitFor(() => h.engine.calls.includes("healthcheck"), "the health verdict");
    await settle(50);
    expect(h.engine.calls).not.toContain("rollback");
    expect(h.engine.calls).not.toContain("commit");
    expect(h.runner.get(job.id).state).toBe("healthchecking");
    expect(h.runner.state).toBe("busy");
    await h.runner.shutdown(100);
    // The next start finds the verdict in the journal and commits.
    const fixed = new MemoryJobStore(store.jobs);
    const next = await harness({ store: fixed });
    expect(next.runner.get(job.id)).toMatchObject({ state: "committed", recoveries: 1 });
    expect(next.engine.calls).toEqual(["commit"]);
  });

  it("a shutdown during the cleanup leaves the job committed; the next start closes the step and runs the cleanup again before anything else", async () => {
    const h = await harness();
    const gate = h.engine.gate("commit");
    const job = await h.runner.start({ tag: "v2.0.0" });
    await within(gate.reached, 2000, "commit");
    await within(h.runner.shutdown(100), 2000, "shutdown");
    const stored = h.store.jobs.find((j) => j.id === job.id);
    expect(stored?.state).toBe("committed");
    expect(stored?.steps.at(-1)).toMatchObject({ title: CLEANUP_STEP_TITLE, status: "running" });

    const lines: string[] = [];
    const next = makeHarness({
      store: h.store,
      options: { log: createLogger("info", (line) => lines.push(line)) },
    });
    await next.runner.open();
    // Until the cleanup ran again, no update starts.
    expect(next.runner.state).toBe("reconciling");
    await next.runner.reconciled;
    const end = next.runner.get(job.id);
    expect(end.state).toBe("committed");
    expect(end.recoveries).toBe(0);
    expect(end.steps.at(-2)).toMatchObject({ title: CLEANUP_STEP_TITLE, status: "failed" });
    expect(end.steps.at(-2)?.error).toContain("it runs again at the next start");
    expect(end.steps.at(-1)).toMatchObject({
      title: `${CLEANUP_STEP_TITLE} (again, after a restart)`,
      status: "succeeded",
    });
    expect(end.steps.every((s) => s.status !== "running")).toBe(true);
    expect(next.engine.calls).toEqual(["commit"]);
    expect(next.runner.state).toBe("idle");
    const info = lines
      .map((l) => JSON.parse(l))
      .find((e) => e.job === job.id && e.msg?.includes("run again"));
    expect(info).toBeDefined();
    // And it does not block the next update.
    expect((await finished(next.runner, (await next.runner.start({ tag: "v3.0.0" })).id)).state).toBe(
      "committed",
    );
  });
});

/** A job a crash left in healthchecking after the engine journaled `verdict.passed`. */
function verdictPassedJob(recoveries = 0): Job {
  const job = storedJob(["snapshotting", "pulling", "verifying", "migrating", "swapping", "healthchecking"], {
    withManifest: true,
    recoveries,
  });
  job.steps.push({
    state: "healthchecking",
    title: "health verdict of the new container",
    status: "running",
    startedAt: job.updatedAt,
    output: "the new container: healthy for 30 s\n",
  });
  job.journal.facts["verdict.passed"] = "true";
  job.journal.intent = "health verdict passed";
  return job;
}

describe("reconciliation after a passed verdict: forward, never back", () => {
  it("a restart after verdict.passed commits the job and runs the cleanup; no rollback", async () => {
    const lines: string[] = [];
    const store = new MemoryJobStore([verdictPassedJob()]);
    const h = await harness({ store, options: { log: createLogger("info", (line) => lines.push(line)) } });
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("committed");
    expect(end.error).toBeUndefined();
    expect(end.recoveries).toBe(1);
    expect(end.finishedAt).toBeDefined();
    expect(h.engine.calls).toEqual(["commit"]);
    expect(savedStates(store, STORED_ID)).toEqual(["healthchecking", "committed"]);
    expect(stepsOf(end).slice(-2)).toEqual([
      ["healthchecking", "health verdict of the new container", "succeeded"],
      ["committed", CLEANUP_STEP_TITLE, "succeeded"],
    ]);
    expect(end.steps.at(-2)?.output).toContain("the health verdict had passed (journaled)");
    expect(store.jobs[0]).toEqual(end);
    const events = lines.map((l) => JSON.parse(l));
    expect(events.some((e) => e.msg.startsWith("rolling forward") && e.job === STORED_ID)).toBe(true);
    expect(events.some((e) => e.msg === "job committed" && e.job === STORED_ID)).toBe(true);
    expect(h.runner.state).toBe("idle");
  });

  it("rolls forward even at the restart limit (committing changes nothing in the app)", async () => {
    const store = new MemoryJobStore([verdictPassedJob(3)]);
    const h = await harness({ store });
    expect(h.runner.get(STORED_ID)).toMatchObject({ state: "committed", recoveries: 4 });
    expect(h.engine.calls).toEqual(["commit"]);
  });

  it("a failing cleanup during the roll-forward leaves the job committed", async () => {
    const store = new MemoryJobStore([verdictPassedJob()]);
    const h = makeHarness({ store });
    open.push(h.runner);
    h.engine.failOn("commit", "the previous container is gone already? no: engine error");
    await h.runner.open();
    await within(h.runner.reconciled, 2000, "reconciliation");
    const end = h.runner.get(STORED_ID);
    expect(end.state).toBe("committed");
    expect(end.steps.at(-1)).toMatchObject({ title: CLEANUP_STEP_TITLE, status: "failed" });
    expect(h.engine.calls).toEqual(["commit"]);
  });

  it("without verdict.passed, a job interrupted while healthchecking is still rolled back", async () => {
    const job = verdictPassedJob();
    delete job.journal.facts["verdict.passed"];
    const h = await harness({ store: new MemoryJobStore([job]) });
    expect(h.runner.get(STORED_ID).state).toBe("rolled_back");
    expect(h.engine.calls).toEqual(["rollback"]);
  });

  it("a job already rolling back is not rolled forward, whatever the journal says", async () => {
    const error: JobError = {
      reason: "HEALTHCHECK_FAILED",
      message: "unhealthy",
      failedIn: "healthchecking",
    };
    const job = storedJob(
      ["snapshotting", "pulling", "verifying", "migrating", "swapping", "healthchecking", "rolling_back"],
      { error, withManifest: true },
    );
    job.journal.facts["verdict.passed"] = "true";
    const h = await harness({ store: new MemoryJobStore([job]) });
    expect(h.runner.get(STORED_ID).state).toBe("rolled_back");
    expect(h.engine.calls).toEqual(["rollback"]);
  });
});

describe("a failed job is sticky until acknowledged", () => {
  async function failedJob(h: Harness): Promise<Job> {
    h.engine.failOn("healthcheck", "unhealthy");
    h.engine.failOn("rollback", "cannot start the previous container", undefined, "1. do this\n2. do that");
    const end = await runJob(h);
    expect(end.state).toBe("failed");
    h.engine.failures.clear();
    return end;
  }

  it("refuses StartUpdate with failed_precondition naming the job, its manual steps and how to acknowledge", async () => {
    const h = await harness();
    const failed = await failedJob(h);
    const saves = h.store.saved.length;
    const err = await updaterError(h.runner.start({ tag: "v3.0.0" }));
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toContain(`job ${failed.id} (to v2.0.0) failed (ROLLBACK_FAILED)`);
    expect(err.message).toContain(`processgit-updater watch ${failed.id}`);
    expect(err.message).toContain(`processgit-updater acknowledge ${failed.id} --note`);
    expect(err.message).toContain(`-d '{"id":"${failed.id}","note":"what you did"}'`);
    expect(err.message).toContain("/processgit.updater.v1.UpdaterService/AcknowledgeFailure");
    expect(err.message).toContain('Authorization: Bearer $TOKEN"');
    expect(h.store.saved).toHaveLength(saves);
    expect(h.runner.history()).toHaveLength(1);
    expect(h.runner.blockingJob()?.id).toBe(failed.id);
    expect(h.runner.state).toBe("idle");
  });

  it("still blocks after a restart, and until it is acknowledged", async () => {
    const h = await harness();
    const failed = await failedJob(h);
    const next = await harness({ store: h.store });
    expect((await updaterError(next.runner.start({ tag: "v3.0.0" }))).code).toBe("failed_precondition");
    const acked = await next.runner.acknowledge(failed.id, {
      by: "ops@example",
      note: "restored volume by hand",
    });
    expect(acked.acknowledgement).toEqual({
      at: acked.updatedAt,
      by: "ops@example",
      note: "restored volume by hand",
    });
    expect(next.runner.blockingJob()).toBeUndefined();
    const job = await next.runner.start({ tag: "v3.0.0" });
    expect((await finished(next.runner, job.id)).state).toBe("committed");
  });

  it("acknowledging records who, when and what durably, once: a second call changes nothing", async () => {
    const h = await harness();
    const failed = await failedJob(h);
    const acked = await h.runner.acknowledge(failed.id, {
      by: "  alice  ",
      note: "ran the manual steps\n\tand checked the app",
    });
    expect(acked.state).toBe("failed");
    expect(acked.revision).toBe(failed.revision + 1);
    expect(acked.acknowledgement).toMatchObject({
      by: "alice",
      note: "ran the manual steps\n\tand checked the app",
    });
    expect(h.store.jobs.find((j) => j.id === failed.id)).toEqual(acked);
    expect(h.runner.get(failed.id)).toEqual(acked);
    const saves = h.store.saved.length;
    const again = await h.runner.acknowledge(failed.id, { by: "bob", note: "something else" });
    expect(again).toEqual(acked);
    expect(h.store.saved).toHaveLength(saves);
    // Concurrent acknowledgements of a fresh failure: one save, one acknowledgement.
    h.engine.failOn("swap").failOn("rollback");
    const second = await runJob(h);
    expect(second.state).toBe("failed");
    h.engine.failures.clear();
    const before = h.store.saved.length;
    const both = await Promise.all([
      h.runner.acknowledge(second.id, { by: "one" }),
      h.runner.acknowledge(second.id, { by: "two" }),
    ]);
    expect(both[0]).toEqual(both[1]);
    expect(both[0].acknowledgement?.by).toBe("one");
    expect(both[0].acknowledgement?.note).toBe("");
    expect(h.store.saved).toHaveLength(before + 1);
  });

  it("refuses jobs that are not failed, unknown and malformed ids, and bad text", async () => {
    const h = await harness();
    const committed = await runJob(h);
    h.engine.failOn("swap");
    const rolledBack = await runJob(h);
    h.engine.failures.clear();
    h.engine.failOn("pull");
    const aborted = await runJob(h);
    h.engine.failures.clear();
    for (const [job, why] of [
      [committed, "it committed: nothing needs repairing"],
      [rolledBack, "it was rolled back"],
      [aborted, "it stopped before it changed anything"],
    ] as const) {
      const err = await updaterError(h.runner.acknowledge(job.id));
      expect(err.code).toBe("failed_precondition");
      expect(err.message).toContain(
        `job ${job.id} is ${job.state}, not failed, so there is nothing to acknowledge`,
      );
      expect(err.message).toContain(why);
    }
    const gate = h.engine.gate("pull");
    const active = await h.runner.start({ tag: "v3.0.0" });
    await within(gate.reached, 2000, "pull");
    const running = await updaterError(h.runner.acknowledge(active.id));
    expect(running.code).toBe("failed_precondition");
    expect(running.message).toContain("still running");
    gate.open();
    await finished(h.runner, active.id);

    expect((await updaterError(h.runner.acknowledge(testId(99)))).code).toBe("not_found");
    expect((await updaterError(h.runner.acknowledge(""))).code).toBe("invalid_argument");
    expect((await updaterError(h.runner.acknowledge("nope"))).code).toBe("invalid_argument");

    const failed = await failedJob(h);
    const long = await updaterError(h.runner.acknowledge(failed.id, { note: "x".repeat(2001) }));
    expect(long.code).toBe("invalid_argument");
    expect(long.message).toContain("note is 2001 characters long; at most 2000");
    const control = await updaterError(h.runner.acknowledge(failed.id, { by: "alice\nbob" }));
    expect(control.code).toBe("invalid_argument");
    expect(control.message).toContain("acknowledged_by holds a control character");
    const ansi = await updaterError(h.runner.acknowledge(failed.id, { note: "ok\u001b[31m" }));
    expect(ansi.code).toBe("invalid_argument");
    expect(ansi.message).toContain("only line breaks and tabs");
    expect(h.runner.get(failed.id).acknowledgement).toBeUndefined();
    expect(h.runner.blockingJob()?.id).toBe(failed.id);
  });

  it("tells the engine which snapshots to keep: those of failed jobs not yet acknowledged", async () => {
    // A state from before failures were sticky: a failed job and, after it, an interrupted one.
    const clock = new ManualClock("2026-10-20T08:00:00.000Z");
    let old = newJob({
      id: "22222222-3333-4444-8555-666666666666",
      tag: "v1.5.0",
      allowDowngrade: false,
      now: clock.now(),
    });
    for (const state of [
      "snapshotting",
      "pulling",
      "verifying",
      "migrating",
      "rolling_back",
      "failed",
    ] as const) {
      old = transition(old, state, clock.now());
    }
    const store = new MemoryJobStore([storedJob(["snapshotting", "pulling", "verifying", "migrating"]), old]);
    const h = await harness({ store });
    expect(h.runner.get(STORED_ID).state).toBe("rolled_back");
    expect(h.engine.keptSnapshots).toEqual([["rollback", [old.id]]]);
    expect(h.runner.blockingJob()?.id).toBe(old.id);
    await h.runner.acknowledge(old.id, { note: "fixed long ago" });
    await runJob(h);
    expect(h.engine.keptSnapshots.slice(1).every(([, keep]) => keep.length === 0)).toBe(true);
  });
});

describe("the record of what a rollback did to the data", () => {
  const FACTS = {
    "restore.needed": "true",
    "restore.snapshot": "snap-0001",
    "restore.pointAt": "2026-11-02T10:00:10.000Z",
    "restore.discardedFrom": "2026-11-02T10:00:12.000Z",
    "restore.discardedUntil": "2026-11-02T10:00:40.000Z",
    "restore.done": "true",
  };

  it("a rolled-back job says which snapshot it restored and which window of writes it discarded", async () => {
    const lines: string[] = [];
    const h = await harness({ options: { log: createLogger("info", (line) => lines.push(line)) } });
    h.engine.failOn("healthcheck", "unhealthy");
    h.engine.restoreFacts = FACTS;
    const end = await runJob(h);
    expect(end.state).toBe("rolled_back");
    expect(end.dataRestore).toEqual({
      needed: true,
      snapshot: "snap-0001",
      pointAt: "2026-11-02T10:00:10.000Z",
      discardedFrom: "2026-11-02T10:00:12.000Z",
      discardedUntil: "2026-11-02T10:00:40.000Z",
      done: true,
    });
    expect(h.store.jobs[0]?.dataRestore).toEqual(end.dataRestore);
    const rolledBack = lines.map((l) => JSON.parse(l)).find((e) => e.msg === "job rolled back");
    expect(rolledBack).toMatchObject({
      data_restore_needed: true,
      data_restored: true,
      snapshot: "snap-0001",
      data_as_of: "2026-11-02T10:00:10.000Z",
      discarded_from: "2026-11-02T10:00:12.000Z",
      discarded_until: "2026-11-02T10:00:40.000Z",
    });
  });

  it("a failed rollback says the data is not back", async () => {
    const h = await harness();
    h.engine.failOn("swap").failOn("rollback", "tar failed");
    h.engine.restoreFacts = { ...FACTS, "restore.done": "false" };
    const end = await runJob(h);
    expect(end.state).toBe("failed");
    expect(end.dataRestore).toMatchObject({ needed: true, done: false, snapshot: "snap-0001" });
  });

  it("a rollback that did not need to touch the data says so; a job without restore facts has no record", async () => {
    const h = await harness();
    h.engine.failOn("migrate");
    h.engine.restoreFacts = { "restore.needed": "false" };
    const end = await runJob(h);
    expect(end.dataRestore).toEqual({ needed: false, done: false });
    h.engine.restoreFacts = {};
    h.engine.failOn("swap");
    expect((await runJob(h)).dataRestore).toBeUndefined();
  });
});
