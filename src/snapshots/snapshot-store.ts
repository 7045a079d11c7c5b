/**
 * The snapshot store: point-in-time copies of the app's data, kept in the updater's snapshot
 * directory and written by the helper program (./helper.ts) in a container of the updater's own
 * image, with the app's data mounts and the store mounted. The updater itself never reads or
 * writes the app's files: they belong to the app's users, and the updater runs unprivileged.
 *
 * On disk (see docs/operations.md, "Snapshots on disk"):
 *   <dir>/<snapshot id>/manifest.json   written last: a folder without it is not a snapshot
 *   <dir>/<snapshot id>/index.json      what every entry's source looked like at the final pass
 *   <dir>/<snapshot id>/m<N>/           mount N's files (owner, mode, times kept); unchanged
 *                                       files are hard links shared with the previous snapshot
 *   <dir>/<snapshot id>.partial/        a snapshot being written; removed when its job ends
 *   <dir>/.jobs/<job id>/               the updater's own files of a job (mailbox, saved config)
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ContainerCreateBody, DockerClient, MountSpec } from "../engine/docker-client.js";
import { errorMessage, UpdaterError } from "../errors.js";
import { writeFileAtomic } from "../store/atomic-write.js";
import type { HelperConfig, HelperMount, PassStats } from "./helper.js";
import { ensureLocalHelperImage, LOCAL_HELPER_REPO } from "./local-helper-image.js";

export const LABEL_JOB = "io.processgit.updater.job";
export const LABEL_ROLE = "io.processgit.updater.role";
/** On snapshot helpers: the app container whose data they copy (one updater per app). */
export const LABEL_APP = "io.processgit.updater.app";

/** One data mount of the app, as a snapshot holds it (tree `m<index>`). */
export interface DataMount {
  index: number;
  type: "volume" | "bind";
  /** Volume name (type volume). */
  name?: string;
  /** Host path (type bind). */
  source?: string;
  /** Where the app sees it. */
  destination: string;
}

/** manifest.json of a complete snapshot. */
export interface SnapshotManifest {
  schema: 1;
  id: string;
  job: string;
  /** The snapshot whose unchanged files this one shares, if any. */
  base: string | null;
  createdAt: string;
  /** The consistency point: when the old version stopped (or was frozen) before the final pass. */
  pointAt: string;
  completedAt: string;
  container: string;
  mounts: DataMount[];
  trees: Array<{ index: number; files: number; bytes: number; unsupported: string[] }>;
}

export interface SnapshotStoreOptions {
  client: DockerClient;
  /** The snapshot directory as the updater sees it. */
  dir: string;
  /** An image with node 22 or later to run the helper in; default: the updater's own image. */
  helperImage?: string;
  /** How long a snapshot helper waits for its next command before it gives up. */
  idleLimitMs?: number;
  /** The app container's name, labelled on every helper (so that stale ones can be found). */
  app?: string;
}

interface Placement {
  image: string;
  /** The mount that gives the helper the store. */
  storeMount: MountSpec;
  /** The store's path inside the helper. */
  storePath: string;
}

const DATA_ROOT = "/pgu/data";

