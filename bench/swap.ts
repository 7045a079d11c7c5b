/**
 * `npm run bench:swap`: the app's downtime during a successful update, next to two references
 * measured in the same run, printed as one JSON line on stdout (diagnostics go to stderr).
 *
 * Per run (BENCH_RUNS, default 10), in an order that rotates every run to spread noise:
 * - updater: a fresh fixture app from v1 (busybox httpd, `--init`, host network, a fresh named
 *   volume), a prober, then a whole update v1 -> v2 through the JobRunner with the real
 *   DockerEngineApi (no migration, health soak 0.5 s, health interval 50 ms). Downtime is the
 *   longest gap between two consecutive 200s of the prober in the update window; update time is
 *   start -> committed.
 * - baseline_cli: the same app, the same prober, then what an operator would type:
 *   `docker stop NAME && docker rm NAME && docker run -d --name NAME ...same flags... v2`.
 *   Downtime as above; total time is from `docker stop` starting to `docker run -d` returning.
 * - engine stop+start: the same app; `POST /containers/{id}/stop` then `POST /containers/{id}/start`
 *   over the Engine API socket, timed (the floor of any swap that has to free the port first).
 *
 * The prober runs in a worker thread (its own event loop, so the updater's work in this process
 * cannot delay it): every 5 ms a GET /health on a new connection, 100 ms timeout, and it records
 * the time each 200 arrived.
 *
 * Loopback and host networking only; every container is named `pgu-bench-*` and labelled
 * io.processgit.updater.test=1 plus this run's id, and every container and volume is removed at
 * the end, on failure and on SIGINT/SIGTERM too. Every loop is bounded in count and time.
 */
import { mkdtemp, rm } from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import { DockerClient, type JsonCallOptions } from "../src/engine/docker-client.js";
import { DockerEngineApi } from "../src/engine/docker-engine-api.js";
import { silentLogger } from "../src/log.js";
import type { Job } from "../src/orchestrator/job.js";
import { systemClock } from "../src/orchestrator/ports.js";
import { JobRunner } from "../src/orchestrator/runner.js";
import { FileJobStore } from "../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../test/fakes/fake-release.js";
import { HELPER_IMAGE } from "../test/helpers/docker.js";
import { run } from "../test/helpers/run.js";
import { finished } from "../test/helpers/runner-harness.js";

const TEST_LABEL = "io.processgit.updater.test";
const BENCH_RUN_LABEL = "io.processgit.updater.bench.run";
const BENCH_APP_LABEL = "io.processgit.updater.bench.app";
const PROBE_INTERVAL_MS = 5;
const PROBE_TIMEOUT_MS = 100;
const PROBE_MAX_INFLIGHT = 40;
const HEALTH_SOAK_MS = 500;
const HEALTH_INTERVAL_MS = 50;
/** The whole bench stops starting new runs after this, and a watchdog ends it a minute later. */
const BENCH_BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 5 * 60_000);

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across worker threads. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The prober (worker thread)
// ---------------------------------------------------------------------------------------------

interface ProbeResult {
  /** Arrival times of every 200, ascending. */
  ok: number[];
  sent: number;
  failed: number;
}

/** Messages to the prober thread. */
type ProberCommand = { type: "start"; port: number; maxMs: number } | { type: "stop" };

/**
 * The prober thread: one for the whole bench, started first, so that it never has to load this
 * file again later (a rebuild of dist/ during the bench would not break it). One session at a time:
 * "start" probes a port (and reports "ready" at the first 200), "stop" reports the result.
 */
