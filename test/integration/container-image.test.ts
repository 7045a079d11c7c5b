/**
 * The updater's image, built from the unchanged Dockerfile (scripts/image.sh; the base image is a
 * local stand-in of node:24-bookworm-slim, docs/base-image.md), run as an operator runs it: non-root,
 * the Docker socket through its numeric group, read-only root filesystem, no capabilities, a state
 * volume. It updates a fixture app on the real engine with a really signed release from the GitHub
 * stand-in, driven from outside by the operator's CLI with --watch.
 */
import { generateKeyPairSync, sign } from "node:crypto";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  appContainers,
  type Fixture,
  imageOf,
  serving,
  startApp,
  useEngineSuite,
} from "../helpers/app-fixture.js";
import { docker, labelArgs } from "../helpers/docker.js";
import { type GitHubStandIn, startGitHubStandIn } from "../helpers/github-standin.js";
import { run } from "../helpers/run.js";
import {
  buildUpdaterImage,
  healthStatus,
  runUpdaterContainer,
  socketPath,
  type UpdaterContainer,
  waitReady,
} from "../helpers/updater-image.js";

const suite = useEngineSuite("image");
const TOKEN = "image-test-token-8c1f0e2d3b4a59687766554433221100";
const bin = join(import.meta.dirname, "../../dist/src/cli/bin.js");
let image: string;
let github: GitHubStandIn;
let keysDir: string;

beforeAll(async () => {
  image = buildUpdaterImage();
  // Key policy: a P-256 key; release.json.sig is what `cosign sign-blob --key` writes.
  const keys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  keysDir = join(suite.work, "keys");
  await mkdir(keysDir);
  await writeFile(join(keysDir, "release.pub"), keys.publicKey.export({ type: "spki", format: "pem" }));
  // The updater runs as uid 10001: it must be able to read the key through the bind mount.
  await chmod(suite.work, 0o755);
  await chmod(keysDir, 0o755);
  await chmod(join(keysDir, "release.pub"), 0o644);
  const v2 = suite.fixtures.v2 as Fixture;
  const manifest = JSON.stringify({
    schema_version: 1,
    name: "processgit",
    version: v2.version,
    tag: `v${v2.version}`,
    image: imageOf(v2),
    migration: { required: true, command: ["/bin/sh", "/opt/app/migrate.sh"] },
  });
  github = await startGitHubStandIn({
    repo: "acme/processgit",
    releases: [
      {
        tag: `v${v2.version}`,
        assets: [
          { name: "release.json", bytes: manifest },
          {
            name: "release.json.sig",
            bytes: sign("sha256", Buffer.from(manifest), keys.privateKey).toString("base64"),
          },
        ],
      },
    ],
  });
}, 25 * 60_000);

afterAll(async () => {
  await github?.close();
});

const cli = (c: UpdaterContainer, args: string[]) =>
  run(
    "env",
    [
      "-i",
      `PATH=${process.env.PATH}`,
      `PROCESSGIT_UPDATER_URL=${c.url}`,
      `PROCESSGIT_UPDATER_TOKEN=${TOKEN}`,
      process.execPath,
      bin,
      ...args,
    ],
    { timeoutMs: 180_000 },
  );

