#!/usr/bin/env node
/**
 * Writes release.json (schema_version 1, the shape src/verify/manifest.ts `validateManifest`
 * accepts) for a ProcessGit release, and the GitHub release body that goes with it. The release
 * workflow (.github/workflows/release.yml) runs exactly this file; test/unit/release-workflow.test.ts
 * runs it the same way and checks the result with the updater's own validator.
 *
 * Plain Node ESM (Node 18 or later), no dependencies, no build step.
 *
 *   node scripts/release-manifest.mjs resolve --tag vX.Y.Z
 *       Checks the release tag and prints, as `key=value` lines for $GITHUB_OUTPUT:
 *       tag, version (the tag without "v"), image_tag, prerelease (true|false).
 *
 *   node scripts/release-manifest.mjs [--output FILE] [--body-output FILE] [options]
 *       Writes release.json to FILE (or stdout) and, with --body-output, the release body (Markdown).
 *       Each option can also come from the environment variable named below; an option given on the
 *       command line wins. Every problem is reported at once (exit status 2); nothing is written then.
 *
 *   --tag                         RELEASE_TAG        required: vMAJOR.MINOR.PATCH[-PRERELEASE]
 *   --version                     RELEASE_VERSION    default: the tag without "v"; must equal it
 *   --name                        RELEASE_NAME       default: processgit
 *   --app-registry                APP_REGISTRY       default: ghcr.io
 *   --app-repository              APP_REPOSITORY     required: e.g. algomation-ai/processgit
 *   --app-image-tag               APP_IMAGE_TAG      default: the version
 *   --app-digest                  APP_DIGEST         required: sha256:<64 hex>, as the build reported it
 *   --platforms                   PLATFORMS          comma or newline separated, e.g. linux/amd64,linux/arm64
 *   --updater-registry            UPDATER_REGISTRY   default: the app registry
 *   --updater-repository          UPDATER_REPOSITORY the updater image; together with --updater-digest
 *   --updater-image-tag           UPDATER_IMAGE_TAG  default: the version
 *   --updater-digest              UPDATER_DIGEST     sha256:<64 hex>
 *   --migration-command           MIGRATION_COMMAND  a JSON array of strings, or a string split into
 *                                                    words like a POSIX shell would (quotes,
 *                                                    backslashes), without expansion; written as argv
 *   --migration-required          MIGRATION_REQUIRED true | false | auto (default: auto = true exactly
 *                                                    when there is a command)
 *   --migration-downtime          MIGRATION_DOWNTIME true | false (default: estimated seconds > 0)
 *   --estimated-downtime-seconds  MIGRATION_ESTIMATED_DOWNTIME_SECONDS  whole seconds >= 0, default 0
 *   --min-upgrade-from            MIN_UPGRADE_FROM   a semantic version, optional
 *   --breaking-changes            BREAKING_CHANGES   one per line, optional
 *   --notes                       RELEASE_NOTES      Markdown; when empty, the file below is read
 *   --notes-file                  RELEASE_NOTES_FILE Markdown file (a missing file counts as no notes)
 *   --repository                  GITHUB_REPOSITORY  owner/name; only for the verify command in the body
 *
 * The updater image has no field in schema_version 1. validateManifest ignores fields it does not
 * know, so the updater image is recorded in `updater_image` (signed with the rest, never read by the
 * updater) and in the release body.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

// The rules of src/verify/manifest.ts and src/releases/version.ts, repeated here because this file
// runs without a build; the test checks every output against the real validateManifest.
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const REGISTRY = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/;
const REPOSITORY = /^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/;
const IMAGE_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const NUMERIC = "0|[1-9]\\d*";
const PRERELEASE_ID = `(?:${NUMERIC}|\\d*[a-zA-Z-][0-9a-zA-Z-]*)`;
const CORE = `(${NUMERIC})\\.(${NUMERIC})\\.(${NUMERIC})(?:-(${PRERELEASE_ID}(?:\\.${PRERELEASE_ID})*))?`;
const BUILD = "(?:\\+([0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*))?";
const SEMVER = new RegExp(`^v?${CORE}${BUILD}$`);
const RELEASE_TAG = new RegExp(`^v${CORE}$`);
const MAX_COMMAND_WORDS = 256;
const MAX_STRING = 1024;

const OPTIONS = {
  tag: "RELEASE_TAG",
  version: "RELEASE_VERSION",
  name: "RELEASE_NAME",
  "app-registry": "APP_REGISTRY",
  "app-repository": "APP_REPOSITORY",
  "app-image-tag": "APP_IMAGE_TAG",
  "app-digest": "APP_DIGEST",
  platforms: "PLATFORMS",
  "updater-registry": "UPDATER_REGISTRY",
  "updater-repository": "UPDATER_REPOSITORY",
  "updater-image-tag": "UPDATER_IMAGE_TAG",
  "updater-digest": "UPDATER_DIGEST",
  "migration-command": "MIGRATION_COMMAND",
  "migration-required": "MIGRATION_REQUIRED",
  "migration-downtime": "MIGRATION_DOWNTIME",
  "estimated-downtime-seconds": "MIGRATION_ESTIMATED_DOWNTIME_SECONDS",
  "min-upgrade-from": "MIN_UPGRADE_FROM",
  "breaking-changes": "BREAKING_CHANGES",
  notes: "RELEASE_NOTES",
  "notes-file": "RELEASE_NOTES_FILE",
  repository: "GITHUB_REPOSITORY",
};

class InputError extends Error {}

/** Collects every problem, so one run names them all. */
class Problems {
  list = [];
  add(message) {
    this.list.push(message);
  }
  throwIfAny() {
    if (this.list.length > 0) throw new InputError(this.list.join("\n"));
  }
}

