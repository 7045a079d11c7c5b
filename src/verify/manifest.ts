/**
 * Strict validation of release.json (schema_version 1). Only called on bytes whose signature
 * already verified against the pinned policy; still, every field is checked, because a signed
 * manifest can be the wrong one (another tag, an older release replayed) or simply malformed.
 * Pure: no I/O. Errors are UpdaterErrors (`failed_precondition`) whose message names the field.
 *
 * The manifest's own `signing` section is never read: the signer policy lives in the updater's
 * configuration only.
 */
import { UpdaterError } from "../errors.js";
import type { ReleaseManifest } from "../orchestrator/release-manifest.js";
import { compareVersions, parseVersion } from "../releases/version.js";

export interface ManifestExpectations {
  /** The tag that was requested: the manifest must name exactly this one. */
  tag: string;
  /** The version that runs now, when known. */
  runningVersion?: string | undefined;
  /** Accept a version older than (or equal to) the running one. */
  allowDowngrade: boolean;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const REGISTRY = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/;
const REPOSITORY = /^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/;
const IMAGE_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const MAX_COMMAND_WORDS = 256;

export function validateManifest(bytes: Uint8Array, expect: ManifestExpectations): ReleaseManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw invalid(`release.json is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  const m = obj(doc, "release.json");
  if (m.schema_version !== 1) {
    throw invalid(
      `release.json schema_version is ${JSON.stringify(m.schema_version)}; this updater understands 1`,
    );
  }
  const name = str(m, "name");
  const version = str(m, "version");
  const tag = str(m, "tag");
  if (tag !== expect.tag) {
    throw invalid(
      `release.json is for tag ${JSON.stringify(tag)} but ${JSON.stringify(expect.tag)} was requested`,
      "MANIFEST_TAG_MISMATCH",
    );
  }
  const parsed = parseVersion(version);
  if (!parsed) throw invalid(`release.json version ${JSON.stringify(version)} is not a semantic version`);
  const tagVersion = parseVersion(tag);
  if (tagVersion && compareVersions(tagVersion, parsed) !== 0) {
    throw invalid(`release.json version ${version} does not match its tag ${tag}`, "MANIFEST_TAG_MISMATCH");
  }
  const image = obj(m.image, "image");
  const digest = str(image, "digest", "image.");
  if (!DIGEST.test(digest))
    throw invalid(`image.digest ${JSON.stringify(digest)} is not a sha256 digest (sha256:<64 hex>)`);
  const registry = str(image, "registry", "image.");
  if (!REGISTRY.test(registry))
    throw invalid(`image.registry ${JSON.stringify(registry)} is not a registry host[:port]`);
  const repository = str(image, "repository", "image.");
  if (!REPOSITORY.test(repository))
    throw invalid(`image.repository ${JSON.stringify(repository)} is not a valid repository path`);
  const imageTag = str(image, "tag", "image.");
  if (!IMAGE_TAG.test(imageTag))
    throw invalid(`image.tag ${JSON.stringify(imageTag)} is not a valid image tag`);
  const platforms = strList(image.platforms ?? [], "image.platforms");

  const migrationDoc = m.migration === undefined || m.migration === null ? {} : obj(m.migration, "migration");
  const required = optBool(migrationDoc, "required", "migration.") ?? false;
  const command = parseCommand(migrationDoc.command);
  if (required && command.length === 0)
    throw invalid("migration.required is true but migration.command is empty");
  const estimated = migrationDoc.estimated_downtime_seconds ?? 0;
  if (typeof estimated !== "number" || !Number.isInteger(estimated) || estimated < 0) {
    throw invalid("migration.estimated_downtime_seconds must be a whole number of seconds >= 0");
  }
  const downtime = optBool(migrationDoc, "downtime", "migration.") ?? estimated > 0;

  let minUpgradeFrom: string | undefined;
  if (m.min_upgrade_from !== undefined && m.min_upgrade_from !== null) {
    minUpgradeFrom = str(m, "min_upgrade_from");
    if (!parseVersion(minUpgradeFrom))
      throw invalid(`min_upgrade_from ${JSON.stringify(minUpgradeFrom)} is not a semantic version`);
  }
  const prerelease = optBool(m, "prerelease", "") ?? parsed.prerelease.length > 0;
  const breakingChanges = strList(m.breaking_changes ?? [], "breaking_changes");
  const notes = m.release_notes_markdown ?? "";
  if (typeof notes !== "string") throw invalid("release_notes_markdown must be a string");

  const running = expect.runningVersion ? parseVersion(expect.runningVersion) : undefined;
  if (running) {
    const order = compareVersions(parsed, running);
    if (order <= 0 && !expect.allowDowngrade) {
      throw invalid(
        order === 0
          ? `release ${tag} (version ${version}) is the version that already runs; nothing to update`
          : `release ${tag} (version ${version}) is older than the running version ${expect.runningVersion}; refusing a downgrade (request it explicitly with allow_downgrade)`,
        "DOWNGRADE_REFUSED",
      );
    }
    if (minUpgradeFrom) {
      const min = parseVersion(minUpgradeFrom);
      if (min && compareVersions(running, min) < 0) {
        throw invalid(
          `release ${tag} can only be installed over version ${minUpgradeFrom} or newer; ${expect.runningVersion} runs: update to an intermediate release first`,
          "UPGRADE_PATH_REFUSED",
        );
      }
    }
  }

  const manifest: ReleaseManifest = {
    name,
    version,
    tag,
    image: { registry, repository, tag: imageTag, digest, platforms },
    migration: { required, command, downtime, estimatedDowntimeSeconds: estimated },
    prerelease,
    breakingChanges,
    releaseNotes: notes,
  };
  if (minUpgradeFrom) manifest.minUpgradeFrom = minUpgradeFrom;
  return manifest;
}

/**
 * A migration command as argv. An array is taken as it is; a string is split into words the way a
 * POSIX shell splits them (quotes and backslashes), with no expansion of any kind and no shell.
 */
export function parseCommand(value: unknown): string[] {
  if (value === undefined || value === null || value === "") return [];
  let words: string[];
  if (Array.isArray(value)) {
    words = value.map((w, i) => {
      if (typeof w !== "string") throw invalid(`migration.command[${i}] must be a string`);
      return w;
    });
  } else if (typeof value === "string") {
    words = splitWords(value);
  } else {
    throw invalid("migration.command must be a string or an array of strings");
  }
  if (words.length > MAX_COMMAND_WORDS)
    throw invalid(`migration.command has more than ${MAX_COMMAND_WORDS} words`);
  if (words.some((w) => w.includes("\0"))) throw invalid("migration.command contains a NUL character");
  return words;
}

function splitWords(input: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < input.length; i++) {
    const c = input[i] as string;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === "\\" && i + 1 < input.length && '"\\$`'.includes(input[i + 1] as string))
        word += input[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 < input.length) word += input[++i];
      inWord = true;
    } else if (c === " " || c === "\t" || c === "\n") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) throw invalid(`migration.command has an unterminated ${quote} quote`);
  if (inWord) words.push(word);
  return words;
}

function invalid(message: string, reason = "MANIFEST_INVALID"): UpdaterError {
  return new UpdaterError("failed_precondition", message, { reason });
}

function obj(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw invalid(`${where} must be a JSON object`);
  return value as Record<string, unknown>;
}

function str(o: Record<string, unknown>, key: string, prefix = ""): string {
  const v = o[key];
  if (typeof v !== "string" || v === "") throw invalid(`${prefix}${key} must be a non-empty string`);
  if (v.length > 1024) throw invalid(`${prefix}${key} is longer than 1024 characters`);
  return v;
}

function optBool(o: Record<string, unknown>, key: string, prefix: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalid(`${prefix}${key} must be true or false`);
  return v;
}

function strList(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string"))
    throw invalid(`${where} must be an array of strings`);
  return value as string[];
}