function proberThread(): void {
  const port = parentPort;
  if (!port) return;
  let ok: number[] = [];
  let sent = 0;
  let failed = 0;
  let inflight = 0;
  let timer: NodeJS.Timeout | undefined;
  const probe = (target: number, until: number, session: number) => {
    if (inflight >= PROBE_MAX_INFLIGHT) return;
    if (Date.now() > until) {
      clearInterval(timer);
      return;
    }
    inflight++;
    sent++;
    const req = http.get(
      { host: "127.0.0.1", port: target, path: "/health", agent: false, timeout: PROBE_TIMEOUT_MS },
      (res) => {
        const at = now();
        res.resume();
        if (session !== sessions) return;
        if (res.statusCode === 200) {
          ok.push(at);
          if (ok.length === 1) port.postMessage({ type: "ready" });
        } else failed++;
      },
    );
    req.on("timeout", () => req.destroy(new Error("probe timeout")));
    req.on("error", () => {
      if (session === sessions) failed++;
    });
    req.once("close", () => {
      inflight--;
    });
  };
  let sessions = 0;
  port.on("message", async (msg: ProberCommand) => {
    if (msg.type === "start") {
      clearInterval(timer);
      ok = [];
      sent = 0;
      failed = 0;
      const session = ++sessions;
      const until = Date.now() + msg.maxMs;
      timer = setInterval(() => probe(msg.port, until, session), PROBE_INTERVAL_MS);
    } else {
      clearInterval(timer);
      for (let i = 0; i < 50 && inflight > 0; i++) await sleep(5);
      const result: ProbeResult = { ok: [...ok].sort((a, b) => a - b), sent, failed };
      sessions++;
      port.postMessage({ type: "result", result });
    }
  });
}

/** The main thread's handle on the prober thread. */
class ProberHost {
  private readonly worker = new Worker(new URL(import.meta.url));
  private waiter:
    | { type: string; resolve: (r?: ProbeResult) => void; reject: (e: Error) => void }
    | undefined;
  private dead: Error | undefined;

  constructor() {
    this.worker.on("message", (msg: { type: string; result?: ProbeResult }) => {
      if (this.waiter?.type === msg.type) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(msg.result);
      }
    });
    const die = (err: Error) => {
      this.dead ??= err;
      this.waiter?.reject(err);
      this.waiter = undefined;
    };
    this.worker.once("error", die);
    this.worker.once("exit", (code) => die(new Error(`the prober thread exited (${code})`)));
  }

  private send(cmd: ProberCommand, answer: string, ms: number): Promise<ProbeResult | undefined> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`the prober did not answer "${answer}" within ${ms} ms`));
      }, ms);
      this.waiter = {
        type: answer,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.worker.postMessage(cmd);
    });
  }

  /** Starts probing `port`; resolves at the first 200. */
  async start(port: number): Promise<void> {
    try {
      await this.send({ type: "start", port, maxMs: 120_000 }, "ready", 10_000);
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
  }

  async stop(): Promise<ProbeResult> {
    const r = await this.send({ type: "stop" }, "result", 5000);
    if (!r) throw new Error("the prober sent no result");
    return r;
  }

  async close(): Promise<void> {
    await this.worker.terminate().catch(() => undefined);
  }
}

interface Gap {
  gapMs: number;
  /** The last 200 before the gap and the first after it. */
  lastOk: number;
  firstOk: number;
}

/**
 * The longest gap between consecutive 200s that overlaps the window [from, to]. Throws when the
 * prober saw no 200 before `from` or none after `to` (then the gap would be unbounded).
 */
