/**
 * `npm run bench:snapshot` (issue 9): the snapshot store on a realistic data volume, next to
 * baselines measured in the same run, printed as one JSON line on stdout (progress on stderr).
 *
 * The data: a named volume of BENCH_GB (default 1) GiB in BENCH_FILES (default 2,000) files: a
 * SQLite database of 10 % of it (100 MiB by default, made for real with node:sqlite: one row of
 * random bytes per 4 KiB page) and "repository files" of random data and varied sizes (log-uniform,
 * 1 KiB to 8 MiB, scaled to the rest). A change of BENCH_GB x 10 MiB is 60 % SQLite UPDATEs of
 * random rows (so that many database pages change) and 40 % repository files rewritten or appended
 * to, made by a one-shot node container. The "app" is an idle node container with the volume.
 *
 * The snapshot store is driven directly (SnapshotStore, the updater's own helper image), and the app
 * is stopped around `final` exactly as the updater's swap does. Per run (BENCH_RUNS, default 3; the
 * order within steps 1 and 2 rotates every run):
 * 1. with the app stopped: the first full snapshot on a fresh store (bulk copy + final pass: a full
 *    frozen copy), the raw `tar` one-shot container (`docker run --rm --network none -v VOL:/data:ro
 *    -v DIR:/out IMAGE tar -cf /out/x.tar -C /data .`), and the same followed by `sync` of the archive
 *    (the store's copy is durable, tar's is not);
 * 2. restore of that snapshot into an EMPTY volume, and `tar -xpf` of the archive into other empty
 *    ones (without and with a `sync -f` after it);
 * 3. three snapshots on top, the app running during each bulk copy, a change made between the bulk
 *    copy and the stop, then the app stopped and `session.final()` timed (the extra downtime):
 *    s2 - nothing changed since s1 before its bulk copy (the database is shared with s1 by a hard
 *         link, so the frozen pass must copy it whole: a shared file is never written into);
 *    s3 - a change before the bulk copy too (the bulk copy has its own database copy, so the frozen
 *         pass compares it in 4 KiB blocks): the headline figure, all of the change in the frozen
 *         pass;
 *    s4 - the same, plus the updater's catch-up pass while the app still runs (what the swap does);
 * 4. s1 removed (the store keeps 3): `du -s --block-size=1` of the store next to `du` of the data;
 * 5. a change with the app stopped, then `restore` of s4 into the volume (only differing blocks).
 * Optionally (BENCH_E2E=1, the default) one real update through the JobRunner (fixture v1 -> v2 on
 * the same volume, a change made before the pull): how long the app was stopped until the snapshot
 * was durable, as the swap reports it.
 *
 * Needs the engine and registry of scripts/engine.sh (DOCKER_HOST, PGU_REGISTRY), the helper image
 * (processgit-updater:test or PGU_HELPER_IMAGE) and node:24-bookworm-slim (BENCH_NODE_IMAGE).
 * Containers use --network none (the e2e app: host, loopback only). Everything created is removed
 * at the end, on failure and on SIGINT/SIGTERM. Every step has a deadline, and the runs stop when
 * BENCH_BUDGET_MS (default 15 minutes) is spent.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DockerClient } from "../src/engine/docker-client.js";
import { DockerEngineApi } from "../src/engine/docker-engine-api.js";
import { silentLogger } from "../src/log.js";
import type { Job } from "../src/orchestrator/job.js";
import type { StepContext } from "../src/orchestrator/ports.js";
import { systemClock } from "../src/orchestrator/ports.js";
import { JobRunner } from "../src/orchestrator/runner.js";
import type { PassStats } from "../src/snapshots/helper.js";
import {
  type DataMount,
  LABEL_JOB,
  type PassAnswer,
  SnapshotStore,
} from "../src/snapshots/snapshot-store.js";
import { FileJobStore } from "../src/store/file-job-store.js";
import { FakeVerifier, MemoryReleaseSource, manifestFor } from "../test/fakes/fake-release.js";
import { buildFixtures, type Fixture, imageOf } from "../test/helpers/app-fixture.js";
import {
  DockerJanitor,
  docker,
  HELPER_IMAGE,
  labelArgs,
  RUN_LABEL,
  requireEngine,
} from "../test/helpers/docker.js";
import { run } from "../test/helpers/run.js";
import { finished } from "../test/helpers/runner-harness.js";

const MiB = 1024 * 1024;
const GB = Number(process.env.BENCH_GB ?? 1);
const FILES = Math.round(Number(process.env.BENCH_FILES ?? 2000));
const RUNS = Math.round(Number(process.env.BENCH_RUNS ?? 3));
const E2E = (process.env.BENCH_E2E ?? "1") !== "0";
const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 15 * 60_000);
const NODE_IMAGE = process.env.BENCH_NODE_IMAGE ?? "node:24-bookworm-slim";
const TOTAL_BYTES = Math.round(GB * 1024 * MiB);
const DB_BYTES = Math.round(GB * 100 * MiB);
const CHANGE_BYTES = Math.round(GB * 10 * MiB);
/** Deadline of one store operation or one container. */
const STEP_MS = 10 * 60_000;

