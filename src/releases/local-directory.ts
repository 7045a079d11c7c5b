/**
 * Releases from a local directory, for air-gapped sites: one folder per tag holding the same
 * files a GitHub release carries (`release.json` and its signature asset), optionally `notes.md`.
 * The same checks apply to what is in it: nothing in release.json is read here at all; the
 * signature is verified and the manifest validated by the runner exactly as for GitHub.
 *
 *   $PROCESSGIT_UPDATER_RELEASES_DIR/v1.4.0/release.json
 *   $PROCESSGIT_UPDATER_RELEASES_DIR/v1.4.0/release.json.sigstore.json   (or release.json.sig)
 *   $PROCESSGIT_UPDATER_RELEASES_DIR/v1.4.0/notes.md                      (optional)
 */
import { open, readdir, readFile, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import { UpdaterError } from "../errors.js";
import { TAG_PATTERN } from "../orchestrator/job.js";
import type {
  Channel,
  ReleaseAsset,
  ReleaseInfo,
  ReleaseSource,
  ReleaseWithAssets,
} from "../orchestrator/ports.js";
import { compareVersions, parseVersion, type Version } from "./version.js";

const NOTES_FILE = "notes.md";
const MAX_NOTES_BYTES = 256 * 1024;

export class LocalDirectoryReleases implements ReleaseSource {
  constructor(private readonly dir: string) {}

  /** The newest tag folder of the channel, by semantic version of the folder name (prerelease: a semver prerelease). */
  async latest(channel: Channel): Promise<ReleaseInfo> {
    const candidates = (await this.tags()).filter(
      (t) => channel === "prerelease" || t.version.prerelease.length === 0,
    );
    const newest = candidates.sort((a, b) => compareVersions(b.version, a.version))[0]?.tag;
    if (!newest) {
      throw new UpdaterError(
        "not_found",
        `no ${channel === "stable" ? "stable " : ""}release folder (named like v1.4.0) in ${this.dir}`,
      );
    }
    return this.info(newest);
  }

  async release(tag: string): Promise<ReleaseWithAssets> {
    const folder = await this.folder(tag);
    const entries = await readdir(folder, { withFileTypes: true });
    const assets: ReleaseAsset[] = [];
    for (const e of entries) {
      if (!e.isFile()) continue;
      const path = join(folder, e.name);
      assets.push({ name: e.name, size: (await stat(path)).size, locator: path });
    }
    return { ...(await this.info(tag)), assets };
  }

  async download(asset: ReleaseAsset, maxBytes: number): Promise<Uint8Array> {
    const root = await realpath(this.dir);
    const path = await realpath(asset.locator).catch(() => {
      throw new UpdaterError("not_found", `the release file ${asset.locator} is gone`);
    });
    if (!path.startsWith(root + sep)) {
      throw new UpdaterError(
        "invalid_argument",
        `${asset.locator} is outside the releases directory ${this.dir}`,
      );
    }
    const handle = await open(path, "r");
    try {
      const size = (await handle.stat()).size;
      if (size > maxBytes) {
        throw new UpdaterError(
          "failed_precondition",
          `${asset.name} is ${size} bytes, more than the ${maxBytes} allowed`,
          {
            reason: "ASSET_TOO_LARGE",
          },
        );
      }
      const buffer = Buffer.alloc(size);
      await handle.read(buffer, 0, size, 0);
      return new Uint8Array(buffer);
    } finally {
      await handle.close();
    }
  }

  private async tags(): Promise<Array<{ tag: string; version: Version }>> {
    const entries = await readdir(this.dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      throw new UpdaterError(
        "unavailable",
        `cannot read the releases directory ${this.dir} (PROCESSGIT_UPDATER_RELEASES_DIR): ${err.code ?? err.message}`,
      );
    });
    const tags: Array<{ tag: string; version: Version }> = [];
    for (const e of entries) {
      const version = e.isDirectory() && TAG_PATTERN.test(e.name) ? parseVersion(e.name) : undefined;
      if (version) tags.push({ tag: e.name, version });
    }
    return tags;
  }

  private async folder(tag: string): Promise<string> {
    if (!TAG_PATTERN.test(tag) || tag === "." || tag === "..") {
      throw new UpdaterError(
        "invalid_argument",
        `tag ${JSON.stringify(tag.slice(0, 140))} is not a valid release tag`,
      );
    }
    const folder = join(this.dir, tag);
    const s = await stat(folder).catch(() => undefined);
    if (!s?.isDirectory()) {
      throw new UpdaterError("not_found", `no release ${tag} in ${this.dir} (expected a folder ${folder})`);
    }
    return folder;
  }

  private async info(tag: string): Promise<ReleaseInfo> {
    const folder = await this.folder(tag);
    const notes = await readFile(join(folder, NOTES_FILE), "utf8")
      .then((t) => t.slice(0, MAX_NOTES_BYTES))
      .catch(() => "");
    const info: ReleaseInfo = {
      tag,
      name: tag,
      prerelease: (parseVersion(tag)?.prerelease.length ?? 0) > 0,
      url: `file://${folder}`,
      notes,
    };
    info.publishedAt = (await stat(folder)).mtime.toISOString();
    return info;
  }
}
