/**
 * The orchestrator with the real Docker engine adapter and the real file store, as a process of
 * its own, so that crash tests can kill it with SIGKILL at any point and start it again.
 * The release source and signature check are the in-memory stand-ins (issue 4 makes them real).
 *
 *   node dist/test/helpers/update-process.js '<json UpdateProcessConfig>'
 *
 * Prints one JSON log line per event on stdout (the updater's own structured log), then, when the
 * job has ended (mode "update") or the reconciliation has (mode "reconcile"), a line
 * {"result": <job>} and exits 0.
 */
import { randomUUID } from "node:crypto";
import { DockerEngineApi } from "../../src/engine/docker-engine-api.js";
import { createLogger } from "../../src/log.js";
import { isTerminal } from "../../src/orchestrator/job.js";
import { systemClock } from "../../src/orchestrator/ports.js";
import { JobRunner } from "../../src/orchestrator/runner.js";
import { FileJobStore } from "../../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../fakes/fake-release.js";
import { HELPER_IMAGE } from "./docker.js";

export interface UpdateProcessConfig {
  mode: "update" | "reconcile";
  stateDir: string;
  snapshotDir: string;
  dockerHost: string;
  appContainer: string;
  tag: string;
  /** release.json fields to override (image, migration). */
  manifest: Record<string, unknown>;
  healthSoakMs?: number;
}

async function main(config: UpdateProcessConfig): Promise<void> {
  const log = createLogger("info");
  const runner = new JobRunner({
    store: new FileJobStore(config.stateDir),
    source: new MemoryReleaseSource().add(config.tag, { manifest: manifestFor(config.tag, config.manifest) }),
    verifier: new FakeVerifier(),
    engine: new DockerEngineApi({
      dockerHost: config.dockerHost,
      helperImage: HELPER_IMAGE,
      appContainer: config.appContainer,
      snapshotDir: config.snapshotDir,
      healthDeadlineMs: 20_000,
      healthSoakMs: config.healthSoakMs ?? 1000,
      healthIntervalMs: 100,
      migrationTimeoutMs: 60_000,
    }),
    clock: systemClock,
    newId: randomUUID,
    log,
  });
  await runner.open();
  await runner.reconciled;
  let id: string | undefined;
  if (config.mode === "update") {
    id = (await runner.start({ tag: config.tag })).id;
  } else {
    id = runner.history(1)[0]?.id;
  }
  if (id) {
    for await (const job of runner.watch(id)) {
      if (isTerminal(job.state)) {
        process.stdout.write(`${JSON.stringify({ result: job })}\n`);
        break;
      }
    }
  } else {
    process.stdout.write(`${JSON.stringify({ result: null })}\n`);
  }
  await runner.shutdown(1000);
}

const arg = process.argv[2];
if (arg) {
  main(JSON.parse(arg) as UpdateProcessConfig).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`update-process: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
