/**
 * The release side: scripts/release-manifest.mjs run the way .github/workflows/release.yml runs it
 * (the steps' own `run` scripts and `env` maps, read from the workflow file, with the `${{ }}`
 * expressions filled in), its release.json checked by the updater's own validateManifest; the
 * script's refusals; the signing and publishing steps use the file the script wrote; actionlint.
 */
import { spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ReleaseManifest } from "../../src/orchestrator/release-manifest.js";
import { parseCommand, validateManifest } from "../../src/verify/manifest.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const workflowFile = join(root, ".github/workflows/release.yml");
const workflow = readFileSync(workflowFile, "utf8");
const actionlint = join(root, ".tools/bin/actionlint");

const APP_DIGEST = `sha256:${"a1".repeat(32)}`;
const UPDATER_DIGEST = `sha256:${"b2".repeat(32)}`;

/** One step of the workflow: its `run` script, its `env` map and its `with` map, verbatim. */
interface Step {
  run: string;
  env: Record<string, string>;
  with: Record<string, string>;
}

/** The step with `id: <id>` that runs a script (see `readStep`). */
function workflowStep(id: string): Step {
  const step = readStep(id);
  if (!step.run) throw new Error(`step ${id} has no run script`);
  return step;
}

/**
 * The step with `id: <id>`, read from the workflow text. A small reader for the plain block style
 * this workflow uses (no YAML dependency): the step is the `- ` item around the id line; `env` is a
 * map of one-line values; `run` is one line or a `|` block; `with` maps each input to its one-line
 * value or its `|` block (lines joined with "\n").
 */
function readStep(id: string): Step {
  const lines = workflow.split("\n");
  const idLine = lines.findIndex((l) => l.trim() === `id: ${id}`);
  if (idLine < 0) throw new Error(`release.yml has no step with id: ${id}`);
  const fieldIndent = indentOf(lines[idLine] ?? "");
  let start = idLine;
  while (start > 0 && !/^\s*- /.test(lines[start] ?? "")) start--;
  let end = idLine + 1;
  while (end < lines.length && (lines[end]?.trim() === "" || indentOf(lines[end] ?? "") >= fieldIndent))
    end++;
  const block = lines.slice(start, end).map((l, i) => (i === 0 ? l.replace("- ", "  ") : l));

  const step: Step = { run: "", env: {}, with: {} };
  for (let i = 0; i < block.length; i++) {
    const line = block[i] ?? "";
    if (indentOf(line) !== fieldIndent) continue;
    const field = /^\s*([a-z-]+):\s*(.*)$/.exec(line);
    if (!field) continue;
    const [, key, rest = ""] = field;
    const children: string[] = [];
    while (
      i + 1 < block.length &&
      ((block[i + 1] ?? "").trim() === "" || indentOf(block[i + 1] ?? "") > fieldIndent)
    )
      children.push(block[++i] ?? "");
    if (key === "env") {
      for (const child of children) {
        const pair = /^\s*([A-Z0-9_]+):\s*(.*)$/.exec(child);
        if (pair?.[1]) step.env[pair[1]] = unquote(pair[2] ?? "");
      }
    } else if (key === "run") {
      if (rest === "|") {
        const indent = Math.min(...children.filter((c) => c.trim()).map(indentOf));
        step.run = `${children.map((c) => c.slice(indent)).join("\n")}\n`;
      } else {
        step.run = rest;
      }
    } else if (key === "with") {
      const inputIndent = Math.min(...children.filter((c) => c.trim()).map(indentOf));
      for (let j = 0; j < children.length; j++) {
        const input = /^\s*([a-z-]+):\s*(.*)$/.exec(children[j] ?? "");
        if (!input?.[1] || indentOf(children[j] ?? "") !== inputIndent) continue;
        if (input[2] !== "|") {
          step.with[input[1]] = unquote(input[2] ?? "");
          continue;
        }
        const value: string[] = [];
        while (j + 1 < children.length && indentOf(children[j + 1] ?? "") > inputIndent)
          value.push((children[++j] ?? "").trim());
        step.with[input[1]] = value.join("\n");
      }
    }
  }
  return step;
}

