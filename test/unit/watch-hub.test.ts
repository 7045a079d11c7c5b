/** WatchHub: non-blocking fan-out that keeps only the newest unread snapshot per watcher. */
import { describe, expect, it } from "vitest";
import { type Job, newJob, revise } from "../../src/orchestrator/job.js";
import { WatchHub } from "../../src/orchestrator/watch-hub.js";
import { settle, within } from "../helpers/runner-harness.js";

const A = "00000000-0000-4000-8000-00000000000a";
const B = "00000000-0000-4000-8000-00000000000b";
const T = new Date("2026-11-02T10:00:00.000Z");

function jobAt(id: string, revision: number): Job {
  const j = newJob({ id, tag: "v2.0.0", allowDowngrade: false, now: T });
  return revise(j, T, (d) => {
    d.revision = revision - 1;
  });
}

describe("WatchHub", () => {
  it("delivers a published snapshot to a waiting watcher", async () => {
    const hub = new WatchHub();
    const sub = hub.subscribe(A);
    const taken = sub.take();
    hub.publish(jobAt(A, 2));
    const got = await within(taken, 1000, "take");
    expect(got).not.toBe("closed");
    expect((got as Job).revision).toBe(2);
  });

  it("keeps only the newest unread snapshot: a slow watcher skips, the publisher never waits", async () => {
    const hub = new WatchHub();
    const sub = hub.subscribe(A);
    for (let r = 2; r <= 1000; r++) hub.publish(jobAt(A, r));
    const got = (await sub.take()) as Job;
    expect(got.revision).toBe(1000);
    // Nothing else is pending: the next take waits for a new publish.
    let second: Job | string | undefined;
    void sub.take().then((v) => {
      second = v;
    });
    await settle();
    expect(second).toBeUndefined();
    hub.publish(jobAt(A, 1001));
    await settle();
    expect((second as Job).revision).toBe(1001);
  });

  it("never replaces a pending snapshot with an older one", async () => {
    const hub = new WatchHub();
    const sub = hub.subscribe(A);
    hub.publish(jobAt(A, 5));
    hub.publish(jobAt(A, 3));
    expect(((await sub.take()) as Job).revision).toBe(5);
  });

  it("delivers only to watchers of that job, and to every one of them", async () => {
    const hub = new WatchHub();
    const a1 = hub.subscribe(A);
    const a2 = hub.subscribe(A);
    const b = hub.subscribe(B);
    hub.publish(jobAt(A, 7));
    expect(((await a1.take()) as Job).revision).toBe(7);
    expect(((await a2.take()) as Job).id).toBe(A);
    let bGot: unknown;
    void b.take().then((v) => {
      bGot = v;
    });
    await settle();
    expect(bGot).toBeUndefined();
    b.close();
    await settle();
    expect(bGot).toBe("closed");
  });

  it("shutdown ends every watch with 'shutdown', after any pending snapshot, and new watches too", async () => {
    const hub = new WatchHub();
    const waiting = hub.subscribe(A);
    const withPending = hub.subscribe(B);
    const pendingTake = waiting.take();
    hub.publish(jobAt(B, 4));
    hub.shutdown();
    expect(await within(pendingTake, 1000, "take")).toBe("shutdown");
    expect(((await withPending.take()) as Job).revision).toBe(4);
    expect(await withPending.take()).toBe("shutdown");
    const late = hub.subscribe(A);
    expect(await within(late.take(), 1000, "late take")).toBe("shutdown");
    hub.publish(jobAt(A, 9));
    expect(await late.take()).toBe("shutdown");
  });

  it("close removes the subscription; size counts open ones", () => {
    const hub = new WatchHub();
    expect(hub.size).toBe(0);
    const a = hub.subscribe(A);
    const b = hub.subscribe(B);
    const a2 = hub.subscribe(A);
    expect(hub.size).toBe(3);
    a.close();
    expect(hub.size).toBe(2);
    a.close();
    expect(hub.size).toBe(2);
    b.close();
    a2.close();
    expect(hub.size).toBe(0);
  });

  it("an aborted signal ends a take with 'closed', whether it aborts before or during the wait", async () => {
    const hub = new WatchHub();
    const sub = hub.subscribe(A);
    const before = new AbortController();
    before.abort();
    expect(await sub.take(before.signal)).toBe("closed");

    const during = new AbortController();
    const taken = sub.take(during.signal);
    await settle();
    during.abort();
    expect(await within(taken, 1000, "take")).toBe("closed");

    // The subscription itself still works afterwards.
    hub.publish(jobAt(A, 3));
    expect(((await sub.take()) as Job).revision).toBe(3);
  });
});