/**
 * The data maker, run with `node -e` in a one-shot node container with the volume on /data
 * (CommonJS, node:* only). PGU_BENCH holds {mode: "gen" | "change", seed, ...}; prints one JSON line.
 */
const DATA_SCRIPT = `"use strict";
const fs = require("node:fs");
const path = require("node:path");
const crypto = require("node:crypto");
const { DatabaseSync } = require("node:sqlite");
const cfg = JSON.parse(process.env.PGU_BENCH);
const DB = "/data/app.db";
const REPOS = "/data/repos";
const PAGE = 4096;
const ROW = 3500; // one row per 4 KiB page: a changed row is a changed page
let state = cfg.seed >>> 0;
function rnd() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const buf = Buffer.allocUnsafe(1 << 20);
function writeRandom(fd, size, position) {
  let done = 0;
  while (done < size) {
    const n = Math.min(buf.length, size - done);
    crypto.randomFillSync(buf, 0, n);
    let w = 0;
    while (w < n) w += fs.writeSync(fd, buf, w, n - w, position === null ? null : position + done + w);
    done += n;
  }
}
if (cfg.mode === "gen") {
  const db = new DatabaseSync(DB);
  db.exec("PRAGMA page_size = " + PAGE + "; PRAGMA journal_mode = DELETE;" +
    " CREATE TABLE blobs (id INTEGER PRIMARY KEY, updated INTEGER NOT NULL, body BLOB NOT NULL)");
  const rows = Math.max(16, Math.floor(cfg.dbBytes / PAGE));
  const insert = db.prepare("INSERT INTO blobs (id, updated, body) VALUES (?, ?, ?)");
  db.exec("BEGIN");
  for (let id = 1; id <= rows; id++) insert.run(id, 0, crypto.randomBytes(ROW));
  db.exec("COMMIT");
  db.close();
  const n = cfg.files - 1;
  const lo = Math.log(1024);
  const hi = Math.log(8 * 1048576);
  const raw = [];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const s = Math.exp(lo + rnd() * (hi - lo));
    raw.push(s);
    sum += s;
  }
  const sizes = raw.map((s) => Math.max(1, Math.floor((s * cfg.repoBytes) / sum)));
  let rest = cfg.repoBytes - sizes.reduce((a, b) => a + b, 0);
  for (let i = 0; rest > 0 && i < n; i++) {
    const add = Math.ceil(rest / (n - i));
    sizes[i] += add;
    rest -= add;
  }
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const name = crypto.createHash("sha1").update(cfg.seed + ":" + i).digest("hex");
    const dir = path.join(REPOS, "repo-" + String(i % 40).padStart(2, "0"), "objects", name.slice(0, 2));
    fs.mkdirSync(dir, { recursive: true });
    const fd = fs.openSync(path.join(dir, name.slice(2)), "w", 0o644);
    writeRandom(fd, sizes[i], 0);
    fs.closeSync(fd);
    bytes += sizes[i];
  }
  console.log(JSON.stringify({ files: n + 1, repoBytes: bytes, dbBytes: fs.statSync(DB).size, rows }));
} else if (cfg.mode === "change") {
  const db = new DatabaseSync(DB);
  const rows = db.prepare("SELECT count(*) AS n FROM blobs").get().n;
  const want = Math.min(rows, Math.max(1, Math.round(cfg.dbChange / PAGE)));
  const ids = new Set();
  for (let i = 0; ids.size < want && i < want * 100; i++) ids.add(1 + Math.floor(rnd() * rows));
  const update = db.prepare("UPDATE blobs SET updated = ?, body = ? WHERE id = ?");
  db.exec("BEGIN");
  for (const id of ids) update.run(Date.now(), crypto.randomBytes(ROW), id);
  db.exec("COMMIT");
  db.close();
  const files = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push(p);
    }
  };
  walk(REPOS);
  files.sort();
  for (let i = files.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [files[i], files[j]] = [files[j], files[i]];
  }
  const budget = Math.round(cfg.filesChange * 0.75);
  let rewritten = 0;
  let rewrittenBytes = 0;
  const appendTo = files.slice(-2);
  for (const f of files.slice(0, -2)) {
    if (rewrittenBytes >= budget) break;
    const size = fs.statSync(f).size;
    if (size > budget - rewrittenBytes) continue;
    const fd = fs.openSync(f, "r+");
    writeRandom(fd, size, 0);
    fs.closeSync(fd);
    rewritten += 1;
    rewrittenBytes += size;
  }
  const toAppend = Math.max(0, cfg.filesChange - rewrittenBytes);
  let appendedBytes = 0;
  appendTo.forEach((f, k) => {
    const n = k === 0 ? Math.ceil(toAppend / appendTo.length) : toAppend - appendedBytes;
    const fd = fs.openSync(f, "a");
    writeRandom(fd, n, null);
    fs.closeSync(fd);
    appendedBytes += n;
  });
  console.log(JSON.stringify({
    dbRows: ids.size, dbPageBytes: ids.size * PAGE, filesRewritten: rewritten, rewrittenBytes,
    filesAppended: appendTo.length, appendedBytes, bytes: ids.size * PAGE + rewrittenBytes + appendedBytes,
  }));
} else {
  throw new Error("unknown mode " + cfg.mode);
}
`;

