/**
 * The operator's CLI (the package's bin, built) against the real server on 127.0.0.1:0, with the
 * fake engine and release stand-ins behind it: status, latest, update --watch, watch, history,
 * --json, exit codes.
 */
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { run } from "../helpers/run.js";
import { startTestUpdater, type TestUpdater } from "../helpers/test-updater.js";

const bin = join(import.meta.dirname, "../../dist/src/cli/bin.js");
let u: TestUpdater | undefined;
afterEach(async () => {
  await u?.close();
  u = undefined;
});

const cli = (args: string[], env: Record<string, string> = {}) =>
  run("env", [
    "-i",
    `PATH=${process.env.PATH}`,
    `PROCESSGIT_UPDATER_URL=${u?.url}`,
    `PROCESSGIT_UPDATER_TOKEN=${u?.token}`,
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    process.execPath,
    bin,
    ...args,
  ]);

describe("processgit-updater CLI", () => {
  it("status, latest and history", async () => {
    u = await startTestUpdater();
    const status = await cli(["status"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain("updater 0.1.0: idle");
    expect(status.stdout).toContain("app processgit: registry.test/processgit:1.0.0 version 1.0.0");
    const latest = await cli(["latest"]);
    expect(latest.stdout).toContain("v1.2.0");
    expect(latest.stdout).toContain("newer than the running 1.0.0");
    expect(JSON.parse((await cli(["history", "--json"])).stdout)).toEqual({});
  });

  it("update --watch follows the job to the end and exits 0 only when it committed", async () => {
    u = await startTestUpdater();
    const ok = await cli(["update", "v1.2.0", "--watch"]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/\[planning\][\s\S]*\[pulling\][\s\S]*\[committed\]/);
    expect(ok.stdout).toContain("committed: v1.2.0 (1.2.0) runs");
    u.engine.failOn("healthcheck", "the new container never got healthy", "HEALTHCHECK_FAILED");
    const bad = await cli(["update", "v1.2.0", "--watch", "--allow-downgrade"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain("rolled_back: HEALTHCHECK_FAILED: the new container never got healthy");
    const history = await cli(["history"]);
    expect(history.stdout.trim().split("\n")).toHaveLength(2);
  });

  it("watch --json prints one job per line; errors have their code and exit 3", async () => {
    u = await startTestUpdater();
    const started = JSON.parse((await cli(["update", "v1.2.0", "--json"])).stdout) as { id: string };
    const watched = await cli(["watch", started.id, "--json"]);
    const last = JSON.parse(watched.stdout.trim().split("\n").at(-1) ?? "{}");
    expect(last.state).toBe("JOB_STATE_COMMITTED");
    const missing = await cli(["watch", "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain("NotFound");
    const badToken = await cli(["status"], { PROCESSGIT_UPDATER_TOKEN: "x".repeat(40) });
    expect(badToken.code).toBe(3);
    expect(badToken.stderr).toContain("Unauthenticated");
    const usage = await cli(["frobnicate"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("usage: processgit-updater");
  });
});
