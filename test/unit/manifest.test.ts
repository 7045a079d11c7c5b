/** release.json validation and the migration command splitter. */
import { describe, expect, it } from "vitest";
import { UpdaterError } from "../../src/errors.js";
import { type ManifestExpectations, parseCommand, validateManifest } from "../../src/verify/manifest.js";

const DIGEST = `sha256:${"a".repeat(64)}`;

/** A valid schema_version 1 manifest for v2.0.0, as a plain object to edit. */
function doc(): Record<string, unknown> & {
  image: Record<string, unknown>;
  migration: Record<string, unknown>;
} {
  return {
    schema_version: 1,
    name: "processgit",
    version: "2.0.0",
    tag: "v2.0.0",
    image: {
      registry: "ghcr.io",
      repository: "algomation-ai/processgit",
      tag: "2.0.0",
      digest: DIGEST,
      platforms: ["linux/amd64", "linux/arm64"],
    },
    migration: {
      required: true,
      command: ["processgit", "migrate", "--yes"],
      downtime: true,
      estimated_downtime_seconds: 30,
    },
    min_upgrade_from: "1.2.0",
    prerelease: false,
    breaking_changes: ["the API moved to /api/v2"],
    release_notes_markdown: "# 2.0.0\n",
    signing: { ignored: "the updater never reads this" },
  };
}

/** Removes `key` from a manifest object under test. */
function drop(o: object, key: string): void {
  Reflect.deleteProperty(o, key);
}

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const expectations: ManifestExpectations = { tag: "v2.0.0", runningVersion: "1.5.0", allowDowngrade: false };

/** The UpdaterError validateManifest throws for `value`; fails the test when it accepts it. */
function refusal(value: unknown, expect_: Partial<ManifestExpectations> = {}): UpdaterError {
  const bytes = value instanceof Uint8Array ? value : encode(value);
  try {
    validateManifest(bytes, { ...expectations, ...expect_ });
  } catch (err) {
    if (err instanceof UpdaterError) return err;
    throw err;
  }
  throw new Error("validateManifest accepted the manifest");
}

function commandError(value: unknown): UpdaterError {
  try {
    parseCommand(value);
  } catch (err) {
    if (err instanceof UpdaterError) return err;
    throw err;
  }
  throw new Error(`parseCommand accepted ${JSON.stringify(value)}`);
}

describe("validateManifest: valid manifests", () => {
  it("maps every field", () => {
    expect(validateManifest(encode(doc()), expectations)).toEqual({
      name: "processgit",
      version: "2.0.0",
      tag: "v2.0.0",
      image: {
        registry: "ghcr.io",
        repository: "algomation-ai/processgit",
        tag: "2.0.0",
        digest: DIGEST,
        platforms: ["linux/amd64", "linux/arm64"],
      },
      migration: {
        required: true,
        command: ["processgit", "migrate", "--yes"],
        downtime: true,
        estimatedDowntimeSeconds: 30,
      },
      minUpgradeFrom: "1.2.0",
      prerelease: false,
      breakingChanges: ["the API moved to /api/v2"],
      releaseNotes: "# 2.0.0\n",
    });
  });

  it("fills defaults for the optional parts", () => {
    const d = doc();
    for (const key of [
      "migration",
      "min_upgrade_from",
      "prerelease",
      "breaking_changes",
      "release_notes_markdown",
    ]) {
      drop(d, key);
    }
    drop(d.image, "platforms");
    d.version = "2.0.0-rc.1";
    d.tag = "v2.0.0-rc.1";
    const m = validateManifest(encode(d), { ...expectations, tag: "v2.0.0-rc.1" });
    expect(m.migration).toEqual({
      required: false,
      command: [],
      downtime: false,
      estimatedDowntimeSeconds: 0,
    });
    expect(m.minUpgradeFrom).toBeUndefined();
    expect("minUpgradeFrom" in m).toBe(false);
    expect(m.prerelease).toBe(true);
    expect(m.breakingChanges).toEqual([]);
    expect(m.releaseNotes).toBe("");
    expect(m.image.platforms).toEqual([]);
  });

  it("splits a string command and derives downtime from the estimate", () => {
    const d = doc();
    d.migration = {
      required: true,
      command: "processgit migrate --message 'from 1.x'",
      estimated_downtime_seconds: 5,
    };
    const m = validateManifest(encode(d), expectations);
    expect(m.migration.command).toEqual(["processgit", "migrate", "--message", "from 1.x"]);
    expect(m.migration.downtime).toBe(true);
  });

  it("accepts any version when nothing runs yet, and a registry with a port", () => {
    const d = doc();
    d.image.registry = "registry.local:5000";
    expect(validateManifest(encode(d), { tag: "v2.0.0", allowDowngrade: false }).image.registry).toBe(
      "registry.local:5000",
    );
  });

  it("accepts a non-semver tag when the version is semver", () => {
    const d = doc();
    d.tag = "release-2026-11";
    expect(validateManifest(encode(d), { ...expectations, tag: "release-2026-11" }).version).toBe("2.0.0");
  });
});