interface GenResult {
  files: number;
  repoBytes: number;
  dbBytes: number;
  rows: number;
}

interface ChangeResult {
  dbRows: number;
  dbPageBytes: number;
  filesRewritten: number;
  rewrittenBytes: number;
  filesAppended: number;
  appendedBytes: number;
  bytes: number;
}

interface SnapResult {
  id: string;
  /** store.open(): the helper started and the bulk copy done. */
  openMs: number;
  catchupMs?: number;
  /** session.final(): from the app stopped to the snapshot complete and durable (helper removed). */
  finalMs: number;
  bulk: Totals;
  final: Totals;
  durableMs: number;
  change?: ChangeResult;
}

interface Totals {
  written: number;
  copied: number;
  patched: number;
  linked: number;
  skipped: number;
  compared: number;
  ms: number;
}

function totals(stats: PassStats[] | undefined): Totals {
  const t: Totals = { written: 0, copied: 0, patched: 0, linked: 0, skipped: 0, compared: 0, ms: 0 };
  for (const s of stats ?? []) {
    t.written += s.bytesWritten;
    t.copied += s.filesCopied;
    t.patched += s.filesPatched;
    t.linked += s.filesLinked;
    t.skipped += s.filesSkipped;
    t.compared += s.bytesCompared;
    t.ms += s.ms;
  }
  return t;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? (s[mid] as number)
    : Math.round(((s[mid - 1] as number) + (s[mid] as number)) / 2);
}

function stat(xs: number[]): { median: number; min: number; max: number; samples: number[] } {
  const r = xs.map((x) => Math.round(x));
  return { median: median(r), min: Math.min(...r), max: Math.max(...r), samples: r };
}

const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
const mib = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;
const now = () => performance.now();
const began = now();

function log(message: string): void {
  process.stderr.write(`[bench:snapshot ${((now() - began) / 1000).toFixed(1)} s] ${message}\n`);
}

