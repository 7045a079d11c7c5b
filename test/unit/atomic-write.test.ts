/** writeFileAtomic and its temp-file helpers, on real files in a temp directory. */
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isTempFileOf, removeStaleTempFiles, writeFileAtomic } from "../../src/store/atomic-write.js";

let dir: string;
let target: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "atomic-write-"));
  target = join(dir, "state.json");
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("writeFileAtomic", () => {
  it("creates the file with the given contents and mode 0600, leaving no temp file", async () => {
    await writeFileAtomic(target, "hello\n");
    expect(await readFile(target, "utf8")).toBe("hello\n");
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["state.json"]);
  });

  it("replaces an existing file, including its wider mode", async () => {
    await writeFile(target, "old contents that are longer than the new ones");
    await chmod(target, 0o644);
    await writeFileAtomic(target, new TextEncoder().encode("new"));
    expect(await readFile(target, "utf8")).toBe("new");
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["state.json"]);
  });

  it("removes its temp file and leaves the target alone when the rename fails", async () => {
    await mkdir(target);
    await writeFile(join(target, "inside"), "keep");
    await expect(writeFileAtomic(target, "data")).rejects.toThrow();
    expect(await readdir(dir)).toEqual(["state.json"]);
    expect(await readFile(join(target, "inside"), "utf8")).toBe("keep");
  });

  it("fails without creating anything when the directory does not exist", async () => {
    await expect(writeFileAtomic(join(dir, "missing", "state.json"), "data")).rejects.toMatchObject({
      code: "ENOENT",
    });
    expect(await readdir(dir)).toEqual([]);
  });

  it("never mixes concurrent writers: the file ends as exactly one of them", async () => {
    const contents = Array.from(
      { length: 20 },
      (_, i) => `${String(i).padStart(2, "0")}:${"x".repeat(100_000)}`,
    );
    await Promise.all(contents.map((c) => writeFileAtomic(target, c)));
    expect(contents).toContain(await readFile(target, "utf8"));
    expect(await readdir(dir)).toEqual(["state.json"]);
  });
});

describe("temp files", () => {
  it("recognises only the temp names writeFileAtomic uses for that target", () => {
    expect(isTempFileOf(target, "state.json.123.0a1b2c.tmp")).toBe(true);
    expect(isTempFileOf(target, "state.json")).toBe(false);
    expect(isTempFileOf(target, "state.json.bak")).toBe(false);
    expect(isTempFileOf(target, "state.json.tmp")).toBe(false);
    expect(isTempFileOf(target, "state.json.123.tmp")).toBe(false);
    expect(isTempFileOf(target, "state.jsonx.123.0a1b.tmp")).toBe(false);
    expect(isTempFileOf(target, "other.json.123.0a1b.tmp")).toBe(false);
  });

  it("removeStaleTempFiles removes leftovers of the target and nothing else", async () => {
    await writeFileAtomic(target, "current");
    for (const name of ["state.json.1.ab.tmp", "state.json.99.0123456789ab.tmp"]) {
      await writeFile(join(dir, name), "half a wri");
    }
    for (const name of ["state.json.bak", "other.json.1.ab.tmp"]) await writeFile(join(dir, name), "keep");

    const removed = await removeStaleTempFiles(target);

    expect(removed.sort()).toEqual(["state.json.1.ab.tmp", "state.json.99.0123456789ab.tmp"]);
    expect((await readdir(dir)).sort()).toEqual(["other.json.1.ab.tmp", "state.json", "state.json.bak"]);
    expect(await readFile(target, "utf8")).toBe("current");
  });
});
