/** loadConfig: defaults, every variable's checks, all problems at once, and secrets kept out of messages. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { describeConfig, loadConfig as load, MIN_TOKEN_LENGTH } from "../../src/config.js";
import { ConfigError } from "../../src/errors.js";

/** A distinctive token: any message that contains a piece of it leaked it. */
const TOKEN = "Zq7-SECRETTOKEN-do-not-log-4f8a2c9e1b7d";
const GH_TOKEN = "ghp_GITHUBSECRET0123456789abcdefXYZ";

/** A keyless signer policy, so that the tests below are about the other variables. */
const SIGNER = {
  PROCESSGIT_UPDATER_SIGNER_ISSUER: "https://token.actions.githubusercontent.com",
  PROCESSGIT_UPDATER_SIGNER_IDENTITY:
    "https://github\\.com/acme/processgit/\\.github/workflows/release\\.yml@refs/tags/v.*",
};
const SIGNER_CONFIG = {
  policy: "keyless",
  issuer: SIGNER.PROCESSGIT_UPDATER_SIGNER_ISSUER,
  identity: SIGNER.PROCESSGIT_UPDATER_SIGNER_IDENTITY,
};

function loadConfig(env: NodeJS.ProcessEnv) {
  return load({ ...SIGNER, ...env });
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "config-test-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function secretFile(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** The ConfigError loadConfig throws for `env`; fails the test when it accepts `env`. */
function problemsOf(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(Object.keys(env))}`);
}

function expectNoLeak(err: ConfigError, ...secrets: string[]): void {
  const text = `${err.message}\n${err.problems.join("\n")}\n${String(err.stack)}`;
  for (const secret of secrets) {
    expect(text).not.toContain(secret);
    // Not even a large piece of it.
    expect(text).not.toContain(secret.slice(0, 12));
    expect(text).not.toContain(secret.slice(-12));
  }
}

describe("loadConfig: defaults", () => {
  it("needs only a token and fills in everything else", () => {
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN })).toEqual({
      listen: { host: "0.0.0.0", port: 9000 },
      token: TOKEN,
      stateDir: "/var/lib/processgit-updater",
      appContainer: "processgit",
      github: { repo: "Algomation-AI/ProcessGit", apiBase: "https://api.github.com" },
      dockerHost: "unix:///var/run/docker.sock",
      logLevel: "info",
      shutdownGraceMs: 5000,
      signer: SIGNER_CONFIG,
      engine: {
        snapshotDir: "/var/lib/processgit-updater/snapshots",
        snapshotKeep: 3,
        healthDeadlineMs: 120_000,
        healthSoakMs: 10_000,
        migrationTimeoutMs: 1_800_000,
        removeOldImage: false,
      },
    });
  });

  it("treats empty and blank variables as unset", () => {
    const config = loadConfig({
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_TOKEN_FILE: "",
      PROCESSGIT_UPDATER_LISTEN: "  ",
      PROCESSGIT_UPDATER_REPO: "",
      PROCESSGIT_UPDATER_GITHUB_TOKEN: "",
    });
    expect(config.listen).toEqual({ host: "0.0.0.0", port: 9000 });
    expect(config.github).toEqual({ repo: "Algomation-AI/ProcessGit", apiBase: "https://api.github.com" });
  });

  it("reads every variable", () => {
    const config = loadConfig({
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:9443",
      PROCESSGIT_UPDATER_STATE_DIR: "/srv/updater",
      PROCESSGIT_UPDATER_APP_CONTAINER: "pg_app-1.blue",
      PROCESSGIT_UPDATER_REPO: "my-org/my.repo_x",
      PROCESSGIT_UPDATER_GITHUB_API: "https://ghe.example.test/api/v3/",
      PROCESSGIT_UPDATER_GITHUB_TOKEN: GH_TOKEN,
      DOCKER_HOST: "tcp://docker:2375",
      PROCESSGIT_UPDATER_LOG_LEVEL: "DEBUG",
      PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS: "0",
      PROCESSGIT_UPDATER_SNAPSHOT_DIR: "/srv/snapshots",
      PROCESSGIT_UPDATER_SNAPSHOT_KEEP: "5",
      PROCESSGIT_UPDATER_HEALTH_URL: "http://127.0.0.1:3000/api/healthz",
      PROCESSGIT_UPDATER_HEALTH_DEADLINE_SECONDS: "90",
      PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS: "2.5",
      PROCESSGIT_UPDATER_MIGRATION_TIMEOUT_SECONDS: "600",
      PROCESSGIT_UPDATER_REMOVE_OLD_IMAGE: "true",
      PROCESSGIT_UPDATER_REGISTRY: "ghcr.io",
      PROCESSGIT_UPDATER_REGISTRY_USERNAME: "bot",
      PROCESSGIT_UPDATER_REGISTRY_PASSWORD: GH_TOKEN,
    });
    expect(config).toEqual({
      listen: { host: "127.0.0.1", port: 9443 },
      token: TOKEN,
      stateDir: "/srv/updater",
      appContainer: "pg_app-1.blue",
      github: { repo: "my-org/my.repo_x", apiBase: "https://ghe.example.test/api/v3", token: GH_TOKEN },
      dockerHost: "tcp://docker:2375",
      logLevel: "debug",
      shutdownGraceMs: 0,
      signer: SIGNER_CONFIG,
      engine: {
        snapshotDir: "/srv/snapshots",
        snapshotKeep: 5,
        healthUrl: "http://127.0.0.1:3000/api/healthz",
        healthDeadlineMs: 90_000,
        healthSoakMs: 2500,
        migrationTimeoutMs: 600_000,
        removeOldImage: true,
        registryAuth: { registry: "ghcr.io", username: "bot", password: GH_TOKEN },
      },
    });
  });

  it("describeConfig leaves the secrets out", () => {
    const config = loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_GITHUB_TOKEN: GH_TOKEN });
    const described = JSON.stringify(describeConfig(config));
    expect(described).not.toContain(TOKEN);
    expect(described).not.toContain(GH_TOKEN);
    expect(describeConfig(config).githubToken).toBe("set");
    expect(describeConfig(config).listen).toBe("0.0.0.0:9000");
  });
});

describe("loadConfig: the token", () => {
  it("is required", () => {
    const err = problemsOf({});
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toContain(
      "PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE is required",
    );
  });

  it(`must be at least ${MIN_TOKEN_LENGTH} characters, and the message does not show it`, () => {
    expect(MIN_TOKEN_LENGTH).toBe(32);
    const short = TOKEN.slice(0, 31);
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN: short });
    expect(err.problems).toEqual([
      "PROCESSGIT_UPDATER_TOKEN is 31 characters long; use at least 32 (for example: openssl rand -hex 32)",
    ]);
    expectNoLeak(err, short);
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN.slice(0, 32) }).token).toBe(TOKEN.slice(0, 32));
  });

  it("refuses both the token and a token file", () => {
    const file = secretFile("token", `${TOKEN}\n`);
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_TOKEN_FILE: file });
    expect(err.problems).toEqual([
      "set only one of PROCESSGIT_UPDATER_TOKEN and PROCESSGIT_UPDATER_TOKEN_FILE",
    ]);
    expectNoLeak(err, TOKEN);
  });

  it("reads a token file and drops its trailing newline", () => {
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN_FILE: secretFile("lf", `${TOKEN}\n`) }).token).toBe(TOKEN);
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN_FILE: secretFile("crlf", `${TOKEN}\r\n`) }).token).toBe(
      TOKEN,
    );
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN_FILE: secretFile("bare", TOKEN) }).token).toBe(TOKEN);
  });

  it("reports a token file that cannot be read", () => {
    const missing = join(dir, "nope");
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN_FILE: missing });
    expect(err.problems).toEqual([`PROCESSGIT_UPDATER_TOKEN_FILE: cannot read ${missing}: ENOENT`]);
    expect(problemsOf({ PROCESSGIT_UPDATER_TOKEN_FILE: dir }).problems[0]).toContain("EISDIR");
    const underAFile = join(secretFile("plain", TOKEN), "token");
    const err2 = problemsOf({ PROCESSGIT_UPDATER_TOKEN_FILE: underAFile });
    expect(err2.problems).toEqual([`PROCESSGIT_UPDATER_TOKEN_FILE: cannot read ${underAFile}: ENOTDIR`]);
    expectNoLeak(err2, TOKEN);
  });

  it("reports an empty token file", () => {
    for (const content of ["", "\n", "   \n"]) {
      const file = secretFile("empty", content);
      const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN_FILE: file });
      expect(err.problems).toEqual([`PROCESSGIT_UPDATER_TOKEN_FILE: ${file} is empty`]);
    }
  });

  it("never shows the token in any message", () => {
    const cases: NodeJS.ProcessEnv[] = [
      { PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_TOKEN_FILE: join(dir, "x") },
      { PROCESSGIT_UPDATER_TOKEN: `${TOKEN} ${TOKEN}` },
      { PROCESSGIT_UPDATER_TOKEN: `${TOKEN}\n` },
      { PROCESSGIT_UPDATER_TOKEN: TOKEN.slice(0, 20) },
      { PROCESSGIT_UPDATER_TOKEN_FILE: secretFile("two-lines", `${TOKEN}\n${TOKEN}\n`) },
      { PROCESSGIT_UPDATER_TOKEN_FILE: secretFile("inner-space", `${TOKEN} x`) },
      { PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_GITHUB_TOKEN: `${GH_TOKEN} extra` },
      {
        PROCESSGIT_UPDATER_TOKEN: TOKEN,
        PROCESSGIT_UPDATER_GITHUB_TOKEN: GH_TOKEN,
        PROCESSGIT_UPDATER_GITHUB_TOKEN_FILE: secretFile("gh", GH_TOKEN),
        PROCESSGIT_UPDATER_LISTEN: "nonsense",
      },
    ];
    for (const env of cases) {
      const err = problemsOf(env);
      expect(err.problems.length).toBeGreaterThan(0);
      expectNoLeak(err, TOKEN, GH_TOKEN);
    }
  });

  it("refuses whitespace inside the token and inside a token file", () => {
    expect(problemsOf({ PROCESSGIT_UPDATER_TOKEN: `${TOKEN} x` }).problems).toEqual([
      "PROCESSGIT_UPDATER_TOKEN holds whitespace; it must be a single word",
    ]);
    const file = secretFile("spaced", `${TOKEN} x\n`);
    expect(problemsOf({ PROCESSGIT_UPDATER_TOKEN_FILE: file }).problems).toEqual([
      `PROCESSGIT_UPDATER_TOKEN_FILE: ${file} holds whitespace inside the secret; it must be one line`,
    ]);
  });

  it("the GitHub token is optional and checked the same way", () => {
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN }).github.token).toBeUndefined();
    const gh = secretFile("gh", `${GH_TOKEN}\n`);
    expect(
      loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_GITHUB_TOKEN_FILE: gh }).github.token,
    ).toBe(GH_TOKEN);
    const err = problemsOf({
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_GITHUB_TOKEN: GH_TOKEN,
      PROCESSGIT_UPDATER_GITHUB_TOKEN_FILE: gh,
    });
    expect(err.problems).toEqual([
      "set only one of PROCESSGIT_UPDATER_GITHUB_TOKEN and PROCESSGIT_UPDATER_GITHUB_TOKEN_FILE",
    ]);
  });
});

describe("loadConfig: LISTEN", () => {
  it.each<[string, { host: string; port: number }]>([
    ["0.0.0.0:9000", { host: "0.0.0.0", port: 9000 }],
    ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }],
    ["[::1]:0", { host: "::1", port: 0 }],
    ["[::]:9000", { host: "::", port: 9000 }],
    ["[fe80::1:2]:65535", { host: "fe80::1:2", port: 65535 }],
    ["localhost:8080", { host: "localhost", port: 8080 }],
    [" updater.internal:9000 ", { host: "updater.internal", port: 9000 }],
  ])("parses %j", (value, listen) => {
    expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_LISTEN: value }).listen).toEqual(
      listen,
    );
  });

  it.each([
    "9000",
    ":9000",
    "localhost",
    "localhost:",
    "localhost:http",
    "localhost:65536",
    "localhost:123456",
    "localhost:-1",
    "::1:9000",
    "[::1]",
    "[::1]:",
    "[::1]:70000",
    "[not-ipv6]:9000",
    "http://localhost:9000",
    "my host:9000",
  ])("refuses %j with an example of the format", (value) => {
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_LISTEN: value });
    expect(err.problems).toEqual([
      `PROCESSGIT_UPDATER_LISTEN must be host:port (e.g. 0.0.0.0:9000, 127.0.0.1:0 or [::1]:9000), got ${JSON.stringify(value)}`,
    ]);
  });
});

describe("loadConfig: REPO", () => {
  it.each(["owner/name", "Algomation-AI/ProcessGit", "a/b", "o1/n.a_m-e", `${"o".repeat(39)}/x`])(
    "accepts %j",
    (repo) => {
      expect(loadConfig({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_REPO: repo }).github.repo).toBe(
        repo,
      );
    },
  );

  it.each([
    "owner",
    "owner/",
    "/name",
    "owner/name/extra",
    "-owner/name",
    "own er/name",
    "owner/na me",
    `${"o".repeat(40)}/x`,
    "https://github.com/owner/name",
    "owner/name?x=1",
    "owner/..",
    "owner/.",
  ])("refuses %j", (repo) => {
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN: TOKEN, PROCESSGIT_UPDATER_REPO: repo });
    expect(err.problems).toEqual([`PROCESSGIT_UPDATER_REPO must be owner/name, got ${JSON.stringify(repo)}`]);
  });
});

describe("loadConfig: a secret pasted into a *_FILE variable", () => {
  it("is not echoed back as a file name", () => {
    const secret = "ghp_pastedIntoTheFileVariable0123456789abcdef";
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN_FILE: secret });
    expect(err.problems[0]).toMatch(
      /^PROCESSGIT_UPDATER_TOKEN_FILE: cannot read the file it names \(not a path/,
    );
    expectNoLeak(err, secret);
  });
});

describe("loadConfig: every problem at once", () => {
  it("lists each bad variable in one ConfigError", () => {
    const err = problemsOf({
      PROCESSGIT_UPDATER_LISTEN: "nowhere",
      PROCESSGIT_UPDATER_STATE_DIR: "relative/dir",
      PROCESSGIT_UPDATER_APP_CONTAINER: "-bad name",
      PROCESSGIT_UPDATER_REPO: "no-slash",
      PROCESSGIT_UPDATER_GITHUB_API: "ftp://example.test",
      DOCKER_HOST: "/var/run/docker.sock",
      PROCESSGIT_UPDATER_LOG_LEVEL: "verbose",
      PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS: "120001",
      PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS: "ten",
      PROCESSGIT_UPDATER_REGISTRY_USERNAME: "bot",
    });
    expect(err).toBeInstanceOf(ConfigError);
    const starts = err.problems.map((p) => p.split(/[ :]/)[0]);
    expect(starts).toEqual([
      "PROCESSGIT_UPDATER_LISTEN",
      "PROCESSGIT_UPDATER_TOKEN",
      "PROCESSGIT_UPDATER_STATE_DIR",
      "PROCESSGIT_UPDATER_APP_CONTAINER",
      "PROCESSGIT_UPDATER_REPO",
      "PROCESSGIT_UPDATER_GITHUB_API",
      "DOCKER_HOST",
      "PROCESSGIT_UPDATER_LOG_LEVEL",
      "PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS",
      "PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS",
      "registry",
    ]);
    for (const problem of err.problems) expect(err.message).toContain(`  - ${problem}`);
    expect(err.message.startsWith("invalid configuration:\n")).toBe(true);
    expect(err.problems[2]).toContain('"relative/dir"');
    expect(err.problems[7]).toContain('"verbose"');
    expect(err.problems[8]).toBe(
      'PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS must be a whole number from 0 to 120000, got "120001"',
    );
  });

  it.each([
    ["PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS", "-5"],
    ["PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS", "1.5"],
    ["PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS", "5s"],
    ["PROCESSGIT_UPDATER_GITHUB_API", "not a url"],
    ["DOCKER_HOST", "unix://relative.sock"],
    ["PROCESSGIT_UPDATER_APP_CONTAINER", "app/1"],
  ])("refuses %s=%j", (name, value) => {
    const err = problemsOf({ PROCESSGIT_UPDATER_TOKEN: TOKEN, [name]: value });
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]?.startsWith(name)).toBe(true);
    expect(err.problems[0]).toContain(JSON.stringify(value));
  });
});

describe("loadConfig: the signer policy (exactly one, else refuse)", () => {
  const base = { PROCESSGIT_UPDATER_TOKEN: TOKEN };
  const problems = (env: NodeJS.ProcessEnv): string[] => {
    try {
      load({ ...base, ...env });
    } catch (err) {
      if (err instanceof ConfigError) return [...err.problems];
      throw err;
    }
    return [];
  };

  it("refuses to start without one", () => {
    expect(problems({})).toEqual([
      expect.stringMatching(
        /^no signer policy is configured, so no release could be trusted \(fail closed\)/,
      ),
    ]);
  });

  it("refuses two", () => {
    const key = join(dir, "key.pub");
    writeFileSync(key, "x");
    expect(problems({ ...SIGNER, PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: key })).toEqual([
      expect.stringMatching(/^two signer policies are configured; use exactly one/),
    ]);
  });

  it("keyless needs the issuer and the identity, a valid regexp and an https issuer", () => {
    expect(problems({ PROCESSGIT_UPDATER_SIGNER_ISSUER: SIGNER.PROCESSGIT_UPDATER_SIGNER_ISSUER })).toEqual([
      "the keyless signer policy needs both PROCESSGIT_UPDATER_SIGNER_ISSUER and PROCESSGIT_UPDATER_SIGNER_IDENTITY",
    ]);
    expect(
      problems({ ...SIGNER, PROCESSGIT_UPDATER_SIGNER_IDENTITY: "https://github.com/(acme" })[0],
    ).toMatch(/^PROCESSGIT_UPDATER_SIGNER_IDENTITY is not a valid regular expression/);
    expect(problems({ ...SIGNER, PROCESSGIT_UPDATER_SIGNER_ISSUER: "http://issuer.test" })[0]).toMatch(
      /^PROCESSGIT_UPDATER_SIGNER_ISSUER must be the OIDC issuer URL/,
    );
    const root = join(dir, "trusted_root.json");
    expect(load({ ...base, ...SIGNER, PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT: root }).signer).toEqual({
      ...SIGNER_CONFIG,
      trustedRootPath: root,
    });
  });

  it("key mode needs a readable public key file", () => {
    expect(problems({ PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: join(dir, "missing.pub") })).toEqual([
      `PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: cannot read ${join(dir, "missing.pub")}: ENOENT`,
    ]);
    const key = join(dir, "cosign.pub");
    writeFileSync(key, "-----BEGIN PUBLIC KEY-----\n");
    expect(load({ ...base, PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: key }).signer).toEqual({
      policy: "key",
      publicKeyPath: key,
    });
  });
});

describe("docs/configuration.md", () => {
  it("documents every environment variable the configuration reads", async () => {
    const { readFile } = await import("node:fs/promises");
    const source = await readFile(new URL("../../src/config.ts", import.meta.url), "utf8");
    const docs = await readFile(new URL("../../docs/configuration.md", import.meta.url), "utf8");
    const names = new Set(
      source.match(/"(PROCESSGIT_UPDATER_[A-Z_]+|DOCKER_HOST)"/g)?.map((n) => n.slice(1, -1)),
    );
    expect(names.size).toBeGreaterThan(20);
    const missing = [...names].filter((name) => !docs.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });
});
