/** The job model: state machine, transitions, revisions and bounded step output. */
import { describe, expect, it } from "vitest";
import {
  appendBounded,
  canTransition,
  changesMayHaveHappened,
  cloneJob,
  dataRestoreFromFacts,
  isTerminal,
  JOB_ID_PATTERN,
  JOB_STATES,
  type Job,
  type JobState,
  needsAcknowledgement,
  newJob,
  revise,
  STEP_OUTPUT_LIMIT,
  TAG_PATTERN,
  transition,
  trimHistory,
  verdictPassed,
} from "../../src/orchestrator/job.js";

const ELISION = "\n[... output elided ...]\n";
const T0 = new Date("2026-11-02T10:00:00.000Z");
const T1 = new Date("2026-11-02T10:00:05.000Z");

const ALLOWED: Array<[JobState, JobState]> = [
  ["planning", "snapshotting"],
  ["planning", "aborted"],
  ["planning", "failed"],
  ["snapshotting", "pulling"],
  ["snapshotting", "aborted"],
  ["snapshotting", "failed"],
  ["pulling", "verifying"],
  ["pulling", "aborted"],
  ["pulling", "failed"],
  ["verifying", "migrating"],
  ["verifying", "aborted"],
  ["verifying", "failed"],
  ["migrating", "swapping"],
  ["migrating", "rolling_back"],
  ["migrating", "failed"],
  ["swapping", "healthchecking"],
  ["swapping", "rolling_back"],
  ["swapping", "failed"],
  ["healthchecking", "committed"],
  ["healthchecking", "rolling_back"],
  ["healthchecking", "failed"],
  ["rolling_back", "rolled_back"],
  ["rolling_back", "failed"],
];

function job(state: JobState = "planning"): Job {
  const j = newJob({
    id: "00000000-0000-4000-8000-000000000001",
    tag: "v2.0.0",
    allowDowngrade: false,
    now: T0,
  });
  j.state = state;
  return j;
}

describe("newJob", () => {
  it("starts in planning at revision 1 with nothing done", () => {
    const j = newJob({
      id: "00000000-0000-4000-8000-000000000001",
      tag: "v2.0.0",
      allowDowngrade: true,
      now: T0,
      previous: { image: "registry.test/processgit:1.0.0", version: "1.0.0" },
    });
    expect(j).toEqual({
      id: "00000000-0000-4000-8000-000000000001",
      state: "planning",
      targetTag: "v2.0.0",
      createdAt: "2026-11-02T10:00:00.000Z",
      updatedAt: "2026-11-02T10:00:00.000Z",
      steps: [],
      allowDowngrade: true,
      revision: 1,
      recoveries: 0,
      journal: { facts: {} },
      previousImage: "registry.test/processgit:1.0.0",
      previousVersion: "1.0.0",
    });
    expect("previousDigest" in j).toBe(false);
  });
});

describe("state machine", () => {
  it.each(ALLOWED)("allows %s -> %s", (from, to) => {
    expect(canTransition(from, to)).toBe(true);
    const next = transition(job(from), to, T1);
    expect(next.state).toBe(to);
  });

  it("allows nothing else: every pair outside the allowed list is refused", () => {
    const allowed = new Set(ALLOWED.map(([a, b]) => `${a}->${b}`));
    let refused = 0;
    for (const from of JOB_STATES) {
      for (const to of JOB_STATES) {
        if (allowed.has(`${from}->${to}`)) continue;
        expect(canTransition(from, to), `${from} -> ${to}`).toBe(false);
        refused += 1;
      }
    }
    expect(refused).toBe(JOB_STATES.length * JOB_STATES.length - ALLOWED.length);
  });

  it.each<[JobState, JobState]>([
    ["planning", "committed"],
    ["planning", "pulling"],
    ["planning", "rolling_back"],
    ["pulling", "snapshotting"],
    ["verifying", "rolled_back"],
    ["migrating", "aborted"],
    ["swapping", "aborted"],
    ["healthchecking", "aborted"],
    ["rolling_back", "committed"],
    ["rolling_back", "aborted"],
    ["committed", "rolling_back"],
    ["committed", "failed"],
    ["rolled_back", "planning"],
    ["failed", "rolled_back"],
    ["aborted", "planning"],
    ["planning", "planning"],
  ])("transition refuses %s -> %s and names both states", (from, to) => {
    expect(() => transition(job(from), to, T1)).toThrow(`transition ${from} -> ${to} is not allowed`);
  });

  it("terminal states have no way out", () => {
    for (const from of ["committed", "rolled_back", "failed", "aborted"] as const) {
      expect(isTerminal(from)).toBe(true);
      expect(JOB_STATES.filter((to) => canTransition(from, to))).toEqual([]);
    }
    expect(JOB_STATES.filter(isTerminal)).toEqual(["committed", "rolled_back", "failed", "aborted"]);
  });

  it("only a failure once the app may have changed leads to a rollback", () => {
    expect(JOB_STATES.filter(changesMayHaveHappened)).toEqual([
      "migrating",
      "swapping",
      "healthchecking",
      "rolling_back",
    ]);
    for (const state of JOB_STATES) {
      expect(canTransition(state, "rolling_back")).toBe(
        changesMayHaveHappened(state) && state !== "rolling_back",
      );
      expect(canTransition(state, "aborted")).toBe(!changesMayHaveHappened(state) && !isTerminal(state));
    }
  });
});