describe("validateManifest: refusals name the field", () => {
  it.each<[string, (d: ReturnType<typeof doc>) => void, string]>([
    ["schema_version missing", (d) => drop(d, "schema_version"), "schema_version"],
    [
      "schema_version 2",
      (d) => {
        d.schema_version = 2;
      },
      "schema_version is 2",
    ],
    [
      "schema_version as a string",
      (d) => {
        d.schema_version = "1";
      },
      "schema_version",
    ],
    ["name missing", (d) => drop(d, "name"), "name must be a non-empty string"],
    [
      "version not semver",
      (d) => {
        d.version = "two";
      },
      'version "two" is not a semantic version',
    ],
    ["image missing", (d) => drop(d, "image"), "image must be a JSON object"],
    [
      "digest not sha256",
      (d) => {
        d.image.digest = `sha512:${"a".repeat(128)}`;
      },
      "image.digest",
    ],
    [
      "digest uppercase",
      (d) => {
        d.image.digest = `sha256:${"A".repeat(64)}`;
      },
      "image.digest",
    ],
    [
      "digest too short",
      (d) => {
        d.image.digest = "sha256:abc";
      },
      "image.digest",
    ],
    [
      "registry with a scheme",
      (d) => {
        d.image.registry = "https://ghcr.io";
      },
      "image.registry",
    ],
    [
      "repository uppercase",
      (d) => {
        d.image.repository = "Algomation/ProcessGit";
      },
      "image.repository",
    ],
    [
      "repository with ..",
      (d) => {
        d.image.repository = "a/../b";
      },
      "image.repository",
    ],
    [
      "repository with a leading slash",
      (d) => {
        d.image.repository = "/processgit";
      },
      "image.repository",
    ],
    [
      "repository with a space",
      (d) => {
        d.image.repository = "process git";
      },
      "image.repository",
    ],
    [
      "image tag with a colon",
      (d) => {
        d.image.tag = "2.0:0";
      },
      "image.tag",
    ],
    [
      "platforms not strings",
      (d) => {
        d.image.platforms = [1];
      },
      "image.platforms",
    ],
    [
      "command a number",
      (d) => {
        d.migration.command = 42;
      },
      "migration.command must be a string or an array",
    ],
    [
      "command an object",
      (d) => {
        d.migration.command = { sh: "x" };
      },
      "migration.command",
    ],
    [
      "command with a number word",
      (d) => {
        d.migration.command = ["migrate", 1];
      },
      "migration.command[1]",
    ],
    [
      "required without command",
      (d) => {
        d.migration.command = [];
      },
      "migration.command is empty",
    ],
    [
      "required not boolean",
      (d) => {
        d.migration.required = "yes";
      },
      "migration.required",
    ],
    [
      "downtime not boolean",
      (d) => {
        d.migration.downtime = 1;
      },
      "migration.downtime",
    ],
    [
      "negative downtime",
      (d) => {
        d.migration.estimated_downtime_seconds = -1;
      },
      "estimated_downtime_seconds",
    ],
    [
      "fractional downtime",
      (d) => {
        d.migration.estimated_downtime_seconds = 1.5;
      },
      "estimated_downtime_seconds",
    ],
    [
      "migration not an object",
      (d) => {
        (d as Record<string, unknown>).migration = "run it";
      },
      "migration must be a JSON object",
    ],
    [
      "min_upgrade_from not semver",
      (d) => {
        d.min_upgrade_from = "old";
      },
      "min_upgrade_from",
    ],
    [
      "prerelease not boolean",
      (d) => {
        d.prerelease = "no";
      },
      "prerelease must be true or false",
    ],
    [
      "breaking_changes not a list",
      (d) => {
        d.breaking_changes = "none";
      },
      "breaking_changes",
    ],
    [
      "notes not a string",
      (d) => {
        d.release_notes_markdown = 3;
      },
      "release_notes_markdown",
    ],
    [
      "overlong name",
      (d) => {
        d.name = "n".repeat(1025);
      },
      "name is longer than 1024",
    ],
  ])("%s", (_what, edit, field) => {
    const d = doc();
    edit(d);
    const err = refusal(d);
    expect(err.code).toBe("failed_precondition");
    expect(err.reason).toBe("MANIFEST_INVALID");
    expect(err.message).toContain(field);
  });

  it("refuses a manifest for another tag", () => {
    const err = refusal(doc(), { tag: "v2.0.1" });
    expect(err.reason).toBe("MANIFEST_TAG_MISMATCH");
    expect(err.message).toContain('"v2.0.0"');
    expect(err.message).toContain('"v2.0.1"');
  });

  it("refuses a version that contradicts its tag", () => {
    const d = doc();
    d.version = "2.0.1";
    const err = refusal(d);
    expect(err.reason).toBe("MANIFEST_TAG_MISMATCH");
    expect(err.message).toContain("2.0.1");
  });

  it("refuses an older release unless a downgrade is allowed", () => {
    const err = refusal(doc(), { runningVersion: "2.1.0" });
    expect(err.reason).toBe("DOWNGRADE_REFUSED");
    expect(err.message).toContain("older than the running version 2.1.0");
    const d = doc();
    drop(d, "min_upgrade_from");
    expect(
      validateManifest(encode(d), { ...expectations, runningVersion: "2.1.0", allowDowngrade: true }).version,
    ).toBe("2.0.0");
  });

  it("refuses the version that already runs", () => {
    const err = refusal(doc(), { runningVersion: "2.0.0" });
    expect(err.reason).toBe("DOWNGRADE_REFUSED");
    expect(err.message).toContain("already runs");
  });

  it("enforces min_upgrade_from", () => {
    const err = refusal(doc(), { runningVersion: "1.1.9" });
    expect(err.reason).toBe("UPGRADE_PATH_REFUSED");
    expect(err.message).toContain("1.2.0");
    expect(err.message).toContain("1.1.9");
    expect(validateManifest(encode(doc()), { ...expectations, runningVersion: "1.2.0" }).version).toBe(
      "2.0.0",
    );
  });

  it("refuses bytes that are not JSON, not UTF-8 or not an object", () => {
    const notJson = refusal(new TextEncoder().encode("{ not json"));
    expect(notJson.message).toContain("not valid UTF-8 JSON");
    const notUtf8 = refusal(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
    expect(notUtf8.message).toContain("not valid UTF-8 JSON");
    expect(refusal(new Uint8Array()).code).toBe("failed_precondition");
    expect(refusal([1, 2]).message).toContain("release.json must be a JSON object");
    expect(refusal(null).message).toContain("release.json must be a JSON object");
  });
});

describe("parseCommand", () => {
  it.each<[string, string[]]>([
    [`sh -c 'echo "a b"'`, ["sh", "-c", 'echo "a b"']],
    ["a\\ b", ["a b"]],
    ["$HOME", ["$HOME"]],
    ['echo "$HOME" `id` ~ *', ["echo", "$HOME", "`id`", "~", "*"]],
    ["  spaced\t\tout \n words  ", ["spaced", "out", "words"]],
    [`"a\\"b" 'c\\d' "e\\f"`, ['a"b', "c\\d", "e\\f"]],
    [`x''y "" ''`, ["xy", "", ""]],
    [`pre"mid dle"post`, ["premid dlepost"]],
    ["a;b && c | d > e", ["a;b", "&&", "c", "|", "d", ">", "e"]],
    ['"a\\\\b" "\\$x" "\\`y" "\\z"', ["a\\b", "$x", "`y", "\\z"]],
  ])("splits %j like a shell, without expansion", (input, words) => {
    expect(parseCommand(input)).toEqual(words);
  });

  it("takes an array as it is", () => {
    const argv = ["sh", "-c", "echo $HOME 'x'", "a b"];
    expect(parseCommand(argv)).toEqual(["sh", "-c", "echo $HOME 'x'", "a b"]);
  });

  it("an absent or empty command is no command", () => {
    expect(parseCommand(undefined)).toEqual([]);
    expect(parseCommand(null)).toEqual([]);
    expect(parseCommand("")).toEqual([]);
    expect(parseCommand([])).toEqual([]);
  });

  it.each([`sh -c 'echo`, `echo "unterminated`])("refuses the unterminated quote in %j", (input) => {
    const err = commandError(input);
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toContain("unterminated");
  });

  it("refuses non-strings, NUL characters and oversized commands", () => {
    expect(commandError(7).message).toContain("must be a string or an array of strings");
    expect(commandError(true).message).toContain("migration.command");
    expect(commandError(["ok", null]).message).toContain("migration.command[1] must be a string");
    expect(commandError(["a\0b"]).message).toContain("NUL");
    expect(commandError("a\0b").message).toContain("NUL");
    const many = Array.from({ length: 257 }, (_, i) => `w${i}`);
    expect(commandError(many).message).toContain("more than 256 words");
    expect(commandError(many.join(" ")).message).toContain("more than 256 words");
    expect(parseCommand(many.slice(0, 256))).toHaveLength(256);
  });
});