function longestGap(ok: number[], from: number, to: number): Gap {
  const first = ok[0];
  const last = ok.at(-1);
  if (first === undefined || last === undefined || first > from)
    throw new Error("the prober saw no 200 before the window");
  if (last < to)
    throw new Error(
      `the prober saw no 200 after the window (last ${(to - last).toFixed(1)} ms before its end)`,
    );
  let best: Gap = { gapMs: -1, lastOk: first, firstOk: first };
  for (let i = 0; i + 1 < ok.length; i++) {
    const a = ok[i] as number;
    const b = ok[i + 1] as number;
    if (b < from || a > to) continue;
    if (b - a > best.gapMs) best = { gapMs: b - a, lastOk: a, firstOk: b };
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// The bench (main thread)
// ---------------------------------------------------------------------------------------------

interface Fixture {
  ref: string;
  repository: string;
  digest: string;
  version: string;
}

interface App {
  name: string;
  volume: string;
  port: number;
}

interface Bench {
  runId: string;
  dockerHost: string;
  work: string;
  v1: Fixture;
  v2: Fixture;
  client: DockerClient;
  prober: ProberHost;
  seq: number;
  usedPorts: Set<number>;
}

async function docker(args: string[], timeoutMs = 60_000): Promise<string> {
  const r = await run("docker", args, { timeoutMs });
  if (r.code !== 0)
    throw new Error(`docker ${args.join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** A free loopback port above 20000 (checked by binding it), never handed out twice in one run. */
async function freePort(b: Bench): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 23_000 + Math.floor(Math.random() * 5000);
    if (b.usedPorts.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) {
      b.usedPorts.add(port);
      return port;
    }
  }
  throw new Error("no free loopback port found in 50 tries");
}

async function healthOk(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(500) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function version(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/version`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? (await res.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}

async function waitHealthy(port: number, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await healthOk(port)) return;
    await sleep(10);
  }
  throw new Error(`the app on port ${port} did not answer 200 on /health within ${ms} ms`);
}

/** The `docker run` flags of the app, as an operator started it (without the image). */
function runFlags(b: Bench, app: App): string[] {
  return [
    "-d",
    "--name",
    app.name,
    "--label",
    `${TEST_LABEL}=1`,
    "--label",
    `${BENCH_RUN_LABEL}=${b.runId}`,
    "--label",
    `${BENCH_APP_LABEL}=${app.name}`,
    "--network",
    "host",
    "--init",
    "-e",
    `APP_PORT=${app.port}`,
    "-v",
    `${app.volume}:/data`,
    "--restart",
    "no",
  ];
}

/** A fresh app from v1 with a fresh named volume, serving. */
async function startApp(b: Bench, method: string): Promise<App> {
  const port = await freePort(b);
  const name = `pgu-bench-${b.runId}-${++b.seq}-${method}`;
  const app = { name, volume: `${name}-data`, port };
  await docker([
    "volume",
    "create",
    "--label",
    `${TEST_LABEL}=1`,
    "--label",
    `${BENCH_RUN_LABEL}=${b.runId}`,
    app.volume,
  ]);
  await docker(["run", ...runFlags(b, app), b.v1.ref]);
  await waitHealthy(port);
  return app;
}

/** Removes every container of the app (the updater's clone carries the app's labels) and its volume. */
async function removeApp(b: Bench, app: App): Promise<void> {
  await removeLabelled(b.client, `${BENCH_APP_LABEL}=${app.name}`);
  await b.client
    .json("DELETE", `/volumes/${encodeURIComponent(app.volume)}`, { query: { force: true } })
    .catch((err: unknown) =>
      process.stderr.write(`swap bench: could not remove volume ${app.volume}: ${String(err)}\n`),
    );
}

async function removeLabelled(client: DockerClient, label: string): Promise<void> {
  const list = await client.json<Array<{ Id: string }>>("GET", "/containers/json", {
    query: { all: true, filters: JSON.stringify({ label: [label] }) },
  });
  for (const c of list) {
    await client
      .removeContainer(c.Id, { force: true, volumes: true })
      .catch((err: unknown) =>
        process.stderr.write(`swap bench: could not remove container ${c.Id}: ${String(err)}\n`),
      );
  }
}

/** Everything this bench run created: containers, then volumes, by the run label. */
async function sweep(b: Bench): Promise<void> {
  await removeLabelled(b.client, `${BENCH_RUN_LABEL}=${b.runId}`).catch(() => undefined);
  const vols = await b.client
    .json<{ Volumes: Array<{ Name: string }> | null }>("GET", "/volumes", {
      query: { filters: JSON.stringify({ label: [`${BENCH_RUN_LABEL}=${b.runId}`] }) },
    })
    .catch(() => ({ Volumes: [] }));
  for (const v of vols.Volumes ?? []) {
    await b.client
      .json("DELETE", `/volumes/${encodeURIComponent(v.Name)}`, { query: { force: true } })
      .catch(() => undefined);
  }
  await rm(b.work, { recursive: true, force: true });
}

/** Engine calls the swap makes, timed: create, rename, stop, start. */
interface Mark {
  what: string;
  start: number;
  end: number;
}

function instrument(client: DockerClient, marks: Mark[]): void {
  const json = client.json.bind(client);
  client.json = async <T>(method: string, path: string, options?: JsonCallOptions): Promise<T> => {
    const start = now();
    try {
      return await json<T>(method, path, options);
    } finally {
      const m = /^\/containers\/(?:create|[^/]+\/(stop|start|rename))$/.exec(path);
      if (method === "POST" && m) marks.push({ what: m[1] ?? "create", start, end: now() });
    }
  };
}

interface UpdaterSample {
  downtimeMs: number;
  updateMs: number;
  /** Engine stop call, the time between stop and start (a journal write), start call. */
  stopMs: number;
  betweenMs: number;
  startMs: number;
  /** From the last 200 to the stop call returning (the old app's shutdown as the prober saw it). */
  lastOkToStopEndMs: number;
  /** From the start call returning to the first 200 (the new app's boot plus probe delay). */
  startEndToFirstOkMs: number;
  /** create + renames (before the gap). */
  preGapMs: number;
}

function explain(job: Job): string {
  return JSON.stringify({
    state: job.state,
    error: job.error,
    steps: job.steps.map((s) => [s.title, s.status, s.error, s.output.slice(-300)]),
  });
}

async function updaterRun(b: Bench): Promise<UpdaterSample> {
  const app = await startApp(b, "updater");
  const dir = join(b.work, app.name);
  const tag = `v${b.v2.version}`;
  const [registry, ...rest] = b.v2.repository.split("/");
  const source = new MemoryReleaseSource().add(tag, {
    manifest: manifestFor(tag, {
      image: {
        registry,
        repository: rest.join("/"),
        tag: b.v2.version,
        digest: b.v2.digest,
        platforms: ["linux/amd64"],
      },
      migration: { required: false, command: [], estimated_downtime_seconds: 0 },
    }),
  });
  const engine = new DockerEngineApi({
    dockerHost: b.dockerHost,
    helperImage: HELPER_IMAGE,
    appContainer: app.name,
    snapshotDir: join(dir, "snapshots"),
    healthDeadlineMs: 15_000,
    healthSoakMs: HEALTH_SOAK_MS,
    healthIntervalMs: HEALTH_INTERVAL_MS,
    migrationTimeoutMs: 60_000,
  });
  const marks: Mark[] = [];
  instrument(engine.client, marks);
  const runner = new JobRunner({
    store: new FileJobStore(join(dir, "state")),
    source,
    verifier: new FakeVerifier(),
    engine,
    clock: systemClock,
    newId: () => crypto.randomUUID(),
    log: silentLogger,
  });
  let probing = false;
  try {
    await runner.open();
    await b.prober.start(app.port);
    probing = true;
    const t0 = now();
    const job = await runner.start({ tag });
    const end = await finished(runner, job.id, 60_000);
    const t1 = now();
    if (end.state !== "committed") throw new Error(`the update did not commit: ${explain(end)}`);
    await waitHealthy(app.port, 5000);
    await sleep(20);
    probing = false;
    const probes = await b.prober.stop();
    const served = await version(app.port);
    if (served !== b.v2.version)
      throw new Error(`after the update the app serves ${served}, not ${b.v2.version}`);
    const gap = longestGap(probes.ok, t0, t1);
    const stop = marks.find((m) => m.what === "stop");
    const start = marks.find((m) => m.what === "start");
    const create = marks.find((m) => m.what === "create");
    if (!stop || !start || !create) throw new Error("the swap's engine calls were not seen");
    return {
      downtimeMs: gap.gapMs,
      updateMs: t1 - t0,
      stopMs: stop.end - stop.start,
      betweenMs: start.start - stop.end,
      startMs: start.end - start.start,
      lastOkToStopEndMs: stop.end - gap.lastOk,
      startEndToFirstOkMs: gap.firstOk - start.end,
      preGapMs: stop.start - create.start,
    };
  } finally {
    if (probing) await b.prober.stop().catch(() => undefined);
    await runner.shutdown(1000).catch(() => undefined);
    engine.client.close();
    await removeApp(b, app);
  }
}

interface CliSample {
  downtimeMs: number;
  totalMs: number;
  stopMs: number;
  rmMs: number;
  runMs: number;
  lastOkToStopEndMs: number;
  runEndToFirstOkMs: number;
}

async function cliRun(b: Bench): Promise<CliSample> {
  const app = await startApp(b, "cli");
  let probing = false;
  try {
    await b.prober.start(app.port);
    probing = true;
    // docker stop NAME && docker rm NAME && docker run -d --name NAME ...same flags... v2
    const t0 = now();
    await docker(["stop", app.name]);
    const t1 = now();
    await docker(["rm", app.name]);
    const t2 = now();
    await docker(["run", ...runFlags(b, app), b.v2.ref]);
    const t3 = now();
    await waitHealthy(app.port, 10_000);
    await sleep(20);
    probing = false;
    const probes = await b.prober.stop();
    const served = await version(app.port);
    if (served !== b.v2.version)
      throw new Error(`after docker run the app serves ${served}, not ${b.v2.version}`);
    const gap = longestGap(probes.ok, t0, t3);
    return {
      downtimeMs: gap.gapMs,
      totalMs: t3 - t0,
      stopMs: t1 - t0,
      rmMs: t2 - t1,
      runMs: t3 - t2,
      lastOkToStopEndMs: t1 - gap.lastOk,
      runEndToFirstOkMs: gap.firstOk - t3,
    };
  } finally {
    if (probing) await b.prober.stop().catch(() => undefined);
    await removeApp(b, app);
  }
}

interface EngineSample {
  stopStartMs: number;
  stopMs: number;
  startMs: number;
  /** The prober's longest gap around the restart: stop + start + the app's boot. */
  gapMs: number;
  startEndToFirstOkMs: number;
}

async function engineRun(b: Bench): Promise<EngineSample> {
  const app = await startApp(b, "engine");
  let probing = false;
  try {
    const c = await b.client.inspectContainer(app.name); // also warms the keep-alive connection
    const t = typeof c.Config.StopTimeout === "number" ? c.Config.StopTimeout : 10;
    await b.prober.start(app.port);
    probing = true;
    const t0 = now();
    await b.client.json("POST", `/containers/${c.Id}/stop`, {
      query: { t },
      okStatuses: [304],
      timeoutMs: (t + 30) * 1000,
    });
    const t1 = now();
    await b.client.startContainer(c.Id);
    const t2 = now();
    await waitHealthy(app.port, 10_000);
    await sleep(20);
    probing = false;
    const probes = await b.prober.stop();
    const gap = longestGap(probes.ok, t0, t2);
    return {
      stopStartMs: t2 - t0,
      stopMs: t1 - t0,
      startMs: t2 - t1,
      gapMs: gap.gapMs,
      startEndToFirstOkMs: gap.firstOk - t2,
    };
  } finally {
    if (probing) await b.prober.stop().catch(() => undefined);
    await removeApp(b, app);
  }
}

// ---------------------------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const v = s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
  return round(v);
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function stats(xs: number[]): { median: number; max: number } {
  return { median: median(xs), max: round(Math.max(...xs)) };
}

function medians<T extends object>(samples: T[]): Record<string, number> {
  const out: Record<string, number> = {};
  const first = samples[0];
  if (!first) return out;
  for (const key of Object.keys(first)) {
    out[key] = median(samples.map((s) => (s as Record<string, number>)[key] as number));
  }
  return out;
}

function log(line: string): void {
  process.stderr.write(`swap bench: ${line}\n`);
}

async function main(): Promise<number> {
  const runs = Number(process.env.BENCH_RUNS ?? 10);
  if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error("BENCH_RUNS must be 1..100");
  const dockerHost = process.env.DOCKER_HOST;
  if (!dockerHost)
    throw new Error('DOCKER_HOST is not set: run eval "$(bash scripts/engine.sh start)" in this shell first');
  const root = join(import.meta.dirname, "../..");
  const fixturesOut = await run("bash", [join(root, "scripts/fixtures.sh")], { timeoutMs: 180_000 });
  if (fixturesOut.code !== 0)
    throw new Error(`scripts/fixtures.sh failed: ${fixturesOut.stderr.slice(-2000)}`);
  const images = (JSON.parse(fixturesOut.stdout) as { images: Record<string, Fixture> }).images;
  if (!images.v1 || !images.v2) throw new Error("scripts/fixtures.sh printed no v1 or v2");
  const b: Bench = {
    runId: `${Date.now().toString(36)}${Math.floor(Math.random() * 0xfff).toString(16)}`,
    dockerHost,
    work: await mkdtemp(join(tmpdir(), "pgu-bench-swap-")),
    v1: images.v1,
    v2: images.v2,
    client: new DockerClient({ dockerHost, timeoutMs: 30_000 }),
    prober: new ProberHost(),
    seq: 0,
    usedPorts: new Set(),
  };
  let cleaned: Promise<void> | undefined;
  const cleanup = () => {
    cleaned ??= sweep(b).finally(async () => {
      b.client.close();
      await b.prober.close();
    });
    return cleaned;
  };
  // A signal arrives while a run is still working: sweep, let that run's next engine call fail,
  // and sweep again for anything it created in between.
  const interrupted = async () => {
    await sweep(b).catch(() => undefined);
    await sleep(300);
    await cleanup();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    void interrupted().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const watchdog = setTimeout(() => {
    log("watchdog: the bench ran over its budget by a minute; cleaning up and exiting");
    void interrupted().finally(() => process.exit(2));
  }, BENCH_BUDGET_MS + 60_000);
  watchdog.unref();

  const started = Date.now();
  const updater: UpdaterSample[] = [];
  const cli: CliSample[] = [];
  const engine: EngineSample[] = [];
  try {
    // Warm-up, not counted: the first pull of v2 by digest and the first start of each image.
    log(`run ${b.runId}: warm-up`);
    await updaterRun(b);
    await cliRun(b);
    const methods = [
      async () => {
        const s = await updaterRun(b);
        updater.push(s);
        return `updater downtime ${s.downtimeMs.toFixed(1)} ms (stop ${s.stopMs.toFixed(1)}, between ${s.betweenMs.toFixed(1)}, start ${s.startMs.toFixed(1)}, start->200 ${s.startEndToFirstOkMs.toFixed(1)}), update ${s.updateMs.toFixed(0)} ms`;
      },
      async () => {
        const s = await cliRun(b);
        cli.push(s);
        return `cli downtime ${s.downtimeMs.toFixed(1)} ms (stop ${s.stopMs.toFixed(1)}, rm ${s.rmMs.toFixed(1)}, run ${s.runMs.toFixed(1)}, run->200 ${s.runEndToFirstOkMs.toFixed(1)}), total ${s.totalMs.toFixed(0)} ms`;
      },
      async () => {
        const s = await engineRun(b);
        engine.push(s);
        return `engine stop+start ${s.stopStartMs.toFixed(1)} ms (stop ${s.stopMs.toFixed(1)}, start ${s.startMs.toFixed(1)}), gap ${s.gapMs.toFixed(1)} ms`;
      },
    ];
    for (let i = 0; i < runs; i++) {
      if (Date.now() - started > BENCH_BUDGET_MS) {
        log(`budget of ${BENCH_BUDGET_MS} ms used up after ${i} runs; stopping early`);
        break;
      }
      for (let k = 0; k < methods.length; k++) {
        const method = methods[(i + k) % methods.length];
        if (method) log(`run ${i + 1}/${runs}: ${await method()}`);
      }
    }
  } finally {
    await cleanup();
  }

  const done = Math.min(updater.length, cli.length, engine.length);
  const u = stats(updater.map((s) => s.downtimeMs));
  const c = stats(cli.map((s) => s.downtimeMs));
  const e = stats(engine.map((s) => s.stopStartMs));
  const vsCli = round(u.median / c.median, 3);
  const vsEngine = round(u.median / e.median, 3);
  const result = {
    bench: "swap",
    runs: done,
    updater: { downtime_ms: u, update_ms: stats(updater.map((s) => s.updateMs)) },
    baseline_cli: { downtime_ms: c, total_ms: stats(cli.map((s) => s.totalMs)) },
    engine_stop_start_ms: e,
    ratio_downtime_vs_cli: vsCli,
    ratio_downtime_vs_engine: vsEngine,
    goal_met: {
      downtime_at_most_0_8x_cli: vsCli <= 0.8,
      downtime_within_1_2x_engine: vsEngine <= 1.2,
      all: vsCli <= 0.8 && vsEngine <= 1.2 && done >= runs,
    },
  };
  log(`medians, updater (ms): ${JSON.stringify(medians(updater))}`);
  log(`medians, baseline cli (ms): ${JSON.stringify(medians(cli))}`);
  log(`medians, engine stop+start (ms): ${JSON.stringify(medians(engine))}`);
  log(`whole bench ${((Date.now() - started) / 1000).toFixed(1)} s`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return done >= runs ? 0 : 1;
}

if (isMainThread) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(
        `swap bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exitCode = 1;
    },
  );
} else {
  proberThread();
}
