/**
 * LatestRelease and the planning fetch through the real server and the real GitHub client, against
 * the local GitHub stand-in (two loopback origins), called with curl as an operator would.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type GitHubStandIn, startGitHubStandIn } from "../helpers/github-standin.js";
import { run } from "../helpers/run.js";
import { startTestUpdater, type TestUpdater } from "../helpers/test-updater.js";

const SERVICE = "processgit.updater.v1.UpdaterService";
let u: TestUpdater | undefined;
let gh: GitHubStandIn | undefined;

afterEach(async () => {
  await u?.close();
  await gh?.close();
  u = undefined;
  gh = undefined;
});

async function call(
  method: string,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  if (!u) throw new Error("no updater");
  const r = await run("curl", [
    "-sS",
    "-w",
    "\n%{http_code}",
    "-H",
    "Content-Type: application/json",
    "-H",
    `Authorization: Bearer ${u.token}`,
    "--data-binary",
    JSON.stringify(body),
    `${u.url}/${SERVICE}/${method}`,
  ]);
  const at = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(at + 1)), body: JSON.parse(r.stdout.slice(0, at)) };
}

async function setUp(env: Record<string, string> = {}): Promise<void> {
  gh = await startGitHubStandIn({
    repo: "acme/processgit",
    releases: [
      { tag: "v1.3.0-rc.1", prerelease: true, body: "Release candidate" },
      { tag: "v1.2.0", body: "## Changes\n- faster" },
      { tag: "v1.4.0", draft: true },
      { tag: "v1.1.0" },
    ],
  });
  u = await startTestUpdater({
    source: "real",
    env: { PROCESSGIT_UPDATER_REPO: gh.repo, PROCESSGIT_UPDATER_GITHUB_API: gh.apiUrl, ...env },
  });
}

describe("LatestRelease against a GitHub-shaped API", () => {
  it("returns the newest stable release, skipping drafts, and says it is newer than what runs", async () => {
    await setUp();
    const stable = await call("LatestRelease", {});
    expect(stable.status).toBe(200);
    const release = stable.body.release as Record<string, unknown>;
    expect(release.tag).toBe("v1.2.0");
    expect(release.notes).toBe("## Changes\n- faster");
    expect(release.prerelease).toBeUndefined();
    expect(typeof release.publishedAt).toBe("string");
    expect(stable.body.newerThanRunning).toBe(true);
    expect(stable.body.runningVersion).toBe("1.0.0");
    const pre = await call("LatestRelease", { channel: "CHANNEL_PRERELEASE" });
    expect((pre.body.release as Record<string, unknown>).tag).toBe("v1.3.0-rc.1");
    expect((pre.body.release as Record<string, unknown>).prerelease).toBe(true);
  });

  it("answers Unavailable with GitHub's reset time when rate limited, NotFound for an unknown repository", async () => {
    await setUp();
    gh?.setRateLimit(0, 1_900_000_000);
    const limited = await call("LatestRelease", {});
    expect(limited.status).toBe(503);
    expect(limited.body.code).toBe("unavailable");
    expect(String(limited.body.message)).toContain("2030-03-17T17:46:40.000Z");
    await u?.close();
    u = await startTestUpdater({
      source: "real",
      env: { PROCESSGIT_UPDATER_REPO: "acme/missing", PROCESSGIT_UPDATER_GITHUB_API: gh?.apiUrl ?? "" },
    });
    gh?.setRateLimit(5000);
    const missing = await call("LatestRelease", {});
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe("not_found");
    expect(String(missing.body.message)).toContain("Not Found");
  });

  it("answers Unavailable when GitHub fails, and an unknown channel is InvalidArgument", async () => {
    await setUp();
    gh?.failWith(502);
    const down = await call("LatestRelease", {});
    expect(down.body.code).toBe("unavailable");
    gh?.failWith(undefined);
    const bad = await call("LatestRelease", { channel: 7 });
    expect(bad.body.code).toBe("invalid_argument");
  });

  it("sends the configured token to the API but never to the storage origin, and never logs it", async () => {
    const token = "ghp_standInTokenThatMustStayOnTheApiOrigin01";
    await setUp({ PROCESSGIT_UPDATER_GITHUB_TOKEN: token });
    gh?.setToken(token);
    gh?.setReleases([
      {
        tag: "v1.2.0",
        assets: [
          { name: "release.json", bytes: '{"schema_version": 1}' },
          { name: "release.json.fake-sig", bytes: "not a valid signature" },
        ],
      },
    ]);
    const started = await call("StartUpdate", { tag: "v1.2.0" });
    const id = (started.body.job as { id: string }).id;
    let job: Record<string, unknown> = {};
    for (let i = 0; i < 200; i++) {
      job = (await call("GetJob", { id })).body.job as Record<string, unknown>;
      if (job.state === "JOB_STATE_ABORTED") break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(job.state).toBe("JOB_STATE_ABORTED");
    expect((job.error as Record<string, unknown>).reason).toBe("SIGNATURE_INVALID");
    const storage = gh?.storageRequests() ?? [];
    expect(storage.length).toBe(2);
    for (const r of storage) expect(r.headers.authorization).toBeUndefined();
    const api = gh?.apiRequests() ?? [];
    expect(api.some((r) => r.headers.authorization === `Bearer ${token}`)).toBe(true);
    expect(u?.logs.join("")).not.toContain(token);
    expect(JSON.stringify(job)).not.toContain(token);
  });
});
