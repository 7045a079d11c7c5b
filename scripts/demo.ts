/**
 * `npm run demo`: the updater serving on 127.0.0.1:9000, beside a local stand-in of the GitHub
 * Releases API that publishes signed ProcessGit releases, so that every RPC can be tried with curl,
 * grpcurl and buf curl on a machine without internet.
 *
 * Releases are signed for real (ECDSA P-256 over SHA-256, the format `cosign sign-blob --key`
 * writes) with a key made for this demo; the updater pins its public key (key policy).
 *
 * With a Docker engine (DOCKER_HOST set, e.g. by `eval "$(bash scripts/engine.sh start)"`), the demo
 * also builds the fixture app images, runs the app from v1 on 127.0.0.1:28080 and publishes v2.0.0
 * pointing at the v2 image digest: StartUpdate then runs a real update. `npm run demo -- --update`
 * starts that update itself and prints its progress as it happens, then keeps serving.
 */
import { execFileSync } from "node:child_process";
import { createHash, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startUpdater } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/log.js";
import { isTerminal } from "../src/orchestrator/job.js";
import { type StandInRelease, startGitHubStandIn } from "../test/helpers/github-standin.js";

const root = join(import.meta.dirname, "../..");
const stateDir = process.env.PROCESSGIT_UPDATER_STATE_DIR ?? join(root, ".demo-state");
mkdirSync(stateDir, { recursive: true });
const token = process.env.PROCESSGIT_UPDATER_TOKEN ?? randomBytes(24).toString("hex");
// The token goes to a private file, never to the terminal or the log.
const tokenFile = join(stateDir, "token");
writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

// The demo's release signing key: the updater pins the public half.
const keys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
const publicKeyFile = join(stateDir, "release-signing.pub");
writeFileSync(publicKeyFile, keys.publicKey.export({ type: "spki", format: "pem" }));
const signed = (manifest: string) => ({
  assets: [
    { name: "release.json", bytes: manifest },
    {
      name: "release.json.sig",
      bytes: sign("sha256", Buffer.from(manifest), keys.privateKey).toString("base64"),
    },
  ],
});

