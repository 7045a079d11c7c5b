/**
 * One updater per state directory. Two updaters on one journal would reconcile, roll back and
 * overwrite each other's jobs, so the second refuses to start.
 *
 * The lock is a file (`updater.lock`) created exclusively, holding the owner's pid and hostname.
 * A lock left by a process that is gone is taken over: same host and that pid is not alive, or
 * the pid is ours (a container restarted with the same pid 1), or another hostname (a re-created
 * container: its pid cannot be checked from here; the takeover is logged by the caller).
 */

import { mkdir, open, readFile, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { errorMessage, StateFileError } from "../errors.js";
import { writeFileAtomic } from "./atomic-write.js";

export const LOCK_FILE_NAME = "updater.lock";

interface LockContent {
  pid: number;
  host: string;
  startedAt: string;
}

export interface StateLock {
  readonly path: string;
  /** Set when a stale lock was taken over: whose it was. */
  readonly tookOverFrom: LockContent | undefined;
  release(): Promise<void>;
}

export async function acquireStateLock(dir: string): Promise<StateLock> {
  const path = join(dir, LOCK_FILE_NAME);
  try {
    return await acquire(dir, path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EACCES" && code !== "EPERM" && code !== "EROFS") throw err;
    throw new StateFileError(
      path,
      `the state directory ${dir} is not writable by this process (uid ${process.getuid?.() ?? "?"}): ${errorMessage(err)}. Mount a volume there that this user can write (the image's user is uid 10001, and a new named volume takes the image's ownership), or set PROCESSGIT_UPDATER_STATE_DIR to a writable directory`,
      { cause: err },
    );
  }
}

async function acquire(dir: string, path: string): Promise<StateLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const mine: LockContent = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
  const text = `${JSON.stringify(mine)}\n`;
  let tookOverFrom: LockContent | undefined;
  try {
    const handle = await open(path, "wx", 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    const holder = await readHolder(path);
    if (holder && holder.host === mine.host && holder.pid !== mine.pid && isAlive(holder.pid)) {
      throw new StateFileError(
        path,
        `another updater (pid ${holder.pid}, started ${holder.startedAt}) is using the state directory ${dir}; stop it first, or give this one another PROCESSGIT_UPDATER_STATE_DIR`,
      );
    }
    tookOverFrom = holder;
    await writeFileAtomic(path, text);
  }
  return {
    path,
    tookOverFrom,
    async release() {
      const holder = await readHolder(path);
      if (
        holder &&
        holder.pid === mine.pid &&
        holder.host === mine.host &&
        holder.startedAt === mine.startedAt
      ) {
        await unlink(path).catch(() => {});
      }
    },
  };
}

async function readHolder(path: string): Promise<LockContent | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, "utf8")) as Partial<LockContent>;
    if (typeof parsed.pid === "number" && typeof parsed.host === "string") {
      return { pid: parsed.pid, host: parsed.host, startedAt: String(parsed.startedAt ?? "unknown") };
    }
  } catch {}
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
