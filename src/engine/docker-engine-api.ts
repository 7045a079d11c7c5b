/**
 * The container engine over the Docker Engine API (the socket at DOCKER_HOST), the way Watchtower
 * and balena-supervisor talk to it: structured JSON answers, no docker CLI.
 *
 * Every verb is idempotent and journals its intent (with the facts a restarted updater needs)
 * before each side effect. Everything the updater creates carries the label
 * `io.processgit.updater.job=<job id>` (and a role for one-shot helpers), so that recovery can ask
 * the engine what exists instead of trusting memory.
 *
 * The data (see src/snapshots/ and docs/operations.md, "The consistency point"):
 * - the snapshot starts as a live bulk copy, before the pull; everything that does not touch the
 *   app (pull, digest check, creating the new and migration containers, renames) happens while the
 *   app still serves;
 * - the consistency point is the instant the old version stops writing: it is stopped (in the swap,
 *   or before a migration that asks for downtime) or frozen (before a migration that runs while
 *   the app serves), and a final pass copies only what changed since the bulk copy;
 * - no code of the new version (migration or container) runs before that snapshot is complete
 *   and durable; once it ran, every rollback restores the snapshot before the old version starts.
 */
import { readFile, statfs } from "node:fs/promises";
import { errorMessage, UpdaterError } from "../errors.js";
import type { AppInfo, ContainerEngine, StepContext } from "../orchestrator/ports.js";
import {
  type DataMount,
  LABEL_APP,
  LABEL_JOB,
  LABEL_ROLE,
  type PassAnswer,
  type SnapshotSession,
  SnapshotStore,
} from "../snapshots/snapshot-store.js";
import { cloneCreateBody, cloneNetworkConnects } from "./clone-spec.js";
import { ComposeEnvFile } from "./compose-env.js";
import {
  type ContainerInspect,
  DockerClient,
  type ImageInspect,
  type MountPoint,
  type RegistryAuth,
} from "./docker-client.js";

export { LABEL_JOB, LABEL_ROLE };

const VERSION_LABEL = "org.opencontainers.image.version";
/** In the job's folder of the snapshot store: `docker inspect` of the app container before the swap. */
const PREVIOUS_CONTAINER_FILE = "previous-container.json";
/** Room kept free beside a new snapshot, so that the job's state can always be written. */
const DISK_HEADROOM = 64 * 1024 * 1024;

export interface DockerEngineApiOptions {
  /** unix:///var/run/docker.sock or tcp://host:port / http://host:port. */
  dockerHost: string;
  appContainer: string;
  /** Where snapshots are written: one folder per snapshot (see src/snapshots/snapshot-store.ts). */
  snapshotDir: string;
  /** How many updates' snapshots to keep (the newest). */
  snapshotKeep?: number;
  /** An image with node to run the snapshot helper in; default: the updater's own image. */
  helperImage?: string;
  /** Optional readiness URL that must answer 2xx for the health verdict. */
  healthUrl?: string;
  /** Longest wait for the new container to prove healthy. */
  healthDeadlineMs?: number;
  /** How long every signal must stay good, without interruption, before the verdict passes. */
  healthSoakMs?: number;
  /** How often the health signals are read. */
  healthIntervalMs?: number;
  /** Longest run of the migration container. */
  migrationTimeoutMs?: number;
  /** Also remove the previous image at commit. */
  removeOldImage?: boolean;
  /** Registry credentials, sent only to `registry`. */
  registryAuth?: { registry: string; username: string; password: string };
  /** The Compose project's .env and the variable naming the app's image (see compose-env.ts). */
  composeEnv?: { file: string; variable: string };
  timeoutMs?: number;
}

interface Settings {
  snapshotKeep: number;
  healthDeadlineMs: number;
  healthSoakMs: number;
  healthIntervalMs: number;
  migrationTimeoutMs: number;
}

const MIGRATION_OUTPUT_LIMIT = 64 * 1024;

export class DockerEngineApi implements ContainerEngine {
  readonly client: DockerClient;
  readonly snapshots: SnapshotStore;
  private readonly settings: Settings;
  private readonly composeEnv: ComposeEnvFile | undefined;
  /** Snapshot sessions of the active job (the helper waiting for its passes), by snapshot id. */
  private readonly sessions = new Map<string, SnapshotSession>();

  constructor(private readonly opts: DockerEngineApiOptions) {
    this.client = new DockerClient({ dockerHost: opts.dockerHost, timeoutMs: opts.timeoutMs ?? 30_000 });
    this.settings = {
      snapshotKeep: opts.snapshotKeep ?? 3,
      healthDeadlineMs: opts.healthDeadlineMs ?? 120_000,
      healthSoakMs: opts.healthSoakMs ?? 10_000,
      healthIntervalMs: opts.healthIntervalMs ?? 250,
      migrationTimeoutMs: opts.migrationTimeoutMs ?? 30 * 60_000,
    };
    this.snapshots = new SnapshotStore({
      client: this.client,
      dir: opts.snapshotDir,
      app: opts.appContainer,
      ...(opts.helperImage ? { helperImage: opts.helperImage } : {}),
    });
    this.composeEnv = opts.composeEnv && new ComposeEnvFile(opts.composeEnv.file, opts.composeEnv.variable);
  }

  async inspectApp(signal?: AbortSignal): Promise<AppInfo> {
    const name = this.opts.appContainer;
    const container = await this.client.inspectContainer(name, signal).catch((err: unknown) => {
      throw notFoundAs(err, `the app container ${name} does not exist (PROCESSGIT_UPDATER_APP_CONTAINER)`);
    });
    const info: AppInfo = {
      container: name,
      running: container.State?.Running === true,
      image: container.Config.Image ?? "",
    };
    const image = await this.client.inspectImage(container.Image, signal).catch(() => undefined);
    if (image) {
      const repo = repositoryOf(info.image);
      const digest = image.RepoDigests?.find((d) => d.startsWith(`${repo}@`)) ?? image.RepoDigests?.[0];
      if (digest) info.digest = digest.slice(digest.indexOf("@") + 1);
      const version = image.Config?.Labels?.[VERSION_LABEL];
      if (version) info.version = version;
    }
    return info;
  }

  // ---- pre-flight ----

