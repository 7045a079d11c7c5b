/**
 * Crash-safe file replacement: after a kill -9 or a power loss, a file written here holds either
 * its previous contents or the new contents in full, never a mix or a truncated file.
 */
import { randomBytes } from "node:crypto";
import { open, readdir, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** Files written by this module are private to the updater. */
export const ATOMIC_FILE_MODE = 0o600;

const TEMP_SUFFIX = /^\.\d+\.[0-9a-f]+\.tmp$/;

function tempPathFor(path: string): string {
  return `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
}

/** Whether `name` (a directory entry next to `path`) is a temp file `writeFileAtomic(path)` creates. */
export function isTempFileOf(path: string, name: string): boolean {
  const target = basename(path);
  return name.startsWith(target) && TEMP_SUFFIX.test(name.slice(target.length));
}

/** Flushes a directory's entries (created, renamed, removed files) to stable storage. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` with `data` atomically and durably, with mode 0600.
 *
 * Writes `<path>.<pid>.<random>.tmp` in the same directory, fsyncs it, renames it over `path` and
 * fsyncs the directory. Resolves only once the new contents survive a power loss. On failure before
 * the rename, `path` is unchanged and the temp file is removed; a crash can leave a temp file behind
 * (see {@link removeStaleTempFiles}), never a partial `path`. The directory must exist.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const temp = tempPathFor(path);
  let renamed = false;
  try {
    const handle = await open(temp, "wx", ATOMIC_FILE_MODE);
    try {
      // The creation mode is filtered by the umask; set it explicitly.
      await handle.chmod(ATOMIC_FILE_MODE);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
    renamed = true;
    await fsyncDirectory(dirname(path));
  } catch (err) {
    if (!renamed) await unlink(temp).catch(() => {});
    throw err;
  }
}

/**
 * Removes temp files that an interrupted `writeFileAtomic(path)` left next to `path`, and returns
 * their names. Only call it when no `writeFileAtomic(path)` is in flight in any process: it would
 * delete that write's temp file and make it fail.
 */
export async function removeStaleTempFiles(path: string): Promise<string[]> {
  const dir = dirname(path);
  const removed: string[] = [];
  for (const name of await readdir(dir)) {
    if (!isTempFileOf(path, name)) continue;
    try {
      await unlink(join(dir, name));
      removed.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  return removed;
}
