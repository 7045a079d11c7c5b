/** GET /metrics on the real server: Prometheus text, behind the bearer token. */
import { afterEach, describe, expect, it } from "vitest";
import { FakeEngine } from "../fakes/fake-engine.js";
import { startTestUpdater, type TestUpdater } from "../helpers/test-updater.js";

let u: TestUpdater | undefined;
afterEach(async () => {
  await u?.close();
  u = undefined;
});

describe("/metrics", () => {
  it("needs the token, then reports versions, jobs by outcome, step durations and the last success", async () => {
    const engine = new FakeEngine();
    u = await startTestUpdater({ engine });
    expect((await fetch(`${u.url}/metrics`)).status).toBe(401);
    expect(
      (
        await fetch(`${u.url}/metrics`, {
          headers: { authorization: "Bearer wrong-token-xxxxxxxxxxxxxxxxxxxxxxxxxxxx" },
        })
      ).status,
    ).toBe(401);
    const scrape = async () => {
      const res = await fetch(`${u?.url}/metrics`, { headers: { authorization: `Bearer ${u?.token}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/plain");
      return res.text();
    };
    const before = await scrape();
    expect(before).toContain('processgit_updater_info{version="0.1.0"} 1');
    expect(before).toContain('processgit_updater_jobs{outcome="committed"} 0');
    expect(before).toContain("processgit_updater_last_success_timestamp_seconds 0");
    expect(before).toContain(
      'processgit_updater_app_info{container="processgit",version="1.0.0",image="registry.test/processgit:1.0.0"} 1',
    );

    const job = await u.updater.runner.start({ tag: "v1.2.0" });
    for await (const _ of u.updater.runner.watch(job.id)) {
      // to the end
    }
    const after = await scrape();
    expect(after).toContain('processgit_updater_jobs{outcome="committed"} 1');
    expect(after).toMatch(/processgit_updater_last_success_timestamp_seconds \d{10}/);
    expect(after).toMatch(/processgit_updater_step_duration_seconds_count\{state="pulling"\} 1/);
    expect(after).toContain("processgit_updater_active_job 0");
  });
});
