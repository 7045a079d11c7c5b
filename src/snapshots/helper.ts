/**
 * The snapshot helper: the program that copies the app's data. The updater runs it in a helper
 * container (an image with node: by default the updater's own) with the app's data mounts and the
 * snapshot store mounted, so that nothing depends on tools inside the app's image.
 *
 * It is self-contained on purpose (node:* imports only): the updater passes this file's own source
 * to `node -e`, so the helper is always exactly the code of the updater that started it.
 *
 * The top half is pure (the tree diff and its decisions, unit-tested); the bottom half is the
 * copier and the commands:
 * - snapshot: a live bulk copy into `<id>.partial`, then passes on command through a mailbox
 *   (catch-up while the app runs; the final pass while it is stopped or frozen), then the snapshot
 *   is made durable and renamed to `<id>`. Files unchanged since the base snapshot are hard links
 *   to it; a file shared with the base is never written into (a changed one is replaced).
 * - restore: makes a mount equal to a snapshot, copying only blocks that differ, then checks it.
 * - estimate: what a new snapshot would add on top of the base (for the pre-flight disk check).
 * - prune: removes snapshots (their files belong to the app's users, so the updater cannot).
 */
import {
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { open as openAsync } from "node:fs/promises";
import { join } from "node:path";

// ---------------------------------------------------------------------------------------------
// Pure part: entries, the "unchanged" rules, and the decisions of each pass.
// ---------------------------------------------------------------------------------------------

export type EntryType = "file" | "dir" | "symlink" | "other";

/** What a pass records about one path of the app's data (as the source showed it). */
export interface Entry {
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Nanoseconds since the epoch, as decimal strings (bigint in JSON). */
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
  /** Symlink target. */
  target?: string;
  /**
   * True when the entry's ctime was within RACY_MARGIN_NS of the moment it was read: a write in
   * the same timestamp tick could follow unseen, so its stat cannot prove it unchanged later.
   */
  racy?: boolean;
}

/** Paths relative to the mount's root ("" is the root itself), to entries. */
export type Index = Record<string, Entry>;

/**
 * File timestamps come from the kernel's coarse clock (one tick, 1 to 10 ms): two writes in one
 * tick leave the same ctime. Like git's "racily clean" entries, anything changed within this
 * margin of the moment we looked at it is compared by content, never trusted by its stat.
 */
export const RACY_MARGIN_NS = 2_000_000_000n;

/** Bytes compared at a time (a database page); a differing block is what gets written. */
export const BLOCK_SIZE = 4096;

/** True when `current` provably has the same content and metadata as when `recorded` was read. */
export function unchangedSince(recorded: Entry | undefined, current: Entry): boolean {
  if (!recorded || recorded.racy) return false;
  return (
    recorded.type === current.type &&
    recorded.ino === current.ino &&
    recorded.ctimeNs === current.ctimeNs &&
    recorded.mtimeNs === current.mtimeNs &&
    recorded.size === current.size
  );
}

/** Whether an entry read at `observedAtNs` (wall clock) is racy. */
export function isRacy(ctimeNs: string, observedAtNs: bigint): boolean {
  return BigInt(ctimeNs) >= observedAtNs - RACY_MARGIN_NS;
}

/** What a session remembers of a file it already put in the snapshot being written. */
export interface Known {
  entry: Entry;
  /** The snapshot's copy is a hard link to the base snapshot's file: never write into it. */
  shared: boolean;
}

export type FileAction =
  /** The snapshot's copy is current. */
  | "skip"
  /** Unchanged since the base snapshot: hard-link the base's copy. */
  | "link"
  /** The snapshot's own copy exists: compare in blocks and rewrite the blocks that differ. */
  | "patch"
  /** Write a new file (and rename it over whatever is there). */
  | "copy";

/**
 * The decision for one regular file of the source in a snapshot pass.
 * @param current  the source's entry now
 * @param known    what this session copied before (undefined on the first look)
 * @param base     the base snapshot's record of this path (its final pass), if any
 * @param haveCopy whether the snapshot being written has a regular file at this path
 */
export function decideSnapshotFile(
  current: Entry,
  known: Known | undefined,
  base: Entry | undefined,
  haveCopy: boolean,
): FileAction {
  if (known && haveCopy && unchangedSince(known.entry, current)) return "skip";
  if (!known && unchangedSince(base, current)) return "link";
  if (known && !known.shared && haveCopy) return "patch";
  return "copy";
}

/**
 * The decision for one regular file of a snapshot in a restore.
 * @param recorded the source's entry at the snapshot's final pass (from its index)
 * @param current  the mount's entry now, if any
 */
export function decideRestoreFile(
  recorded: Entry | undefined,
  current: Entry | undefined,
): "skip" | "patch" | "create" | "replace" {
  if (!current) return "create";
  if (current.type !== "file") return "replace";
  if (unchangedSince(recorded, current)) return "skip";
  return "patch";
}

/** Names present in `have` but not in `want`: what a pass removes from a directory. */
export function extraNames(want: readonly string[], have: readonly string[]): string[] {
  const keep = new Set(want);
  return have.filter((name) => !keep.has(name));
}

/** Whether two entries differ in what a restore must make equal (type, size, owner, mode, target, mtime to the µs). */
export function describeDifference(want: Entry, have: Entry | undefined): string | undefined {
  if (!have) return "missing";
  if (want.type !== have.type) return `is a ${have.type}, should be a ${want.type}`;
  if (want.type === "symlink" && want.target !== have.target)
    return `links to ${have.target}, should link to ${want.target}`;
  if (want.type === "file" && want.size !== have.size)
    return `has ${have.size} bytes, should have ${want.size}`;
  if (want.uid !== have.uid || want.gid !== have.gid)
    return `owned by ${have.uid}:${have.gid}, should be ${want.uid}:${want.gid}`;
  if (want.type !== "symlink" && want.mode !== have.mode)
    return `mode ${have.mode.toString(8)}, should be ${want.mode.toString(8)}`;
  // Set through utimes (a double of seconds): equal to about half a microsecond.
  if (want.type !== "dir") {
    const delta = BigInt(want.mtimeNs) - BigInt(have.mtimeNs);
    if (delta > 1000n || delta < -1000n) return `mtime ${have.mtimeNs}, should be ${want.mtimeNs}`;
  }
  return undefined;
}

/** Joins a relative path ("" is the root) to a root. */
export function under(root: string, rel: string): string {
  return rel === "" ? root : join(root, rel);
}

// ---------------------------------------------------------------------------------------------
// The copier (I/O). Synchronous on purpose: one process, one job, no concurrency to gain.
// ---------------------------------------------------------------------------------------------

export interface PassStats {
  entries: number;
  filesCopied: number;
  filesPatched: number;
  filesLinked: number;
  filesSkipped: number;
  bytesWritten: number;
  bytesCompared: number;
  removed: number;
  /** Paths that cannot be copied (sockets, devices, fifos), kept out of the snapshot. */
  unsupported: string[];
  ms: number;
}

function emptyStats(): PassStats {
  return {
    entries: 0,
    filesCopied: 0,
    filesPatched: 0,
    filesLinked: 0,
    filesSkipped: 0,
    bytesWritten: 0,
    bytesCompared: 0,
    removed: 0,
    unsupported: [],
    ms: 0,
  };
}

const READ_CHUNK = 1024 * 1024;
const NOFOLLOW = constants.O_NOFOLLOW;
const TEMP_PREFIX = ".pgu~";

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function entryOf(path: string): Entry | undefined {
  let st: ReturnType<typeof lstatBig>;
  try {
    st = lstatBig(path);
  } catch (err) {
    if (isCode(err, "ENOENT") || isCode(err, "ENOTDIR")) return undefined;
    throw err;
  }
  const type: EntryType = st.isFile()
    ? "file"
    : st.isDirectory()
      ? "dir"
      : st.isSymbolicLink()
        ? "symlink"
        : "other";
  const entry: Entry = {
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: type === "file" ? Number(st.size) : 0,
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
  };
  if (type === "symlink") entry.target = readlinkSync(path);
  return entry;
}

function lstatBig(path: string) {
  return lstatSync(path, { bigint: true });
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}

function seconds(ns: string): number {
  // utimes takes seconds as a double: exact to about half a microsecond for current dates.
  const n = BigInt(ns);
  return Number(n / 1_000_000_000n) + Number(n % 1_000_000_000n) / 1e9;
}

/** Owner, then mode (chown clears setuid/setgid), then times. */
function applyMeta(path: string, fd: number | undefined, e: Entry): void {
  if (e.type === "symlink") {
    lchownSync(path, e.uid, e.gid);
    lutimesSync(path, seconds(e.mtimeNs), seconds(e.mtimeNs));
    return;
  }
  const own = fd ?? openSync(path, constants.O_RDONLY | NOFOLLOW);
  try {
    fchownSync(own, e.uid, e.gid);
    fchmodSync(own, e.mode);
    futimesSync(own, seconds(e.mtimeNs), seconds(e.mtimeNs));
  } finally {
    if (fd === undefined) closeSync(own);
  }
}

function sameMeta(a: Entry, b: Entry | undefined): boolean {
  return (
    b !== undefined && describeDifference(a, b) === undefined && (a.type !== "dir" || a.mtimeNs === b.mtimeNs)
  );
}

interface CopierHooks {
  /** Called for each regular file: what to do, given the source entry and the destination's. */
  decide(rel: string, current: Entry, dstEntry: Entry | undefined): FileAction;
  /** Path of the base snapshot's copy, for "link". */
  basePath?(rel: string): string;
  /** Called after a path is handled, with the source entry as it was read. */
  seen?(rel: string, entry: Entry, action: FileAction | "meta"): void;
  /** True when a vanished source entry is normal (a live pass); false fails the pass. */
  tolerateVanished: boolean;
}

/**
 * Makes `dst` a copy of `src` (both real paths under their roots), recording what it saw.
 * `decide` picks the action for each regular file; the rest (dirs, symlinks, removals) is common
 * to snapshot passes and restores.
 */
class TreeCopier {
  readonly stats = emptyStats();
  /** Directories whose entries changed, and files written or re-owned: fsynced by `flush`. */
  private readonly dirtyDirs = new Set<string>();
  private readonly dirtyFiles = new Set<string>();
  private tempCounter = 0;
  private readonly src: string;
  private readonly dst: string;
  private readonly hooks: CopierHooks;

  constructor(src: string, dst: string, hooks: CopierHooks) {
    this.src = src;
    this.dst = dst;
    this.hooks = hooks;
  }

  async run(): Promise<PassStats> {
    const started = Date.now();
    const root = entryOf(this.src);
    if (root?.type !== "dir") throw new Error(`${this.src} is not a directory`);
    this.syncDir("", root);
    await this.flush();
    this.stats.ms = Date.now() - started;
    return this.stats;
  }

  private syncDir(rel: string, entry: Entry): void {
    this.stats.entries += 1;
    const dstPath = under(this.dst, rel);
    const have = entryOf(dstPath);
    if (have?.type !== "dir") {
      if (have) this.remove(rel);
      mkdirSync(dstPath, { mode: 0o700 });
      this.dirtyDirs.add(parentOf(dstPath));
    }
    let names: string[];
    try {
      names = readdirSync(under(this.src, rel)).sort();
    } catch (err) {
      if (this.hooks.tolerateVanished && (isCode(err, "ENOENT") || isCode(err, "ENOTDIR"))) names = [];
      else throw err;
    }
    const existing = readdirSync(dstPath);
    for (const extra of extraNames(names, existing)) this.remove(join(rel, extra));
    for (const name of names) {
      const childRel = rel === "" ? name : join(rel, name);
      const child = entryOf(under(this.src, childRel));
      if (!child) {
        if (!this.hooks.tolerateVanished) throw new Error(`${childRel} vanished from ${this.src}`);
        if (existsSync(under(this.dst, childRel)) || isLink(under(this.dst, childRel))) this.remove(childRel);
        continue;
      }
      if (child.type === "dir") this.syncDir(childRel, child);
      else if (child.type === "file") this.syncFile(childRel, child);
      else if (child.type === "symlink") this.syncSymlink(childRel, child);
      else {
        this.stats.unsupported.push(childRel);
        if (isLink(under(this.dst, childRel)) || existsSync(under(this.dst, childRel))) this.remove(childRel);
      }
    }
    // Directory metadata last: adding and removing children changes its mtime.
    if (!sameMeta(entry, entryOf(dstPath))) {
      applyMeta(dstPath, undefined, entry);
      this.dirtyFiles.add(dstPath);
    }
    this.hooks.seen?.(rel, entry, "meta");
  }

  private syncSymlink(rel: string, entry: Entry): void {
    this.stats.entries += 1;
    const dstPath = under(this.dst, rel);
    const have = entryOf(dstPath);
    if (have?.type !== "symlink" || have.target !== entry.target) {
      if (have) this.remove(rel);
      symlinkSync(entry.target ?? "", dstPath);
      this.dirtyDirs.add(parentOf(dstPath));
    }
    const now = entryOf(dstPath);
    if (!sameMeta(entry, now)) applyMeta(dstPath, undefined, entry);
    this.hooks.seen?.(rel, entry, "meta");
  }

  private syncFile(rel: string, entry: Entry): void {
    this.stats.entries += 1;
    const dstPath = under(this.dst, rel);
    const have = entryOf(dstPath);
    let action = this.hooks.decide(rel, entry, have);
    if (action === "patch" && have?.type !== "file") action = "copy";
    if (action === "link" && !this.hooks.basePath) action = "copy";
    let seenEntry = entry;
    switch (action) {
      case "skip":
        this.stats.filesSkipped += 1;
        break;
      case "link": {
        if (have) this.remove(rel);
        try {
          linkSync(this.hooks.basePath?.(rel) ?? "", dstPath);
          this.stats.filesLinked += 1;
          this.dirtyDirs.add(parentOf(dstPath));
        } catch (err) {
          if (!isCode(err, "ENOENT") && !isCode(err, "EMLINK")) throw err;
          seenEntry = this.copyNew(rel, entry, dstPath);
          action = "copy";
        }
        break;
      }
      case "patch":
        seenEntry = this.patch(rel, entry, dstPath);
        break;
      case "copy":
        if (have && have.type !== "file") this.remove(rel);
        seenEntry = this.copyNew(rel, entry, dstPath);
        break;
    }
    this.hooks.seen?.(rel, seenEntry, action);
  }

  /**
   * Writes a new file next to `dstPath` and renames it over: never writes into a shared inode.
   * The kernel copies (copy_file_range, through the descriptor opened without following links);
   * the fsync comes at the end of the pass, so that copying and writing back overlap.
   */
  private copyNew(rel: string, entry: Entry, dstPath: string): Entry {
    const temp = join(parentOf(dstPath), `${TEMP_PREFIX}${process.pid}.${this.tempCounter++}`);
    let input: number;
    try {
      input = openSync(under(this.src, rel), constants.O_RDONLY | NOFOLLOW);
    } catch (err) {
      if (this.hooks.tolerateVanished && (isCode(err, "ENOENT") || isCode(err, "ELOOP"))) {
        return { ...entry, racy: true };
      }
      throw err;
    }
    const observedAt = nowNs();
    try {
      copyFileSync(`/proc/self/fd/${input}`, temp, constants.COPYFILE_EXCL);
      const output = openSync(temp, constants.O_RDWR | NOFOLLOW);
      try {
        applyMeta(temp, output, entry);
      } finally {
        closeSync(output);
      }
      const after = statOfFd(input);
      renameSync(temp, dstPath);
      this.dirtyDirs.add(parentOf(dstPath));
      this.dirtyFiles.add(dstPath);
      this.stats.bytesWritten += after.size;
      this.stats.filesCopied += 1;
      return this.settle(entry, after, observedAt);
    } catch (err) {
      rmSync(temp, { force: true });
      throw err;
    } finally {
      closeSync(input);
    }
  }

  /** Compares source and copy in blocks and rewrites only the blocks that differ. */
  private patch(rel: string, entry: Entry, dstPath: string): Entry {
    let input: number;
    try {
      input = openSync(under(this.src, rel), constants.O_RDONLY | NOFOLLOW);
    } catch (err) {
      if (this.hooks.tolerateVanished && (isCode(err, "ENOENT") || isCode(err, "ELOOP"))) {
        return { ...entry, racy: true };
      }
      throw err;
    }
    const output = openSync(dstPath, constants.O_RDWR | NOFOLLOW);
    const observedAt = nowNs();
    let wrote = 0;
    try {
      const a = Buffer.allocUnsafe(READ_CHUNK);
      const b = Buffer.allocUnsafe(READ_CHUNK);
      let offset = 0;
      for (;;) {
        const n = readFull(input, a, offset);
        if (n === 0) break;
        const m = readFull(output, b, offset);
        this.stats.bytesCompared += n;
        for (let at = 0; at < n; at += BLOCK_SIZE) {
          const end = Math.min(at + BLOCK_SIZE, n);
          if (end <= m && a.subarray(at, end).equals(b.subarray(at, end))) continue;
          writeAll(output, a.subarray(at, end), end - at, offset + at);
          wrote += end - at;
        }
        offset += n;
        if (n < READ_CHUNK) break;
      }
      if (fstatSync(output).size !== offset) ftruncateSync(output, offset);
      applyMeta(dstPath, output, entry);
      this.dirtyFiles.add(dstPath);
      const after = statOfFd(input);
      this.stats.bytesWritten += wrote;
      this.stats.filesPatched += 1;
      return this.settle(entry, after, observedAt);
    } finally {
      closeSync(output);
      closeSync(input);
    }
  }

  /** The entry to remember after a copy: racy when it changed while being read, or just before. */
  private settle(before: Entry, after: Entry, observedAt: bigint): Entry {
    const changed =
      after.ctimeNs !== before.ctimeNs || after.size !== before.size || after.mtimeNs !== before.mtimeNs;
    const e = { ...before };
    if (changed || isRacy(before.ctimeNs, observedAt)) e.racy = true;
    else delete e.racy;
    return e;
  }

  private remove(rel: string): void {
    const path = under(this.dst, rel);
    rmSync(path, { recursive: true, force: true });
    this.stats.removed += 1;
    this.dirtyDirs.add(parentOf(path));
  }

  /**
   * fsync of every file written or changed, then of every changed directory (its entries name
   * files that are on disk by then). Many at a time: the file system commits them together.
   */
  async flush(): Promise<void> {
    await fsyncAll([...this.dirtyFiles]);
    await fsyncAll([...this.dirtyDirs]);
    this.dirtyFiles.clear();
    this.dirtyDirs.clear();
  }
}

function statOfFd(fd: number): Entry {
  const st = fstatSync(fd, { bigint: true });
  return {
    type: "file",
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
  };
}

function readFull(fd: number, buf: Buffer, position: number): number {
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

function writeAll(fd: number, buf: Buffer, length: number, position: number): void {
  let done = 0;
  while (done < length) {
    done += writeSync(fd, buf, done, length - done, position < 0 ? null : position + done);
  }
}

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function fsyncPath(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | NOFOLLOW);
  } catch (err) {
    if (isCode(err, "ENOENT") || isCode(err, "ELOOP")) return;
    throw err;
  }
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function fsyncAll(paths: string[], parallel = 32): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < paths.length) {
      const path = paths[next++] as string;
      let handle: Awaited<ReturnType<typeof openAsync>>;
      try {
        handle = await openAsync(path, constants.O_RDONLY | NOFOLLOW);
      } catch (err) {
        if (isCode(err, "ENOENT") || isCode(err, "ELOOP")) continue;
        throw err;
      }
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, paths.length) }, worker));
}

