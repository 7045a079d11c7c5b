import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UpdaterError } from "../../src/errors.js";
import type { ReleaseAsset } from "../../src/orchestrator/ports.js";
import { GitHubReleases, type GitHubReleasesOptions } from "../../src/releases/github-releases.js";
import { type GitHubStandIn, type StandInRelease, startGitHubStandIn } from "../helpers/github-standin.js";

const REPO = "processgit/processgit";
const TOKEN = "ghp_standInSecret0123456789abcdefABCDEF";

let gh: GitHubStandIn;

beforeEach(async () => {
  gh = await startGitHubStandIn({ repo: REPO });
});

afterEach(async () => {
  await gh.close();
});

function client(options: Partial<GitHubReleasesOptions> = {}): GitHubReleases {
  return new GitHubReleases({ repo: REPO, apiBase: gh.apiUrl, ...options });
}

async function failure(promise: Promise<unknown>): Promise<UpdaterError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof UpdaterError)) throw new Error(`expected an UpdaterError, got ${String(err)}`);
  return err;
}

function releases(tags: string[], extra: Partial<StandInRelease> = {}): StandInRelease[] {
  return tags.map((tag) => ({ tag, ...extra }));
}

function listRequests(): string[] {
  return gh
    .apiRequests()
    .filter((r) => r.path.includes("/releases?"))
    .map((r) => r.path);
}