describe("the updater's container image", () => {
  it("runs as uid 10001 under tini, checks its health with node, carries OCI labels and no npm", async () => {
    const inspect = JSON.parse(await docker(["image", "inspect", image]))[0] as {
      Config: {
        User: string;
        Entrypoint: string[];
        Cmd: string[];
        Healthcheck: { Test: string[] };
        Labels: Record<string, string>;
      };
    };
    expect(inspect.Config.User).toBe("10001:10001");
    expect(inspect.Config.Entrypoint).toEqual(["/usr/bin/tini", "--"]);
    expect(inspect.Config.Cmd).toEqual(["node", "/app/dist/src/main.js"]);
    expect(inspect.Config.Healthcheck.Test).toEqual(["CMD", "node", "/app/dist/src/healthcheck.js"]);
    expect(inspect.Config.Labels["org.opencontainers.image.title"]).toBe("processgit-updater");
    expect(inspect.Config.Labels["org.opencontainers.image.version"]).toBe("0.1.0");
    expect(inspect.Config.Labels["org.opencontainers.image.revision"]).toMatch(/^[0-9a-f]{40}$/);
    const probe = await docker([
      "run",
      "--rm",
      "--network",
      "none",
      "--entrypoint",
      "/bin/sh",
      image,
      "-c",
      "id -u; node --version; stat -c '%u %a' /var/lib/processgit-updater; command -v npm || echo no-npm",
    ]);
    expect(probe.trim().split("\n")).toEqual([
      "10001",
      expect.stringMatching(/^v24\./),
      "10001 700",
      "no-npm",
    ]);
  });

  it("updates a fixture app with a signed release, driven by the CLI with --watch", async () => {
    const app = await startApp(suite.janitor, suite.fixtures.v1 as Fixture);
    const port = app.port + 3000;
    const updater = await runUpdaterContainer(
      suite.janitor,
      image,
      port,
      {
        PROCESSGIT_UPDATER_TOKEN: TOKEN,
        PROCESSGIT_UPDATER_APP_CONTAINER: app.name,
        PROCESSGIT_UPDATER_REPO: github.repo,
        PROCESSGIT_UPDATER_GITHUB_API: github.apiUrl,
        PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: "/keys/release.pub",
        PROCESSGIT_UPDATER_HEALTH_URL: `http://127.0.0.1:${app.port}/health`,
        PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS: "1",
        PROCESSGIT_UPDATER_HEALTH_DEADLINE_SECONDS: "30",
      },
      [`${keysDir}:/keys:ro`],
    );
    await waitReady(updater);

    const status = await cli(updater, ["status"]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain("version 1.0.0");

    const update = await cli(updater, ["update", "v2.0.0", "--watch"]);
    expect(update.code, `${update.stdout}\n${update.stderr}`).toBe(0);
    expect(update.stdout).toMatch(
      /\[snapshotting\][\s\S]*\[pulling\][\s\S]*\[healthchecking\][\s\S]*\[committed\]/,
    );
    expect(update.stdout).toContain("committed: v2.0.0");
    expect(await serving(app.port)).toBe("2.0.0");
    const v2 = suite.fixtures.v2 as Fixture;
    expect(await appContainers(app.name)).toEqual([`${app.name} running ${v2.repository}@${v2.digest}`]);

    // The CLI is in the image too, and finds the server from the container's own settings.
    const inside = await docker(["exec", updater.name, "processgit-updater", "history", "--json"]);
    const jobs = (JSON.parse(inside) as { jobs: Array<{ state: string; targetTag: string }> }).jobs;
    expect(jobs[0]).toMatchObject({ state: "JOB_STATE_COMMITTED", targetTag: "v2.0.0" });

    // Docker's own HEALTHCHECK (node, no curl) reports healthy.
    const until = Date.now() + 30_000;
    while ((await healthStatus(updater.name)) !== "healthy" && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(await healthStatus(updater.name)).toBe("healthy");

    // One JSON line per event, never the token.
    const logs = await run("docker", ["logs", updater.name]);
    const lines = (logs.stdout + logs.stderr).trim().split("\n");
    for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
    expect(logs.stdout + logs.stderr).not.toContain(TOKEN);

    // SIGTERM reaches node through tini: a clean exit 0, not a kill after the grace period.
    await docker(["stop", "-t", "20", updater.name]);
    expect((await docker(["inspect", "-f", "{{.State.ExitCode}}", updater.name])).trim()).toBe("0");
    // The journal lives in the state volume: after a restart the history is still there.
    await docker(["start", updater.name]);
    await waitReady(updater);
    const again = await cli(updater, ["history"]);
    expect(again.stdout, `${again.code} ${again.stderr}`).toContain("v2.0.0");
    expect(again.stdout).toContain("committed");
  }, 240_000);

  it("says what to fix when the socket's group or a writable state directory is missing", async () => {
    const env = [
      "-e",
      `PROCESSGIT_UPDATER_TOKEN=${TOKEN}`,
      "-e",
      "PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY=/keys/release.pub",
      "-v",
      `${keysDir}:/keys:ro`,
    ];
    // No volume on a read-only root: the state directory cannot be written. Exit 3, with the fix.
    const noState = await run(
      "docker",
      ["run", "--rm", "--network", "none", "--read-only", ...labelArgs(suite.janitor), ...env, image],
      { timeoutMs: 60_000 },
    );
    expect(noState.code).toBe(3);
    expect(noState.stderr).toContain(
      "the state directory /var/lib/processgit-updater is not writable by this process (uid 10001)",
    );
    expect(noState.stderr).toContain("Mount a volume there");

    // The socket mounted without its group: the updater serves, and says at once why it cannot work.
    const port = 29_000 + Math.floor(Math.random() * 300);
    const name = suite.janitor.container(suite.janitor.name(`nogroup-${port}`));
    await docker([
      "run",
      "-d",
      "--name",
      name,
      ...labelArgs(suite.janitor),
      "--network",
      "host",
      "-v",
      `${socketPath()}:/var/run/docker.sock`,
      "-e",
      `PROCESSGIT_UPDATER_LISTEN=127.0.0.1:${port}`,
      ...env,
      image,
    ]);
    await waitReady({ name, url: `http://127.0.0.1:${port}`, stateVolume: "" });
    const until = Date.now() + 15_000;
    let logs = "";
    while (!logs.includes("cannot read the app container") && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      logs = (await run("docker", ["logs", name])).stdout;
    }
    expect(logs).toContain("EACCES");
    expect(logs).toContain('--group-add \\"$(stat -c %g /var/run/docker.sock)\\"');
  }, 120_000);
});