async function main(): Promise<void> {
  if (!(GB > 0) || FILES < 2 || RUNS < 1) throw new Error("BENCH_GB > 0, BENCH_FILES >= 2, BENCH_RUNS >= 1");
  const env = await requireEngine();
  for (const image of [NODE_IMAGE, HELPER_IMAGE]) {
    await docker(["image", "inspect", "--format", "{{.Id}}", image]).catch(() => {
      throw new Error(`image ${image} is not in the engine (see the README's Benchmarks section)`);
    });
  }
  const janitor = new DockerJanitor(env);
  const client = new DockerClient({ dockerHost: env.dockerHost, timeoutMs: 60_000 });
  const work = await mkdtemp(join(tmpdir(), "pgu-bench-snap-"));
  const jobIds: string[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () => {
    cleaning ??= (async () => {
      // Helpers the store left (it removes its own; a failure could leave one).
      for (const jobId of jobIds) {
        const ids = (await docker(["ps", "-aq", "--filter", `label=${LABEL_JOB}=${jobId}`]).catch(() => ""))
          .split("\n")
          .filter(Boolean);
        if (ids.length > 0) await run("docker", ["rm", "-f", ...ids]);
      }
      await janitor.cleanup();
      await rm(work, { recursive: true, force: true }).catch(() => undefined);
      client.close();
    })();
    return cleaning;
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      log(`${sig}: removing what the benchmark created`);
      void cleanup().finally(() => process.exit(130));
    });
  }

  try {
    // ---- the data volume and the idle "app" ----
    const volume = janitor.volume(janitor.name("snapdata"));
    await docker(["volume", "create", ...labelArgs(janitor), volume]);
    // Runs before the volume's removal (newest first): every container of this run goes first.
    janitor.onCleanup(async () => {
      const left = await run("docker", ["ps", "-aq", "--filter", `label=${RUN_LABEL}=${janitor.runId}`]);
      const ids = left.stdout.split("\n").filter((id) => id.trim() !== "");
      if (ids.length > 0) await run("docker", ["rm", "-f", "-v", ...ids], { timeoutMs: 60_000 });
    });
    const app = janitor.container(janitor.name("snapapp"));
    await docker([
      "create",
      "--name",
      app,
      ...labelArgs(janitor),
      "--network",
      "none",
      "-v",
      `${volume}:/data`,
      NODE_IMAGE,
      "node",
      "-e",
      "process.on('SIGTERM', () => process.exit(0)); setInterval(() => {}, 1 << 30);",
    ]);
    const startApp = () => docker(["start", app]);
    const stopApp = () => docker(["stop", "-t", "10", app]);
    const mounts: DataMount[] = [{ index: 0, type: "volume", name: volume, destination: "/data" }];

    let seed = 9;
    /** When the data last changed: a snapshot within 2 s of it records the changed files as racy. */
    let lastWrite = Date.now();
    const settle = () => new Promise((r) => setTimeout(r, Math.max(0, lastWrite + 2500 - Date.now())));
    const dataScript = async <T>(cfg: Record<string, unknown>): Promise<T> => {
      const out = await docker(
        [
          "run",
          "--rm",
          "--network",
          "none",
          ...labelArgs(janitor),
          "-v",
          `${volume}:/data`,
          "-e",
          `PGU_BENCH=${JSON.stringify({ ...cfg, seed: seed++ })}`,
          NODE_IMAGE,
          "node",
          "--disable-warning=ExperimentalWarning",
          "-e",
          DATA_SCRIPT,
        ],
        { timeoutMs: STEP_MS },
      );
      lastWrite = Date.now();
      return JSON.parse(out.trim().split("\n").at(-1) ?? "") as T;
    };
    const change = () =>
      dataScript<ChangeResult>({
        mode: "change",
        dbChange: Math.round(CHANGE_BYTES * 0.6),
        filesChange: CHANGE_BYTES - Math.round(CHANGE_BYTES * 0.6),
      });
    const sync = () => run("sync", [], { timeoutMs: 300_000 });
    const duOf = async (paths: Array<[string, string]>): Promise<number[]> => {
      const out = await docker(
        [
          "run",
          "--rm",
          "--network",
          "none",
          ...labelArgs(janitor),
          ...paths.flatMap(([source, target]) => ["-v", `${source}:${target}:ro`]),
          NODE_IMAGE,
          "sh",
          "-c",
          paths.map(([, target]) => `du -s --block-size=1 ${target}`).join(" && "),
        ],
        { timeoutMs: STEP_MS },
      );
      return out
        .trim()
        .split("\n")
        .map((line) => Number(line.split(/\s+/)[0]));
    };
    const emptyVolume = async (what: string) => {
      const name = janitor.volume(janitor.name(what));
      await docker(["volume", "create", ...labelArgs(janitor), name]);
      return name;
    };
    const dropVolume = (name: string) => run("docker", ["volume", "rm", "-f", name], { timeoutMs: 60_000 });
    const timed = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
      const t = now();
      const value = await f();
      return [now() - t, value];
    };

    log(
      `making the data: ${mib(TOTAL_BYTES)} MiB in ${FILES} files (SQLite database ${mib(DB_BYTES)} MiB) in volume ${volume}`,
    );
    const [genMs, gen] = await timed(() =>
      dataScript<GenResult>({
        mode: "gen",
        files: FILES,
        dbBytes: DB_BYTES,
        repoBytes: TOTAL_BYTES - DB_BYTES,
      }),
    );
    await sync();
    log(
      `data made in ${(genMs / 1000).toFixed(1)} s: ${gen.files} files, database ${mib(gen.dbBytes)} MiB (${gen.rows} rows), repository files ${mib(gen.repoBytes)} MiB`,
    );

    /** A snapshot as the updater takes it: bulk copy, the change, [catch-up], app stopped, final. */
    const takeSnapshot = async (
      store: SnapshotStore,
      jobId: string,
      id: string,
      o: { appRunning: boolean; during?: () => Promise<ChangeResult>; catchup?: boolean },
    ): Promise<SnapResult> => {
      const signal = AbortSignal.timeout(STEP_MS);
      if (o.appRunning) await startApp();
      const [openMs, session] = await timed(() => store.open({ jobId, id, container: app, mounts, signal }));
      try {
        const changed = o.during ? await o.during() : undefined;
        let catchupMs: number | undefined;
        if (o.catchup) [catchupMs] = await timed(() => session.catchup(signal));
        if (o.appRunning) await stopApp();
        const pointAt = new Date();
        const [finalMs, answer] = await timed(() => session.final(pointAt, signal));
        const r: SnapResult = {
          id,
          openMs,
          finalMs,
          bulk: totals(session.bulk?.stats),
          final: totals((answer as PassAnswer).stats),
          durableMs: answer.durableMs ?? 0,
        };
        if (catchupMs !== undefined) r.catchupMs = catchupMs;
        if (changed) r.change = changed;
        return r;
      } catch (err) {
        await session.close();
        throw err;
      }
    };

    const s = {
      tar: [] as number[],
      first: [] as number[],
      firstBulk: [] as number[],
      firstFinal: [] as number[],
      tarSync: [] as number[],
      tarExtract: [] as number[],
      tarExtractSync: [] as number[],
      firstBulkHelper: [] as number[],
      fullRestore: [] as number[],
      finalShared: [] as number[],
      finalSharedWritten: [] as number[],
      final: [] as number[],
      finalWritten: [] as number[],
      finalCompared: [] as number[],
      finalHelperMs: [] as number[],
      finalDurableMs: [] as number[],
      catchup: [] as number[],
      finalAfterCatchup: [] as number[],
      finalAfterCatchupCompared: [] as number[],
      restoreChanged: [] as number[],
      restoreChangedWritten: [] as number[],
      storeBytes: [] as number[],
      dataBytes: [] as number[],
      changesKept: [] as number[],
      changeBytes: [] as number[],
    };
    let runsDone = 0;
    for (let r = 0; r < RUNS; r++) {
      if (r > 0 && now() - began > BUDGET_MS * 0.6) {
        log(`budget: stopping after ${r} runs`);
        break;
      }
      const dir = join(work, `store-${r}`);
      const tarDir = join(work, `tar-${r}`);
      await mkdir(dir, { recursive: true });
      await mkdir(tarDir, { recursive: true });
      const store = new SnapshotStore({ client, dir, helperImage: HELPER_IMAGE });
      const jobId = `bench-${janitor.runId}-${r}`;
      jobIds.push(jobId);
      const sid = (k: number) => `${jobId}-s${k}`;

      // 1. Full frozen copies: the first snapshot on a fresh store, and tar (the app is stopped).
      let first: SnapResult | undefined;
      /** The operator's one-shot container; `durable` adds a sync of what it wrote (tar itself does not). */
      const tarContainer = (mountsArgs: string[], script: string) =>
        timed(() =>
          docker(
            [
              "run",
              "--rm",
              "--network",
              "none",
              ...labelArgs(janitor),
              ...mountsArgs,
              NODE_IMAGE,
              "sh",
              "-c",
              script,
            ],
            { timeoutMs: STEP_MS },
          ),
        );
      const tarOnce = async () => {
        await sync();
        const [ms] = await tarContainer(
          ["-v", `${volume}:/data:ro`, "-v", `${tarDir}:/out`],
          "tar -cf /out/x.tar -C /data .",
        );
        s.tar.push(ms);
      };
      const tarSyncOnce = async () => {
        await sync();
        const [ms] = await tarContainer(
          ["-v", `${volume}:/data:ro`, "-v", `${tarDir}:/out`],
          "tar -cf /out/y.tar -C /data . && sync /out/y.tar",
        );
        s.tarSync.push(ms);
        await rm(join(tarDir, "y.tar"), { force: true });
      };
      const firstOnce = async () => {
        // Files written within 2 s of a pass are "racy" (compared by content next time, never
        // shared): wait that out, so that s2 below shares the unchanged database with s1.
        await settle();
        await sync();
        first = await takeSnapshot(store, jobId, sid(1), { appRunning: false });
        s.first.push(first.openMs + first.finalMs);
        s.firstBulk.push(first.openMs);
        s.firstBulkHelper.push(first.bulk.ms);
        s.firstFinal.push(first.finalMs);
      };
      const copies = [tarOnce, firstOnce, tarSyncOnce];
      for (let i = 0; i < copies.length; i++)
        await (copies[(i + r) % copies.length] as () => Promise<void>)();
      log(
        `run ${r + 1}/${RUNS}: first full snapshot ${Math.round(s.first.at(-1) ?? 0)} ms (bulk ${Math.round(first?.openMs ?? 0)} + final ${Math.round(first?.finalMs ?? 0)}), tar ${Math.round(s.tar.at(-1) ?? 0)} ms, tar + sync ${Math.round(s.tarSync.at(-1) ?? 0)} ms`,
      );

      // 2. Full restores into empty volumes.
      const forTar = await emptyVolume(`tarx-${r}`);
      const forRestore = await emptyVolume(`full-${r}`);
      const forTarSync = await emptyVolume(`tarxs-${r}`);
      const tarExtractOnce = async () => {
        await sync();
        const [ms] = await tarContainer(
          ["-v", `${forTar}:/data`, "-v", `${tarDir}:/out:ro`],
          "tar -xpf /out/x.tar -C /data",
        );
        s.tarExtract.push(ms);
      };
      const tarExtractSyncOnce = async () => {
        await sync();
        const [ms] = await tarContainer(
          ["-v", `${forTarSync}:/data`, "-v", `${tarDir}:/out:ro`],
          "tar -xpf /out/x.tar -C /data && sync -f /data",
        );
        s.tarExtractSync.push(ms);
      };
      const fullRestoreOnce = async () => {
        await sync();
        const [ms] = await timed(() =>
          store.restore({
            jobId,
            id: sid(1),
            mounts: [{ index: 0, type: "volume", name: forRestore, destination: "/data" }],
            signal: AbortSignal.timeout(STEP_MS),
          }),
        );
        s.fullRestore.push(ms);
      };
      const restores = [tarExtractOnce, fullRestoreOnce, tarExtractSyncOnce];
      for (let i = 0; i < restores.length; i++) {
        await (restores[(i + r) % restores.length] as () => Promise<void>)();
      }
      await dropVolume(forTar);
      await dropVolume(forTarSync);
      await dropVolume(forRestore);
      await rm(tarDir, { recursive: true, force: true });
      log(
        `run ${r + 1}/${RUNS}: full restore into an empty volume ${Math.round(s.fullRestore.at(-1) ?? 0)} ms, tar -x ${Math.round(s.tarExtract.at(-1) ?? 0)} ms, tar -x + sync ${Math.round(s.tarExtractSync.at(-1) ?? 0)} ms`,
      );

      // 3. Snapshots with a change between the bulk copy and the stop.
      const s2 = await takeSnapshot(store, jobId, sid(2), { appRunning: true, during: change });
      s.finalShared.push(s2.finalMs);
      s.finalSharedWritten.push(s2.final.written);
      const before3 = await change();
      const s3 = await takeSnapshot(store, jobId, sid(3), { appRunning: true, during: change });
      s.final.push(s3.finalMs);
      s.finalWritten.push(s3.final.written);
      s.finalCompared.push(s3.final.compared);
      s.finalHelperMs.push(s3.final.ms);
      s.finalDurableMs.push(s3.durableMs);
      const before4 = await change();
      const s4 = await takeSnapshot(store, jobId, sid(4), {
        appRunning: true,
        during: change,
        catchup: true,
      });
      s.catchup.push(s4.catchupMs ?? Number.NaN);
      s.finalAfterCatchup.push(s4.finalMs);
      s.finalAfterCatchupCompared.push(s4.final.compared);
      for (const c of [s2.change, before3, s3.change, before4, s4.change]) if (c) s.changeBytes.push(c.bytes);
      log(
        `run ${r + 1}/${RUNS}: final pass ${Math.round(s3.finalMs)} ms (${mib(s3.final.written)} MiB written; helper ${s3.final.ms} ms + durable ${s3.durableMs} ms); database shared with the base: ${Math.round(s2.finalMs)} ms (${mib(s2.final.written)} MiB); after a catch-up pass of ${Math.round(s4.catchupMs ?? 0)} ms: ${Math.round(s4.finalMs)} ms (${mib(s4.final.compared)} MiB compared)`,
      );

      // 4. Disk of the three kept snapshots.
      await store.remove([sid(1)], jobId, AbortSignal.timeout(STEP_MS));
      const [storeBytes, dataBytes] = (await duOf([
        [dir, "/store"],
        [volume, "/data"],
      ])) as [number, number];
      s.storeBytes.push(storeBytes);
      s.dataBytes.push(dataBytes);
      // What changed since the oldest kept snapshot (s2): everything s3 and s4 took in.
      s.changesKept.push(before3.bytes + (s3.change?.bytes ?? 0) + before4.bytes + (s4.change?.bytes ?? 0));
      log(
        `run ${r + 1}/${RUNS}: 3 kept snapshots use ${mib(storeBytes)} MiB, the data ${mib(dataBytes)} MiB`,
      );

      // 5. Restore with a change made after the snapshot.
      const after = await change();
      s.changeBytes.push(after.bytes);
      const [restoreMs, restored] = await timed(() =>
        store.restore({ jobId, id: sid(4), mounts, signal: AbortSignal.timeout(STEP_MS) }),
      );
      lastWrite = Date.now();
      s.restoreChanged.push(restoreMs);
      s.restoreChangedWritten.push(restored.stats.reduce((n, m) => n + m.stats.bytesWritten, 0));
      log(
        `run ${r + 1}/${RUNS}: restore with ${mib(after.bytes)} MiB changed ${Math.round(restoreMs)} ms (${mib(s.restoreChangedWritten.at(-1) ?? 0)} MiB written)`,
      );

      await store.remove([sid(2), sid(3), sid(4)], jobId, AbortSignal.timeout(STEP_MS));
      await rm(dir, { recursive: true, force: true });
      runsDone += 1;
    }

    // ---- optional: one real update through the JobRunner on the same volume ----
    let e2e: Record<string, unknown> | undefined;
    if (E2E && now() - began < BUDGET_MS * 0.8) {
      log("end to end: a real update v1 -> v2 through the JobRunner on the same volume");
      e2e = await endToEnd(env.dockerHost, janitor, volume, change, work);
      log(`end to end: ${JSON.stringify(e2e)}`);
    }

    const first = median(s.first);
    const final = median(s.final);
    const storeBytes = median(s.storeBytes);
    const dataBytes = median(s.dataBytes);
    const changesKept = median(s.changesKept);
    const dbBytes = gen.dbBytes;
    const result = {
      bench: "snapshot",
      runs: runsDone,
      data: {
        files: gen.files,
        bytes: gen.repoBytes + gen.dbBytes,
        sqlite_bytes: gen.dbBytes,
        du_bytes: dataBytes,
        change_bytes: median(s.changeBytes),
        change:
          "60% SQLite UPDATEs of random rows (one row per 4 KiB page), 40% repository files rewritten or appended",
      },
      first_snapshot_ms: {
        ...stat(s.first),
        bulk_ms: Math.round(median(s.firstBulk)),
        final_ms: Math.round(median(s.firstFinal)),
        bulk_helper_pass_ms: median(s.firstBulkHelper),
        note: "fresh store, app stopped: a full frozen copy, durable (fsync of every file)",
      },
      baseline_tar_ms: stat(s.tar),
      baseline_tar_sync_ms: stat(s.tarSync),
      first_snapshot_vs_tar: ratio(first, median(s.tar)),
      first_snapshot_vs_tar_sync: ratio(first, median(s.tarSync)),
      final_pass: {
        ms: stat(s.final),
        written_bytes: median(s.finalWritten),
        compared_bytes: median(s.finalCompared),
        helper_pass_ms: median(s.finalHelperMs),
        durable_ms: median(s.finalDurableMs),
        scenario:
          "change before the bulk copy and between the bulk copy and the stop, no catch-up: the whole change in the frozen pass",
        vs_full_frozen_copy: ratio(final, first),
        full_frozen_copy: "the first full snapshot with the app stopped (first_snapshot_ms)",
        vs_tar: ratio(final, median(s.tar)),
        after_catchup_ms: stat(s.finalAfterCatchup),
        after_catchup_compared_bytes: median(s.finalAfterCatchupCompared),
        catchup_ms: stat(s.catchup),
        db_shared_with_base_ms: stat(s.finalShared),
        db_shared_with_base_written_bytes: median(s.finalSharedWritten),
      },
      restore: {
        changed_ms: stat(s.restoreChanged),
        changed_written_bytes: median(s.restoreChangedWritten),
        full_into_empty_volume_ms: stat(s.fullRestore),
        baseline_tar_extract_into_empty_volume_ms: stat(s.tarExtract),
        baseline_tar_extract_sync_into_empty_volume_ms: stat(s.tarExtractSync),
        changed_vs_full: ratio(median(s.restoreChanged), median(s.fullRestore)),
        changed_vs_tar_extract: ratio(median(s.restoreChanged), median(s.tarExtract)),
        changed_vs_tar_extract_sync: ratio(median(s.restoreChanged), median(s.tarExtractSync)),
      },
      disk_3_kept: {
        store_bytes: storeBytes,
        data_bytes: dataBytes,
        changes_since_oldest_kept_bytes: changesKept,
        vs_data_plus_changes: ratio(storeBytes, dataBytes + changesKept),
        vs_data: ratio(storeBytes, dataBytes),
        sqlite_copies_bytes: 2 * dbBytes,
      },
      goals: {
        first_snapshot_le_1_2x_tar: first <= 1.2 * median(s.tar),
        final_le_300ms: final <= 300,
        final_le_0_1x_full_frozen_copy: final <= 0.1 * first,
        restore_changed_le_1s: median(s.restoreChanged) <= 1000,
        restore_changed_le_0_2x_full: median(s.restoreChanged) <= 0.2 * median(s.fullRestore),
        disk_le_1_1x_data_plus_changes: storeBytes <= 1.1 * (dataBytes + changesKept),
      },
      ...(e2e ? { end_to_end: e2e } : {}),
      notes: [
        "A changed file is a new full copy in each snapshot (hard links share only unchanged files; ext4 has no reflinks): the SQLite database is copied whole into every snapshot taken after it changed, so 3 kept snapshots hold about 2 extra database copies beyond the data plus the changes.",
        "The frozen pass compares and writes 4 KiB blocks (a database page): random row UPDATEs write about the change itself (written_bytes), but the whole database is read and compared.",
        "A database unchanged since the base snapshot is a hard link after the bulk copy; if it then changes before the stop, the frozen pass copies it whole (db_shared_with_base_ms) unless a catch-up pass ran. The updater runs a catch-up pass before the stop (after_catchup_ms).",
        "The store fsyncs every file it writes (about 2,000 fsyncs for a full copy) and the directories; tar does not (baseline_tar_sync_ms adds a sync of the archive, the extraction one a syncfs). Page cache warm (the data was just written or read).",
        "Restores are checked: after copying, the helper lists the snapshot and the volume and compares every entry.",
      ],
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await cleanup();
  }
}