function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      ...Object.fromEntries(Object.keys(OPTIONS).map((k) => [k, { type: "string" }])),
      output: { type: "string", short: "o" },
      "body-output": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  /** The value of an option: the command line, else its environment variable, trimmed; "" when unset. */
  const get = (key) => (values[key] ?? process.env[OPTIONS[key]] ?? "").trim();
  const label = (key) => `--${key} (${OPTIONS[key]})`;

  if (positionals.length === 1 && positionals[0] === "resolve") {
    const problems = new Problems();
    const release = resolveTag(get("tag"), get("version"), label, problems);
    problems.throwIfAny();
    process.stdout.write(
      `tag=${release.tag}\nversion=${release.version}\nimage_tag=${release.version}\nprerelease=${release.prerelease}\n`,
    );
    return;
  }
  if (positionals.length > 0) throw new InputError(`unknown command ${positionals.join(" ")}\n${usage()}`);

  const { manifest, body } = build(get, label);
  const json = `${JSON.stringify(manifest, null, 2)}\n`;
  if (values.output) writeFileSync(values.output, json);
  else process.stdout.write(json);
  if (values["body-output"]) writeFileSync(values["body-output"], body);
}

function build(get, label) {
  const problems = new Problems();
  const release = resolveTag(get("tag"), get("version"), label, problems);
  const name = get("name") || "processgit";
  checkString(name, label("name"), problems);

  const platforms = list(get("platforms"), /[,\n]/);
  const app = image(
    {
      registry: get("app-registry") || "ghcr.io",
      repository: get("app-repository"),
      tag: get("app-image-tag") || release.version,
      digest: get("app-digest"),
      platforms,
    },
    { registry: "app-registry", repository: "app-repository", tag: "app-image-tag", digest: "app-digest" },
    label,
    problems,
  );

  let updater;
  if (get("updater-repository") || get("updater-digest")) {
    updater = image(
      {
        registry: get("updater-registry") || app.registry,
        repository: get("updater-repository"),
        tag: get("updater-image-tag") || release.version,
        digest: get("updater-digest"),
        platforms,
      },
      {
        registry: "updater-registry",
        repository: "updater-repository",
        tag: "updater-image-tag",
        digest: "updater-digest",
      },
      label,
      problems,
    );
  }

  const migration = migrationOf(get, label, problems);

  const minUpgradeFrom = get("min-upgrade-from");
  checkString(minUpgradeFrom, label("min-upgrade-from"), problems);
  if (minUpgradeFrom && !SEMVER.test(minUpgradeFrom)) {
    problems.add(`${label("min-upgrade-from")} ${JSON.stringify(minUpgradeFrom)} is not a semantic version`);
  }

  const breakingChanges = list(get("breaking-changes"), /\n/);
  const notes = notesOf(get, label, problems);
  problems.throwIfAny();

  const manifest = {
    schema_version: 1,
    name,
    version: release.version,
    tag: release.tag,
    image: app,
    migration,
    ...(minUpgradeFrom ? { min_upgrade_from: minUpgradeFrom } : {}),
    prerelease: release.prerelease,
    breaking_changes: breakingChanges,
    release_notes_markdown: notes,
    ...(updater ? { updater_image: updater } : {}),
  };
  return { manifest, body: releaseBody(manifest, get("repository")) };
}

