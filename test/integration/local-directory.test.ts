/** Releases from a local directory (air-gapped sites), on real files. */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UpdaterError } from "../../src/errors.js";
import { LocalDirectoryReleases } from "../../src/releases/local-directory.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pgu-releases-"));
  for (const tag of ["v1.0.0", "v1.10.0", "v1.9.0", "v2.0.0-rc.1"]) {
    await mkdir(join(dir, tag));
    await writeFile(join(dir, tag, "release.json"), `{"tag":"${tag}"}`);
    await writeFile(join(dir, tag, "release.json.sig"), "c2ln");
  }
  await writeFile(join(dir, "v1.10.0", "notes.md"), "## 1.10\n- better");
  await mkdir(join(dir, "not-a-version"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const code = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (err) {
    return err instanceof UpdaterError ? `${err.code}: ${err.message}` : String(err);
  }
  return "no error";
};

describe("LocalDirectoryReleases", () => {
  it("finds the newest release of each channel by semantic version, with its notes", async () => {
    const source = new LocalDirectoryReleases(dir);
    const stable = await source.latest("stable");
    expect(stable).toMatchObject({ tag: "v1.10.0", prerelease: false, notes: "## 1.10\n- better" });
    expect(typeof stable.publishedAt).toBe("string");
    expect((await source.latest("prerelease")).tag).toBe("v2.0.0-rc.1");
  });

  it("lists a release's files as assets and reads them with the size cap", async () => {
    const source = new LocalDirectoryReleases(dir);
    const release = await source.release("v1.9.0");
    expect(release.assets.map((a) => a.name).sort()).toEqual(["release.json", "release.json.sig"]);
    const manifest = release.assets.find((a) => a.name === "release.json");
    if (!manifest) throw new Error("no release.json");
    expect(new TextDecoder().decode(await source.download(manifest, 1024))).toBe('{"tag":"v1.9.0"}');
    expect(await code(source.download(manifest, 4))).toMatch(
      /^failed_precondition: release.json is 16 bytes, more than the 4 allowed/,
    );
  });

  it("refuses unknown tags, path tricks and files outside the directory", async () => {
    const source = new LocalDirectoryReleases(dir);
    expect(await code(source.release("v3.0.0"))).toMatch(/^not_found: no release v3.0.0 in /);
    expect(await code(source.release("../etc"))).toMatch(/^invalid_argument: /);
    await symlink("/etc/hostname", join(dir, "v1.0.0", "escape"));
    // Symbolic links are not offered as assets, and a locator that leads outside is refused.
    expect((await source.release("v1.0.0")).assets.map((a) => a.name)).not.toContain("escape");
    const outside = { name: "escape", size: 0, locator: join(dir, "v1.0.0", "escape") };
    expect(await code(source.download(outside, 1024))).toMatch(
      /^invalid_argument: .* is outside the releases directory/,
    );
    expect(await code(new LocalDirectoryReleases(join(dir, "missing")).latest("stable"))).toMatch(
      /^unavailable: cannot read the releases directory .*: ENOENT/,
    );
  });
});