/** Writes a file whole (temp and rename): durable unless `durable` is false (mailbox answers). */
function writeDurable(path: string, text: string, durable = true): void {
  const temp = `${path}.tmp`;
  const fd = openSync(temp, "w", 0o644);
  try {
    writeFileSync(fd, text);
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
  if (durable) fsyncPath(parentOf(path));
}

/** Writes files into one folder durably: each file fsynced, the folder once. */
function writeAllDurable(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    const fd = openSync(join(dir, name), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    try {
      writeFileSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  fsyncPath(dir);
}

/** Walks a tree and lists every entry (for the index of the snapshot and for checks). */
function listTree(root: string): Index {
  const out: Index = {};
  const walk = (rel: string) => {
    const e = entryOf(under(root, rel));
    if (!e) return;
    out[rel] = e;
    if (e.type !== "dir") return;
    let names: string[];
    try {
      names = readdirSync(under(root, rel)).sort();
    } catch (err) {
      // Live data (the estimate): a directory removed while we walk is simply gone.
      if (isCode(err, "ENOENT") || isCode(err, "ENOTDIR")) return;
      throw err;
    }
    for (const name of names) walk(rel === "" ? name : join(rel, name));
  };
  walk("");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

export interface HelperMount {
  /** The mount's index in the snapshot (its tree is `m<index>`). */
  index: number;
  /** Where the helper sees it. */
  path: string;
  /** The base snapshot's tree for this mount, if it has one. */
  baseIndex?: number;
}

export interface HelperConfig {
  command: "snapshot" | "restore" | "estimate" | "prune";
  /** The snapshot store, as the helper sees it. */
  store: string;
  /** The snapshot written (snapshot) or read (restore). */
  id?: string;
  /** The newest complete snapshot, whose unchanged files a new snapshot shares. */
  base?: string;
  mounts?: HelperMount[];
  /** snapshot: the folder of command and answer files shared with the updater. */
  mailbox?: string;
  /** snapshot: give up (leaving the partial snapshot) after this long without a command. */
  idleLimitMs?: number;
  /** snapshot: fields copied into manifest.json as they are. */
  manifest?: Record<string, unknown>;
  /** prune: snapshot ids to remove (and their partial folders). */
  remove?: string[];
}

interface Command {
  pass: "catchup" | "final" | "abort";
  /** final: when the app stopped writing (the consistency point), ISO 8601. */
  pointAt?: string;
}

function say(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function loadIndex(store: string, id: string | undefined): Record<string, Index> | undefined {
  if (!id) return undefined;
  try {
    return JSON.parse(readFileSync(join(store, id, "index.json"), "utf8")) as Record<string, Index>;
  } catch {
    return undefined;
  }
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** One snapshot session: bulk copy, then passes on command, then the snapshot is made durable. */
async function snapshotCommand(cfg: HelperConfig): Promise<void> {
  const store = cfg.store;
  const id = required(cfg.id, "id");
  const mailbox = required(cfg.mailbox, "mailbox");
  // A mount that is not a directory (a single-file bind such as /etc/localtime) is configuration:
  // it is left out, and said so.
  const skipped = (cfg.mounts ?? []).filter((m) => entryOf(m.path)?.type !== "dir").map((m) => m.index);
  const mounts = (cfg.mounts ?? []).filter((m) => !skipped.includes(m.index));
  const partial = join(store, `${id}.partial`);
  const createdAt = new Date().toISOString();
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { mode: 0o755 });
  fsyncPath(store);
  const baseIndex = loadIndex(store, cfg.base);
  const known = mounts.map(() => new Map<string, Known>());
  const seenIndex: Index[] = mounts.map(() => ({}));

  const pass = async (frozen: boolean): Promise<PassStats[]> => {
    const out: PassStats[] = [];
    for (const [i, m] of mounts.entries()) {
      const mem = known[i] as Map<string, Known>;
      const index: Index = {};
      const base = m.baseIndex !== undefined ? baseIndex?.[`m${m.baseIndex}`] : undefined;
      const baseTree =
        cfg.base && m.baseIndex !== undefined ? join(store, cfg.base, `m${m.baseIndex}`) : undefined;
      const copier = new TreeCopier(m.path, join(partial, `m${m.index}`), {
        tolerateVanished: !frozen,
        decide: (rel, current, dstEntry) =>
          decideSnapshotFile(current, mem.get(rel), base?.[rel], dstEntry?.type === "file"),
        ...(baseTree ? { basePath: (rel: string) => join(baseTree, rel) } : {}),
        seen: (rel, entry, action) => {
          if (action !== "meta") {
            const before = mem.get(rel);
            mem.set(rel, {
              entry,
              shared: action === "link" || (action === "skip" && before?.shared === true),
            });
          }
          // Recorded for the next snapshot and the restore: anything written just before the
          // freeze is compared by content there, never trusted by its stat.
          index[rel] = entry.racy || !isRacy(entry.ctimeNs, nowNs()) ? entry : { ...entry, racy: true };
        },
      });
      out.push(await copier.run());
      seenIndex[i] = index;
    }
    return out;
  };

  let stats = await pass(false);
  writeDurable(
    join(mailbox, "ready.json"),
    JSON.stringify({ ok: true, pass: "bulk", stats, skipped }),
    false,
  );
  say("ready", { stats, skipped });

  const idleLimit = cfg.idleLimitMs ?? 6 * 3600_000;
  let n = 1;
  let idleSince = Date.now();
  for (;;) {
    const file = join(mailbox, `cmd-${n}.json`);
    if (!existsSync(file)) {
      if (Date.now() - idleSince > idleLimit) {
        say("idle", {
          message: `no command for ${idleLimit} ms; leaving ${partial} for the updater to remove`,
        });
        process.exit(2);
      }
      // An update's final pass follows its catch-up pass within moments: listen closely then.
      sleepMs(Date.now() - idleSince < 10_000 ? 1 : 5);
      continue;
    }
    const cmd = JSON.parse(readFileSync(file, "utf8")) as Command;
    const answer = join(mailbox, `ack-${n}.json`);
    if (cmd.pass === "abort") {
      rmSync(partial, { recursive: true, force: true });
      writeDurable(answer, JSON.stringify({ ok: true, pass: "abort" }), false);
      say("aborted");
      return;
    }
    const frozen = cmd.pass === "final";
    stats = await pass(frozen);
    if (!frozen) {
      writeDurable(answer, JSON.stringify({ ok: true, pass: cmd.pass, stats }), false);
      say("pass", { pass: cmd.pass, stats });
      n += 1;
      idleSince = Date.now();
      continue;
    }
    // Final pass done with the app stopped: record the index and the manifest, make it durable,
    // and only then give the snapshot its name.
    const finished = Date.now();
    const indexDoc: Record<string, Index> = {};
    mounts.forEach((m, i) => {
      indexDoc[`m${m.index}`] = seenIndex[i] as Index;
    });
    const totals = mounts.map((m, i) => {
      const idx = seenIndex[i] as Index;
      let files = 0;
      let bytes = 0;
      for (const e of Object.values(idx)) {
        if (e.type === "file") {
          files += 1;
          bytes += e.size;
        }
      }
      return { index: m.index, files, bytes, unsupported: (stats[i] as PassStats).unsupported };
    });
    // The index and the manifest (a folder without it is no snapshot), then the name.
    writeAllDurable(partial, {
      "index.json": JSON.stringify(indexDoc),
      "manifest.json": `${JSON.stringify(
        {
          schema: 1,
          id,
          base: cfg.base ?? null,
          createdAt,
          pointAt: cmd.pointAt ?? new Date(finished).toISOString(),
          completedAt: new Date().toISOString(),
          ...cfg.manifest,
          trees: totals,
        },
        null,
        2,
      )}\n`,
    });
    renameSync(partial, join(store, id));
    fsyncPath(store);
    const durableMs = Date.now() - finished;
    writeDurable(answer, JSON.stringify({ ok: true, pass: "final", stats, durableMs }), false);
    say("complete", { id, stats, durableMs });
    return;
  }
}

async function restoreCommand(cfg: HelperConfig): Promise<void> {
  const id = required(cfg.id, "id");
  const snap = join(cfg.store, id);
  if (!existsSync(join(snap, "manifest.json")))
    throw new Error(`snapshot ${id} is not complete (no manifest.json)`);
  const recorded = loadIndex(cfg.store, id) ?? {};
  const results = [];
  for (const m of cfg.mounts ?? []) {
    const tree = join(snap, `m${m.index}`);
    const rec = recorded[`m${m.index}`] ?? {};
    const copier = new TreeCopier(tree, m.path, {
      tolerateVanished: false,
      decide: (rel, _current, dstEntry) => {
        const d = decideRestoreFile(rec[rel], dstEntry);
        return d === "skip" ? "skip" : d === "patch" ? "patch" : "copy";
      },
    });
    const stats = await copier.run();
    // Checked for real: the mount must now hold exactly the snapshot's entries.
    const want = listTree(tree);
    const have = listTree(m.path);
    const problems: string[] = [];
    for (const [rel, e] of Object.entries(want)) {
      const diff = describeDifference(e, have[rel]);
      if (diff) problems.push(`${rel || "."}: ${diff}`);
    }
    for (const rel of Object.keys(have)) if (!(rel in want)) problems.push(`${rel}: should not exist`);
    if (problems.length > 0) {
      throw new Error(
        `after restoring mount ${m.index}, ${problems.length} entries still differ from the snapshot: ${problems.slice(0, 5).join("; ")}`,
      );
    }
    results.push({ index: m.index, stats, entries: Object.keys(want).length });
  }
  say("restored", { id, mounts: results });
}

function estimateCommand(cfg: HelperConfig): void {
  const baseIndex = loadIndex(cfg.store, cfg.base);
  const mounts = [];
  for (const m of cfg.mounts ?? []) {
    if (entryOf(m.path)?.type !== "dir") continue;
    const base = m.baseIndex !== undefined ? baseIndex?.[`m${m.baseIndex}`] : undefined;
    const idx = listTree(m.path);
    let files = 0;
    let bytes = 0;
    let newBytes = 0;
    for (const [rel, e] of Object.entries(idx)) {
      if (e.type !== "file") continue;
      files += 1;
      bytes += e.size;
      if (!unchangedSince(base?.[rel], e)) newBytes += e.size;
    }
    mounts.push({ index: m.index, files, bytes, newBytes, entries: Object.keys(idx).length });
  }
  say("estimate", { mounts });
}

function pruneCommand(cfg: HelperConfig): void {
  const removed: string[] = [];
  for (const id of cfg.remove ?? []) {
    if (!/^[0-9a-z][0-9a-z.-]*$/.test(id)) throw new Error(`refusing to remove ${JSON.stringify(id)}`);
    for (const dir of [`${id}.partial`, id]) {
      const path = join(cfg.store, dir);
      if (!existsSync(path)) continue;
      // The manifest goes first: a half-removed snapshot is then incomplete, never used.
      rmSync(join(path, "manifest.json"), { force: true });
      rmSync(path, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  fsyncPath(cfg.store);
  say("pruned", { removed });
}

function required<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw new Error(`helper configuration has no ${name}`);
  return value;
}

/** Runs the command given in PGU_HELPER (JSON); prints JSON lines; exits non-zero on failure. */
export async function main(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const raw = env.PGU_HELPER;
  if (!raw) throw new Error("PGU_HELPER is not set");
  const cfg = JSON.parse(raw) as HelperConfig;
  try {
    if (cfg.command === "snapshot") await snapshotCommand(cfg);
    else if (cfg.command === "restore") await restoreCommand(cfg);
    else if (cfg.command === "estimate") estimateCommand(cfg);
    else if (cfg.command === "prune") pruneCommand(cfg);
    else throw new Error(`unknown helper command ${JSON.stringify(cfg.command)}`);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    say("error", { message });
    if (cfg.mailbox) {
      try {
        writeDurable(join(cfg.mailbox, "error.json"), JSON.stringify({ ok: false, error: message }));
      } catch {}
    }
    process.exit(1);
  }
}

if (process.env.PGU_HELPER && process.env.PGU_HELPER_MAIN === "1") await main();
