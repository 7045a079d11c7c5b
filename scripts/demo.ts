/**
 * `npm run demo`: the updater serving on 127.0.0.1:9000 with a demo configuration, beside a local
 * stand-in of the GitHub Releases API that publishes a few ProcessGit releases, so that every RPC
 * can be tried with curl, grpcurl and buf curl on a machine without internet.
 *
 * What this build does with an update: it fetches the release and its assets for real, then
 * refuses it, because no signer policy is configured yet (fail closed). Container work needs a
 * Docker engine; Status says so when none answers.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startUpdater } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/log.js";
import { startGitHubStandIn } from "../test/helpers/github-standin.js";

const root = join(import.meta.dirname, "../..");
const stateDir = process.env.PROCESSGIT_UPDATER_STATE_DIR ?? join(root, ".demo-state");
mkdirSync(stateDir, { recursive: true });
const token = process.env.PROCESSGIT_UPDATER_TOKEN ?? randomBytes(24).toString("hex");
// The token goes to a private file, never to the terminal or the log.
const tokenFile = join(stateDir, "token");
writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

const manifest = (tag: string) =>
  JSON.stringify(
    {
      schema_version: 1,
      name: "processgit",
      version: tag.slice(1),
      tag,
      image: {
        registry: "ghcr.io",
        repository: "algomation-ai/processgit",
        tag: tag.slice(1),
        digest: `sha256:${"0".repeat(63)}1`,
        platforms: ["linux/amd64"],
      },
      migration: { required: false },
    },
    null,
    2,
  );

const github = await startGitHubStandIn({
  repo: "Algomation-AI/ProcessGit",
  releases: [
    { tag: "v1.3.0-rc.1", prerelease: true, body: "Release candidate for 1.3.0." },
    {
      tag: "v1.2.0",
      body: "## ProcessGit 1.2.0\n- demo release",
      assets: [
        { name: "release.json", bytes: manifest("v1.2.0") },
        { name: "release.json.sigstore.json", bytes: "{}" },
      ],
    },
    { tag: "v1.1.0", body: "## ProcessGit 1.1.0" },
  ],
});

const config = loadConfig({
  PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:9000",
  ...process.env,
  PROCESSGIT_UPDATER_TOKEN: token,
  PROCESSGIT_UPDATER_STATE_DIR: stateDir,
  PROCESSGIT_UPDATER_REPO: github.repo,
  PROCESSGIT_UPDATER_GITHUB_API: github.apiUrl,
});
const log = createLogger(config.logLevel);
const updater = await startUpdater(config, log);
const url = updater.server.url;
const svc = "processgit.updater.v1.UpdaterService";
const auth = `-H "Authorization: Bearer $TOKEN"`;
const hostPort = url.replace("http://", "");
process.stdout.write(`
processgit-updater demo is serving on ${url}
  GitHub stand-in: ${github.apiUrl} (repository ${github.repo}; releases v1.1.0, v1.2.0, v1.3.0-rc.1)
  state directory: ${stateDir}
  bearer token:    in ${tokenFile}

Try, in another terminal (from ${root}):
  export TOKEN=$(cat ${tokenFile})
  curl ${url}/healthz
  curl ${auth} -H 'Content-Type: application/json' -d '{}' ${url}/${svc}/Status
  curl ${auth} -H 'Content-Type: application/json' -d '{"channel":"CHANNEL_PRERELEASE"}' ${url}/${svc}/LatestRelease
  curl ${auth} -H 'Content-Type: application/json' -d '{"tag":"v1.2.0"}' ${url}/${svc}/StartUpdate
  curl ${auth} '${url}/${svc}/History?encoding=json&message=%7B%7D'
  .tools/bin/grpcurl -plaintext ${auth} ${hostPort} list
  .tools/bin/grpcurl -plaintext ${auth} -d '{"id":"JOB_ID"}' ${hostPort} ${svc}/WatchJob
  npx buf curl --protocol grpc --http2-prior-knowledge ${auth} --reflect-header "Authorization: Bearer $TOKEN" -d '{}' ${url}/${svc}/Status

This build fetches a release for real and then refuses it: no signer policy is configured yet
(fail closed). Ctrl-C stops the demo.
`);

const stop = async () => {
  await updater.close();
  await github.close();
  process.exit(0);
};
process.once("SIGINT", () => void stop());
process.once("SIGTERM", () => void stop());