function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}

function unquote(value: string): string {
  const v = value.trim();
  if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))))
    return v.slice(1, -1);
  return v;
}

/**
 * What the `${{ }}` expressions of a step see. `inputs` and `vars` may be absent (a tag push has no
 * inputs; a repository variable may be unset); anything else the workflow reads must be given,
 * so that a new expression in the workflow fails here until the test knows it.
 */
type Contexts = Record<string, string>;

function evaluate(expression: string, contexts: Contexts): string {
  for (const operand of expression.split("||").map((o) => o.trim())) {
    const literal = /^'(.*)'$/.exec(operand);
    if (literal) return literal[1] ?? "";
    if (operand in contexts) {
      const value = contexts[operand] ?? "";
      if (value !== "") return value;
    } else if (!/^(inputs|vars)\.[A-Za-z0-9_]+$/.test(operand)) {
      throw new Error(
        `release.yml passes \${{ ${expression} }}, which this test does not provide (${operand})`,
      );
    }
  }
  return "";
}

/** The workflow's spelling of the expression `e`: `${{ e }}`. */
function expr(e: string): string {
  return `\${{ ${e} }}`;
}

/** `text` with its `${{ }}` expressions filled in. */
function expand(text: string, contexts: Contexts): string {
  return text.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_m, expr: string) => evaluate(expr, contexts));
}

function stepEnv(step: Step, contexts: Contexts): Record<string, string> {
  return Object.fromEntries(Object.entries(step.env).map(([k, v]) => [k, expand(v, contexts)]));
}

