/**
 * `npm run bench:server`: figures of the built server, each next to a baseline measured in the same
 * run, printed as one JSON line.
 * - idle memory (RSS) of `node dist/src/main.js` after start-up and after a burst of requests,
 *   next to a bare Node process doing nothing;
 * - Connect JSON unary throughput (History, authenticated) next to the plain GET /healthz route;
 * - time from SIGTERM to exit with open WatchJob-like streams (gRPC health Watch).
 * Loopback only; every loop is bounded in count and time.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dirname, "../..");
const TOKEN = "bench-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4000);
const CONCURRENCY = 16;

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function startServer(stateDir: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [join(root, "dist/src/main.js")], {
    env: {
      PATH: process.env.PATH,
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
      PROCESSGIT_UPDATER_STATE_DIR: stateDir,
      PROCESSGIT_UPDATER_LOG_LEVEL: "warn",
      PROCESSGIT_UPDATER_SIGNER_ISSUER: "https://token.actions.githubusercontent.com",
      PROCESSGIT_UPDATER_SIGNER_IDENTITY:
        "https://github\\.com/acme/processgit/\\.github/workflows/release\\.yml@refs/tags/v.*",
      DOCKER_HOST: `unix://${stateDir}/none.sock`,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  // Port 0 and log level warn: find the port from the process's listening socket.
  for (let i = 0; i < 200; i++) {
    await sleep(25);
    const port = await listeningPort(child.pid as number);
    if (port) return { child, port };
  }
  child.kill("SIGKILL");
  throw new Error("the server did not start listening within 5 s");
}

async function listeningPort(pid: number): Promise<number | undefined> {
  const { readdir, readlink } = await import("node:fs/promises");
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m?.[1]) inodes.add(m[1]);
  }
  const table = await readFile("/proc/net/tcp", "utf8");
  for (const line of table.split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[3] === "0A" && cols[9] && inodes.has(cols[9]))
      return Number.parseInt((cols[1] ?? "").split(":")[1] ?? "", 16);
  }
  return undefined;
}

async function load(
  port: number,
  path: string,
  body: string | undefined,
): Promise<{ rps: number; p50: number; p99: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const latencies: number[] = [];
  let next = 0;
  const deadline = Date.now() + 30_000;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const started = performance.now();
      const req = http.request(
        {
          host: "127.0.0.1",
          port,
          path,
          method: body === undefined ? "GET" : "POST",
          agent,
          headers:
            body === undefined
              ? {}
              : { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
        },
        (res) => {
          res.resume();
          res.on("end", () => {
            if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode} for ${path}`));
            latencies.push(performance.now() - started);
            resolve();
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS && Date.now() < deadline) {
        next++;
        await one();
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    Number((latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(2));
  return { rps: Math.round(latencies.length / seconds), p50: at(0.5), p99: at(0.99) };
}

async function main(): Promise<void> {
  const stateDir = await mkdtemp(join(tmpdir(), "pgu-bench-"));
  const bare = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  const { child, port } = await startServer(stateDir);
  try {
    await sleep(1500);
    const idleRss = await rssKiB(child.pid as number);
    const bareRss = await rssKiB(bare.pid as number);
    const healthz = await load(port, "/healthz", undefined);
    const unary = await load(port, "/processgit.updater.v1.UpdaterService/History", "{}");
    await sleep(500);
    const afterRss = await rssKiB(child.pid as number);

    // Open streams, then SIGTERM: time to exit.
    const streams: http.ClientRequest[] = [];
    for (let i = 0; i < 4; i++) {
      const req = http.request({
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/grpc.health.v1.Health/Watch",
        headers: { "content-type": "application/connect+json" },
      });
      req.on("error", () => {});
      req.on("response", (res) => res.resume());
      const json = Buffer.from("{}");
      const head = Buffer.alloc(5);
      head.writeUInt32BE(json.length, 1);
      req.end(Buffer.concat([head, json]));
      streams.push(req);
    }
    await sleep(200);
    const exited = new Promise<number>((resolve) => child.on("exit", () => resolve(performance.now())));
    const sentAt = performance.now();
    child.kill("SIGTERM");
    const exitMs = Number(((await exited) - sentAt).toFixed(1));
    process.stdout.write(
      `${JSON.stringify({
        bench: "server",
        node: process.version,
        requests: REQUESTS,
        concurrency: CONCURRENCY,
        idle_rss_mib: Number((idleRss / 1024).toFixed(1)),
        rss_after_load_mib: Number((afterRss / 1024).toFixed(1)),
        baseline_bare_node_rss_mib: Number((bareRss / 1024).toFixed(1)),
        connect_unary_history: unary,
        baseline_plain_healthz: healthz,
        sigterm_to_exit_ms_with_4_open_streams: exitMs,
      })}\n`,
    );
  } finally {
    child.kill("SIGKILL");
    bare.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
}

await main();