describe("transition and revise", () => {
  it("returns a new job with the state, time, revision and error; the input is unchanged", () => {
    const before = job("healthchecking");
    const frozen = cloneJob(before);
    const error = { reason: "HEALTHCHECK_FAILED", message: "unhealthy", failedIn: "healthchecking" as const };
    const next = transition(before, "rolling_back", T1, error);
    expect(before).toEqual(frozen);
    expect(next).not.toBe(before);
    expect(next.state).toBe("rolling_back");
    expect(next.updatedAt).toBe("2026-11-02T10:00:05.000Z");
    expect(next.revision).toBe(2);
    expect(next.error).toEqual(error);
    expect(next.finishedAt).toBeUndefined();
  });

  it("sets finishedAt on a terminal state and keeps an earlier error when none is given", () => {
    const error = { reason: "SWAP_FAILED", message: "boom", failedIn: "swapping" as const };
    const rolling = transition(job("swapping"), "rolling_back", T0, error);
    const done = transition(rolling, "rolled_back", T1);
    expect(done.finishedAt).toBe("2026-11-02T10:00:05.000Z");
    expect(done.error).toEqual(error);
    expect(done.revision).toBe(3);
  });

  it("revise edits a copy and bumps the revision", () => {
    const before = job("pulling");
    const next = revise(before, T1, (d) => {
      d.steps.push({
        state: "pulling",
        title: "pull",
        status: "running",
        startedAt: T1.toISOString(),
        output: "",
      });
    });
    expect(before.steps).toEqual([]);
    expect(before.revision).toBe(1);
    expect(next.steps).toHaveLength(1);
    expect(next.revision).toBe(2);
    expect(next.updatedAt).toBe(T1.toISOString());
    expect(next.state).toBe("pulling");
  });

  it("cloneJob is deep", () => {
    const a = job();
    a.journal.facts.x = "1";
    const b = cloneJob(a);
    b.journal.facts.x = "2";
    b.steps.push({ state: "planning", title: "t", status: "running", startedAt: "", output: "" });
    expect(a.journal.facts.x).toBe("1");
    expect(a.steps).toEqual([]);
  });
});

describe("appendBounded", () => {
  it("appends as is while within the limit", () => {
    expect(appendBounded("", "abc")).toBe("abc");
    expect(appendBounded("abc", "def", 6)).toBe("abcdef");
  });

  it("keeps the head and the tail with the elision marker when it overflows", () => {
    const limit = 100;
    const half = Math.floor((limit - ELISION.length) / 2);
    const text = Array.from({ length: 300 }, (_, i) => String.fromCharCode(65 + (i % 26))).join("");
    const out = appendBounded("", text, limit);
    expect(out.length).toBe(limit);
    expect(out.startsWith(text.slice(0, half))).toBe(true);
    expect(out.indexOf(ELISION)).toBe(half);
    expect(out.endsWith(text.slice(-(limit - ELISION.length - half)))).toBe(true);
  });

  it("keeps the same head, the newest tail and the limit over many appends", () => {
    const limit = 200;
    const half = Math.floor((limit - ELISION.length) / 2);
    let out = "";
    let all = "";
    for (let i = 0; i < 500; i++) {
      const line = `line ${i}\n`;
      all += line;
      out = appendBounded(out, line, limit);
      expect(out.length).toBeLessThanOrEqual(limit);
    }
    expect(out.length).toBe(limit);
    expect(out.slice(0, half)).toBe(all.slice(0, half));
    expect(out.startsWith("line 0\nline 1\n")).toBe(true);
    expect(out.endsWith("line 498\nline 499\n")).toBe(true);
    expect(out.endsWith(all.slice(-(limit - ELISION.length - half)))).toBe(true);
    expect(out.split(ELISION)).toHaveLength(2);
  });

  it("handles one append much larger than the limit", () => {
    const limit = 1000;
    const big = `${"h".repeat(5000)}${"t".repeat(5000)}`;
    const out = appendBounded("start\n", big, limit);
    expect(out.length).toBe(limit);
    expect(out.startsWith("start\nhhh")).toBe(true);
    expect(out.endsWith("ttt")).toBe(true);
  });

  it("uses STEP_OUTPUT_LIMIT by default", () => {
    const out = appendBounded("x".repeat(STEP_OUTPUT_LIMIT), "y");
    expect(out.length).toBe(STEP_OUTPUT_LIMIT);
    expect(out.endsWith("y")).toBe(true);
    expect(out).toContain(ELISION);
    expect(appendBounded("x".repeat(STEP_OUTPUT_LIMIT - 1), "y")).toBe(
      `${"x".repeat(STEP_OUTPUT_LIMIT - 1)}y`,
    );
  });
});