/** One real update v1 -> v2 (no migration) of the fixture app on `volume`, a change made before the pull. */
async function endToEnd(
  dockerHost: string,
  janitor: DockerJanitor,
  volume: string,
  change: () => Promise<ChangeResult>,
  work: string,
): Promise<Record<string, unknown>> {
  const fixtures = buildFixtures();
  const v1 = fixtures.v1 as Fixture;
  const v2 = fixtures.v2 as Fixture;
  const port = await freePort();
  const name = janitor.container(janitor.name("e2eapp"));
  await docker([
    "run",
    "-d",
    "--name",
    name,
    ...labelArgs(janitor),
    "--network",
    "host",
    "--init",
    "-e",
    `APP_PORT=${port}`,
    "-v",
    `${volume}:/data`,
    "--restart",
    "no",
    v1.ref,
  ]);
  await waitHealthy(port, 20_000);
  const tag = `v${v2.version}`;
  const engine = new DockerEngineApi({
    dockerHost,
    helperImage: HELPER_IMAGE,
    appContainer: name,
    snapshotDir: join(work, "e2e", "snapshots"),
    healthDeadlineMs: 15_000,
    healthSoakMs: 500,
    healthIntervalMs: 50,
    migrationTimeoutMs: 60_000,
  });
  let changed: ChangeResult | undefined;
  const pull = engine.pull.bind(engine);
  engine.pull = async (ctx: StepContext) => {
    changed = await change();
    await pull(ctx);
  };
  const runner = new JobRunner({
    store: new FileJobStore(join(work, "e2e", "state")),
    source: new MemoryReleaseSource().add(tag, {
      manifest: manifestFor(tag, {
        image: imageOf(v2),
        migration: { required: false, command: [], estimated_downtime_seconds: 0 },
      }),
    }),
    verifier: new FakeVerifier(),
    engine,
    clock: systemClock,
    newId: () => crypto.randomUUID(),
    log: silentLogger,
  });
  let jobId: string | undefined;
  try {
    await runner.open();
    const t0 = now();
    const job = await runner.start({ tag });
    jobId = job.id;
    const end: Job = await finished(runner, job.id, STEP_MS);
    const updateMs = now() - t0;
    const out = end.steps.map((step) => step.output).join("");
    if (end.state !== "committed") {
      throw new Error(`end to end: the update did not commit (${end.state}): ${out.slice(-800)}`);
    }
    const stepMs = (re: RegExp) => {
      const step = end.steps.find((x) => re.test(x.title));
      return step?.endedAt ? Date.parse(step.endedAt) - Date.parse(step.startedAt) : undefined;
    };
    const gap = /the app stopped for the final pass and the start: (\d+) ms/.exec(out)?.[1];
    const finalPass = /final pass (.*?), durable in (\d+) ms; the app has been stopped for (\d+) ms/.exec(
      out,
    );
    return {
      update_ms: Math.round(updateMs),
      snapshot_step_ms: stepMs(/bulk copy/),
      swap_step_ms: stepMs(/^swap the app container/),
      app_stopped_until_new_started_ms: gap ? Number(gap) : undefined,
      catchup_pass: /catch-up pass while the app serves: (.*)/.exec(out)?.[1],
      app_stopped_until_snapshot_durable_ms: finalPass ? Number(finalPass[3]) : undefined,
      final_pass: finalPass?.[1],
      change_bytes_before_the_pull: changed?.bytes,
      note: "fresh store (the first update: the bulk copy is a full copy); the change lands after the bulk copy, before the pull; app_stopped_until_new_started_ms is the app's downtime as the swap reports it: the stop, the final pass, the journal and the start of the new container",
    };
  } finally {
    await runner.shutdown(1000).catch(() => undefined);
    engine.client.close();
    const ids = new Set<string>();
    for (const filter of [
      `label=${RUN_LABEL}=${janitor.runId}`,
      ...(jobId ? [`label=${LABEL_JOB}=${jobId}`] : []),
    ]) {
      for (const id of (await docker(["ps", "-aq", "--filter", filter]).catch(() => "")).split("\n")) {
        if (id.trim()) ids.add(id.trim());
      }
    }
    const gone = [...ids];
    if (gone.length > 0) await run("docker", ["rm", "-f", ...gone], { timeoutMs: 60_000 });
  }
}

async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 23_000 + Math.floor(Math.random() * 5000);
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free loopback port found in 50 tries");
}

async function waitHealthy(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(500) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the app on port ${port} did not answer 200 on /health within ${ms} ms`);
}

await main();
