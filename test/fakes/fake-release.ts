/**
 * An in-memory ReleaseSource and a ReleaseVerifier for unit tests. The verifier accepts exactly
 * the signature bytes "valid-signature-for:" + sha256(manifest), so a test can tamper either side.
 */
import { createHash } from "node:crypto";
import { UpdaterError } from "../../src/errors.js";
import type { Verification } from "../../src/orchestrator/job.js";
import type {
  Channel,
  ReleaseAsset,
  ReleaseInfo,
  ReleaseSource,
  ReleaseVerifier,
  ReleaseWithAssets,
} from "../../src/orchestrator/ports.js";

export const DIGEST_V2 = `sha256:${"b".repeat(64)}`;

export function manifestFor(tag: string, overrides: Record<string, unknown> = {}): Uint8Array {
  const version = tag.replace(/^v/, "");
  return new TextEncoder().encode(
    JSON.stringify({
      schema_version: 1,
      name: "processgit",
      version,
      tag,
      prerelease: version.includes("-"),
      image: {
        registry: "registry.test",
        repository: "processgit",
        tag: version,
        digest: DIGEST_V2,
        platforms: ["linux/amd64"],
      },
      migration: { required: true, command: ["processgit", "migrate"], estimated_downtime_seconds: 0 },
      breaking_changes: [],
      release_notes_markdown: `Release ${tag}`,
      ...overrides,
    }),
  );
}

export function signatureFor(manifest: Uint8Array): Uint8Array {
  return new TextEncoder().encode(
    `valid-signature-for:${createHash("sha256").update(manifest).digest("hex")}`,
  );
}

export class FakeVerifier implements ReleaseVerifier {
  readonly signatureAsset = "release.json.fake-sig";

  async verify(manifest: Uint8Array, signature: Uint8Array): Promise<Verification> {
    const expected = Buffer.from(signatureFor(manifest));
    if (!expected.equals(Buffer.from(signature))) {
      throw new UpdaterError("failed_precondition", "signature does not match release.json", {
        reason: "SIGNATURE_INVALID",
      });
    }
    return {
      policy: "key",
      keyFingerprint: "SHA256:fake",
      manifestSha256: createHash("sha256").update(manifest).digest("hex"),
    };
  }
}

export class MemoryReleaseSource implements ReleaseSource {
  readonly releases = new Map<string, { info: ReleaseInfo; files: Map<string, Uint8Array> }>();
  latestCalls = 0;

  /** Adds a signed release with release.json and the fake signature. */
  add(
    tag: string,
    options: { prerelease?: boolean; manifest?: Uint8Array; signature?: Uint8Array | null } = {},
  ): this {
    const manifest = options.manifest ?? manifestFor(tag);
    const files = new Map<string, Uint8Array>([["release.json", manifest]]);
    if (options.signature !== null)
      files.set("release.json.fake-sig", options.signature ?? signatureFor(manifest));
    this.releases.set(tag, {
      info: {
        tag,
        name: `ProcessGit ${tag}`,
        prerelease: options.prerelease ?? false,
        url: `https://example.test/releases/${tag}`,
        publishedAt: "2026-11-01T00:00:00.000Z",
        notes: `Notes for ${tag}`,
      },
      files,
    });
    return this;
  }

  async latest(channel: Channel): Promise<ReleaseInfo> {
    this.latestCalls += 1;
    const all = [...this.releases.values()]
      .map((r) => r.info)
      .filter((r) => channel === "prerelease" || !r.prerelease);
    const last = all.at(-1);
    if (!last) throw new UpdaterError("not_found", `no ${channel} release`);
    return last;
  }

  async release(tag: string): Promise<ReleaseWithAssets> {
    const r = this.releases.get(tag);
    if (!r) throw new UpdaterError("not_found", `release ${tag} not found`);
    const assets: ReleaseAsset[] = [...r.files.entries()].map(([name, bytes]) => ({
      name,
      size: bytes.byteLength,
      locator: `${tag}/${name}`,
    }));
    return { ...r.info, assets };
  }

  async download(asset: ReleaseAsset, maxBytes: number): Promise<Uint8Array> {
    const [tag, name] = asset.locator.split("/") as [string, string];
    const bytes = this.releases.get(tag)?.files.get(name);
    if (!bytes) throw new UpdaterError("not_found", `asset ${asset.locator} not found`);
    if (bytes.byteLength > maxBytes)
      throw new UpdaterError("failed_precondition", `asset ${name} is larger than ${maxBytes} bytes`);
    return bytes;
  }
}