describe("patterns", () => {
  it("job ids are lowercase UUIDs", () => {
    expect(JOB_ID_PATTERN.test("0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10")).toBe(true);
    expect(JOB_ID_PATTERN.test("0B6F3F5E-6C1D-4C36-9D2B-2F4A8E1C9A10")).toBe(false);
    expect(JOB_ID_PATTERN.test("0b6f3f5e6c1d4c369d2b2f4a8e1c9a10")).toBe(false);
    expect(JOB_ID_PATTERN.test("")).toBe(false);
  });

  it("tags: letter or digit first, then [A-Za-z0-9._+-], at most 128", () => {
    for (const ok of ["v1.4.0", "1.0.0-rc.1+build.5", "release_2026", "a".repeat(128)]) {
      expect(TAG_PATTERN.test(ok), ok).toBe(true);
    }
    for (const bad of ["", "-v1", ".v1", "../x", "v 1", "v1/2", "a".repeat(129), "v1\n"]) {
      expect(TAG_PATTERN.test(bad), JSON.stringify(bad)).toBe(false);
    }
  });
});

describe("point-in-time facts", () => {
  it('verdictPassed reads the engine\'s verdict.passed fact, exactly "true"', () => {
    const j = job("healthchecking");
    expect(verdictPassed(j)).toBe(false);
    j.journal.facts["verdict.passed"] = "yes";
    expect(verdictPassed(j)).toBe(false);
    j.journal.facts["verdict.passed"] = "true";
    expect(verdictPassed(j)).toBe(true);
  });

  it("dataRestoreFromFacts types the restore.* facts, normalizes times and leaves out what does not parse", () => {
    expect(dataRestoreFromFacts({ "snapshot.dir": "/x" })).toBeUndefined();
    expect(
      dataRestoreFromFacts({
        "restore.needed": "true",
        "restore.snapshot": "snap-1",
        "restore.pointAt": "2026-11-02T11:00:00+01:00",
        "restore.discardedFrom": "2026-11-02T10:00:05.000Z",
        "restore.discardedUntil": "not a time",
        "restore.done": "true",
      }),
    ).toEqual({
      needed: true,
      snapshot: "snap-1",
      pointAt: "2026-11-02T10:00:00.000Z",
      discardedFrom: "2026-11-02T10:00:05.000Z",
      done: true,
    });
    expect(dataRestoreFromFacts({ "restore.needed": "false" })).toEqual({ needed: false, done: false });
    expect(dataRestoreFromFacts({ "restore.snapshot": "snap-2" })).toEqual({
      needed: false,
      snapshot: "snap-2",
      done: false,
    });
  });

  it("needsAcknowledgement: failed and not acknowledged", () => {
    expect(needsAcknowledgement(job("failed"))).toBe(true);
    expect(
      needsAcknowledgement({ ...job("failed"), acknowledgement: { at: T1.toISOString(), by: "", note: "" } }),
    ).toBe(false);
    for (const state of JOB_STATES.filter((s) => s !== "failed"))
      expect(needsAcknowledgement(job(state))).toBe(false);
  });
});

describe("trimHistory", () => {
  const ack = { at: T1.toISOString(), by: "ops", note: "" };
  function history(states: Array<JobState | "failed+ack">): Job[] {
    return states.map((state, i) => {
      const j = job(state === "failed+ack" ? "failed" : state);
      j.id = `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
      if (state === "failed+ack") j.acknowledgement = ack;
      return j;
    });
  }
  const ids = (jobs: Job[]) => jobs.map((j) => Number(j.id.slice(-12)));

  it("keeps everything up to the limit", () => {
    const jobs = history(["committed", "failed", "aborted"]);
    expect(trimHistory(jobs, 3)).toEqual(jobs);
    expect(trimHistory(jobs, 3)).not.toBe(jobs);
  });

  it("drops the oldest jobs that may go, never the active job or a failed job not acknowledged", () => {
    const jobs = history([
      "pulling",
      "committed",
      "failed",
      "rolled_back",
      "failed+ack",
      "committed",
      "failed",
    ]);
    expect(ids(trimHistory(jobs, 5))).toEqual([0, 1, 2, 3, 6]);
    expect(ids(trimHistory(jobs, 3))).toEqual([0, 2, 6]);
    // Beyond the limit when only jobs that must stay are left.
    expect(ids(trimHistory(jobs, 1))).toEqual([0, 2, 6]);
  });
});
