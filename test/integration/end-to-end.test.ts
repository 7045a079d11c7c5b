/**
 * The first real update end to end: a release served by the local GitHub stand-in, signed both
 * ways (a Sigstore bundle from a mock Sigstore with its own trusted root, and a key signature),
 * installed by StartUpdate over the real RPC server, followed with WatchJob, on the real engine
 * and registry. Then releases the policy must refuse: each ends aborted with its reason, and v1
 * keeps serving with no container touched.
 */
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState, UpdaterService } from "../../gen/processgit/updater/v1/updater_pb.js";
import { startUpdater, type Updater } from "../../src/app.js";
import { loadConfig } from "../../src/config.js";
import { silentLogger } from "../../src/log.js";
import {
  type App,
  appContainers,
  buildFixtures,
  type Fixture,
  imageOf,
  serving,
  startApp,
} from "../helpers/app-fixture.js";
import { DockerJanitor, type EngineEnv, requireEngine } from "../helpers/docker.js";
import { type GitHubStandIn, type StandInRelease, startGitHubStandIn } from "../helpers/github-standin.js";
import { GITHUB_ACTIONS_ISSUER, startMockSigstore } from "../helpers/sigstore-fixtures.js";

const TOKEN = "e2e-token-5b0c1d2e3f405162738495a6b7c8d9e0";
const IDENTITY_PATTERN =
  "https://github\\.com/acme/processgit/\\.github/workflows/release\\.yml@refs/tags/v.*";
const identityFor = (tag: string, repo = "acme/processgit", workflow = "release.yml") =>
  `https://github.com/${repo}/.github/workflows/${workflow}@refs/tags/${tag}`;

let env: EngineEnv;
let janitor: DockerJanitor;
let fixtures: Record<string, Fixture>;
let work: string;
let github: GitHubStandIn;
let trustedRootPath: string;
let publicKeyPath: string;
let releases: Record<string, StandInRelease>;

function manifest(tag: string, image: Fixture, overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    schema_version: 1,
    name: "processgit",
    version: tag.slice(1),
    tag,
    image: imageOf(image),
    migration: { required: true, command: ["/bin/sh", "/opt/app/migrate.sh"] },
    ...overrides,
  });
}

beforeAll(async () => {
  env = await requireEngine();
  janitor = new DockerJanitor(env);
  fixtures = buildFixtures();
  work = await mkdtemp(join(tmpdir(), "pgu-e2e-"));
  const v2 = fixtures.v2 as Fixture;

  // Key policy: a P-256 key pair; release.json.sig is what `cosign sign-blob --key` writes.
  const keys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  publicKeyPath = join(work, "release.pub");
  await writeFile(publicKeyPath, keys.publicKey.export({ type: "spki", format: "pem" }));
  const keySig = (m: string) => sign("sha256", Buffer.from(m), keys.privateKey).toString("base64");

  // Keyless policy: bundles from a mock Sigstore, all made now, before any traffic of the test.
  const sigstore = await startMockSigstore();
  trustedRootPath = join(work, "trusted_root.json");
  await writeFile(trustedRootPath, JSON.stringify(sigstore.trustedRoot));
  const good = manifest("v2.0.0", v2);
  const older = manifest("v0.9.0", v2);
  const wrongTag = manifest("v2.0.1", v2);
  const bundle = (m: string, identity: string, issuer = GITHUB_ACTIONS_ISSUER) =>
    sigstore.sign(m, { identity, issuer });
  const asset = (name: string, bytes: string) => ({ name, bytes });
  releases = {
    good: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", good),
        asset("release.json.sigstore.json", await bundle(good, identityFor("v2.0.0"))),
        asset("release.json.sig", keySig(good)),
      ],
    },
    tampered: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", good.replace('"processgit"', '"processgit "')),
        asset("release.json.sigstore.json", await bundle(good, identityFor("v2.0.0"))),
        asset("release.json.sig", keySig(good)),
      ],
    },
    lookalike: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", good),
        asset(
          "release.json.sigstore.json",
          await bundle(good, identityFor("v2.0.0", "acme/processgit-evil")),
        ),
      ],
    },
    otherWorkflow: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", good),
        asset(
          "release.json.sigstore.json",
          await bundle(good, identityFor("v2.0.0", "acme/processgit", "other.yml")),
        ),
      ],
    },
    otherIssuer: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", good),
        asset(
          "release.json.sigstore.json",
          await bundle(good, identityFor("v2.0.0"), "https://accounts.example.test"),
        ),
      ],
    },
    missingSignature: { tag: "v2.0.0", assets: [asset("release.json", good)] },
    replay: {
      tag: "v0.9.0",
      assets: [
        asset("release.json", older),
        asset("release.json.sigstore.json", await bundle(older, identityFor("v0.9.0"))),
      ],
    },
    wrongTag: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", wrongTag),
        asset("release.json.sigstore.json", await bundle(wrongTag, identityFor("v2.0.0"))),
      ],
    },
    malformed: {
      tag: "v2.0.0",
      assets: [
        asset("release.json", '{"schema_version": 1, "tag": "v2.0.0"'),
        asset(
          "release.json.sigstore.json",
          await bundle('{"schema_version": 1, "tag": "v2.0.0"', identityFor("v2.0.0")),
        ),
      ],
    },
    oversized: {
      tag: "v2.0.0",
      assets: [
        asset(
          "release.json",
          manifest("v2.0.0", v2, { release_notes_markdown: "x".repeat(1024 * 1024 + 1) }),
        ),
        asset("release.json.sigstore.json", "{}"),
      ],
    },
  };
  sigstore.close();
  github = await startGitHubStandIn({ repo: "acme/processgit", releases: [] });
}, 180_000);

