/** The Compose .env record: pure text edits, then the file operations on real files. */
import { execFileSync } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { ComposeEnvFile, envAssignment, withEnvValue } from "../../src/engine/compose-env.js";
import type { ConfigError } from "../../src/errors.js";

const NEW = `ghcr.io/algomation-ai/processgit@sha256:${"a".repeat(64)}`;
const ENV = [
  "# ProcessGit deployment",
  "PROCESSGIT_UPDATER_TOKEN=s3cret-token-value-that-must-stay-exactly-as-is",
  "PROCESSGIT_IMAGE=ghcr.io/algomation-ai/processgit:1.0.0",
  "DOCKER_GID=998",
  "",
].join("\n");

describe("envAssignment / withEnvValue", () => {
  it("replaces only the image line and keeps every other byte", () => {
    const out = withEnvValue(ENV, "PROCESSGIT_IMAGE", NEW);
    expect(out).toBe(ENV.replace("ghcr.io/algomation-ai/processgit:1.0.0", NEW));
    expect(envAssignment(out, "PROCESSGIT_IMAGE")?.value).toBe(NEW);
  });

  it("reads quoted values, spaces around =, export and the last of duplicates as Compose does", () => {
    expect(envAssignment('PROCESSGIT_IMAGE="a:1"\n', "PROCESSGIT_IMAGE")).toEqual({
      raw: '"a:1"',
      value: "a:1",
    });
    expect(envAssignment("export PROCESSGIT_IMAGE = b:2\n", "PROCESSGIT_IMAGE")?.value).toBe("b:2");
    expect(envAssignment("PROCESSGIT_IMAGE=a:1\nPROCESSGIT_IMAGE=c:3\n", "PROCESSGIT_IMAGE")?.value).toBe(
      "c:3",
    );
    expect(envAssignment("# PROCESSGIT_IMAGE=a:1\nOTHER_PROCESSGIT_IMAGE=x\n", "PROCESSGIT_IMAGE")).toBe(
      undefined,
    );
  });

  it("rewrites every assignment so no later duplicate overrides the new value; keeps CRLF endings", () => {
    const out = withEnvValue(
      "PROCESSGIT_IMAGE=a:1\r\nX=1\r\nPROCESSGIT_IMAGE=c:3\r\n",
      "PROCESSGIT_IMAGE",
      NEW,
    );
    expect(out).toBe(`PROCESSGIT_IMAGE=${NEW}\r\nX=1\r\nPROCESSGIT_IMAGE=${NEW}\r\n`);
  });

  it("appends the variable when the file does not set it", () => {
    expect(withEnvValue("X=1", "PROCESSGIT_IMAGE", NEW)).toBe(`X=1\nPROCESSGIT_IMAGE=${NEW}\n`);
    expect(withEnvValue("", "PROCESSGIT_IMAGE", NEW)).toBe(`PROCESSGIT_IMAGE=${NEW}\n`);
  });
});

describe("ComposeEnvFile on a real file", () => {
  let dir: string;
  let file: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "compose-env-"));
    file = join(dir, ".env");
    await writeFile(file, ENV);
    await chmod(file, 0o640);
  });
  afterEach(async () => {
    await chmod(dir, 0o755).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  it("sets and restores the value in place: same inode, mode and contents, no temp file", async () => {
    const env = new ComposeEnvFile(file, "PROCESSGIT_IMAGE");
    const before = await env.check();
    const inode = (await stat(file)).ino;
    expect(before?.value).toBe("ghcr.io/algomation-ai/processgit:1.0.0");
    await env.set(NEW);
    expect(await readFile(file, "utf8")).toBe(ENV.replace(before?.raw ?? "", NEW));
    expect((await stat(file)).mode & 0o777).toBe(0o640);
    expect((await stat(file)).ino).toBe(inode);
    // Back to the shorter value: padded, then truncated to the exact old contents.
    await env.restore(before?.raw);
    expect(await readFile(file, "utf8")).toBe(ENV);
    expect((await stat(file)).ino).toBe(inode);
    expect(await readdir(dir)).toEqual([".env"]);
  });

  it("restoring a variable that was not set removes the line again", async () => {
    await writeFile(file, "X=1\n");
    const env = new ComposeEnvFile(file, "PROCESSGIT_IMAGE");
    expect(await env.check()).toBe(undefined);
    await env.set(NEW);
    await env.restore(undefined);
    expect(await readFile(file, "utf8")).toBe("X=1\n");
  });

  it("check fails with a clear precondition error when the file is missing", async () => {
    const env = new ComposeEnvFile(join(dir, "missing.env"), "PROCESSGIT_IMAGE");
    await expect(env.check()).rejects.toMatchObject({
      code: "failed_precondition",
      reason: "PREFLIGHT_FAILED",
      message: expect.stringContaining("PROCESSGIT_UPDATER_COMPOSE_ENV_FILE"),
    });
  });

  it("check fails when the file is not writable by the updater's user, saying how to allow it", async () => {
    // Root ignores permissions, so the check runs in a child process as the unprivileged `nobody`.
    await chmod(dir, 0o755);
    await chmod(file, 0o644);
    const module = new URL("../../dist/src/engine/compose-env.js", import.meta.url).href;
    const script = `const { ComposeEnvFile } = await import(${JSON.stringify(module)});
      await new ComposeEnvFile(${JSON.stringify(file)}, "PROCESSGIT_IMAGE").check().then(
        () => console.log("no error"), (e) => console.log(e.message));`;
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      ...asNobody,
      encoding: "utf8",
    });
    expect(out).toMatch(
      /it is not writable by this process \(uid \d+, gid \d+\); .*chgrp 10001 \.env && chmod g\+w \.env/,
    );
  });
});

describe("configuration", () => {
  const base = {
    PROCESSGIT_UPDATER_TOKEN: "t".repeat(40),
    PROCESSGIT_UPDATER_SIGNER_ISSUER: "https://token.actions.githubusercontent.com",
    PROCESSGIT_UPDATER_SIGNER_IDENTITY: "https://github.com/a/b/.*",
  };
  it("is off by default and names PROCESSGIT_IMAGE when a file is given", () => {
    expect(loadConfig(base).engine.composeEnv).toBe(undefined);
    expect(
      loadConfig({ ...base, PROCESSGIT_UPDATER_COMPOSE_ENV_FILE: "/deploy/.env" }).engine.composeEnv,
    ).toEqual({ file: "/deploy/.env", variable: "PROCESSGIT_IMAGE" });
  });
  it("refuses a relative path, a bad name, and a variable that looks like a secret", () => {
    const problems = (extra: Record<string, string>) => {
      try {
        loadConfig({ ...base, ...extra });
        return [];
      } catch (err) {
        return (err as ConfigError).problems;
      }
    };
    expect(problems({ PROCESSGIT_UPDATER_COMPOSE_ENV_FILE: "deploy/.env" }).join()).toMatch(/absolute path/);
    expect(problems({ PROCESSGIT_UPDATER_COMPOSE_IMAGE_VARIABLE: "1X" }).join()).toMatch(/variable name/);
    expect(
      problems({ PROCESSGIT_UPDATER_COMPOSE_IMAGE_VARIABLE: "PROCESSGIT_UPDATER_TOKEN" }).join(),
    ).toMatch(/looks like a secret/);
  });
});
