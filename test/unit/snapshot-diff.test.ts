/**
 * The pure part of the snapshot helper: when a file may be trusted unchanged by its stat, and what
 * each pass does with a file.
 */
import { describe, expect, it } from "vitest";
import {
  decideRestoreFile,
  decideSnapshotFile,
  describeDifference,
  type Entry,
  extraNames,
  isRacy,
  RACY_MARGIN_NS,
  unchangedSince,
} from "../../src/snapshots/helper.js";
import { ownContainerId } from "../../src/snapshots/snapshot-store.js";

const file = (over: Partial<Entry> = {}): Entry => ({
  type: "file",
  mode: 0o644,
  uid: 1000,
  gid: 1000,
  size: 10,
  mtimeNs: "1700000000000000000",
  ctimeNs: "1700000000000000000",
  ino: "42",
  ...over,
});

describe("unchangedSince", () => {
  it("trusts an entry whose inode, ctime, mtime and size are the same", () => {
    expect(unchangedSince(file(), file())).toBe(true);
  });
  it.each([
    ["another inode (replaced by a rename)", { ino: "43" }],
    ["another ctime (any write, chmod or chown)", { ctimeNs: "1700000000000000001" }],
    ["another mtime", { mtimeNs: "1" }],
    ["another size", { size: 11 }],
    ["another type", { type: "symlink" as const }],
  ])("does not trust %s", (_why, over) => {
    expect(unchangedSince(file(), file(over))).toBe(false);
  });
  it("never trusts a racy record or a missing one", () => {
    expect(unchangedSince(file({ racy: true }), file())).toBe(false);
    expect(unchangedSince(undefined, file())).toBe(false);
  });
});

describe("isRacy", () => {
  it("marks what changed within the margin of the moment it was read", () => {
    const at = 1_700_000_010_000_000_000n;
    expect(isRacy((at - RACY_MARGIN_NS + 1n).toString(), at)).toBe(true);
    expect(isRacy(at.toString(), at)).toBe(true);
    expect(isRacy((at - RACY_MARGIN_NS - 1n).toString(), at)).toBe(false);
  });
});

describe("decideSnapshotFile", () => {
  const known = (over: Partial<Entry> = {}, shared = false) => ({ entry: file(over), shared });
  it("skips a file copied before and unchanged since", () => {
    expect(decideSnapshotFile(file(), known(), undefined, true)).toBe("skip");
  });
  it("links a file unchanged since the base snapshot, on the first look only", () => {
    expect(decideSnapshotFile(file(), undefined, file(), false)).toBe("link");
    expect(decideSnapshotFile(file(), undefined, file({ racy: true }), false)).toBe("copy");
    expect(decideSnapshotFile(file(), undefined, file({ size: 3 }), false)).toBe("copy");
  });
  it("compares in blocks a changed file it owns, and never writes into one it shares with the base", () => {
    expect(decideSnapshotFile(file({ size: 20 }), known(), undefined, true)).toBe("patch");
    expect(decideSnapshotFile(file({ size: 20 }), known({}, true), undefined, true)).toBe("copy");
  });
  it("compares a racy file again even when its stat did not move", () => {
    expect(decideSnapshotFile(file(), known({ racy: true }), undefined, true)).toBe("patch");
  });
  it("copies when the snapshot lost its copy", () => {
    expect(decideSnapshotFile(file(), known(), undefined, false)).toBe("copy");
  });
});

describe("decideRestoreFile", () => {
  it("creates what is missing and replaces what is not a file", () => {
    expect(decideRestoreFile(file(), undefined)).toBe("create");
    expect(decideRestoreFile(file(), file({ type: "dir" }))).toBe("replace");
  });
  it("leaves a file untouched since the snapshot's final pass, and compares anything else", () => {
    expect(decideRestoreFile(file(), file())).toBe("skip");
    expect(decideRestoreFile(file(), file({ ctimeNs: "1700000000000000005" }))).toBe("patch");
    expect(decideRestoreFile(undefined, file())).toBe("patch");
  });
});

describe("extraNames and describeDifference", () => {
  it("lists what a directory holds beyond what it should", () => {
    expect(extraNames(["a", "b"], ["b", "c", ".pgu~1.0"])).toEqual(["c", ".pgu~1.0"]);
  });
  it("says how an entry differs, with mtimes equal to the microsecond", () => {
    expect(describeDifference(file(), undefined)).toBe("missing");
    expect(describeDifference(file(), file({ uid: 0 }))).toContain("owned by 0:1000");
    expect(describeDifference(file(), file({ mode: 0o600 }))).toContain("mode 600");
    expect(describeDifference(file(), file({ mtimeNs: "1700000000000000900" }))).toBeUndefined();
    expect(describeDifference(file(), file({ mtimeNs: "1700000000000002000" }))).toContain("mtime");
    expect(
      describeDifference(file({ type: "symlink", target: "a" }), file({ type: "symlink", target: "b" })),
    ).toContain("links to b");
  });
});

describe("ownContainerId", () => {
  it("finds the container id in the engine's bind mounts of /etc/hostname", async () => {
    const { mkdtemp, writeFile } = await import("node:fs/promises");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const dir = await mkdtemp(join(tmpdir(), "pgu-mountinfo-"));
    const id = "a".repeat(64);
    await writeFile(
      join(dir, "in"),
      `1 0 0:1 / / rw - overlay overlay rw\n2 1 8:1 /var/lib/docker/containers/${id}/hostname /etc/hostname rw - ext4 /dev/vda rw\n`,
    );
    await writeFile(join(dir, "out"), "1 0 8:1 / / rw - ext4 /dev/vda rw\n");
    expect(await ownContainerId(join(dir, "in"))).toBe(id);
    expect(await ownContainerId(join(dir, "out"))).toBeUndefined();
    expect(await ownContainerId(join(dir, "missing"))).toBeUndefined();
  });
});