afterAll(async () => {
  await github?.close();
  await janitor?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

async function updaterFor(app: App, policy: Record<string, string>): Promise<Updater> {
  const config = loadConfig({
    PROCESSGIT_UPDATER_TOKEN: TOKEN,
    PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
    PROCESSGIT_UPDATER_STATE_DIR: join(work, app.name),
    PROCESSGIT_UPDATER_APP_CONTAINER: app.name,
    PROCESSGIT_UPDATER_REPO: github.repo,
    PROCESSGIT_UPDATER_GITHUB_API: github.apiUrl,
    PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS: "1",
    PROCESSGIT_UPDATER_HEALTH_DEADLINE_SECONDS: "20",
    DOCKER_HOST: env.dockerHost,
    ...policy,
  });
  return startUpdater(config, silentLogger);
}

const KEYLESS = {
  PROCESSGIT_UPDATER_SIGNER_ISSUER: GITHUB_ACTIONS_ISSUER,
  PROCESSGIT_UPDATER_SIGNER_IDENTITY: IDENTITY_PATTERN,
  get PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT() {
    return trustedRootPath;
  },
};

function client(u: Updater) {
  return createClient(
    UpdaterService,
    createGrpcTransport({
      baseUrl: u.server.url,
      interceptors: [
        (next) => async (req) => {
          req.header.set("authorization", `Bearer ${TOKEN}`);
          return next(req);
        },
      ],
    }),
  );
}

async function runUpdate(u: Updater, tag: string) {
  const c = client(u);
  const started = await c.startUpdate({ tag });
  const states: JobState[] = [];
  let last: Awaited<ReturnType<typeof c.getJob>>["job"];
  for await (const res of c.watchJob({ id: started.job?.id ?? "" })) {
    if (states.at(-1) !== res.job?.state) states.push(res.job?.state ?? JobState.UNSPECIFIED);
    last = res.job;
  }
  return { states, job: last };
}

describe("a signed release, end to end over the RPC server on a real engine", () => {
  for (const [name, policy] of [
    [
      "keyless (Sigstore bundle)",
      () => ({ ...KEYLESS, PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT: trustedRootPath }),
    ],
    ["key (cosign sign-blob --key format)", () => ({ PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: publicKeyPath })],
  ] as const) {
    it(`updates v1 -> v2 with a ${name} signature, WatchJob showing every step`, async () => {
      github.setReleases([releases.good as StandInRelease]);
      const app = await startApp(janitor, fixtures.v1 as Fixture);
      const u = await updaterFor(app, policy());
      try {
        const { states, job } = await runUpdate(u, "v2.0.0");
        expect(states).toEqual([
          JobState.PLANNING,
          JobState.SNAPSHOTTING,
          JobState.PULLING,
          JobState.VERIFYING,
          JobState.MIGRATING,
          JobState.SWAPPING,
          JobState.HEALTHCHECKING,
          JobState.COMMITTED,
        ]);
        expect(job?.verification?.policy).toBe(name.startsWith("keyless") ? "keyless" : "key");
        if (name.startsWith("keyless")) {
          expect(job?.verification?.identity).toBe(identityFor("v2.0.0"));
          expect(job?.verification?.issuer).toBe(GITHUB_ACTIONS_ISSUER);
        } else {
          expect(job?.verification?.keyFingerprint).toMatch(/^SHA256:/);
        }
        expect(job?.targetDigest).toBe((fixtures.v2 as Fixture).digest);
        expect(await serving(app.port)).toBe("2.0.0");
      } finally {
        await u.close();
      }
    }, 120_000);
  }
});

describe("releases the pinned policy refuses: aborted, v1 keeps serving, no container touched", () => {
  const cases: Array<[string, string, string, string]> = [
    ["tampered manifest", "tampered", "v2.0.0", "SIGNATURE_INVALID"],
    ["lookalike repository", "lookalike", "v2.0.0", "SIGNER_UNTRUSTED"],
    ["another workflow", "otherWorkflow", "v2.0.0", "SIGNER_UNTRUSTED"],
    ["another issuer", "otherIssuer", "v2.0.0", "SIGNER_UNTRUSTED"],
    ["missing signature asset", "missingSignature", "v2.0.0", "RELEASE_ASSET_MISSING"],
    ["a signed older release (replay)", "replay", "v0.9.0", "DOWNGRADE_REFUSED"],
    ["a manifest whose tag differs from the requested one", "wrongTag", "v2.0.0", "MANIFEST_TAG_MISMATCH"],
    ["a malformed (but signed) manifest", "malformed", "v2.0.0", "MANIFEST_INVALID"],
    ["an oversized manifest", "oversized", "v2.0.0", "MANIFEST_TOO_LARGE"],
  ];
  for (const [what, key, tag, reason] of cases) {
    it(what, async () => {
      github.setReleases([releases[key] as StandInRelease]);
      const app = await startApp(janitor, fixtures.v1 as Fixture);
      const before = await appContainers(app.name);
      const u = await updaterFor(app, {
        ...KEYLESS,
        PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT: trustedRootPath,
      });
      try {
        const { job } = await runUpdate(u, tag);
        expect(job?.state).toBe(JobState.ABORTED);
        expect(job?.error?.reason).toBe(reason);
        expect(job?.error?.message.length).toBeGreaterThan(20);
        if (process.env.PGU_PRINT_REFUSALS)
          process.stderr.write(`REFUSED ${what}: ${job?.error?.reason}: ${job?.error?.message}\n`);
        expect(job?.steps.map((s) => s.state).every((s) => s === JobState.PLANNING)).toBe(true);
        expect(await serving(app.port)).toBe("1.0.0");
        expect(await appContainers(app.name)).toEqual(before);
      } finally {
        await u.close();
      }
    }, 60_000);
  }
});