  async preflight(ctx: StepContext): Promise<void> {
    const app = await this.app(ctx.signal);
    if (app.State?.Running !== true) {
      throw new UpdaterError(
        "failed_precondition",
        `the app container ${this.opts.appContainer} is not running (${app.State?.Status ?? "unknown"}); start it before updating`,
        {
          reason: "PREFLIGHT_FAILED",
        },
      );
    }
    if (app.HostConfig.AutoRemove === true) {
      throw new UpdaterError(
        "failed_precondition",
        `the app container ${this.opts.appContainer} was started with --rm: the engine deletes it when it stops, so it could not be kept for a rollback; re-create it without --rm`,
        { reason: "PREFLIGHT_FAILED" },
      );
    }
    ctx.output(`app container ${this.opts.appContainer} (${short(app.Id)}) runs ${app.Config.Image}\n`);
    const composeProject = app.Config.Labels?.["com.docker.compose.project"];
    await ctx.journal("pre-flight done", {
      "app.id": app.Id,
      "app.name": this.opts.appContainer,
      "app.image": app.Image,
      ...(composeProject ? { "app.composeProject": composeProject } : {}),
    });

    await this.removeStaleHelpers(ctx);
    for (const m of app.Mounts ?? []) {
      const data = isDataMount(m);
      ctx.output(
        `mount ${m.Destination} (${m.Type}${m.Name ? ` ${m.Name}` : m.Source ? ` ${m.Source}` : ""}${m.RW === false ? ", read-only" : ""}): ${data ? "app data, in the snapshot" : "not app data, left alone"}\n`,
      );
    }
    const mounts = dataMountsOf(app);
    // What the new snapshot adds: files that differ from the newest snapshot (the rest is shared).
    const estimate = await this.snapshots
      .estimate({ jobId: ctx.job.id, mounts, signal: ctx.signal })
      .catch((err: unknown) => {
        throw new UpdaterError(
          "failed_precondition",
          `cannot look at the app's data for the snapshot: ${errorMessage(err)}`,
          {
            cause: err,
            reason: "PREFLIGHT_FAILED",
          },
        );
      });
    const fs = await statfs(this.opts.snapshotDir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    ctx.output(
      `snapshot space: the data holds ${formatBytes(estimate.bytes)} in ${estimate.files} files; the new snapshot adds about ${formatBytes(estimate.newBytes)}${estimate.base ? ` (the rest is shared with snapshot ${estimate.base})` : ""}; ${formatBytes(free)} free in ${this.opts.snapshotDir}\n`,
    );
    await this.checkEngineDisk(ctx, app);
    await this.checkReadinessUrl(ctx);
    await this.checkComposeEnv(ctx, app);
    // Headroom stays free, so that the job's state can always be written, also mid-rollback.
    const needed = estimate.newBytes + Math.round(estimate.newBytes * 0.05) + DISK_HEADROOM;
    if (needed > free) {
      throw new UpdaterError(
        "failed_precondition",
        `not enough disk for the snapshot: about ${formatBytes(estimate.newBytes)} to copy plus ${formatBytes(needed - estimate.newBytes)} headroom, ${formatBytes(free)} free in ${this.opts.snapshotDir}; free some space or keep fewer snapshots (PROCESSGIT_UPDATER_SNAPSHOT_KEEP)`,
        {
          reason: "PREFLIGHT_FAILED",
        },
      );
    }
  }

  /**
   * Snapshot helpers of this app left by an earlier job (an updater killed while one ran): one job
   * runs at a time per app, so none of them is needed any more.
   */
  private async removeStaleHelpers(ctx: StepContext): Promise<void> {
    const helpers = await this.client
      .json<Array<{ Id: string; Labels?: Record<string, string> }>>("GET", "/containers/json", {
        query: {
          all: true,
          filters: JSON.stringify({ label: [LABEL_ROLE, `${LABEL_APP}=${this.opts.appContainer}`] }),
        },
        signal: ctx.signal,
      })
      .catch(() => []);
    for (const c of helpers) {
      const role = c.Labels?.[LABEL_ROLE];
      if (c.Labels?.[LABEL_JOB] === ctx.job.id) continue;
      if (role !== "snapshot" && role !== "restore" && role !== "estimate" && role !== "prune") continue;
      await this.client.removeContainer(c.Id, { force: true }).catch(() => {});
      ctx.output(`removed a snapshot helper left by job ${c.Labels?.[LABEL_JOB] ?? "?"} (${short(c.Id)})\n`);
    }
  }

  /**
   * With a Compose env file configured, it must be readable and replaceable now: finding out after
   * the swap would mean rolling back a healthy update.
   */
  private async checkComposeEnv(ctx: StepContext, app: ContainerInspect): Promise<void> {
    const env = this.composeEnv;
    if (!env) return;
    const current = await env.check();
    const project = app.Config.Labels?.["com.docker.compose.project"];
    ctx.output(
      `compose: ${env.path} sets ${env.variable}=${current?.value ?? "(not set)"}; the new image will be recorded there${project ? ` (container of Compose project ${project})` : "; note: the app container has no Compose labels"}\n`,
    );
    await ctx.journal("compose env file checked", {
      "compose.hadValue": current ? "true" : "false",
      "compose.previous": current?.raw ?? "",
    });
  }

  /**
   * The readiness URL must answer 2xx for the running version before anything changes: else the
   * verdict after the swap would fail for reasons that have nothing to do with the new version
   * (a wrong URL), and the rollback could not prove the previous version healthy either.
   */
  private async checkReadinessUrl(ctx: StepContext): Promise<void> {
    const url = this.opts.healthUrl;
    if (!url) return;
    const status = await probe(url, ctx.signal);
    ctx.output(`readiness URL ${url}: ${status.text} for the running version\n`);
    if (!status.ok) {
      throw new UpdaterError(
        "failed_precondition",
        `the readiness URL ${url} (PROCESSGIT_UPDATER_HEALTH_URL) answers ${status.text} for the running version; fix the URL before updating`,
        {
          reason: "PREFLIGHT_FAILED",
        },
      );
    }
  }

  /**
   * Room for the new image where the engine keeps its images. The new image's size is not known
   * before the pull; the running image's size stands in for it. The engine's data root is only
   * visible when the updater shares its filesystem (as on a plain host); otherwise the step says
   * the check was not possible.
   */
  private async checkEngineDisk(ctx: StepContext, app: ContainerInspect): Promise<void> {
    const [info, image] = await Promise.all([
      this.client.json<{ DockerRootDir?: string }>("GET", "/info", { signal: ctx.signal }),
      this.client.inspectImage(app.Image, ctx.signal).catch(() => undefined),
    ]);
    const root = info.DockerRootDir;
    const fs = root ? await statfs(root).catch(() => undefined) : undefined;
    const estimate = Math.round(Number(image?.Size ?? 0) * 1.2);
    if (!fs || !root) {
      ctx.output(
        `image space: the engine's data root ${root ?? "(unknown)"} is not visible from the updater; not checked\n`,
      );
      return;
    }
    const free = Number(fs.bavail) * Number(fs.bsize);
    ctx.output(
      `image space: need about ${formatBytes(estimate)} (the running image's size + 20%), ${formatBytes(free)} free in ${root}\n`,
    );
    if (estimate > free) {
      throw new UpdaterError(
        "failed_precondition",
        `not enough disk for the new image: about ${formatBytes(estimate)} needed, ${formatBytes(free)} free in the engine's data root ${root}; prune unused images (docker image prune)`,
        {
          reason: "PREFLIGHT_FAILED",
        },
      );
    }
  }

  // ---- snapshot: the live bulk copy ----

  /**
   * Starts the snapshot of the app's data: a helper container copies it while the app serves and
   * then waits, so that the freeze later copies only what changed. Nothing of the app changes.
   */
  async snapshot(ctx: StepContext): Promise<void> {
    const app = await this.app(ctx.signal);
    const mounts = dataMountsOf(app);
    const id = ctx.job.id;
    await ctx.journal("start the snapshot: a live bulk copy while the app serves", {
      "snapshot.partial": id,
      "snapshot.dir": this.opts.snapshotDir,
      "snapshot.mounts": JSON.stringify(mounts),
    });
    const session = await this.snapshots.open({
      jobId: ctx.job.id,
      id,
      container: app.Id,
      mounts,
      signal: ctx.signal,
    });
    this.sessions.set(id, session);
    const skipped = mounts.filter((m) => session.bulk?.skipped?.includes(m.index)).map((m) => m.destination);
    if (skipped.length > 0) {
      await ctx.journal("bulk copy done", {
        "snapshot.mounts": JSON.stringify(mounts.filter((m) => !session.bulk?.skipped?.includes(m.index))),
      });
    }
    ctx.output(
      `bulk copy of ${mounts.map((m) => m.destination).join(", ") || "(no data mounts)"} while the app serves: ${describePass(session.bulk)}${session.base ? `; unchanged files shared with snapshot ${session.base}` : ""}${skipped.length ? `; left out (not directories: single-file binds are configuration, not data): ${skipped.join(", ")}` : ""}\n`,
    );
  }

  /**
   * The consistency point: a catch-up pass while the app still serves, then the app stops writing
   * (stopped, or frozen with the cgroup freezer), then the final pass copies what changed and the
   * snapshot is made durable. Resolves with the app still stopped (or frozen: `thaw` unfreezes it).
   */
  private async freezeAndSnapshot(
    ctx: StepContext,
    app: ContainerInspect,
    how: "stop" | "freeze",
    extraFacts: () => Record<string, string> = () => ({}),
  ): Promise<number> {
    const session = await this.sessionFor(ctx, app);
    const catchup = await session.catchup(ctx.signal);
    ctx.output(`catch-up pass while the app serves: ${describePass(catchup)}\n`);
    const frozenAt = Date.now();
    if (how === "stop") {
      await ctx.journal("stop the old container: the consistency point", { "app.stopped": "true" });
      await this.stop(app.Id, app, ctx.signal);
    } else {
      await ctx.journal("freeze the app: the consistency point", { "app.paused": "true" });
      await this.client.json("POST", `/containers/${encodeURIComponent(app.Id)}/pause`, {
        signal: ctx.signal,
      });
    }
    const pointAt = new Date();
    const final = await session.final(pointAt, ctx.signal);
    this.sessions.delete(session.id);
    await ctx.journal("snapshot complete", {
      "snapshot.complete": "true",
      "snapshot.id": session.id,
      "snapshot.pointAt": pointAt.toISOString(),
      ...extraFacts(),
    });
    ctx.output(
      `snapshot ${session.id} complete at the consistency point ${pointAt.toISOString()}: final pass ${describePass(final)}, durable in ${final.durableMs ?? 0} ms; the app has been ${how === "stop" ? "stopped" : "frozen"} for ${Date.now() - frozenAt} ms\n`,
    );
    return frozenAt;
  }

  /** The job's open snapshot session, or a new one (the second point of an online migration). */
  private async sessionFor(ctx: StepContext, app: ContainerInspect): Promise<SnapshotSession> {
    const open = [...this.sessions.values()].find((s) => s.id.startsWith(ctx.job.id));
    if (open) return open;
    const facts = ctx.job.journal.facts;
    if (facts["snapshot.complete"] !== "true" && facts["snapshot.partial"] !== ctx.job.id) {
      throw new UpdaterError("internal", "no snapshot session for this job", { reason: "SNAPSHOT_MISSING" });
    }
    const id = facts["snapshot.complete"] === "true" ? `${ctx.job.id}.2` : ctx.job.id;
    await ctx.journal("start the snapshot: a live bulk copy while the app serves", {
      "snapshot.partial": id,
    });
    const session = await this.snapshots.open({
      jobId: ctx.job.id,
      id,
      container: app.Id,
      mounts: dataMountsOf(app),
      signal: ctx.signal,
    });
    this.sessions.set(id, session);
    ctx.output(`bulk copy for snapshot ${id}: ${describePass(session.bulk)}\n`);
    return session;
  }

  // ---- pull and verify ----

  async pull(ctx: StepContext): Promise<void> {
    const ref = digestRef(ctx);
    const auth = this.authFor(ctx.manifest.image.registry);
    ctx.output(`pulling ${ref}${auth ? ` (with credentials for ${auth.serveraddress})` : ""}\n`);
    const result = await this.client.pull(ref, {
      signal: ctx.signal,
      onProgress: (done, total) => ctx.progress(done, total, "bytes"),
      ...(auth ? { auth } : {}),
    });
    ctx.output(`${result.status}\n`);
  }

  async verifyImage(ctx: StepContext): Promise<void> {
    const ref = digestRef(ctx);
    const image = await this.client.inspectImage(ref, ctx.signal).catch((err: unknown) => {
      throw notFoundAs(err, `the image ${ref} is not in the engine after the pull`);
    });
    const repo = `${ctx.manifest.image.registry}/${ctx.manifest.image.repository}`;
    const digests = image.RepoDigests ?? [];
    if (!digests.includes(`${repo}@${ctx.manifest.image.digest}`)) {
      throw new UpdaterError(
        "failed_precondition",
        `the pulled image's repository digests (${digests.join(", ") || "none"}) do not include ${repo}@${ctx.manifest.image.digest}`,
        {
          reason: "IMAGE_DIGEST_MISMATCH",
        },
      );
    }
    await ctx.journal("image verified", { "new.imageId": image.Id });
    ctx.output(`image ${short(image.Id)} has repository digest ${repo}@${ctx.manifest.image.digest}\n`);
  }

  // ---- migration ----

  async migrate(ctx: StepContext): Promise<boolean> {
    const command = ctx.manifest.migration.command;
    if (!ctx.manifest.migration.required || command.length === 0) {
      ctx.output("this release has no migration\n");
      return false;
    }
    const facts = ctx.job.journal.facts;
    const app = await this.client.inspectContainer(facts["app.id"] ?? this.opts.appContainer, ctx.signal);
    const ref = digestRef(ctx);
    // The app's own settings without what merely came from the old image: the migration runs
    // with the new image's defaults and the operator's environment, like the new container will.
    const [oldImage, newImage] = await Promise.all([
      this.client.inspectImage(app.Image, ctx.signal),
      this.client.inspectImage(ref, ctx.signal),
    ]);
    const env = cloneCreateBody(app, oldImage, newImage, ref).Env ?? [];
    const name = `${this.opts.appContainer}-pgu-migrate-${short(ctx.job.id)}`;
    await this.removeIfOurs(name, ctx.job.id, ctx.signal);
    const body = {
      Image: ref,
      Entrypoint: command,
      Cmd: [],
      Env: env,
      Labels: { [LABEL_JOB]: ctx.job.id, [LABEL_ROLE]: "migration" },
      HostConfig: {
        NetworkMode: app.HostConfig.NetworkMode ?? "none",
        // Exactly the app's volumes and bind mounts, named and anonymous.
        VolumesFrom: [app.Id],
        Init: true,
      },
    };
    // Everything that does not touch the app is ready before it stops writing.
    await ctx.journal("create the migration container", {});
    const id = await this.client.createContainer(name, body, ctx.signal);
    await ctx.journal("migration container created", { "migration.id": id });
    const downtime = ctx.manifest.migration.downtime;
    if (downtime) {
      // The app stays stopped from the migration to the swap: the new container and the renames
      // are ready before the stop, and the snapshot's point is the stop.
      await this.prepareSwap(ctx, app);
      await this.freezeAndSnapshot(ctx, app, "stop");
      ctx.output(`stopped ${this.opts.appContainer} for the migration (the release asks for downtime)\n`);
    } else {
      // An online migration: the app is frozen for the final pass only, then serves on.
      await this.freezeAndSnapshot(ctx, app, "freeze");
      await ctx.journal("thaw the app", { "app.paused": "false" });
      await this.client.json("POST", `/containers/${encodeURIComponent(app.Id)}/unpause`, {
        signal: ctx.signal,
      });
    }
    await ctx.journal("run the migration", {
      "migration.started": "true",
      "newCode.startedAt": new Date().toISOString(),
      "migration.online": downtime ? "false" : "true",
    });
    ctx.output(`running ${JSON.stringify(command)} in ${name}\n`);
    await this.client.startContainer(id, ctx.signal);
    let code: number;
    try {
      code = await this.client.wait(id, ctx.signal, { timeoutMs: this.settings.migrationTimeoutMs });
    } catch (err) {
      await this.client.removeContainer(id, { force: true }).catch(() => {});
      if (err instanceof UpdaterError && err.code === "deadline_exceeded") {
        throw new UpdaterError(
          "deadline_exceeded",
          `the migration did not finish within ${this.settings.migrationTimeoutMs} ms`,
          { reason: "MIGRATION_TIMEOUT" },
        );
      }
      throw err;
    }
    const logs = await this.client.logs(id, { maxBytes: MIGRATION_OUTPUT_LIMIT }).catch(() => undefined);
    if (logs) ctx.output(logs.output);
    await this.client.removeContainer(id, { force: true }).catch(() => {});
    if (code !== 0) {
      throw new UpdaterError(
        "failed_precondition",
        `the migration exited with status ${code}${logs?.stderr ? `: ${lastLine(logs.stderr)}` : ""}`,
        {
          reason: "MIGRATION_FAILED",
        },
      );
    }
    ctx.output(`migration finished (exit 0)\n`);
    return true;
  }

  // ---- swap ----

  /**
   * Creates the new container (a faithful copy of the app's configuration on the new image) under
   * a temporary name, parks the old container's restart policy (so that the engine cannot start it
   * behind the updater's back while it is kept), and renames both: all while the app serves.
   */
  private async prepareSwap(
    ctx: StepContext,
    old: ContainerInspect,
  ): Promise<{ newId: string; oldName: string }> {
    const name = this.opts.appContainer;
    const facts = ctx.job.journal.facts;
    if (facts["swap.prepared"] === "true" && facts["new.id"] && facts["old.renamedTo"]) {
      return { newId: facts["new.id"], oldName: facts["old.renamedTo"] };
    }
    const oldImage = await this.client.inspectImage(old.Image, ctx.signal);
    const ref = digestRef(ctx);
    const newImage = await this.client.inspectImage(ref, ctx.signal);
    const tempName = `${name}-pgu-new-${short(ctx.job.id)}`;
    const oldName = `${name}-pgu-old-${short(ctx.job.id)}`;
    const body = cloneCreateBody(old, oldImage, newImage, ref, { labels: { [LABEL_JOB]: ctx.job.id } });

    // The previous container's configuration, kept in the job's folder: if that container is gone
    // by the time a rollback needs it (`docker compose up -d` removes it as a surplus container of
    // the service, or a person does), the rollback re-creates it from this.
    const saved = await this.snapshots.saveJobFile(
      ctx.job.id,
      PREVIOUS_CONTAINER_FILE,
      `${JSON.stringify(old, null, 1)}\n`,
    );
    const policy = old.HostConfig.RestartPolicy ?? {};
    await ctx.journal("create the new container", {
      "previous.saved": saved,
      "previous.restartPolicy": JSON.stringify(policy),
      "swap.started": "true",
      "new.tempName": tempName,
      "old.renamedTo": oldName,
    });
    await this.removeIfOurs(tempName, ctx.job.id, ctx.signal);
    const id = await this.client.createContainer(tempName, body, ctx.signal);
    await ctx.journal("new container created", { "new.id": id });
    for (const connect of cloneNetworkConnects(old)) {
      await this.client.json("POST", `/networks/${encodeURIComponent(connect.network)}/connect`, {
        body: { Container: id, EndpointConfig: connect.EndpointConfig },
        signal: ctx.signal,
      });
    }
    ctx.output(`created ${tempName} (${short(id)}) from ${ref} as a copy of ${name}'s configuration\n`);
    if (policy.Name && policy.Name !== "no") {
      await ctx.journal("park the previous container's restart policy", { "previous.policyParked": "true" });
      await this.setRestartPolicy(old.Id, { Name: "no" }, ctx.signal);
      ctx.output(`parked ${name}'s restart policy (${policy.Name}) while it is kept for a rollback\n`);
    }
    // Renames (cheap, allowed on running containers) before the stop: the gap is stop + start.
    await ctx.journal("rename the old container", {});
    await this.rename(old.Id, oldName, ctx.signal);
    await ctx.journal("rename the new container", {});
    await this.rename(id, name, ctx.signal);
    await ctx.journal("new container ready", { "swap.prepared": "true" });
    return { newId: id, oldName };
  }

  async swap(ctx: StepContext): Promise<void> {
    const name = this.opts.appContainer;
    const facts = ctx.job.journal.facts;
    const old = await this.client.inspectContainer(facts["app.id"] ?? name, ctx.signal);
    const started = Date.now();
    const { newId, oldName } = await this.prepareSwap(ctx, old);
    let gapStart = Date.now();
    // Stopped for a migration with downtime: the snapshot is complete already. Otherwise the stop
    // here is the consistency point (after an online migration, a second snapshot on the first).
    const stoppedAlready = facts["app.stopped"] === "true" && facts["migration.online"] !== "true";
    const started_ = () => ({
      "new.started": "true",
      "newCode.startedAt": facts["newCode.startedAt"] || new Date().toISOString(),
    });
    if (stoppedAlready) await ctx.journal("start the new container", started_());
    else gapStart = await this.freezeAndSnapshot(ctx, old, "stop", started_);
    await this.client.startContainer(newId, ctx.signal);
    const now = Date.now();
    ctx.output(
      `swapped: old container kept stopped as ${oldName}; new container started as ${name} (${stoppedAlready ? "the app was stopped for the migration" : `the app stopped for the final pass and the start: ${now - gapStart} ms`}; whole swap ${now - started} ms)\n`,
    );
  }

  // ---- health verdict ----

  async healthcheck(ctx: StepContext): Promise<void> {
    const id = ctx.job.journal.facts["new.id"] ?? this.opts.appContainer;
    await this.verdict(id, ctx, "the new container");
    await this.recordInComposeEnv(ctx);
    // The point of commitment: from here a restart rolls forward, never back.
    await ctx.journal("verdict passed", { "verdict.passed": "true" });
  }

  /**
   * Records the new image in the Compose env file, so that `docker compose up -d` resolves the
   * service to the version now running instead of re-creating it from the previous one. Journaled
   * first: a rollback (also after a crash) puts the previous value back. A failure here fails the
   * verdict: an update Compose would silently undo is not a committed update.
   */
  private async recordInComposeEnv(ctx: StepContext): Promise<void> {
    const env = this.composeEnv;
    if (!env) return;
    const ref = digestRef(ctx);
    await ctx.journal("record the new image in the Compose env file", { "compose.recorded": "true" });
    try {
      await env.set(ref);
    } catch (err) {
      throw new UpdaterError(
        "failed_precondition",
        `cannot record the new image in ${env.path}: ${errorMessage(err)}; rolled back so that Compose and the running app agree`,
        { reason: "COMPOSE_ENV_WRITE_FAILED", cause: err },
      );
    }
    ctx.output(`compose: recorded ${env.variable}=${ref} in ${env.path}\n`);
  }

  private async restoreComposeEnv(ctx: StepContext): Promise<void> {
    const env = this.composeEnv;
    const f = ctx.job.journal.facts;
    if (!env || f["compose.recorded"] !== "true") return;
    await ctx.journal("put the previous image back in the Compose env file", {});
    await env.restore(f["compose.hadValue"] === "true" ? (f["compose.previous"] ?? "") : undefined);
    ctx.output(
      `compose: ${env.variable} in ${env.path} set back to ${f["compose.hadValue"] === "true" ? f["compose.previous"] : "(not set)"}\n`,
    );
  }

  // ---- commit: cleanup after the point of commitment ----

  /**
   * Cleanup once the job is committed: the previous container (and image, when configured) and
   * snapshots beyond the retention. Best effort: the update stands whatever happens here.
   */
  async commit(ctx: StepContext): Promise<void> {
    const facts = ctx.job.journal.facts;
    const oldId = facts["app.id"];
    if (oldId) {
      await ctx.journal("remove the previous container", {});
      await this.client.removeContainer(oldId, { force: true }).catch((err: unknown) => {
        if (!(err instanceof UpdaterError && err.code === "not_found")) throw err;
      });
      ctx.output(`removed the previous container ${short(oldId)}\n`);
    }
    if (this.opts.removeOldImage && facts["app.image"]) {
      await this.client
        .json("DELETE", `/images/${encodeURIComponent(facts["app.image"])}`, { signal: ctx.signal })
        .then(() => ctx.output(`removed the previous image ${short(facts["app.image"] ?? "")}\n`))
        .catch((err: unknown) => ctx.output(`kept the previous image: ${errorMessage(err)}\n`));
    }
    await this.pruneSnapshots(ctx);
  }

  // ---- rollback ----

  async rollback(ctx: StepContext): Promise<void> {
    const name = this.opts.appContainer;
    const facts = ctx.job.journal.facts;
    const oldId = facts["app.id"];
    if (!oldId)
      throw new UpdaterError("internal", "the journal does not name the previous container", {
        manualSteps: this.manualSteps(ctx),
      });
    try {
      // 0. Compose resolves the service to the previous image again.
      await this.restoreComposeEnv(ctx);
      // 1. The previous container exists, or can be re-created: checked before anything is removed.
      let old = await this.findPrevious(ctx, oldId);
      // 2. The new version's code stops: the new container, a migration container, and any
      //    snapshot helper of this job go.
      const discardedUntil = facts["restore.discardedUntil"] ?? "";
      await ctx.journal("remove the new container", { "rollback.started": "true" });
      for (const session of this.sessions.values()) await session.close();
      this.sessions.clear();
      for (const c of await this.ours(ctx.job.id, ctx.signal)) {
        if (c.Id === oldId || c.Id === facts["previous.recreated"]) continue;
        await this.client.removeContainer(c.Id, { force: true }).catch(() => {});
        ctx.output(`removed ${c.Names?.[0]?.replace(/^\//, "") ?? short(c.Id)}\n`);
      }
      const stoppedAt = discardedUntil || new Date().toISOString();
      // 3. Re-created from its saved configuration when it was gone.
      if (!("Id" in old)) old = await this.recreatePrevious(ctx, oldId, old);
      // 4. A frozen app thaws (stopped right after when its data must come back).
      if (facts["app.paused"] === "true" && old.State?.Paused === true) {
        await this.client
          .json("POST", `/containers/${encodeURIComponent(old.Id)}/unpause`, { signal: ctx.signal })
          .catch(() => {});
      }
      // 5. The data comes back whenever the new version's code may have touched it.
      const touched = facts["migration.started"] === "true" || facts["new.started"] === "true";
      if (touched) await this.restoreData(ctx, old, stoppedAt);
      else {
        await ctx.journal("the data was not touched by the new version: nothing to restore", {
          "restore.needed": "false",
        });
        ctx.output("the new version never ran: the data is as the previous version left it\n");
      }
      // 6. The restart policy, the name, and the previous container runs again.
      if (facts["previous.policyParked"] === "true" && facts["previous.restartPolicy"]) {
        await ctx.journal("put the previous container's restart policy back", {});
        await this.setRestartPolicy(old.Id, JSON.parse(facts["previous.restartPolicy"]), ctx.signal);
      }
      if (old.Name.replace(/^\//, "") !== name) {
        await ctx.journal("rename the previous container back", {});
        await this.rename(old.Id, name, ctx.signal);
      }
      await ctx.journal("start the previous container", {});
      await this.client.startContainer(old.Id, ctx.signal);
      ctx.output(`started the previous container as ${name}\n`);
      await this.verdict(old.Id, ctx, "the previous container", {
        soakMs: Math.min(this.settings.healthSoakMs, 2000),
        useUrl: true,
      });
      await this.pruneSnapshots(ctx).catch((err: unknown) =>
        ctx.output(`snapshot cleanup after the rollback failed (harmless): ${errorMessage(err)}\n`),
      );
    } catch (err) {
      if (err instanceof UpdaterError && err.manualSteps) throw err;
      throw new UpdaterError(err instanceof UpdaterError ? err.code : "internal", errorMessage(err), {
        cause: err,
        manualSteps: this.manualSteps(ctx),
      });
    }
  }

  /** Stops the previous container if it runs, then makes its data mounts equal to the snapshot. */
  private async restoreData(ctx: StepContext, old: ContainerInspect, stoppedAt: string): Promise<void> {
    const facts = ctx.job.journal.facts;
    const id = facts["snapshot.id"];
    if (facts["snapshot.complete"] !== "true" || !id) {
      throw new UpdaterError(
        "failed_precondition",
        "the new version ran but the journal names no complete snapshot to restore",
      );
    }
    const manifest = await this.snapshots.manifest(id).catch((err: unknown) => {
      throw new UpdaterError(
        "failed_precondition",
        `the snapshot ${id} cannot be read: ${errorMessage(err)}`,
      );
    });
    const pointAt = facts["snapshot.pointAt"] ?? manifest.pointAt;
    // After an online migration failed, the previous version kept serving after the point.
    const from =
      facts["migration.online"] === "true" && facts["new.started"] !== "true"
        ? pointAt
        : (facts["newCode.startedAt"] ?? pointAt);
    const current = await this.client.inspectContainer(old.Id, ctx.signal);
    if (current.State?.Running === true) {
      await ctx.journal("stop the previous container to restore its data", {});
      await this.stop(old.Id, current, ctx.signal);
    }
    await ctx.journal("restore the snapshot", {
      "restore.needed": "true",
      "restore.snapshot": id,
      "restore.pointAt": pointAt,
      "restore.discardedFrom": from,
      "restore.discardedUntil": stoppedAt,
    });
    // Only the mounts the snapshot holds a tree of (a file bind is left out of it).
    const mounts = manifest.mounts.filter((m) => manifest.trees.some((t) => t.index === m.index));
    const result = await this.snapshots.restore({ jobId: ctx.job.id, id, mounts, signal: ctx.signal });
    await ctx.journal("data restored", { "restore.done": "true" });
    for (const m of result.stats) {
      const mount = manifest.mounts.find((x) => x.index === m.index);
      ctx.output(
        `restored ${mount?.destination ?? `mount ${m.index}`} (${mount?.name ?? mount?.source ?? ""}) to snapshot ${id}: ${m.entries} entries checked equal; ${m.stats.filesCopied + m.stats.filesPatched} files rewritten (${formatBytes(m.stats.bytesWritten)} written), ${m.stats.removed} removed, ${m.stats.filesSkipped} untouched since the snapshot\n`,
      );
    }
    ctx.output(
      `data restored in ${result.ms} ms to the consistency point ${pointAt}; discarded: whatever was written between ${from} and ${stoppedAt}\n`,
    );
  }

  /**
   * The previous container, or, when it is gone, what re-creating it needs (its saved
   * configuration and its image), checked before anything is removed.
   */
  private async findPrevious(
    ctx: StepContext,
    oldId: string,
  ): Promise<ContainerInspect | { saved: ContainerInspect; image: ImageInspect }> {
    const f = ctx.job.journal.facts;
    for (const id of [oldId, f["previous.recreated"]]) {
      if (!id) continue;
      try {
        return await this.client.inspectContainer(id, ctx.signal);
      } catch (err) {
        if (!(err instanceof UpdaterError && err.code === "not_found")) throw err;
      }
    }
    const path = f["previous.saved"];
    if (!path) {
      throw new UpdaterError(
        "failed_precondition",
        `the previous container ${short(oldId)} is gone, and this job saved no configuration to re-create it from`,
      );
    }
    const saved = JSON.parse(await readFile(path, "utf8")) as ContainerInspect;
    const image = await this.client.inspectImage(saved.Image, ctx.signal).catch((err: unknown) => {
      throw new UpdaterError(
        "failed_precondition",
        `the previous container ${short(oldId)} is gone, and so is its image ${short(saved.Image)}: ${errorMessage(err)}`,
      );
    });
    return { saved, image };
  }

  /** Re-creates the previous container from the configuration saved at the swap, under the app's name. */
  private async recreatePrevious(
    ctx: StepContext,
    oldId: string,
    gone: { saved: ContainerInspect; image: ImageInspect },
  ): Promise<ContainerInspect> {
    const { saved, image } = gone;
    const path = ctx.job.journal.facts["previous.saved"];
    // Its own image reference when that still names the same image, else the image's id.
    const refs = [saved.Config.Image, saved.Image].filter((r): r is string => typeof r === "string");
    let body: ReturnType<typeof cloneCreateBody> | undefined;
    for (const ref of refs) {
      try {
        body = cloneCreateBody(saved, image, image, ref);
        break;
      } catch (err) {
        if (!(err instanceof UpdaterError && err.code === "invalid_argument")) throw err;
      }
    }
    if (!body) throw new UpdaterError("internal", `cannot name the previous image ${saved.Image}`);
    await ctx.journal("re-create the previous container from its saved configuration", {});
    const id = await this.client.createContainer(this.opts.appContainer, body, ctx.signal);
    await ctx.journal("previous container re-created", { "previous.recreated": id });
    for (const connect of cloneNetworkConnects(saved)) {
      await this.client.json("POST", `/networks/${encodeURIComponent(connect.network)}/connect`, {
        body: { Container: id, EndpointConfig: connect.EndpointConfig },
        signal: ctx.signal,
      });
    }
    ctx.output(
      `the previous container ${short(oldId)} was gone; re-created it as ${this.opts.appContainer} (${short(id)}) from ${path}\n`,
    );
    return this.client.inspectContainer(id, ctx.signal);
  }

  async discard(ctx: StepContext): Promise<void> {
    for (const session of this.sessions.values()) await session.close();
    this.sessions.clear();
    for (const c of await this.ours(ctx.job.id, ctx.signal).catch(() => [])) {
      if (c.Labels?.[LABEL_ROLE]) await this.client.removeContainer(c.Id, { force: true }).catch(() => {});
    }
    // Nothing changed: the job's partial snapshot (written before the app was touched) goes.
    const partials = (await this.snapshots.partials()).filter((id) => id.startsWith(ctx.job.id));
    await this.snapshots.remove(partials, ctx.job.id).catch(() => {});
  }

  // ---- helpers ----

  private async app(signal: AbortSignal): Promise<ContainerInspect> {
    return this.client.inspectContainer(this.opts.appContainer, signal).catch((err: unknown) => {
      throw notFoundAs(
        err,
        `the app container ${this.opts.appContainer} does not exist (PROCESSGIT_UPDATER_APP_CONTAINER)`,
        "PREFLIGHT_FAILED",
      );
    });
  }

  /**
   * Waits until every signal is good for the whole soak window: running, no restart since the
   * first look, Docker HEALTHCHECK healthy (when the image has one), readiness URL 2xx (when set).
   * Fails at once on a crash, a restart or an unhealthy report; else at the deadline.
   */
  private async verdict(
    id: string,
    ctx: StepContext,
    what: string,
    options: { soakMs?: number; useUrl?: boolean } = {},
  ): Promise<void> {
    const soakMs = options.soakMs ?? this.settings.healthSoakMs;
    const deadline = Date.now() + this.settings.healthDeadlineMs;
    const first = await this.client.inspectContainer(id, ctx.signal);
    const restarts0 = Number(first.RestartCount ?? 0);
    const hasHealthcheck = Boolean(
      first.Config.Healthcheck?.Test?.length && first.Config.Healthcheck.Test[0] !== "NONE",
    );
    const url = options.useUrl === false ? undefined : this.opts.healthUrl;
    let goodSince: number | undefined;
    let last = "";
    for (;;) {
      ctx.signal.throwIfAborted();
      const c = await this.client.inspectContainer(id, ctx.signal);
      const running = c.State?.Running === true;
      const restarts = Number(c.RestartCount ?? 0) - restarts0;
      const health = hasHealthcheck ? String(c.State?.Health?.Status ?? "starting") : "none";
      let urlStatus = "not configured";
      let urlOk = true;
      if (url) {
        const answer = await probe(url, ctx.signal);
        urlStatus = answer.text;
        urlOk = answer.ok;
      }
      const evidence = `running=${running} restarts=${restarts} healthcheck=${health} readiness=${urlStatus}`;
      if (evidence !== last) {
        ctx.output(`${what}: ${evidence}\n`);
        last = evidence;
      }
      if (!running || restarts > 0) {
        throw new UpdaterError(
          "failed_precondition",
          `${what} ${running ? "restarted" : `stopped (${c.State?.Status}, exit ${c.State?.ExitCode})`} during the health check: ${evidence}`,
          {
            reason: "HEALTHCHECK_FAILED",
          },
        );
      }
      if (health === "unhealthy") {
        throw new UpdaterError("failed_precondition", `${what} reports unhealthy: ${evidence}`, {
          reason: "HEALTHCHECK_FAILED",
        });
      }
      const good = (health === "healthy" || health === "none") && urlOk;
      const now = Date.now();
      if (good) {
        goodSince ??= now;
        if (now - goodSince >= soakMs) {
          ctx.output(`${what} is healthy: every signal good for ${now - goodSince} ms\n`);
          return;
        }
      } else goodSince = undefined;
      if (now > deadline) {
        throw new UpdaterError(
          "deadline_exceeded",
          `${what} did not prove healthy within ${this.settings.healthDeadlineMs} ms: ${evidence}`,
          {
            reason: "HEALTHCHECK_FAILED",
          },
        );
      }
      await sleep(this.settings.healthIntervalMs, ctx.signal);
    }
  }

  private async stop(id: string, c: ContainerInspect, signal: AbortSignal): Promise<void> {
    const t = typeof c.Config.StopTimeout === "number" ? c.Config.StopTimeout : 10;
    await this.client.json("POST", `/containers/${encodeURIComponent(id)}/stop`, {
      query: { t },
      okStatuses: [304],
      timeoutMs: (t + 30) * 1000,
      signal,
    });
  }

  private async rename(id: string, name: string, signal: AbortSignal): Promise<void> {
    const current = await this.client.inspectContainer(id, signal);
    if (current.Name.replace(/^\//, "") === name) return;
    await this.client.json("POST", `/containers/${encodeURIComponent(id)}/rename`, {
      query: { name },
      signal,
    });
  }

  /** Removes the container called `name` if this job created it (never anything else). */
  private async removeIfOurs(name: string, jobId: string, signal: AbortSignal): Promise<void> {
    const existing = await this.client.inspectContainer(name, signal).catch(() => undefined);
    if (!existing) return;
    if (existing.Config.Labels?.[LABEL_JOB] !== jobId) {
      throw new UpdaterError(
        "failed_precondition",
        `a container named ${name} exists and was not made by this job; remove or rename it`,
      );
    }
    await this.client.removeContainer(existing.Id, { force: true });
  }

  private ours(
    jobId: string,
    signal?: AbortSignal,
  ): Promise<Array<{ Id: string; Names?: string[]; Labels?: Record<string, string> }>> {
    return this.client.json("GET", "/containers/json", {
      query: { all: true, filters: JSON.stringify({ label: [`${LABEL_JOB}=${jobId}`] }) },
      ...(signal ? { signal } : {}),
    });
  }

  private authFor(registry: string): RegistryAuth | undefined {
    const auth = this.opts.registryAuth;
    if (!auth || auth.registry !== registry) return undefined;
    return { username: auth.username, password: auth.password, serveraddress: auth.registry };
  }

  private async setRestartPolicy(
    id: string,
    policy: { Name?: string; MaximumRetryCount?: number },
    signal: AbortSignal,
  ): Promise<void> {
    await this.client.json("POST", `/containers/${encodeURIComponent(id)}/update`, {
      body: { RestartPolicy: policy },
      signal,
    });
  }

  /**
   * Keeps the snapshots of the newest `snapshotKeep` updates, of this job, and of every job a
   * human must still look at (unacknowledged failures); removes the rest and partial snapshots of
   * jobs that are over.
   */
  private async pruneSnapshots(ctx: StepContext): Promise<void> {
    const protect = new Set<string>([ctx.job.id, ...ctx.keepSnapshotsOf]);
    const all = await this.snapshots.list();
    const jobs: string[] = [];
    for (const m of all) if (!jobs.includes(m.job)) jobs.push(m.job);
    const keepJobs = new Set([...jobs.slice(0, this.settings.snapshotKeep), ...protect]);
    const remove = all.filter((m) => !keepJobs.has(m.job)).map((m) => m.id);
    remove.push(...(await this.snapshots.partials()));
    const removed = await this.snapshots.remove(remove, ctx.job.id, ctx.signal);
    if (removed.length > 0) ctx.output(`removed old snapshots: ${removed.join(", ")}\n`);
    await this.snapshots.pruneJobDirs(keepJobs);
  }

  private manualSteps(ctx: StepContext): string {
    const name = this.opts.appContainer;
    const f = ctx.job.journal.facts;
    const oldId = f["app.id"] ? short(f["app.id"]) : "(see docker ps -a)";
    const steps: string[] = [];
    if (f["app.composeProject"]) {
      steps.push(
        `Do not run docker compose up -d (project ${f["app.composeProject"]}) before these steps are done: Compose counts the previous container ${oldId} (renamed ${name}-pgu-old-${short(ctx.job.id)}) as one of its service's containers and would remove it.`,
      );
    }
    steps.push(
      `See what this job left: docker ps -a --filter label=${LABEL_JOB}=${ctx.job.id}; remove those containers (docker rm -f ID), but not the previous app container ${oldId}.`,
      `If another container is called ${name}, rename it away: docker rename ${name} ${name}-broken`,
    );
    if (f["migration.started"] === "true" || f["new.started"] === "true") {
      const id = f["snapshot.id"];
      const mounts = JSON.parse(f["snapshot.mounts"] ?? "[]") as DataMount[];
      steps.push(
        id && f["snapshot.complete"] === "true"
          ? `The new version ran on the data: restore the data before starting the previous version. Snapshot ${id} (consistency point ${f["snapshot.pointAt"] ?? "see its manifest.json"}) holds one tree per data mount; for each, empty the mount and copy the tree back with owners, modes and times, as root: ${mounts
              .map((m) => this.snapshots.manualRestoreCommand(id, m))
              .join(" ; ")}`
          : "The new version may have touched the data and no complete snapshot is recorded: restore the data from your own backup before starting the previous version.",
      );
    }
    if (f["previous.policyParked"] === "true" && f["previous.restartPolicy"]) {
      const policy = JSON.parse(f["previous.restartPolicy"]) as { Name?: string; MaximumRetryCount?: number };
      steps.push(
        `Put the previous container's restart policy back: docker update --restart ${policy.Name}${policy.Name === "on-failure" && policy.MaximumRetryCount ? `:${policy.MaximumRetryCount}` : ""} ${oldId}`,
      );
    }
    steps.push(
      `Give the previous container its name back and start it: docker rename ${oldId} ${name} && docker start ${name}${
        f["previous.saved"]
          ? ` (if it is gone, its configuration as docker inspect showed it before the update is in ${f["previous.saved"]})`
          : ""
      }`,
    );
    if (this.composeEnv && f["compose.recorded"] === "true") {
      steps.push(
        `Set ${this.composeEnv.variable} in ${this.composeEnv.path} back to ${f["compose.hadValue"] === "true" ? f["compose.previous"] : "what it was (it was not set)"}, so that docker compose up -d keeps the previous version.`,
      );
    }
    steps.push("Check that the app serves, then start updates again.");
    return steps.map((step, i) => `${i + 1}. ${step}`).join("\n");
  }
}

/** Volumes and writable directory binds are the app's data; read-only binds, the Docker socket and tmpfs are not. */
function isDataMount(m: MountPoint): boolean {
  if (m.Type !== "volume" && m.Type !== "bind") return false;
  if (m.RW === false) return false;
  if (m.Destination.endsWith("docker.sock") || m.Destination === "/") return false;
  return true;
}

/** The app's data mounts, numbered as the snapshot stores them. */
function dataMountsOf(c: ContainerInspect): DataMount[] {
  return (c.Mounts ?? []).filter(isDataMount).map((m, index) => {
    const out: DataMount = {
      index,
      type: m.Type === "volume" ? "volume" : "bind",
      destination: m.Destination,
    };
    if (m.Type === "volume" && m.Name) out.name = m.Name;
    if (m.Type === "bind" && m.Source) out.source = m.Source;
    return out;
  });
}

function describePass(answer: PassAnswer | undefined): string {
  const s = answer?.stats ?? [];
  const sum = (
    k: "filesCopied" | "filesPatched" | "filesLinked" | "filesSkipped" | "bytesWritten" | "removed" | "ms",
  ) => s.reduce((n, x) => n + x[k], 0);
  const unsupported = s.flatMap((x) => x.unsupported);
  return `${formatBytes(sum("bytesWritten"))} written (${sum("filesCopied")} files copied, ${sum("filesPatched")} compared in blocks, ${sum("filesLinked")} shared, ${sum("filesSkipped")} unchanged, ${sum("removed")} removed) in ${sum("ms")} ms${unsupported.length ? `; left out (sockets, devices, fifos): ${unsupported.slice(0, 5).join(", ")}` : ""}`;
}

function digestRef(ctx: StepContext): string {
  const i = ctx.manifest.image;
  return `${i.registry}/${i.repository}@${i.digest}`;
}

function repositoryOf(ref: string): string {
  return ref.replace(/@sha256:[0-9a-f]{64}$/, "").replace(/:[^/:]+$/, "");
}

function short(id: string): string {
  return id.replace(/^sha256:/, "").slice(0, 12);
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return lines.at(-1) ?? "";
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function notFoundAs(err: unknown, message: string, reason?: string): unknown {
  if (err instanceof UpdaterError && err.code === "not_found") {
    return new UpdaterError("failed_precondition", message, { cause: err, ...(reason ? { reason } : {}) });
  }
  return err;
}

/** One GET of a readiness URL, bounded to 2 s. */
async function probe(url: string, signal: AbortSignal): Promise<{ ok: boolean; text: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]) });
    await res.arrayBuffer().catch(() => {});
    return { ok: res.status >= 200 && res.status < 300, text: String(res.status) };
  } catch (err) {
    signal.throwIfAborted();
    return { ok: false, text: `no answer (${errorMessage(err)})` };
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