/** The release tag (vX.Y.Z[-pre]) and its version; a given version must be the tag without "v". */
function resolveTag(tag, version, label, problems) {
  if (!tag) {
    problems.add(`${label("tag")} is required`);
    return { tag: "", version: version || "", prerelease: false };
  }
  const m = RELEASE_TAG.exec(tag);
  if (!m) {
    problems.add(
      SEMVER.test(tag) && tag.startsWith("v")
        ? `${label("tag")} ${JSON.stringify(tag)} carries build metadata (+...), which image tags cannot hold; tag the release vMAJOR.MINOR.PATCH[-PRERELEASE]`
        : `${label("tag")} ${JSON.stringify(tag)} is not a release tag vMAJOR.MINOR.PATCH[-PRERELEASE] (the signer policy matches refs/tags/v*)`,
    );
    return { tag, version: version || tag.replace(/^v/, ""), prerelease: false };
  }
  const fromTag = tag.slice(1);
  if (version && version !== fromTag) {
    problems.add(
      `${label("version")} ${JSON.stringify(version)} does not match tag ${tag} (expected ${JSON.stringify(fromTag)}): the updater refuses such a manifest`,
    );
  }
  checkString(tag, label("tag"), problems);
  return { tag, version: fromTag, prerelease: m[4] !== undefined };
}

function image(img, keys, label, problems) {
  const rules = [
    ["registry", REGISTRY, "a registry host[:port], lower case, no scheme"],
    ["repository", REPOSITORY, "a lower-case repository path such as owner/name"],
    ["tag", IMAGE_TAG, "a valid image tag"],
    ["digest", DIGEST, "a sha256 digest (sha256:<64 lower-case hex>) as the image build reported it"],
  ];
  for (const [field, pattern, what] of rules) {
    const value = img[field];
    if (!value) problems.add(`${label(keys[field])} is required`);
    else if (value.length > MAX_STRING) checkString(value, label(keys[field]), problems);
    else if (!pattern.test(value))
      problems.add(`${label(keys[field])} ${JSON.stringify(value)} is not ${what}`);
  }
  return img;
}

function migrationOf(get, label, problems) {
  let command = [];
  const raw = get("migration-command");
  try {
    command = raw.startsWith("[") ? jsonArgv(raw) : splitWords(raw);
    if (command.length > MAX_COMMAND_WORDS) throw new InputError(`has more than ${MAX_COMMAND_WORDS} words`);
    if (command.some((w) => w.includes("\0"))) throw new InputError("contains a NUL character");
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    problems.add(`${label("migration-command")} ${err.message}`);
  }

  const requiredText = (get("migration-required") || "auto").toLowerCase();
  let required = command.length > 0;
  if (requiredText === "true") required = true;
  else if (requiredText === "false") required = false;
  else if (requiredText !== "auto")
    problems.add(
      `${label("migration-required")} must be true, false or auto, not ${JSON.stringify(requiredText)}`,
    );
  if (required && command.length === 0)
    problems.add(`${label("migration-required")} is true but ${label("migration-command")} is empty`);

  const secondsText = get("estimated-downtime-seconds") || "0";
  const seconds = /^\d{1,9}$/.test(secondsText) ? Number(secondsText) : Number.NaN;
  if (Number.isNaN(seconds))
    problems.add(
      `${label("estimated-downtime-seconds")} must be a whole number of seconds >= 0, not ${JSON.stringify(secondsText)}`,
    );

  const downtimeText = get("migration-downtime").toLowerCase();
  let downtime = seconds > 0;
  if (downtimeText === "true") downtime = true;
  else if (downtimeText === "false") downtime = false;
  else if (downtimeText !== "")
    problems.add(`${label("migration-downtime")} must be true or false, not ${JSON.stringify(downtimeText)}`);

  return { required, command, downtime, estimated_downtime_seconds: Number.isNaN(seconds) ? 0 : seconds };
}