describe("latest", () => {
  it("follows Link rel=next across pages and finds the newest release on the last page", async () => {
    const tags = Array.from({ length: 250 }, (_, i) => `v1.0.${i}`);
    gh.setReleases(releases(tags.reverse().slice(1).concat("v1.0.249")));

    const latest = await client().latest("stable");

    expect(latest.tag).toBe("v1.0.249");
    const paths = listRequests();
    expect(paths).toHaveLength(3);
    expect(paths[0]).toBe("/repos/processgit/processgit/releases?per_page=100");
    expect(paths[1]).toMatch(/^\/repositories\/\d+\/releases\?per_page=100&page=2$/);
    expect(paths[2]).toMatch(/^\/repositories\/\d+\/releases\?per_page=100&page=3$/);
  });

  it("reads at most 10 pages", async () => {
    gh.setReleases(
      releases(["v1.0.0", ...Array.from({ length: 9 }, (_, i) => `v0.${i}.0`), "v9.0.0", "v9.1.0"]),
    );

    const latest = await client({ perPage: 1 }).latest("stable");

    expect(listRequests()).toHaveLength(10);
    expect(latest.tag).toBe("v1.0.0");
  });

  it("works under a GitHub Enterprise path prefix", async () => {
    await gh.close();
    gh = await startGitHubStandIn({
      repo: REPO,
      apiPrefix: "/api/v3",
      releases: releases(["v1.0.0", "v1.1.0"]),
    });

    const latest = await client({ perPage: 1 }).latest("stable");

    expect(gh.apiUrl).toMatch(/\/api\/v3$/);
    expect(latest.tag).toBe("v1.1.0");
    expect(listRequests().every((p) => p.startsWith("/api/v3/"))).toBe(true);
  });

  it("maps the release fields", async () => {
    gh.setReleases([
      {
        tag: "v1.2.0",
        name: "ProcessGit 1.2",
        body: "notes",
        publishedAt: "2025-02-03T04:05:06Z",
        htmlUrl: "https://example.invalid/r/1.2.0",
      },
      { tag: "v1.1.0", name: null, body: null },
    ]);
    const github = client();

    expect(await github.latest("stable")).toEqual({
      tag: "v1.2.0",
      name: "ProcessGit 1.2",
      prerelease: false,
      url: "https://example.invalid/r/1.2.0",
      publishedAt: "2025-02-03T04:05:06Z",
      notes: "notes",
    });
    gh.setReleases([{ tag: "v1.1.0", name: null, body: null }]);
    expect(await github.latest("stable")).toMatchObject({ tag: "v1.1.0", name: "v1.1.0", notes: "" });
  });

  it("skips drafts that GitHub lists to a token with push access", async () => {
    gh.setToken(TOKEN);
    gh.setReleases([{ tag: "v3.0.0", draft: true }, { tag: "v2.0.0" }]);

    const latest = await client({ token: TOKEN }).latest("prerelease");

    expect(latest.tag).toBe("v2.0.0");
    const listed = gh.apiRequests().find((r) => r.path.includes("/releases?"));
    expect(listed?.status).toBe(200);
  });

  it("is not_found when only drafts exist", async () => {
    gh.setToken(TOKEN);
    gh.setReleases([{ tag: "v3.0.0", draft: true }]);

    const err = await failure(client({ token: TOKEN }).latest("stable"));

    expect(err.code).toBe("not_found");
    expect(err.message).toContain(REPO);
    expect(err.message).toContain("1 drafts");
  });

  it("honours the channel", async () => {
    gh.setReleases([{ tag: "v2.0.0-rc.1", prerelease: true }, { tag: "v1.9.0" }, { tag: "v1.8.0" }]);
    const github = client();

    expect((await github.latest("stable")).tag).toBe("v1.9.0");
    const pre = await github.latest("prerelease");
    expect(pre).toMatchObject({ tag: "v2.0.0-rc.1", prerelease: true });

    gh.setReleases([{ tag: "v2.0.0-rc.1", prerelease: true }, { tag: "v2.0.0" }]);
    expect((await github.latest("prerelease")).tag).toBe("v2.0.0");
  });

  it("is not_found for stable when every release is a prerelease", async () => {
    gh.setReleases([{ tag: "v2.0.0-rc.1", prerelease: true }]);

    const err = await failure(client().latest("stable"));

    expect(err.code).toBe("not_found");
    expect(err.message).toMatch(/no published stable release.*1 prereleases/);
  });

  it("orders by semver, not by list order or text", async () => {
    gh.setReleases(releases(["v1.4.9", "v1.9.3", "v1.10.0", "v1.10.0-rc.1"]));

    expect((await client().latest("prerelease")).tag).toBe("v1.10.0");
  });

  it("prefers semver tags and falls back to published_at for others", async () => {
    gh.setReleases([{ tag: "nightly-2", publishedAt: "2025-06-01T00:00:00Z" }, { tag: "v0.1.0" }]);
    expect((await client().latest("stable")).tag).toBe("v0.1.0");

    gh.setReleases([
      { tag: "nightly-a", publishedAt: "2025-01-01T00:00:00Z" },
      { tag: "nightly-c", publishedAt: "2025-03-01T00:00:00Z" },
      { tag: "nightly-b", publishedAt: "2025-02-01T00:00:00Z" },
    ]);
    expect((await client().latest("stable")).tag).toBe("nightly-c");
  });

  it("revalidates every page with its ETag and reuses the body on 304", async () => {
    gh.setReleases(releases(["v1.0.0", "v1.1.0", "v1.2.0"]));
    const github = client({ perPage: 2 });
    const first = await github.latest("stable");
    const remaining = gh.rateLimitRemaining();
    gh.clearRequests();

    const second = await github.latest("stable");

    expect(second).toEqual(first);
    const revalidated = gh.apiRequests();
    expect(revalidated).toHaveLength(2);
    for (const request of revalidated) {
      expect(request.headers["if-none-match"]).toMatch(/^W\/"/);
      expect(request.status).toBe(304);
    }
    expect(gh.rateLimitRemaining()).toBe(remaining);

    gh.setReleases(releases(["v1.3.0", "v1.0.0", "v1.1.0", "v1.2.0"]));
    expect((await github.latest("stable")).tag).toBe("v1.3.0");
  });

  it("sends GitHub's headers, and the token only when configured", async () => {
    gh.setReleases(releases(["v1.0.0"]));
    await client({ userAgent: "updater-test/1" }).latest("stable");
    await client({ token: TOKEN }).latest("stable");

    const [anonymous, authenticated] = gh.apiRequests();
    expect(anonymous?.headers).toMatchObject({
      accept: "application/vnd.github+json",
      "x-github-api-version": "2022-11-28",
      "user-agent": "updater-test/1",
    });
    expect(anonymous?.headers.authorization).toBeUndefined();
    expect(authenticated?.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });
});

describe("release", () => {
  it("returns the release with its assets located at their API URLs", async () => {
    gh.setReleases([
      {
        tag: "v1.2.0",
        assets: [
          { name: "release.json", bytes: "{}" },
          { name: "sig", bytes: "abc" },
        ],
      },
    ]);

    const release = await client().release("v1.2.0");

    expect(release.tag).toBe("v1.2.0");
    expect(release.assets.map((a) => [a.name, a.size])).toEqual([
      ["release.json", 2],
      ["sig", 3],
    ]);
    for (const asset of release.assets) {
      expect(asset.locator).toMatch(
        new RegExp(`^${gh.apiUrl.replace(/[.]/g, "\\.")}/repos/processgit/processgit/releases/assets/\\d+$`),
      );
    }
  });

  it("URL-encodes the tag", async () => {
    gh.setReleases(releases(["v1.0.0+build.7", "release/2.0"]));
    const github = client();

    expect((await github.release("v1.0.0+build.7")).tag).toBe("v1.0.0+build.7");
    expect((await github.release("release/2.0")).tag).toBe("release/2.0");
    const paths = gh.apiRequests().map((r) => r.path);
    expect(paths).toEqual([
      "/repos/processgit/processgit/releases/tags/v1.0.0%2Bbuild.7",
      "/repos/processgit/processgit/releases/tags/release%2F2.0",
    ]);
  });

  it("is not_found, with GitHub's message and the tag, for an unknown tag or a draft", async () => {
    gh.setReleases([{ tag: "v2.0.0", draft: true }]);
    const github = client();

    for (const tag of ["v9.9.9", "v2.0.0"]) {
      const err = await failure(github.release(tag));
      expect(err.code).toBe("not_found");
      expect(err.message).toContain('"Not Found"');
      expect(err.message).toContain(`"${tag}"`);
      expect(err.message).toContain(REPO);
    }
  });

  it("treats a draft GitHub returns by tag as not found, and a different tag as bad_gateway", async () => {
    const release = { draft: false, prerelease: false, html_url: "x", assets: [] };
    const draft = new GitHubReleases({
      repo: REPO,
      fetch: async () => Response.json({ ...release, tag_name: "v1.0.0", draft: true }),
    });
    const other = new GitHubReleases({
      repo: REPO,
      fetch: async () => Response.json({ ...release, tag_name: "v1.0.1" }),
    });

    expect((await failure(draft.release("v1.0.0"))).code).toBe("not_found");
    expect((await failure(other.release("v1.0.0"))).code).toBe("bad_gateway");
  });

  it("refuses an invalid tag without asking GitHub", async () => {
    const err = await failure(client().release("v1 .0"));

    expect(err.code).toBe("invalid_argument");
    expect(gh.requests).toHaveLength(0);
  });
});

describe("download", () => {
  it("sends the token to the API origin only and follows the redirect to storage without it", async () => {
    gh.setToken(TOKEN);
    const bytes = new Uint8Array(200_000).map((_, i) => i % 251);
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "app.bin", bytes }] }]);
    const github = client({ token: TOKEN });
    const asset = await assetOf(github, "v1.0.0", "app.bin");
    gh.clearRequests();

    const downloaded = await github.download(asset, 1_000_000);

    expect(downloaded).toEqual(bytes);
    const [api, ...moreApi] = gh.apiRequests();
    expect(moreApi).toHaveLength(0);
    expect(api?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(api?.headers.accept).toBe("application/octet-stream");
    expect(api?.status).toBe(302);
    const [storage, ...moreStorage] = gh.storageRequests();
    expect(moreStorage).toHaveLength(0);
    expect(storage?.status).toBe(200);
    expect(storage?.headers.authorization).toBeUndefined();
    expect(JSON.stringify(storage?.headers)).not.toContain(TOKEN);
    expect(storage?.path).toContain("X-Amz-Signature=");
  });

  it("refuses an asset whose listed size is over the limit without downloading", async () => {
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "big", bytes: new Uint8Array(2048) }] }]);
    const github = client();
    const asset = await assetOf(github, "v1.0.0", "big");
    gh.clearRequests();

    const err = await failure(github.download(asset, 1024));

    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain("1024 bytes");
    expect(gh.requests).toHaveLength(0);
  });

  it("refuses an oversized body by its Content-Length and stops reading", async () => {
    const size = 32 * 1024 * 1024;
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "big", bytes: new Uint8Array(size) }] }]);
    const github = client();
    const asset = await assetOf(github, "v1.0.0", "big");

    const err = await failure(github.download({ ...asset, size: 10 }, 1024 * 1024));

    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain(`is ${size} bytes`);
    await expect.poll(() => gh.storageRequests()[0]?.closed).toBe(true);
    expect(gh.storageRequests()[0]?.status).toBe(200);
    expect(gh.storageRequests()[0]?.completed).toBe(false);
  });

  it("refuses an oversized body without Content-Length while streaming, and aborts the read", async () => {
    const size = 32 * 1024 * 1024;
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "big", bytes: new Uint8Array(size) }] }]);
    gh.setStorageContentLength(false);
    const github = client();
    const asset = await assetOf(github, "v1.0.0", "big");

    const err = await failure(github.download({ ...asset, size: 10 }, 1024 * 1024));

    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain(`more than ${1024 * 1024}`);
    const storage = gh.storageRequests()[0];
    await expect.poll(() => storage?.closed).toBe(true);
    expect(storage?.completed).toBe(false);
    expect(storage?.bytesSent).toBeLessThan(size);
  });

  it("refuses a locator that is not an asset URL of the configured API", async () => {
    const github = client({ token: TOKEN });
    const elsewhere = { name: "x", size: 1, locator: `${gh.storageUrl}/repos/o/r/releases/assets/1` };

    const err = await failure(github.download(elsewhere, 10));

    expect(err.code).toBe("invalid_argument");
    expect(gh.requests).toHaveLength(0);
  });

  it("is unavailable when the storage host fails", async () => {
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "a", bytes: "x" }] }]);
    const github = client();
    const asset = await assetOf(github, "v1.0.0", "a");
    gh.failWith(503, { origin: "storage" });

    const err = await failure(github.download(asset, 10));

    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("503");
    expect(err.message).toContain(gh.storageUrl);
    expect(err.message).not.toContain("X-Amz-Signature");
  });

  it("stops after 5 redirects and never sends the token off the API origin", async () => {
    const seen: { url: string; authorization: string | undefined }[] = [];
    const redirecting: typeof fetch = async (input, init) => {
      const url = String(input);
      seen.push({ url, authorization: new Headers(init?.headers).get("authorization") ?? undefined });
      expect(init?.redirect).toBe("manual");
      return new Response(null, {
        status: 302,
        headers: { location: `https://storage.invalid/hop${seen.length}` },
      });
    };
    const github = new GitHubReleases({ repo: REPO, token: TOKEN, fetch: redirecting });

    const err = await failure(
      github.download(
        { name: "a", size: 1, locator: "https://api.github.com/repos/o/r/releases/assets/7" },
        10,
      ),
    );

    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain("more than 5");
    expect(seen).toHaveLength(6);
    expect(seen[0]?.authorization).toBe(`Bearer ${TOKEN}`);
    expect(seen.slice(1).every((s) => s.authorization === undefined)).toBe(true);
  });

  it("refuses a redirect from https to plain http", async () => {
    const downgrading: typeof fetch = async () =>
      new Response(null, { status: 302, headers: { location: "http://storage.invalid/a" } });
    const github = new GitHubReleases({ repo: REPO, fetch: downgrading });

    const err = await failure(
      github.download(
        { name: "a", size: 1, locator: "https://api.github.com/repos/o/r/releases/assets/7" },
        10,
      ),
    );

    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain("plain http");
  });
});

