/**
 * `npm run bench:image`: the updater's container image, next to baselines measured in the same
 * run, printed as one JSON line on stdout (diagnostics on stderr). Needs DOCKER_HOST (scripts/
 * engine.sh start) and builds what it measures:
 * - sizes: the base image (node:24-bookworm-slim, here the local stand-in of docs/base-image.md),
 *   the shipped image (scripts/image.sh, the unchanged Dockerfile), and the smaller runtime it could
 *   have used instead (bench/minimal.Dockerfile: node, tini and their libraries on an empty base);
 * - start-to-ready: `docker start` of a fresh updater container (as the README and deploy/ run it:
 *   uid 10001, socket by group, read-only root) until GET /healthz answers 200, and until Docker's
 *   own HEALTHCHECK reports healthy; baseline: the same image running a bare node HTTP server;
 * - idle memory of the container (docker stats: cgroup usage less the page cache) after
 *   BENCH_IDLE_SECONDS (default 20), next to a container of the same image running bare node.
 * BENCH_RUNS (default 5) runs each. Host networking on 127.0.0.1 only; every container and volume
 * this bench makes is labelled and removed at the end, also on failure. Loops are bounded.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { DockerJanitor, docker, requireEngine } from "../test/helpers/docker.js";
import {
  buildUpdaterImage,
  healthStatus,
  runUpdaterContainer,
  type UpdaterContainer,
  waitReady,
} from "../test/helpers/updater-image.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 20);
const TOKEN = "bench-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const root = join(import.meta.dirname, "../..");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (msg: string) => process.stderr.write(`bench:image: ${msg}\n`);

const mib = (bytes: number) => Number((bytes / 1024 / 1024).toFixed(1));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2
    ? (s[(s.length - 1) / 2] as number)
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

async function imageSize(ref: string): Promise<number> {
  return Number((await docker(["image", "inspect", "-f", "{{.Size}}", ref])).trim());
}

/** Memory as `docker stats` shows it (usage less the page cache), in bytes. */
async function memory(name: string): Promise<number> {
  const out = await docker(["stats", "--no-stream", "--format", "{{.MemUsage}}", name]);
  const m = /^([\d.]+)\s*([KMG]i?B|B)/.exec(out.trim());
  if (!m) throw new Error(`cannot read docker stats: ${out}`);
  const unit =
    { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, kB: 1e3, MB: 1e6, GB: 1e9 }[m[2] as string] ?? 1;
  return Number(m[1]) * unit;
}

async function waitHealthy(name: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if ((await healthStatus(name)) === "healthy") return;
    await sleep(50);
  }
  throw new Error(`${name} not healthy within ${ms} ms`);
}

async function main(): Promise<void> {
  const env = await requireEngine();
  const janitor = new DockerJanitor(env);
  const stop = () => void janitor.cleanup().then(() => process.exit(130));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    log("building the image (scripts/image.sh) and the minimal variant");
    const image = buildUpdaterImage();
    const minimal = "processgit-updater:minimal-bench";
    janitor.image(minimal);
    execFileSync(
      "env",
      [
        "DOCKER_BUILDKIT=1",
        "/usr/bin/docker",
        "build",
        "--network",
        "host",
        "-q",
        "--build-arg",
        `UPDATER_IMAGE=${image}`,
        "-t",
        minimal,
        "-f",
        join(root, "bench/minimal.Dockerfile"),
        join(root, "bench"),
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    const sizes = {
      base_node_24_bookworm_slim_mib: mib(await imageSize("node:24-bookworm-slim")),
      image_mib: mib(await imageSize(image)),
      minimal_runtime_mib: mib(await imageSize(minimal)),
    };
    log(`sizes ${JSON.stringify(sizes)}`);

    const toReady: number[] = [];
    const toHealthy: number[] = [];
    const idle: number[] = [];
    const bareReady: number[] = [];
    const bareIdle: number[] = [];
    const port0 = 29_400 + Math.floor(Math.random() * 200);
    for (let i = 0; i < RUNS; i++) {
      // The updater: created stopped is not possible with runUpdaterContainer, so time a restart
      // of a fresh container whose first start has been waited out (state volume initialised).
      const c: UpdaterContainer = await runUpdaterContainer(janitor, image, port0 + i, {
        PROCESSGIT_UPDATER_TOKEN: TOKEN,
        PROCESSGIT_UPDATER_APP_CONTAINER: "pgu-bench-no-app",
        PROCESSGIT_UPDATER_SIGNER_ISSUER: "https://token.actions.githubusercontent.com",
        PROCESSGIT_UPDATER_SIGNER_IDENTITY:
          "https://github\\.com/acme/processgit/\\.github/workflows/release\\.yml@refs/tags/v.*",
      });
      await waitReady(c);
      await docker(["stop", c.name]);
      const t0 = performance.now();
      await docker(["start", c.name]);
      await waitReady(c);
      toReady.push(performance.now() - t0);
      await waitHealthy(c.name, 60_000);
      toHealthy.push(performance.now() - t0);
      await sleep(IDLE_SECONDS * 1000);
      idle.push(await memory(c.name));
      await docker(["rm", "-f", c.name]);

      // Baseline: bare node from the same image, a minimal HTTP server on the next port.
      const bare = janitor.container(janitor.name(`bare-${i}`));
      const port = port0 + 100 + i;
      const script = `require("node:http").createServer((q, s) => s.end("ok")).listen(${port}, "127.0.0.1")`;
      await docker([
        "create",
        "--name",
        bare,
        "--network",
        "host",
        "--read-only",
        "--no-healthcheck",
        "--label",
        "io.processgit.updater.test=1",
        image,
        "node",
        "-e",
        script,
      ]);
      const b0 = performance.now();
      await docker(["start", bare]);
      await waitReady({ name: bare, url: `http://127.0.0.1:${port}`, stateVolume: "" });
      bareReady.push(performance.now() - b0);
      await sleep(IDLE_SECONDS * 1000);
      bareIdle.push(await memory(bare));
      await docker(["rm", "-f", bare]);
      log(
        `run ${i + 1}/${RUNS}: ready ${toReady.at(-1)?.toFixed(0)} ms, healthy ${toHealthy.at(-1)?.toFixed(0)} ms, idle ${mib(idle.at(-1) ?? 0)} MiB; bare node ready ${bareReady.at(-1)?.toFixed(0)} ms, idle ${mib(bareIdle.at(-1) ?? 0)} MiB`,
      );
    }
    process.stdout.write(
      `${JSON.stringify({
        bench: "image",
        runs: RUNS,
        ...sizes,
        start_to_ready_ms_median: Math.round(median(toReady)),
        start_to_ready_ms_max: Math.round(Math.max(...toReady)),
        start_to_docker_healthy_ms_median: Math.round(median(toHealthy)),
        idle_seconds: IDLE_SECONDS,
        idle_memory_mib_median: mib(median(idle)),
        baseline_bare_node_start_to_ready_ms_median: Math.round(median(bareReady)),
        baseline_bare_node_idle_memory_mib_median: mib(median(bareIdle)),
      })}\n`,
    );
  } finally {
    await janitor.cleanup();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:image failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