function jsonArgv(raw) {
  let value;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new InputError(`starts with "[" but is not a JSON array: ${err.message}`);
  }
  if (!Array.isArray(value) || value.some((w) => typeof w !== "string"))
    throw new InputError("must be a JSON array of strings");
  return value;
}

/** Splits like a POSIX shell (quotes, backslashes), with no expansion: src/verify/manifest.ts parseCommand. */
function splitWords(input) {
  const words = [];
  let word = "";
  let inWord = false;
  let quote;
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === "\\" && i + 1 < input.length && '"\\$`'.includes(input[i + 1])) word += input[++i];
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
  if (quote) throw new InputError(`has an unterminated ${quote} quote`);
  if (inWord) words.push(word);
  return words;
}

function notesOf(get, label, problems) {
  let notes = get("notes");
  const file = get("notes-file");
  if (!notes && file && existsSync(file)) {
    try {
      notes = readFileSync(file, "utf8").trim();
    } catch (err) {
      problems.add(`${label("notes-file")} ${JSON.stringify(file)} cannot be read: ${err.message}`);
    }
  }
  return notes ? `${notes}\n` : "";
}

function checkString(value, where, problems) {
  if (value.length > MAX_STRING) problems.add(`${where} is longer than ${MAX_STRING} characters`);
}

function list(text, separator) {
  return text
    .split(separator)
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** The GitHub release body: the notes, both images by digest, how to check the signature. */
function releaseBody(m, repository) {
  const ref = (img) => `${img.registry}/${img.repository}:${img.tag}@${img.digest}`;
  const lines = [];
  if (m.release_notes_markdown) lines.push(m.release_notes_markdown.trimEnd(), "");
  lines.push("## Images", "", "| image | reference (pull by digest) |", "| --- | --- |");
  lines.push(`| ProcessGit | \`${ref(m.image)}\` |`);
  if (m.updater_image) lines.push(`| processgit-updater | \`${ref(m.updater_image)}\` |`);
  lines.push("");
  if (m.image.platforms.length > 0) lines.push(`Platforms: ${m.image.platforms.join(", ")}.`, "");
  if (m.migration.required) {
    lines.push(
      `Migration: \`${m.migration.command.map(shellQuote).join(" ")}\`${m.migration.downtime ? `, with downtime (about ${m.migration.estimated_downtime_seconds} s)` : ""}.`,
      "",
    );
  }
  if (m.min_upgrade_from) lines.push(`Upgrade from ${m.min_upgrade_from} or newer.`, "");
  if (m.breaking_changes.length > 0) {
    lines.push("Breaking changes:", "", ...m.breaking_changes.map((c) => `- ${c}`), "");
  }
  lines.push(
    "`release.json` is signed keyless (Sigstore) by this repository's release workflow; the signature is `release.json.sigstore.json`.",
  );
  if (repository) {
    const escaped = repository.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    lines.push(
      "",
      "```sh",
      `cosign verify-blob --new-bundle-format --bundle release.json.sigstore.json \\`,
      "  --certificate-oidc-issuer https://token.actions.githubusercontent.com \\",
      `  --certificate-identity-regexp '^https://github\\.com/${escaped}/\\.github/workflows/release\\.yml@refs/tags/v.*$' \\`,
      "  release.json",
      "```",
    );
  }
  return `${lines.join("\n")}\n`;
}

/** A word as a POSIX shell would need it written, for display only. */
function shellQuote(word) {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

function usage() {
  return [
    "usage: node scripts/release-manifest.mjs resolve --tag vX.Y.Z",
    "       node scripts/release-manifest.mjs [--output release.json] [--body-output FILE] [options]",
    `options (or their environment variables): ${Object.entries(OPTIONS)
      .map(([k, env]) => `--${k} (${env})`)
      .join(", ")}`,
  ].join("\n");
}

try {
  main(process.argv.slice(2));
} catch (err) {
  if (err instanceof InputError || err?.code?.startsWith?.("ERR_PARSE_ARGS")) {
    for (const line of err.message.split("\n")) process.stderr.write(`release-manifest: ${line}\n`);
    process.exit(2);
  }
  throw err;
}
