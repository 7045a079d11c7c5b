/**
 * One updater per state directory, on real files and real processes.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StateFileError } from "../../src/errors.js";
import { acquireStateLock, LOCK_FILE_NAME } from "../../src/store/state-lock.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pgu-lock-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the state directory lock", () => {
  it("is taken, names its owner, and is released", async () => {
    const lock = await acquireStateLock(dir);
    const content = JSON.parse(await readFile(join(dir, LOCK_FILE_NAME), "utf8"));
    expect(content).toMatchObject({ pid: process.pid, host: hostname() });
    expect(lock.tookOverFrom).toBeUndefined();
    expect((await stat(join(dir, LOCK_FILE_NAME))).mode & 0o777).toBe(0o600);
    await lock.release();
    await expect(stat(join(dir, LOCK_FILE_NAME))).rejects.toThrow(/ENOENT/);
  });

  it("refuses while another live process on this host holds it, and leaves the lock alone", async () => {
    const other = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      const held = `${JSON.stringify({ pid: other.pid, host: hostname(), startedAt: "2026-11-26T00:00:00.000Z" })}\n`;
      await writeFile(join(dir, LOCK_FILE_NAME), held);
      const err = await acquireStateLock(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StateFileError);
      expect((err as Error).message).toContain(`another updater (pid ${other.pid}`);
      expect((err as Error).message).toContain("PROCESSGIT_UPDATER_STATE_DIR");
      expect(await readFile(join(dir, LOCK_FILE_NAME), "utf8")).toBe(held);
    } finally {
      other.kill("SIGKILL");
    }
  });

  it("takes over a lock whose process is gone, or that another host (a re-created container) left", async () => {
    const gone = spawn("true");
    await new Promise((r) => gone.on("exit", r));
    for (const holder of [
      { pid: gone.pid, host: hostname(), startedAt: "x" },
      { pid: 1, host: "old-container-id", startedAt: "y" },
    ]) {
      await writeFile(join(dir, LOCK_FILE_NAME), JSON.stringify(holder));
      const lock = await acquireStateLock(dir);
      expect(lock.tookOverFrom).toEqual(holder);
      expect(JSON.parse(await readFile(join(dir, LOCK_FILE_NAME), "utf8")).pid).toBe(process.pid);
      await lock.release();
    }
  });
});