/** The helper's source, read once: the helper is always the code of the updater that runs it. */
let helperSource: { code: string; inputType: string } | undefined;
async function loadHelperSource(): Promise<{ code: string; inputType: string }> {
  if (helperSource) return helperSource;
  const js = fileURLToPath(new URL("./helper.js", import.meta.url));
  const ts = fileURLToPath(new URL("./helper.ts", import.meta.url));
  // dist/ holds compiled JavaScript; a run from the sources (tests) passes the TypeScript, which
  // node 22.18+ runs by stripping its types.
  const found = existsSync(js)
    ? { code: await readFile(js, "utf8"), inputType: "module" }
    : { code: await readFile(ts, "utf8"), inputType: "module-typescript" };
  found.code = found.code.replace(/^\/\/# sourceMappingURL=.*$/m, "");
  if (Buffer.byteLength(found.code) > 120 * 1024) {
    throw new UpdaterError("internal", "the snapshot helper's source is larger than one argument may be");
  }
  helperSource = found;
  return found;
}

export class SnapshotStore {
  private placement: Promise<Placement> | undefined;
  private placed: Placement | undefined;

  constructor(private readonly opts: SnapshotStoreOptions) {}

  get dir(): string {
    return this.opts.dir;
  }

  /** The folder of the updater's own files for a job (created on demand, owned by the updater). */
  jobDir(jobId: string): string {
    return join(this.opts.dir, ".jobs", jobId);
  }

  /** Complete snapshots, newest consistency point first. Incomplete and unreadable ones are left out. */
  async list(): Promise<SnapshotManifest[]> {
    const names = await readdir(this.opts.dir).catch(() => [] as string[]);
    const out: SnapshotManifest[] = [];
    for (const name of names) {
      if (name.startsWith(".") || name.endsWith(".partial")) continue;
      const m = await this.manifest(name).catch(() => undefined);
      if (m) out.push(m);
    }
    return out.sort((a, b) => (a.pointAt < b.pointAt ? 1 : a.pointAt > b.pointAt ? -1 : 0));
  }

  async manifest(id: string): Promise<SnapshotManifest> {
    const text = await readFile(join(this.opts.dir, id, "manifest.json"), "utf8");
    const m = JSON.parse(text) as SnapshotManifest;
    if (m.schema !== 1 || m.id !== id) throw new Error(`snapshot ${id}: unknown manifest`);
    return m;
  }

  /** Folders of snapshots being written (or left by a crash): `<id>.partial`. */
  async partials(): Promise<string[]> {
    const names = await readdir(this.opts.dir).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith(".partial")).map((n) => n.slice(0, -".partial".length));
  }

  /**
   * Where the helper runs and how it reaches the store: checked at pre-flight, so that a wrong
   * deployment fails before anything changes.
   */
  resolvePlacement(): Promise<Placement> {
    this.placement ??= this.findPlacement()
      .then((p) => {
        this.placed = p;
        return p;
      })
      .catch((err: unknown) => {
        this.placement = undefined;
        throw err;
      });
    return this.placement;
  }

  private async findPlacement(): Promise<Placement> {
    const dir = this.opts.dir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const self = await ownContainerId();
    if (!self) {
      // Outside a container: the configured image, else one made from the node that runs us.
      const image = this.opts.helperImage ?? (await ensureLocalHelperImage(this.opts.client));
      return {
        image,
        storeMount: { Type: "bind", Source: dir, Target: "/pgu/store" },
        storePath: "/pgu/store",
      };
    }
    const me = await this.opts.client.inspectContainer(self);
    const mounts = (me.Mounts ?? []).filter(
      (m) => dir === m.Destination || dir.startsWith(`${m.Destination.replace(/\/$/, "")}/`),
    );
    mounts.sort((a, b) => b.Destination.length - a.Destination.length);
    const m = mounts[0];
    if (!m || (m.Type !== "volume" && m.Type !== "bind") || m.RW === false) {
      throw new UpdaterError(
        "failed_precondition",
        `the snapshot directory ${dir} is not on a writable volume or bind mount of the updater's container ${self.slice(0, 12)}: mount one there (deploy/docker-compose.yml mounts the state volume on /var/lib/processgit-updater)`,
        { reason: "PREFLIGHT_FAILED" },
      );
    }
    const rest = dir.slice(m.Destination.replace(/\/$/, "").length);
    return {
      image: this.opts.helperImage ?? me.Image,
      storeMount: {
        Type: m.Type,
        Source: m.Type === "volume" ? (m.Name ?? "") : (m.Source ?? ""),
        Target: "/pgu/state",
      },
      storePath: `/pgu/state${rest}`,
    };
  }

  /**
   * Starts a snapshot session: the helper copies the data live (the bulk copy) and then waits for
   * passes; resolves once the bulk copy is done.
   */
  async open(params: {
    jobId: string;
    id: string;
    container: string;
    mounts: DataMount[];
    signal: AbortSignal;
    onHelper?: (containerId: string) => Promise<void>;
  }): Promise<SnapshotSession> {
    const place = await this.resolvePlacement();
    const base = (await this.list())[0];
    const mailbox = join(this.jobDir(params.jobId), `mailbox-${params.id}`);
    await rm(mailbox, { recursive: true, force: true });
    await mkdir(mailbox, { recursive: true, mode: 0o700 });
    const cfg: HelperConfig = {
      command: "snapshot",
      store: place.storePath,
      id: params.id,
      mounts: helperMounts(params.mounts, base),
      mailbox: `${place.storePath}/.jobs/${params.jobId}/mailbox-${params.id}`,
      idleLimitMs: this.opts.idleLimitMs ?? 6 * 3600_000,
      manifest: { job: params.jobId, container: params.container, mounts: params.mounts },
    };
    if (base) cfg.base = base.id;
    const name = `pgu-snapshot-${params.id}`;
    const id = await this.createHelper(name, cfg, params.mounts, {
      readOnly: true,
      role: "snapshot",
      jobId: params.jobId,
      place,
      signal: params.signal,
    });
    await params.onHelper?.(id);
    const session = new SnapshotSession(this.opts.client, id, mailbox, params.id, base?.id);
    try {
      await this.opts.client.startContainer(id, params.signal);
      session.bulk = await session.await("ready.json", params.signal);
    } catch (err) {
      await session.close();
      throw err;
    }
    return session;
  }

  /** Makes the mounts equal to snapshot `id`, copying only what differs; checks the result. */
  async restore(params: {
    jobId: string;
    id: string;
    mounts: DataMount[];
    signal: AbortSignal;
  }): Promise<{ ms: number; stats: Array<{ index: number; stats: PassStats; entries: number }> }> {
    const place = await this.resolvePlacement();
    const cfg: HelperConfig = {
      command: "restore",
      store: place.storePath,
      id: params.id,
      mounts: params.mounts.map((m) => ({ index: m.index, path: `${DATA_ROOT}/${m.index}` })),
    };
    const began = Date.now();
    const out = await this.runOnce(`pgu-restore-${params.jobId}`, cfg, params.mounts, {
      readOnly: false,
      role: "restore",
      jobId: params.jobId,
      place,
      signal: params.signal,
    });
    const done = out.find((e) => e.event === "restored") as
      | { mounts: Array<{ index: number; stats: PassStats; entries: number }> }
      | undefined;
    return { ms: Date.now() - began, stats: done?.mounts ?? [] };
  }

  /** What a snapshot of these mounts would add on top of the newest one (bytes of changed files). */
  async estimate(params: {
    jobId: string;
    mounts: DataMount[];
    signal: AbortSignal;
  }): Promise<{ bytes: number; newBytes: number; files: number; base?: string }> {
    const place = await this.resolvePlacement();
    const base = (await this.list())[0];
    const cfg: HelperConfig = {
      command: "estimate",
      store: place.storePath,
      mounts: helperMounts(params.mounts, base),
    };
    if (base) cfg.base = base.id;
    const out = await this.runOnce(`pgu-estimate-${params.jobId}`, cfg, params.mounts, {
      readOnly: true,
      role: "estimate",
      jobId: params.jobId,
      place,
      signal: params.signal,
    });
    const est = out.find((e) => e.event === "estimate") as
      | { mounts: Array<{ bytes: number; newBytes: number; files: number }> }
      | undefined;
    const sum = { bytes: 0, newBytes: 0, files: 0 };
    for (const m of est?.mounts ?? []) {
      sum.bytes += m.bytes;
      sum.newBytes += m.newBytes;
      sum.files += m.files;
    }
    return base ? { ...sum, base: base.id } : sum;
  }

  /** Removes snapshots (complete or partial) by id, and the updater's files of their jobs. */
  async remove(ids: string[], jobId: string, signal?: AbortSignal): Promise<string[]> {
    if (ids.length === 0) return [];
    const place = await this.resolvePlacement();
    const out = await this.runOnce(
      `pgu-prune-${jobId}`,
      { command: "prune", store: place.storePath, remove: ids },
      [],
      { readOnly: false, role: "prune", jobId, place, signal: signal ?? new AbortController().signal },
    );
    const pruned = out.find((e) => e.event === "pruned") as { removed: string[] } | undefined;
    return pruned?.removed ?? [];
  }

  /**
   * A command that restores one mount from a snapshot without the updater (for a human): empty the
   * mount, copy the tree back with owners, modes, times and links (`cp -a`, in the helper image).
   */
  manualRestoreCommand(id: string, m: DataMount): string {
    const p = this.placed;
    const store = p?.storeMount.Source
      ? `${p.storeMount.Source}:${p.storeMount.Target}:ro`
      : `${this.opts.dir}:/pgu/store:ro`;
    const inside = p?.storePath ?? "/pgu/store";
    const target = m.type === "volume" ? m.name : m.source;
    // The image made from the updater's node has no shell: name one that has sh, find and cp.
    const image = !p || p.image.startsWith(`${LOCAL_HELPER_REPO}:`) ? "debian:bookworm-slim" : p.image;
    return `docker run --rm --user 0 --network none -v ${target}:/restore -v ${store} --entrypoint sh ${image} -c 'find /restore -mindepth 1 -delete && cp -a ${inside}/${id}/m${m.index}/. /restore/' (mount ${m.destination})`;
  }

  /** Saves a file of the updater's own for a job (e.g. the previous container's configuration). */
  async saveJobFile(jobId: string, name: string, text: string): Promise<string> {
    const dir = this.jobDir(jobId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, name);
    await writeFileAtomic(path, text);
    return path;
  }

  /** Removes the updater's own files of jobs not in `keep`. */
  async pruneJobDirs(keep: ReadonlySet<string>): Promise<void> {
    const root = join(this.opts.dir, ".jobs");
    for (const name of await readdir(root).catch(() => [] as string[])) {
      if (!keep.has(name)) await rm(join(root, name), { recursive: true, force: true });
    }
  }

  private async runOnce(
    name: string,
    cfg: HelperConfig,
    mounts: DataMount[],
    o: HelperRun,
  ): Promise<Array<Record<string, unknown>>> {
    const client = this.opts.client;
    await removeIfHelper(client, name);
    const id = await this.createHelper(name, cfg, mounts, o);
    try {
      await client.startContainer(id, o.signal);
      const code = await client.wait(id, o.signal, { timeoutMs: 6 * 3600_000 });
      const logs = await client.logs(id, { maxBytes: 256 * 1024 });
      const events = parseEvents(logs.output);
      if (code !== 0) {
        const failure = events.find((e) => e.event === "error") as { message?: string } | undefined;
        throw new UpdaterError(
          "failed_precondition",
          `the snapshot helper (${cfg.command}) failed with status ${code}: ${failure?.message ?? logs.stderr.trim().split("\n").slice(-3).join(" | ")}`,
        );
      }
      return events;
    } finally {
      await client.removeContainer(id, { force: true }).catch(() => {});
    }
  }

  private async createHelper(
    name: string,
    cfg: HelperConfig,
    mounts: DataMount[],
    o: HelperRun,
  ): Promise<string> {
    const source = await loadHelperSource();
    const body: ContainerCreateBody = {
      Image: o.place.image,
      User: "0:0",
      WorkingDir: "/",
      Entrypoint: ["node", `--input-type=${source.inputType}`, "-e", source.code],
      Cmd: [],
      Env: [`PGU_HELPER=${JSON.stringify(cfg)}`, "PGU_HELPER_MAIN=1", "NODE_OPTIONS="],
      Labels: {
        [LABEL_JOB]: o.jobId,
        [LABEL_ROLE]: o.role,
        ...(this.opts.app ? { [LABEL_APP]: this.opts.app } : {}),
      },
      HostConfig: {
        NetworkMode: "none",
        ReadonlyRootfs: true,
        // Root only for what copying owners' files needs: read any file, set owners and modes.
        CapDrop: ["ALL"],
        CapAdd: ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID"],
        SecurityOpt: ["no-new-privileges"],
        Mounts: [
          ...mounts.map(
            (m): MountSpec =>
              m.type === "volume"
                ? { Type: "volume", Source: m.name, Target: `${DATA_ROOT}/${m.index}`, ReadOnly: o.readOnly }
                : { Type: "bind", Source: m.source, Target: `${DATA_ROOT}/${m.index}`, ReadOnly: o.readOnly },
          ),
          o.place.storeMount,
        ],
      },
    };
    await removeIfHelper(this.opts.client, name);
    try {
      return await this.opts.client.createContainer(name, body, o.signal);
    } catch (err) {
      if (err instanceof UpdaterError && err.code === "not_found") {
        throw new UpdaterError(
          "failed_precondition",
          `the snapshot helper image ${o.place.image} is not in the engine: ${errorMessage(err)} (PROCESSGIT_UPDATER_HELPER_IMAGE)`,
          { cause: err, reason: "PREFLIGHT_FAILED" },
        );
      }
      throw err;
    }
  }
}