interface Fixture {
  ref: string;
  repository: string;
  digest: string;
  version: string;
}
const APP_NAME = "processgit-demo";
const APP_PORT = 28080;
let v2: Fixture | undefined;
const withEngine = Boolean(process.env.DOCKER_HOST);
if (withEngine) {
  process.stdout.write(
    "Docker engine found: building the fixture app images and starting the app from v1...\n",
  );
  const fixtures = JSON.parse(
    execFileSync("bash", [join(root, "scripts/fixtures.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }),
  ) as { images: Record<string, Fixture> };
  const v1 = fixtures.images.v1 as Fixture;
  v2 = fixtures.images.v2 as Fixture;
  execFileSync("docker", ["rm", "-f", APP_NAME], { stdio: "ignore" });
  execFileSync("docker", ["volume", "create", `${APP_NAME}-data`], { stdio: "ignore" });
  execFileSync(
    "docker",
    [
      "run",
      "-d",
      "--name",
      APP_NAME,
      "--network",
      "host",
      "--init",
      "-e",
      `APP_PORT=${APP_PORT}`,
      "-v",
      `${APP_NAME}-data:/data`,
      v1.ref,
    ],
    { stdio: "ignore" },
  );
}

const manifest = (tag: string, image: Fixture | undefined) =>
  JSON.stringify(
    {
      schema_version: 1,
      name: "processgit",
      version: tag.slice(1),
      tag,
      image: image
        ? {
            registry: image.repository.split("/")[0],
            repository: image.repository.split("/").slice(1).join("/"),
            tag: image.version,
            digest: image.digest,
            platforms: ["linux/amd64"],
          }
        : {
            registry: "ghcr.io",
            repository: "algomation-ai/processgit",
            tag: tag.slice(1),
            digest: `sha256:${createHash("sha256").update(tag).digest("hex")}`,
            platforms: ["linux/amd64"],
          },
      migration: {
        required: true,
        command: ["/bin/sh", "/opt/app/migrate.sh"],
        estimated_downtime_seconds: 0,
      },
      release_notes_markdown: `ProcessGit ${tag} (demo)`,
    },
    null,
    2,
  );

const releases: StandInRelease[] = [
  { tag: "v2.1.0-rc.1", prerelease: true, body: "Release candidate for 2.1.0." },
  { tag: "v2.0.0", body: "## ProcessGit 2.0.0\n- the demo's update", ...signed(manifest("v2.0.0", v2)) },
  { tag: "v1.0.0", body: "## ProcessGit 1.0.0" },
];
const github = await startGitHubStandIn({ repo: "Algomation-AI/ProcessGit", releases });

const config = loadConfig({
  PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:9000",
  PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS: "2",
  ...process.env,
  PROCESSGIT_UPDATER_TOKEN: token,
  PROCESSGIT_UPDATER_STATE_DIR: stateDir,
  PROCESSGIT_UPDATER_REPO: github.repo,
  PROCESSGIT_UPDATER_GITHUB_API: github.apiUrl,
  PROCESSGIT_UPDATER_APP_CONTAINER: withEngine
    ? APP_NAME
    : (process.env.PROCESSGIT_UPDATER_APP_CONTAINER ?? "processgit"),
  PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: publicKeyFile,
  PROCESSGIT_UPDATER_SIGNER_ISSUER: "",
  PROCESSGIT_UPDATER_SIGNER_IDENTITY: "",
});
const log = createLogger(process.argv.includes("--update") ? "warn" : config.logLevel);
const updater = await startUpdater(config, log);
const url = updater.server.url;
const svc = "processgit.updater.v1.UpdaterService";
const auth = `-H "Authorization: Bearer $TOKEN"`;
const hostPort = url.replace("http://", "");
process.stdout.write(`
processgit-updater demo is serving on ${url}
  GitHub stand-in: ${github.apiUrl} (repository ${github.repo}; releases v1.0.0, v2.0.0, v2.1.0-rc.1)
  signer policy:   key ${publicKeyFile} (every release.json.sig is a real ECDSA P-256 signature)
  app:             ${withEngine ? `${APP_NAME} from fixture v1 on http://127.0.0.1:${APP_PORT}/version` : "none: no Docker engine (DOCKER_HOST unset), so an update stops at pre-flight"}
  state directory: ${stateDir}
  bearer token:    in ${tokenFile}

Try, in another terminal (from ${root}):
  export TOKEN=$(cat ${tokenFile})
  curl ${url}/healthz
  curl ${auth} -H 'Content-Type: application/json' -d '{}' ${url}/${svc}/Status
  curl ${auth} -H 'Content-Type: application/json' -d '{"channel":"CHANNEL_PRERELEASE"}' ${url}/${svc}/LatestRelease
  curl ${auth} -H 'Content-Type: application/json' -d '{"tag":"v2.0.0"}' ${url}/${svc}/StartUpdate
  curl ${auth} '${url}/${svc}/History?encoding=json&message=%7B%7D'
  .tools/bin/grpcurl -plaintext ${auth} ${hostPort} list
  .tools/bin/grpcurl -plaintext ${auth} -d '{"id":"JOB_ID"}' ${hostPort} ${svc}/WatchJob
  npx buf curl --protocol grpc --http2-prior-knowledge ${auth} --reflect-header "Authorization: Bearer $TOKEN" -d '{}' ${url}/${svc}/Status

Ctrl-C stops the demo.
`);

if (process.argv.includes("--update")) {
  const job = await updater.runner.start({ tag: "v2.0.0" });
  process.stdout.write(`\nupdate ${job.id} to v2.0.0 started; its progress:\n`);
  let printed = 0;
  let lastState = "";
  for await (const snapshot of updater.runner.watch(job.id)) {
    if (snapshot.state !== lastState) {
      process.stdout.write(`  [${snapshot.state}]\n`);
      lastState = snapshot.state;
    }
    for (const step of snapshot.steps.slice(printed)) {
      if (step.status === "running") break;
      process.stdout.write(`    ${step.status === "succeeded" ? "ok  " : `${step.status} `} ${step.title}\n`);
      for (const line of step.output.trim().split("\n").filter(Boolean).slice(-4))
        process.stdout.write(`         ${line}\n`);
      if (step.error) process.stdout.write(`         error: ${step.error}\n`);
      printed++;
    }
    if (isTerminal(snapshot.state)) {
      process.stdout.write(
        snapshot.state === "committed"
          ? `\nthe update committed: ${withEngine ? `curl http://127.0.0.1:${APP_PORT}/version now says ${snapshot.targetVersion}` : ""}\n`
          : `\nthe update ended ${snapshot.state}: ${snapshot.error?.reason}: ${snapshot.error?.message}\n`,
      );
    }
  }
}

const stop = async () => {
  await updater.close();
  await github.close();
  process.exit(0);
};
process.once("SIGINT", () => void stop());
process.once("SIGTERM", () => void stop());