describe("errors", () => {
  it("is not_found, with GitHub's message, for an unknown repository", async () => {
    const err = await failure(client({ repo: "processgit/nope" }).latest("stable"));

    expect(err.code).toBe("not_found");
    expect(err.message).toContain('"Not Found"');
    expect(err.message).toContain("processgit/nope");
  });

  it("is unavailable on 5xx, and recovers when GitHub does", async () => {
    gh.setReleases(releases(["v1.0.0"]));
    gh.failWith(502, { times: 1 });
    const github = client();

    const err = await failure(github.latest("stable"));
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("502");
    expect(gh.apiRequests()[0]?.status).toBe(502);

    expect((await github.latest("stable")).tag).toBe("v1.0.0");
  });

  it("is unavailable when GitHub rejects the token, naming the variable", async () => {
    gh.setToken(TOKEN);

    const wrong = await failure(client({ token: "ghp_wrong" }).latest("stable"));
    expect(wrong.code).toBe("unavailable");
    expect(wrong.message).toContain("GitHub rejected the token");
    expect(wrong.message).toContain("Bad credentials");
    expect(wrong.message).toContain("PROCESSGIT_UPDATER_GITHUB_TOKEN");
    expect(wrong.message).not.toContain("ghp_wrong");

    const missing = await failure(client().latest("stable"));
    expect(missing.code).toBe("unavailable");
    expect(missing.message).toContain("requires a token");
    expect(missing.message).toContain("PROCESSGIT_UPDATER_GITHUB_TOKEN");
  });

  it("is unavailable on a primary rate limit (403), naming the reset time", async () => {
    const reset = Math.floor(Date.now() / 1000) + 1234;
    gh.setRateLimit(0, reset);

    const err = await failure(client().latest("stable"));

    expect(gh.apiRequests()[0]?.status).toBe(403);
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("rate limit");
    expect(err.message).toContain(new Date(reset * 1000).toISOString());
  });

  it.each([429, 403] as const)(
    "is unavailable on a secondary rate limit (%i with retry-after), naming when to retry",
    async (status) => {
      gh.secondaryRateLimit(120, status);
      const before = Date.now();

      const err = await failure(client().release("v1.0.0"));

      const after = Date.now();
      expect(gh.apiRequests()[0]?.status).toBe(status);
      expect(err.code).toBe("unavailable");
      const iso = /retry after (\S+Z)/.exec(err.message)?.[1];
      const at = Date.parse(iso ?? "");
      expect(at).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 119_000);
      expect(at).toBeLessThanOrEqual(after + 121_000);
    },
  );

  it("is unavailable with GitHub's message on another 403", async () => {
    const forbidden: typeof fetch = async () =>
      Response.json({ message: "Resource not accessible by integration" }, { status: 403 });

    const err = await failure(new GitHubReleases({ repo: REPO, fetch: forbidden }).latest("stable"));

    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("Resource not accessible by integration");
  });

  it("is unavailable when GitHub does not answer in time", async () => {
    gh.setReleases(releases(["v1.0.0"]));
    gh.setDelay(5_000);
    const started = Date.now();

    const err = await failure(client({ timeoutMs: 200 }).latest("stable"));

    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("within 200 ms");
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  it("is unavailable when a download does not finish in time", async () => {
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "a", bytes: "x" }] }]);
    const github = client({ downloadTimeoutMs: 200 });
    const asset = await assetOf(github, "v1.0.0", "a");
    gh.setDelay(5_000, "storage");

    const err = await failure(github.download(asset, 10));

    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("within 200 ms");
  });

  it("is unavailable when GitHub cannot be reached", async () => {
    const url = gh.apiUrl;
    await gh.close();
    gh = await startGitHubStandIn({ repo: REPO });

    const err = await failure(new GitHubReleases({ repo: REPO, apiBase: url }).latest("stable"));

    expect(err.code).toBe("unavailable");
    expect(err.message).toMatch(/cannot reach GitHub.*ECONNREFUSED/);
  });

  it("gives way to the caller's signal: deadline_exceeded for its timeout, its reason otherwise", async () => {
    gh.setReleases(releases(["v1.0.0"]));
    gh.setDelay(5_000);
    const github = client();

    const late = await failure(github.latest("stable", AbortSignal.timeout(100)));
    expect(late.code).toBe("deadline_exceeded");

    const controller = new AbortController();
    const reason = new Error("shutting down");
    setTimeout(() => controller.abort(reason), 50);
    await expect(github.latest("stable", controller.signal)).rejects.toBe(reason);
  });

  it("is bad_gateway for a body that is not JSON or not a release", async () => {
    const answers: Record<string, () => Response> = {
      "not json": () => new Response("<html>oops</html>", { status: 200 }),
      "not a list": () => Response.json({ message: "hello" }),
      "no tag": () => Response.json([{ draft: false, prerelease: false, html_url: "x" }]),
      "bad draft flag": () =>
        Response.json([{ tag_name: "v1.0.0", draft: "no", prerelease: false, html_url: "x" }]),
    };
    for (const [label, answer] of Object.entries(answers)) {
      const github = new GitHubReleases({ repo: REPO, fetch: async () => answer() });
      const err = await failure(github.latest("stable"));
      expect(err.code, label).toBe("bad_gateway");
    }
    const noAssets = new GitHubReleases({
      repo: REPO,
      fetch: async () =>
        Response.json({ tag_name: "v1.0.0", draft: false, prerelease: false, html_url: "x" }),
    });
    expect((await failure(noAssets.release("v1.0.0"))).code).toBe("bad_gateway");
  });

  it("is bad_gateway for a next page off the API origin or a 304 it did not ask for", async () => {
    const offOrigin = new GitHubReleases({
      repo: REPO,
      fetch: async () =>
        Response.json([], { headers: { link: '<https://elsewhere.invalid/releases?page=2>; rel="next"' } }),
    });
    const err = await failure(offOrigin.latest("stable"));
    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain("https://elsewhere.invalid");

    const unasked = new GitHubReleases({
      repo: REPO,
      fetch: async () => new Response(null, { status: 304 }),
    });
    expect((await failure(unasked.latest("stable"))).code).toBe("bad_gateway");
  });

  it("never puts the token in an error message", async () => {
    gh.setToken(TOKEN);
    gh.setReleases([{ tag: "v1.0.0", assets: [{ name: "a", bytes: "xyz" }] }]);
    const github = client({ token: TOKEN, timeoutMs: 200, downloadTimeoutMs: 200 });
    const asset = await assetOf(github, "v1.0.0", "a");
    const errors: UpdaterError[] = [];

    errors.push(await failure(github.release("v404")));
    errors.push(await failure(client({ token: `${TOKEN}x` }).latest("stable")));
    errors.push(await failure(github.download(asset, 1)));
    gh.failWith(500, { times: 1 });
    errors.push(await failure(github.latest("stable")));
    gh.failWith(500, { origin: "storage", times: 1 });
    errors.push(await failure(github.download(asset, 10)));
    gh.setRateLimit(0);
    errors.push(await failure(github.latest("stable")));
    gh.setRateLimit(100);
    gh.secondaryRateLimit(60);
    errors.push(await failure(github.latest("stable")));
    gh.secondaryRateLimit(undefined);
    gh.setDelay(2_000);
    errors.push(await failure(github.latest("stable")));
    errors.push(
      await failure(
        new GitHubReleases({ repo: REPO, apiBase: "http://127.0.0.1:1", token: TOKEN }).latest("stable"),
      ),
    );
    const constructorError = (() => {
      try {
        new GitHubReleases({ repo: REPO, token: `${TOKEN}\n` });
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(constructorError).toBeInstanceOf(UpdaterError);
    errors.push(constructorError as UpdaterError);

    expect(new Set(errors.map((e) => e.code))).toEqual(
      new Set(["not_found", "unavailable", "bad_gateway", "invalid_argument"]),
    );
    for (const err of errors) {
      for (let e: unknown = err; e instanceof Error; e = e.cause) {
        expect(e.message).not.toContain(TOKEN);
        expect(String(e.stack)).not.toContain(TOKEN);
      }
    }
  });
});

describe("constructor", () => {
  it.each([
    "",
    "owner",
    "owner/",
    "/name",
    "owner/name/extra",
    "own er/name",
    "-owner/name",
    "owner/..",
    "o/n?x",
  ])("refuses the repository %j", (repo) => {
    expect(() => new GitHubReleases({ repo })).toThrow(
      expect.objectContaining({ name: "UpdaterError", code: "invalid_argument" }),
    );
  });

  it.each(["ftp://example.com", "not a url", "https://user:pw@example.com", "https://example.com/?x=1"])(
    "refuses the API base %j",
    (apiBase) => {
      expect(() => new GitHubReleases({ repo: REPO, apiBase })).toThrow(
        expect.objectContaining({ code: "invalid_argument" }),
      );
    },
  );

  it("refuses a perPage outside 1..100", () => {
    expect(() => new GitHubReleases({ repo: REPO, perPage: 0 })).toThrow(UpdaterError);
    expect(() => new GitHubReleases({ repo: REPO, perPage: 101 })).toThrow(UpdaterError);
  });
});

async function assetOf(github: GitHubReleases, tag: string, name: string): Promise<ReleaseAsset> {
  const asset = (await github.release(tag)).assets.find((a) => a.name === name);
  if (asset === undefined) throw new Error(`no asset ${name} in ${tag}`);
  return asset;
}