interface HelperRun {
  readOnly: boolean;
  role: string;
  jobId: string;
  place: Placement;
  signal: AbortSignal;
}

/**
 * A snapshot being written: the helper runs, the bulk copy is done, and it waits for passes.
 * `final` is called with the app stopped or frozen; once it resolves, the snapshot is complete
 * and durable under its id.
 */
export class SnapshotSession {
  bulk: PassAnswer | undefined;
  private next = 1;

  constructor(
    private readonly client: DockerClient,
    readonly containerId: string,
    private readonly mailbox: string,
    readonly id: string,
    readonly base: string | undefined,
  ) {}

  /** Another live pass, so that the frozen one has less to do. */
  catchup(signal: AbortSignal): Promise<PassAnswer> {
    return this.command({ pass: "catchup" }, signal, 5);
  }

  /** The pass with the app stopped or frozen; `pointAt` is when it stopped writing. */
  async final(pointAt: Date, signal: AbortSignal): Promise<PassAnswer> {
    const answer = await this.command({ pass: "final", pointAt: pointAt.toISOString() }, signal, 1);
    // The helper exits by itself; removing it is not part of the app's downtime.
    void this.client
      .wait(this.containerId, undefined, { timeoutMs: 10_000 })
      .catch(() => {})
      .then(() => this.close());
    return answer;
  }