interface StepResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a step's script as the runner does (bash -eo pipefail) in `cwd`, with only its env and `extra`. */
function runStep(
  step: Step,
  contexts: Contexts,
  cwd: string,
  extra: Record<string, string> = {},
): StepResult {
  const result = spawnSync("bash", ["--noprofile", "--norc", "-eo", "pipefail", "-c", step.run], {
    cwd,
    env: {
      PATH: `${dirname(process.execPath)}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      ...stepEnv(step, contexts),
      ...extra,
    },
    encoding: "utf8",
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Runs the script directly with `args` and exactly the environment `env` (plus PATH). */
function runScript(args: string[], env: Record<string, string>, cwd: string): StepResult {
  const result = spawnSync(process.execPath, [join(root, "scripts/release-manifest.mjs"), ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
    encoding: "utf8",
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

let dir: string;

beforeEach(() => {
  // The job's workspace: the checkout's scripts/, and the files earlier steps left.
  dir = mkdtempSync(join(tmpdir(), "release-workflow-"));
  symlinkSync(join(root, "scripts"), join(dir, "scripts"));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const TAG_SHA = "c3".repeat(20);

/** A `key=value` $GITHUB_OUTPUT file as the contexts `<prefix>.key`. */
function readOutputs(file: string, prefix: string): Contexts {
  const outputs: Contexts = {};
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) outputs[`${prefix}.${line.slice(0, eq)}`] = line.slice(eq + 1);
  }
  return outputs;
}

/**
 * The prepare job's steps (resolve, then the distinct-sources check) as a tag push (or a manual run
 * from the tag) of Algomation-AI/ProcessGit runs them, or of the repository `github` names. Stops at
 * the first step that fails; `outputs` are the job's outputs (`needs.prepare.outputs.*`).
 */
function prepareJob(
  tag: string,
  contexts: Contexts,
  github: Record<string, string>,
): StepResult & { outputs: Contexts } {
  const output = join(dir, "github-output");
  writeFileSync(output, "");
  const env = {
    GITHUB_REF: `refs/tags/${tag}`,
    GITHUB_REF_NAME: tag,
    GITHUB_SHA: TAG_SHA,
    GITHUB_REPOSITORY: "Algomation-AI/ProcessGit",
    GITHUB_REPOSITORY_OWNER: "Algomation-AI",
    GITHUB_WORKFLOW_REF: `Algomation-AI/ProcessGit/.github/workflows/release.yml@refs/tags/${tag}`,
    GITHUB_OUTPUT: output,
    ...github,
  };
  const resolved = runStep(workflowStep("resolve"), contexts, dir, env);
  const steps = readOutputs(output, "steps.resolve.outputs");
  const outputs = readOutputs(output, "needs.prepare.outputs");
  if (resolved.code !== 0) return { ...resolved, outputs };
  return { ...runStep(workflowStep("distinct-sources"), { ...contexts, ...steps }, dir, env), outputs };
}

/**
 * The prepare job, which must succeed; returns its outputs. Run as Algomation-AI/ProcessGit, it
 * builds the updater from an `updater` directory there unless `contexts` say otherwise: with the
 * updater in `.` too, the app and the updater would be one source, which the job refuses.
 */
function prepare(tag: string, contexts: Contexts = {}, github: Record<string, string> = {}): Contexts {
  const result = prepareJob(tag, { "vars.PROCESSGIT_UPDATER_CONTEXT": "updater", ...contexts }, github);
  if (result.code !== 0)
    throw new Error(`the prepare job failed (${result.code}): ${result.stdout}${result.stderr}`);
  return result.outputs;
}

/** The manifest job's "Write release.json" step; returns the bytes of release.json and the body. */
function writeManifest(contexts: Contexts, tagNotes = ""): { bytes: Uint8Array; body: string; raw: unknown } {
  const step = workflowStep("release-manifest");
  const notesFile = step.env.RELEASE_NOTES_FILE;
  if (notesFile) writeFileSync(join(dir, notesFile), tagNotes);
  // GITHUB_REPOSITORY: set on every runner; the body's verify command names it.
  const result = runStep(step, contexts, dir, { GITHUB_REPOSITORY: "Algomation-AI/ProcessGit" });
  if (result.code !== 0) throw new Error(`the release.json step failed (${result.code}): ${result.stderr}`);
  const bytes = readFileSync(join(dir, outputOf(step.run, "--output")));
  return {
    bytes,
    body: readFileSync(join(dir, outputOf(step.run, "--body-output")), "utf8"),
    raw: JSON.parse(bytes.toString("utf8")),
  };
}

function outputOf(run: string, flag: string): string {
  const m = new RegExp(`${flag}[ =](\\S+)`).exec(run);
  if (!m?.[1]) throw new Error(`the release.json step does not pass ${flag}: ${run}`);
  return m[1];
}

const images: Contexts = {
  "needs.images.outputs.app_digest": APP_DIGEST,
  "needs.images.outputs.updater_digest": UPDATER_DIGEST,
};

describe("release.json as the release workflow writes it", () => {
  it("a tag push: the updater's validator accepts it, and the tag, version and digests round-trip", () => {
    const vars: Contexts = {
      "vars.PROCESSGIT_MIGRATION_COMMAND": "processgit migrate --message 'from 1.x'",
      "vars.PROCESSGIT_ESTIMATED_DOWNTIME_SECONDS": "30",
      "vars.PROCESSGIT_MIN_UPGRADE_FROM": "1.2.0",
      "vars.PROCESSGIT_BREAKING_CHANGES": "the API moved to /api/v2\n\nsessions end on update",
    };
    const outputs = prepare("v2.0.0", vars);
    expect(outputs).toMatchObject({
      "needs.prepare.outputs.tag": "v2.0.0",
      "needs.prepare.outputs.version": "2.0.0",
      "needs.prepare.outputs.image_tag": "2.0.0",
      "needs.prepare.outputs.prerelease": "false",
      "needs.prepare.outputs.app_image": "algomation-ai/processgit",
      "needs.prepare.outputs.updater_image": "algomation-ai/processgit-updater",
      "needs.prepare.outputs.platforms": "linux/amd64,linux/arm64",
    });
    const { bytes, body, raw } = writeManifest(
      { ...vars, ...outputs, ...images },
      "ProcessGit 2.0.0\n\nThe annotated tag's message.\n",
    );

    const manifest = validateManifest(bytes, {
      tag: "v2.0.0",
      runningVersion: "1.5.0",
      allowDowngrade: false,
    });
    expect(manifest).toEqual<ReleaseManifest>({
      name: "processgit",
      version: "2.0.0",
      tag: "v2.0.0",
      image: {
        registry: "ghcr.io",
        repository: "algomation-ai/processgit",
        tag: "2.0.0",
        digest: APP_DIGEST,
        platforms: ["linux/amd64", "linux/arm64"],
      },
      migration: {
        required: true,
        command: ["processgit", "migrate", "--message", "from 1.x"],
        downtime: true,
        estimatedDowntimeSeconds: 30,
      },
      minUpgradeFrom: "1.2.0",
      prerelease: false,
      breakingChanges: ["the API moved to /api/v2", "sessions end on update"],
      releaseNotes: "ProcessGit 2.0.0\n\nThe annotated tag's message.\n",
    });
    // The updater image: recorded beside the schema's fields (the validator ignores unknown ones).
    expect((raw as { updater_image: unknown }).updater_image).toEqual({
      registry: "ghcr.io",
      repository: "algomation-ai/processgit-updater",
      tag: "2.0.0",
      digest: UPDATER_DIGEST,
      platforms: ["linux/amd64", "linux/arm64"],
    });
    expect(body).toContain(`ghcr.io/algomation-ai/processgit:2.0.0@${APP_DIGEST}`);
    expect(body).toContain(`ghcr.io/algomation-ai/processgit-updater:2.0.0@${UPDATER_DIGEST}`);
    expect(body).toContain("The annotated tag's message.");
    expect(body).toContain(
      "--certificate-identity-regexp '^https://github\\.com/Algomation-AI/ProcessGit/\\.github/workflows/release\\.yml@refs/tags/v.*$'",
    );
  });

  it("a manual run: its inputs win over the repository variables; a prerelease tag is a prerelease", () => {
    const contexts: Contexts = {
      "vars.PROCESSGIT_MIGRATION_COMMAND": "processgit migrate",
      "vars.PROCESSGIT_MIGRATION_REQUIRED": "true",
      "vars.PROCESSGIT_APP_IMAGE": "example/app",
      "vars.PROCESSGIT_PLATFORMS": "linux/amd64",
      "inputs.tag": "v2.1.0-rc.1",
      "inputs.migration_command": '["processgit", "migrate", "--to", "v2 schema"]',
      "inputs.migration_required": "auto",
      "inputs.notes": "Typed into the run form.",
    };
    const outputs = prepare("v2.1.0-rc.1", contexts);
    const { bytes } = writeManifest({ ...contexts, ...outputs, ...images }, "the tag's message, not used");
    const manifest = validateManifest(bytes, { tag: "v2.1.0-rc.1", allowDowngrade: false });
    expect(manifest.prerelease).toBe(true);
    expect(manifest.version).toBe("2.1.0-rc.1");
    expect(manifest.image).toEqual({
      registry: "ghcr.io",
      repository: "example/app",
      tag: "2.1.0-rc.1",
      digest: APP_DIGEST,
      platforms: ["linux/amd64"],
    });
    expect(manifest.migration).toEqual({
      required: true,
      command: ["processgit", "migrate", "--to", "v2 schema"],
      downtime: false,
      estimatedDowntimeSeconds: 0,
    });
    expect(manifest.releaseNotes).toBe("Typed into the run form.\n");
    expect(manifest.minUpgradeFrom).toBeUndefined();
  });

  it("no migration configured: none required, and the validator's defaults agree", () => {
    const outputs = prepare("v1.0.0");
    const { bytes, raw } = writeManifest({ ...outputs, ...images });
    const manifest = validateManifest(bytes, { tag: "v1.0.0", allowDowngrade: false });
    expect(manifest.migration).toEqual({
      required: false,
      command: [],
      downtime: false,
      estimatedDowntimeSeconds: 0,
    });
    expect(manifest.releaseNotes).toBe("");
    expect(raw).not.toHaveProperty("min_upgrade_from");
  });

  it("the prepare job refuses a run that did not start from the tag (its signature would not match the policy)", () => {
    const output = join(dir, "github-output");
    writeFileSync(output, "");
    const fromBranch = runStep(workflowStep("resolve"), { "inputs.tag": "v2.0.0" }, dir, {
      GITHUB_REF: "refs/heads/main",
      GITHUB_REF_NAME: "main",
      GITHUB_REPOSITORY: "Algomation-AI/ProcessGit",
      GITHUB_REPOSITORY_OWNER: "Algomation-AI",
      GITHUB_WORKFLOW_REF: "Algomation-AI/ProcessGit/.github/workflows/release.yml@refs/heads/main",
      GITHUB_OUTPUT: output,
    });
    expect(fromBranch.code).not.toBe(0);
    expect(fromBranch.stdout).toContain("refs/heads/main, not from refs/tags/v2.0.0");
    expect(() =>
      prepare(
        "v2.0.0",
        {},
        { GITHUB_WORKFLOW_REF: "Algomation-AI/ProcessGit/.github/workflows/other.yml@refs/tags/v2.0.0" },
      ),
    ).toThrow(
      "the signer policy expects Algomation-AI/ProcessGit/.github/workflows/release.yml@refs/tags/v2.0.0",
    );
    expect(() => prepare("v2.0.0", { "vars.PROCESSGIT_APP_CONTEXT": "../elsewhere" })).toThrow(
      "must be a relative path inside its repository",
    );
    expect(() => prepare("2.0.0")).toThrow("is not a release tag vMAJOR.MINOR.PATCH");
  });
});

describe("the app image and the updater image come from two sources", () => {
  const sameSource = "::error::the app image would be built from the updater's own source";
  const asUpdaterRepo = {
    GITHUB_REPOSITORY: "Algomation-AI/processgit-updater",
    GITHUB_WORKFLOW_REF: "Algomation-AI/processgit-updater/.github/workflows/release.yml@refs/tags/v2.0.0",
  };

  it("the defaults, run from processgit-updater: the app is Algomation-AI/ProcessGit at the same tag", () => {
    const result = prepareJob("v2.0.0", {}, asUpdaterRepo);
    expect(result.stdout).not.toContain("::error::");
    expect(result.code).toBe(0);
    expect(result.outputs).toMatchObject({
      "needs.prepare.outputs.app_repository": "Algomation-AI/ProcessGit",
      "needs.prepare.outputs.app_ref": "refs/tags/v2.0.0",
      "needs.prepare.outputs.app_context": ".",
      "needs.prepare.outputs.updater_context": ".",
    });
  });

  it.each<[string, Contexts, Record<string, string>]>([
    ["the defaults, run from Algomation-AI/ProcessGit", {}, {}],
    [
      "the app set to this repository, run from processgit-updater",
      { "vars.PROCESSGIT_APP_REPOSITORY": "Algomation-AI/processgit-updater" },
      asUpdaterRepo,
    ],
    [
      "the same source spelled differently (case, ref, contexts)",
      {
        "inputs.tag": "v2.0.0",
        "inputs.app_repository": "algomation-ai/processgit",
        "inputs.app_ref": "v2.0.0",
        "inputs.app_context": "./",
        "vars.PROCESSGIT_UPDATER_CONTEXT": ".//.",
      },
      {},
    ],
    [
      "the app at the tag's commit, in the updater's directory",
      {
        "vars.PROCESSGIT_APP_REF": TAG_SHA,
        "vars.PROCESSGIT_APP_CONTEXT": "./updater/",
        "vars.PROCESSGIT_UPDATER_CONTEXT": "updater",
      },
      {},
    ],
  ])("refuses %s, before any build, and says what to set", (_name, contexts, github) => {
    const result = prepareJob("v2.0.0", contexts, github);
    expect(result.code).not.toBe(0);
    expect(result.stdout).toContain(sameSource);
    expect(result.stdout).toContain("Set PROCESSGIT_APP_REPOSITORY (or the app_repository input)");
    expect(result.stdout).toContain("PROCESSGIT_UPDATER_CONTEXT");
    // The job whose failure stops the build: the images job needs it.
    expect(workflow).toMatch(/^ {2}images:\n(?: {4}.*\n)*? {4}needs: prepare\n/m);
  });

  it.each<[string, Contexts]>([
    ["the updater in its own directory", { "vars.PROCESSGIT_UPDATER_CONTEXT": "updater" }],
    ["the app in its own directory", { "vars.PROCESSGIT_APP_CONTEXT": "web" }],
    ["the app from another repository", { "inputs.tag": "v2.0.0", "inputs.app_repository": "example/app" }],
  ])("accepts %s, run from Algomation-AI/ProcessGit", (_name, contexts) => {
    const result = prepareJob("v2.0.0", contexts, {});
    expect(result.stdout).not.toContain("::error::");
    expect(result.code).toBe(0);
  });
});

describe("the updater image is labelled with the updater's own version and commit", () => {
  /** This repository's package.json, committed at `updater-src/<context>` the way the job checks it out. */
  function updaterCheckout(context: string, packageJson: string): string {
    const src = join(dir, "updater-src", context);
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, "package.json"), packageJson);
    const git = (...args: string[]) => {
      const r = spawnSync("git", args, { cwd: join(dir, "updater-src"), encoding: "utf8" });
      if (r.status !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
      return r.stdout.trim();
    };
    git("init", "-q");
    git("add", ".");
    git(
      "-c",
      "user.name=t",
      "-c",
      "user.email=t@example.com",
      "-c",
      "commit.gpgsign=false",
      "commit",
      "-qm",
      "tag",
    );
    return git("rev-parse", "HEAD");
  }

  function runVersionStep(prepared: Contexts): StepResult & { outputs: Contexts } {
    const output = join(dir, "updater-version-output");
    writeFileSync(output, "");
    const result = runStep(workflowStep("updater-version"), prepared, dir, { GITHUB_OUTPUT: output });
    return { ...result, outputs: readOutputs(output, "steps.updater-version.outputs") };
  }

  const ownPackageJson = readFileSync(join(root, "package.json"), "utf8");
  const ownVersion = (JSON.parse(ownPackageJson) as { version: string }).version;

  it("passes VERSION (package.json) and REVISION (the checkout's commit) to the Dockerfile's ARGs", () => {
    const prepared = prepare("v2.0.0");
    const revision = updaterCheckout("updater", ownPackageJson);
    const versionStep = runVersionStep(prepared);
    expect(versionStep.stderr).toBe("");
    expect(versionStep.code).toBe(0);
    expect(versionStep.outputs).toEqual({
      "steps.updater-version.outputs.version": ownVersion,
      "steps.updater-version.outputs.revision": revision,
    });

    const build = readStep("updater").with;
    expect(build["build-args"]?.split("\n")).toEqual([
      `VERSION=${expr("steps.updater-version.outputs.version")}`,
      `REVISION=${expr("steps.updater-version.outputs.revision")}`,
    ]);
    expect(expand(build["build-args"] ?? "", versionStep.outputs)).toBe(
      `VERSION=${ownVersion}\nREVISION=${revision}`,
    );
    // Not the release's version: the updater's `status` reports its package.json version.
    expect(prepared["needs.prepare.outputs.version"]).toBe("2.0.0");
    expect(ownVersion).not.toBe("2.0.0");
    // Nothing overrides the labels the Dockerfile makes of those ARGs.
    expect(build.labels ?? "").not.toMatch(/org\.opencontainers\.image\.(version|revision)/);
    const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
    expect(dockerfile).toMatch(/^ARG VERSION=/m);
    expect(dockerfile).toMatch(/^ARG REVISION=/m);
    expect(dockerfile).toContain(`org.opencontainers.image.version="\${VERSION}"`);
    expect(dockerfile).toContain(`org.opencontainers.image.revision="\${REVISION}"`);

    // The app image keeps the release's version.
    expect(readStep("app").with.labels?.split("\n")).toContain(
      `org.opencontainers.image.version=${expr("needs.prepare.outputs.version")}`,
    );
  });

  it("refuses an updater context without the updater's package.json", () => {
    // ProcessGit's own root as the updater (the app from another ref passes the prepare job): its
    // package.json, if it has one, is not the updater's.
    updaterCheckout(".", '{"name": "processgit", "version": "2.0.0"}\n');
    const atRoot = runVersionStep(
      prepare("v2.0.0", {
        "vars.PROCESSGIT_UPDATER_CONTEXT": ".",
        "vars.PROCESSGIT_APP_REF": "refs/heads/main",
      }),
    );
    expect(atRoot.code).not.toBe(0);
    expect(atRoot.stdout).toContain(
      "::error::updater-src/./package.json is processgit, not processgit-updater",
    );
    // A context with no package.json at all.
    const missing = runVersionStep(prepare("v2.0.0", { "vars.PROCESSGIT_UPDATER_CONTEXT": "docker" }));
    expect(missing.code).not.toBe(0);
    expect(missing.stdout).toContain("::error::updater-src/docker has no package.json");
    expect(missing.outputs).toEqual({});
  });
});

describe("the signing and publishing steps use what the script wrote", () => {
  it("signs release.json into release.json.sigstore.json and publishes both", () => {
    const run = workflowStep("release-manifest").run;
    expect(outputOf(run, "--output")).toBe("release.json");
    expect(workflow).toContain(
      "cosign sign-blob --yes --new-bundle-format --bundle release.json.sigstore.json release.json",
    );
    expect(workflow).toContain("assets=(release.json release.json.sigstore.json)");
    // Digests come from build-push-action's outputs, never from resolving a tag.
    expect(workflow).toContain(`app_digest: ${expr("steps.app.outputs.digest")}`);
    expect(workflow).toContain(`updater_digest: ${expr("steps.updater.outputs.digest")}`);
    expect(workflow).not.toMatch(/docker (buildx imagetools )?inspect|crane digest/);
  });

  it("pins every action by commit and documents the signer policy of docs/configuration.md", () => {
    const uses = [...workflow.matchAll(/^\s*(?:- )?uses:\s*(\S+)(.*)$/gm)];
    expect(uses.length).toBeGreaterThan(5);
    for (const [, action, comment] of uses) {
      expect(action).toMatch(/^[\w.-]+\/[\w.-]+@[0-9a-f]{40}$/);
      expect(comment).toMatch(/# v\d+\.\d+\.\d+/);
    }
    const docs = readFileSync(join(root, "docs/configuration.md"), "utf8");
    for (const line of [
      "PROCESSGIT_UPDATER_SIGNER_ISSUER=https://token.actions.githubusercontent.com",
      "PROCESSGIT_UPDATER_SIGNER_IDENTITY='https://github\\.com/Algomation-AI/ProcessGit/\\.github/workflows/release\\.yml@refs/tags/v.*'",
    ]) {
      expect(docs).toContain(line);
      expect(workflow).toContain(line);
    }
  });
});

describe("scripts/release-manifest.mjs refusals", () => {
  const good: Record<string, string> = {
    RELEASE_TAG: "v2.0.0",
    APP_REPOSITORY: "algomation-ai/processgit",
    APP_DIGEST,
    UPDATER_REPOSITORY: "algomation-ai/processgit-updater",
    UPDATER_DIGEST,
  };

  /** Runs the script with `env`; expects it to refuse, write nothing, and say why. */
  function refusal(env: Record<string, string>, args: string[] = []): string {
    const result = runScript(["--output", "release.json", ...args], env, dir);
    expect(result.code).toBe(2);
    expect(() => accessSync(join(dir, "release.json"))).toThrow();
    return result.stderr;
  }

  it("accepts the good inputs (the baseline of the cases below)", () => {
    const result = runScript([], good, dir);
    expect(result.code).toBe(0);
    expect(
      validateManifest(new TextEncoder().encode(result.stdout), { tag: "v2.0.0", allowDowngrade: false })
        .image.digest,
    ).toBe(APP_DIGEST);
  });

  it.each([
    ["sha256:abc", "too short"],
    [`sha256:${"A1".repeat(32)}`, "upper case"],
    [`sha512:${"a".repeat(128)}`, "another algorithm"],
    [`ghcr.io/algomation-ai/processgit@${APP_DIGEST}`, "a reference, not a digest"],
  ])("refuses the app digest %j (%s)", (digest) => {
    expect(refusal({ ...good, APP_DIGEST: digest })).toContain(
      `release-manifest: --app-digest (APP_DIGEST) ${JSON.stringify(digest)} is not a sha256 digest (sha256:<64 lower-case hex>)`,
    );
  });

  it("refuses a missing digest, and a bad updater digest", () => {
    const { APP_DIGEST: _, ...noDigest } = good;
    expect(refusal(noDigest)).toContain("--app-digest (APP_DIGEST) is required");
    expect(refusal({ ...good, UPDATER_DIGEST: "latest" })).toContain(
      '--updater-digest (UPDATER_DIGEST) "latest" is not',
    );
  });

  it("refuses a version that does not match the tag, from the environment or the command line", () => {
    const expected =
      'release-manifest: --version (RELEASE_VERSION) "2.0.1" does not match tag v2.0.0 (expected "2.0.0")';
    expect(refusal({ ...good, RELEASE_VERSION: "2.0.1" })).toContain(expected);
    expect(refusal(good, ["--version", "2.0.1"])).toContain(expected);
  });

  it.each([
    ["2.0.0", "is not a release tag"],
    ["v2.0", "is not a release tag"],
    ["release-2026-11", "is not a release tag"],
    ["v2.0.0+build.5", "carries build metadata"],
  ])("refuses the tag %j", (tag, message) => {
    expect(refusal({ ...good, RELEASE_TAG: tag })).toContain(message);
  });

  it("refuses inputs the updater would refuse, all in one run", () => {
    const stderr = refusal({
      ...good,
      APP_REPOSITORY: "Algomation-AI/ProcessGit",
      APP_REGISTRY: "https://ghcr.io",
      MIGRATION_COMMAND: "processgit migrate 'unterminated",
      MIGRATION_ESTIMATED_DOWNTIME_SECONDS: "1.5",
      MIN_UPGRADE_FROM: "old",
    });
    for (const part of [
      '--app-repository (APP_REPOSITORY) "Algomation-AI/ProcessGit" is not a lower-case repository path',
      '--app-registry (APP_REGISTRY) "https://ghcr.io" is not a registry host[:port]',
      "--migration-command (MIGRATION_COMMAND) has an unterminated ' quote",
      '--estimated-downtime-seconds (MIGRATION_ESTIMATED_DOWNTIME_SECONDS) must be a whole number of seconds >= 0, not "1.5"',
      '--min-upgrade-from (MIN_UPGRADE_FROM) "old" is not a semantic version',
    ]) {
      expect(stderr).toContain(part);
    }
    expect(refusal({ ...good, MIGRATION_REQUIRED: "true" })).toContain(
      "--migration-required (MIGRATION_REQUIRED) is true but --migration-command (MIGRATION_COMMAND) is empty",
    );
    expect(refusal({ ...good, MIGRATION_COMMAND: '["migrate", 1]' })).toContain(
      "must be a JSON array of strings",
    );
  });

  it.each([
    `sh -c 'echo "a b"'`,
    "a\\ b",
    'echo "$HOME" `id` ~ *',
    `"a\\"b" 'c\\d' "e\\f"`,
    `x''y "" ''`,
    '"a\\\\b" "\\$x" "\\`y" "\\z"',
  ])("splits the migration command %j exactly like the updater's parseCommand", (command) => {
    const result = runScript([], { ...good, MIGRATION_COMMAND: command }, dir);
    expect(result.code).toBe(0);
    expect((JSON.parse(result.stdout) as { migration: { command: string[] } }).migration.command).toEqual(
      parseCommand(command),
    );
  });
});

describe("actionlint", () => {
  it("passes on .github/workflows/release.yml", (ctx) => {
    try {
      accessSync(actionlint, constants.X_OK);
    } catch {
      ctx.skip(`${actionlint} is missing: run scripts/setup.sh, which builds it (CI always has it)`);
    }
    const result = spawnSync(actionlint, ["-no-color", workflowFile], { cwd: root, encoding: "utf8" });
    expect(`${result.stdout}${result.stderr}`).toBe("");
    expect(result.status).toBe(0);
  });
});
