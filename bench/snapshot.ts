/**
 * `npm run bench:snapshot`: how fast the updater snapshots and restores an app's data volume
 * holding BENCH_MB (default 200) MiB of random data, on the real engine, next to a baseline
 * measured in the same run: the one-shot `tar` container an operator would run by hand.
 *
 * The updater's figures come from a real update that fails on purpose (fixture migration-fails):
 * the job snapshots the volume, the migration fails, and the rollback restores it. Each step
 * reports its own timing in its output. Prints one JSON line. Needs the engine and registry of
 * scripts/engine.sh (DOCKER_HOST, PGU_REGISTRY). Loopback only; bounded runs.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DockerEngineApi } from "../src/engine/docker-engine-api.js";
import { silentLogger } from "../src/log.js";
import { isTerminal, type Job } from "../src/orchestrator/job.js";
import { systemClock } from "../src/orchestrator/ports.js";
import { JobRunner } from "../src/orchestrator/runner.js";
import { FileJobStore } from "../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../test/fakes/fake-release.js";
import { buildFixtures, type Fixture, imageOf, startApp } from "../test/helpers/app-fixture.js";
import { DockerJanitor, docker, HELPER_IMAGE, requireEngine, runOnce } from "../test/helpers/docker.js";

const MB = Number(process.env.BENCH_MB ?? 200);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return Math.round(performance.now() - t);
}

async function main(): Promise<void> {
  const env = await requireEngine();
  const janitor = new DockerJanitor(env);
  const work = await mkdtemp(join(tmpdir(), "pgu-bench-snap-"));
  try {
    const fixtures = buildFixtures();
    const v1 = fixtures.v1 as Fixture;
    const failing = fixtures["migration-fails"] as Fixture;
    const updater = { snapshot: [] as number[], restore: [] as number[] };
    const baseline = { snapshot: [] as number[], restore: [] as number[] };
    for (let run = 0; run < RUNS; run++) {
      const app = await startApp(janitor, v1);
      await runOnce(
        janitor,
        v1.ref,
        ["/bin/sh", "-c", `dd if=/dev/urandom of=/data/blob bs=1M count=${MB} 2>/dev/null`],
        {
          mounts: [`${app.volume}:/data`],
        },
      );

      // Baseline: the one-shot tar container, out and back in.
      const snapDir = join(work, `baseline-${run}`);
      await docker(["run", "--rm", "--network", "none", "-v", `${snapDir}:/snap`, v1.ref, "true"]);
      baseline.snapshot.push(
        await timed(() =>
          runOnce(janitor, v1.ref, ["tar", "-cf", "/snap/data.tar", "-C", "/", "data"], {
            mounts: [`${app.volume}:/data:ro`, `${snapDir}:/snap`],
          }),
        ),
      );
      baseline.restore.push(
        await timed(() =>
          runOnce(janitor, v1.ref, ["/bin/sh", "-c", "rm -rf /data/* && tar -xpf /snap/data.tar -C /"], {
            mounts: [`${app.volume}:/data`, `${snapDir}:/snap:ro`],
          }),
        ),
      );

      // The updater: a real update whose migration fails, so it snapshots and then restores.
      const tag = `v${failing.version}`;
      const runner = new JobRunner({
        store: new FileJobStore(join(work, `state-${run}`)),
        source: new MemoryReleaseSource().add(tag, {
          manifest: manifestFor(tag, {
            image: imageOf(failing),
            migration: { required: true, command: ["/bin/sh", "/opt/app/migrate.sh"] },
          }),
        }),
        verifier: new FakeVerifier(),
        engine: new DockerEngineApi({
          dockerHost: env.dockerHost,
          helperImage: HELPER_IMAGE,
          appContainer: app.name,
          snapshotDir: join(work, `snapshots-${run}`),
          healthSoakMs: 200,
          healthIntervalMs: 50,
        }),
        clock: systemClock,
        newId: randomUUID,
        log: silentLogger,
      });
      await runner.open();
      const started = await runner.start({ tag });
      let end: Job | undefined;
      for await (const job of runner.watch(started.id)) if (isTerminal(job.state)) end = job;
      await runner.shutdown(1000);
      const out = (end?.steps ?? []).map((s) => s.output).join("");
      const snap = /archived \/data .* in (\d+) ms/.exec(out)?.[1];
      const restore = /restored \/data .* in (\d+) ms/.exec(out)?.[1];
      if (end?.state !== "rolled_back" || !snap || !restore) {
        throw new Error(
          `run ${run}: expected a rolled back job with timings, got ${end?.state}: ${out.slice(-500)}`,
        );
      }
      updater.snapshot.push(Number(snap));
      updater.restore.push(Number(restore));
      process.stderr.write(
        `run ${run + 1}/${RUNS}: updater ${snap}/${restore} ms, baseline ${baseline.snapshot.at(-1)}/${baseline.restore.at(-1)} ms\n`,
      );
    }
    const rate = (ms: number) => Math.round((MB / (ms / 1000)) * 10) / 10;
    process.stdout.write(
      `${JSON.stringify({
        bench: "snapshot",
        mib: MB,
        runs: RUNS,
        updater: {
          snapshot_ms: { median: median(updater.snapshot), max: Math.max(...updater.snapshot) },
          restore_ms: { median: median(updater.restore), max: Math.max(...updater.restore) },
          snapshot_mib_per_s: rate(median(updater.snapshot)),
          restore_mib_per_s: rate(median(updater.restore)),
        },
        baseline_tar_container: {
          snapshot_ms: { median: median(baseline.snapshot), max: Math.max(...baseline.snapshot) },
          restore_ms: { median: median(baseline.restore), max: Math.max(...baseline.restore) },
        },
      })}\n`,
    );
  } finally {
    await janitor.cleanup();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