  /** Stops the helper (the partial snapshot stays for `SnapshotStore.remove`). */
  async close(): Promise<void> {
    await this.client.removeContainer(this.containerId, { force: true }).catch(() => {});
    await rm(this.mailbox, { recursive: true, force: true }).catch(() => {});
  }

  private async command(
    cmd: { pass: string; pointAt?: string },
    signal: AbortSignal,
    pollMs: number,
  ): Promise<PassAnswer> {
    const n = this.next++;
    const temp = join(this.mailbox, `.cmd-${n}.json`);
    await writeFile(temp, JSON.stringify(cmd), { mode: 0o644 });
    await rename(temp, join(this.mailbox, `cmd-${n}.json`));
    return this.await(`ack-${n}.json`, signal, pollMs);
  }

  /**
   * Waits for an answer file, failing when the helper reports an error or stops. Polled: the
   * final pass's answer every millisecond (it ends the app's downtime), the bulk copy's rarely.
   */
  async await(file: string, signal: AbortSignal, pollMs = 25): Promise<PassAnswer> {
    let lastCheck = Date.now();
    for (;;) {
      signal.throwIfAborted();
      const text = await readFile(join(this.mailbox, file), "utf8").catch(() => undefined);
      if (text) return JSON.parse(text) as PassAnswer;
      const failure = await readFile(join(this.mailbox, "error.json"), "utf8").catch(() => undefined);
      if (failure) {
        const { error } = JSON.parse(failure) as { error?: string };
        throw new UpdaterError(
          "failed_precondition",
          `the snapshot helper failed: ${error ?? "unknown error"}`,
          {
            reason: "SNAPSHOT_FAILED",
          },
        );
      }
      if (Date.now() - lastCheck > 500) {
        lastCheck = Date.now();
        const c = await this.client.inspectContainer(this.containerId, signal).catch(() => undefined);
        if (c?.State?.Running !== true) {
          // It may have answered just before it stopped.
          const late = await readFile(join(this.mailbox, file), "utf8").catch(() => undefined);
          if (late) return JSON.parse(late) as PassAnswer;
          const logs = await this.client.logs(this.containerId, { maxBytes: 8192 }).catch(() => undefined);
          throw new UpdaterError(
            "failed_precondition",
            `the snapshot helper stopped (${c ? `${c.State?.Status}, exit ${c.State?.ExitCode}` : "gone"}) before answering: ${logs?.stderr.trim().split("\n").slice(-3).join(" | ") ?? ""}`,
            { reason: "SNAPSHOT_FAILED" },
          );
        }
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }
}

export interface PassAnswer {
  ok: boolean;
  pass: string;
  /** bulk: indexes of mounts left out because they are not directories. */
  skipped?: number[];
  stats?: PassStats[];
  durableMs?: number;
}

function helperMounts(mounts: DataMount[], base: SnapshotManifest | undefined): HelperMount[] {
  return mounts.map((m) => {
    const out: HelperMount = { index: m.index, path: `${DATA_ROOT}/${m.index}` };
    const same = base?.mounts.find(
      (b) => b.type === m.type && (m.type === "volume" ? b.name === m.name : b.source === m.source),
    );
    if (same && base?.trees.some((t) => t.index === same.index)) out.baseIndex = same.index;
    return out;
  });
}

function parseEvents(output: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of output.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {}
  }
  return out;
}

async function removeIfHelper(client: DockerClient, name: string): Promise<void> {
  const existing = await client.inspectContainer(name).catch(() => undefined);
  if (!existing) return;
  if (!existing.Config.Labels?.[LABEL_ROLE]) {
    throw new UpdaterError(
      "failed_precondition",
      `a container named ${name} exists and was not made by the updater; remove or rename it`,
    );
  }
  await client.removeContainer(existing.Id, { force: true });
}

/** The id of the container the updater runs in, or undefined on a plain host. */
export async function ownContainerId(mountinfo = "/proc/self/mountinfo"): Promise<string | undefined> {
  const text = await readFile(mountinfo, "utf8").catch(() => "");
  // The engine bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from the container's folder.
  const m = /\/containers\/([0-9a-f]{64})\/(?:hostname|hosts|resolv\.conf)\s/.exec(text);
  return m?.[1];
}
