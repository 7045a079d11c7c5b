/**
 * The container engine over the Docker Engine API (the socket at DOCKER_HOST), the way Watchtower
 * and balena-supervisor talk to it: structured JSON answers, no docker CLI.
 *
 * Every verb is idempotent and journals its intent (with the facts a restarted updater needs)
 * before each side effect. Everything the updater creates carries the label
 * `io.processgit.updater.job=<job id>` (and a role for one-shot helpers), so that recovery can ask
 * the engine what exists instead of trusting memory.
 *
 * The point of no return is the data: the migration only starts after a complete snapshot, and the
 * old container never starts again on data the migration may have changed without the snapshot
 * being restored first.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rm, statfs } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { errorMessage, UpdaterError } from "../errors.js";
import type { AppInfo, ContainerEngine, StepContext } from "../orchestrator/ports.js";
import { writeFileAtomic } from "../store/atomic-write.js";
import { cloneCreateBody, cloneNetworkConnects } from "./clone-spec.js";
import { ComposeEnvFile } from "./compose-env.js";
import { type ContainerInspect, DockerClient, type MountPoint, type RegistryAuth } from "./docker-client.js";

export const LABEL_JOB = "io.processgit.updater.job";
export const LABEL_ROLE = "io.processgit.updater.role";
const VERSION_LABEL = "org.opencontainers.image.version";
/** In a job's snapshot folder: `docker inspect` of the app container as it was before the swap. */
const PREVIOUS_CONTAINER_FILE = "previous-container.json";

export interface DockerEngineApiOptions {
  /** unix:///var/run/docker.sock or tcp://host:port / http://host:port. */
  dockerHost: string;
  appContainer: string;
  /** Where snapshots are written: one folder per job. */
  snapshotDir: string;
  /** How many snapshots to keep (the newest). */
  snapshotKeep?: number;
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

/** What a snapshot holds; written last, so a snapshot without it is incomplete. */
interface SnapshotManifest {
  job: string;
  container: string;
  createdAt: string;
  mounts: Array<{
    type: string;
    name?: string;
    source?: string;
    destination: string;
    file: string;
    bytes: number;
    sha256: string;
  }>;
}

const MIGRATION_OUTPUT_LIMIT = 64 * 1024;

export class DockerEngineApi implements ContainerEngine {
  readonly client: DockerClient;
  private readonly settings: Settings;
  private readonly composeEnv: ComposeEnvFile | undefined;

  constructor(private readonly opts: DockerEngineApiOptions) {
    this.client = new DockerClient({ dockerHost: opts.dockerHost, timeoutMs: opts.timeoutMs ?? 30_000 });
    this.settings = {
      snapshotKeep: opts.snapshotKeep ?? 3,
      healthDeadlineMs: opts.healthDeadlineMs ?? 120_000,
      healthSoakMs: opts.healthSoakMs ?? 10_000,
      healthIntervalMs: opts.healthIntervalMs ?? 250,
      migrationTimeoutMs: opts.migrationTimeoutMs ?? 30 * 60_000,
    };
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
    ctx.output(`app container ${this.opts.appContainer} (${short(app.Id)}) runs ${app.Config.Image}\n`);
    const composeProject = app.Config.Labels?.["com.docker.compose.project"];
    await ctx.journal("pre-flight done", {
      "app.id": app.Id,
      "app.name": this.opts.appContainer,
      "app.image": app.Image,
      ...(composeProject ? { "app.composeProject": composeProject } : {}),
    });

    const mounts = dataMounts(app);
    const sizes = await this.volumeSizes(ctx.signal);
    let needed = 0;
    for (const m of mounts) {
      const size = m.Name ? sizes.get(m.Name) : undefined;
      if (size !== undefined && size >= 0) needed += size;
      ctx.output(
        `data mount ${m.Destination} (${m.Type}${m.Name ? ` ${m.Name}` : ""}): ${size !== undefined && size >= 0 ? formatBytes(size) : "size unknown"}\n`,
      );
    }
    await mkdir(this.opts.snapshotDir, { recursive: true, mode: 0o700 });
    const fs = await statfs(this.opts.snapshotDir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    const margin = 64 * 1024 * 1024;
    ctx.output(
      `snapshot space: need about ${formatBytes(needed)}, ${formatBytes(free)} free in ${this.opts.snapshotDir}\n`,
    );
    await this.checkEngineDisk(ctx, app);
    await this.checkReadinessUrl(ctx);
    await this.checkComposeEnv(ctx, app);
    if (needed + margin > free) {
      throw new UpdaterError(
        "failed_precondition",
        `not enough disk for the snapshot: about ${formatBytes(needed)} needed plus ${formatBytes(margin)} margin, ${formatBytes(free)} free in ${this.opts.snapshotDir}`,
        {
          reason: "PREFLIGHT_FAILED",
        },
      );
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

  // ---- snapshot ----

  async snapshot(ctx: StepContext): Promise<void> {
    const app = await this.app(ctx.signal);
    const dir = this.snapshotPath(ctx.job.id);
    await ctx.journal("write snapshot", { "snapshot.dir": dir });
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const manifest: SnapshotManifest = {
      job: ctx.job.id,
      container: app.Id,
      createdAt: new Date().toISOString(),
      mounts: [],
    };
    let index = 0;
    for (const m of dataMounts(app)) {
      const file = `mount-${index++}.tar`;
      const hash = createHash("sha256");
      let bytes = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          bytes += chunk.length;
          done(null, chunk);
        },
      });
      const began = Date.now();
      const tar = await this.client.archiveGet(app.Id, m.Destination, ctx.signal);
      await pipeline(tar, counter, createWriteStream(join(dir, file), { mode: 0o600 }), {
        signal: ctx.signal,
      });
      const entry: SnapshotManifest["mounts"][number] = {
        type: m.Type ?? "volume",
        destination: m.Destination,
        file,
        bytes,
        sha256: hash.digest("hex"),
      };
      if (m.Name) entry.name = m.Name;
      if (m.Source) entry.source = m.Source;
      manifest.mounts.push(entry);
      ctx.output(
        `archived ${m.Destination} (${entry.type}${m.Name ? ` ${m.Name}` : ""}): ${formatBytes(bytes)} in ${Date.now() - began} ms, sha256 ${entry.sha256.slice(0, 16)}\n`,
      );
    }
    await writeFileAtomic(join(dir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await ctx.journal("snapshot complete", { "snapshot.complete": "true" });
    await this.pruneSnapshots(ctx.job.id);
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
    if (ctx.job.journal.facts["snapshot.complete"] !== "true") {
      throw new UpdaterError("internal", "refusing to migrate without a complete snapshot", {
        reason: "SNAPSHOT_MISSING",
      });
    }
    const app = await this.app(ctx.signal);
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
    if (ctx.manifest.migration.downtime) {
      await ctx.journal("stop the app for the migration", {
        "migration.started": "true",
        "app.stopped": "true",
      });
      await this.stop(app.Id, app, ctx.signal);
      ctx.output(`stopped ${this.opts.appContainer} for the migration (the release asks for downtime)\n`);
    } else {
      await ctx.journal("run the migration", { "migration.started": "true" });
    }
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
    const id = await this.client.createContainer(name, body, ctx.signal);
    await ctx.journal("migration container created", { "migration.id": id });
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

  async swap(ctx: StepContext): Promise<void> {
    const name = this.opts.appContainer;
    const facts = ctx.job.journal.facts;
    const old = await this.client.inspectContainer(facts["app.id"] ?? name, ctx.signal);
    const oldImage = await this.client.inspectImage(old.Image, ctx.signal);
    const ref = digestRef(ctx);
    const newImage = await this.client.inspectImage(ref, ctx.signal);
    const tempName = `${name}-pgu-new-${short(ctx.job.id)}`;
    const oldName = `${name}-pgu-old-${short(ctx.job.id)}`;
    const body = cloneCreateBody(old, oldImage, newImage, ref, { labels: { [LABEL_JOB]: ctx.job.id } });

    // The previous container's configuration, kept with the snapshot: if that container is gone by
    // the time a rollback needs it (`docker compose up -d` removes it as a surplus container of the
    // service, or a person does), the rollback re-creates it from this.
    const saved = join(facts["snapshot.dir"] ?? this.snapshotPath(ctx.job.id), PREVIOUS_CONTAINER_FILE);
    await mkdir(dirname(saved), { recursive: true, mode: 0o700 });
    await writeFileAtomic(saved, `${JSON.stringify(old, null, 1)}\n`);
    await ctx.journal("create the new container", {
      "previous.saved": saved,
      "swap.started": "true",
      "new.tempName": tempName,
      "old.renamedTo": oldName,
    });
    await this.removeIfOurs(tempName, ctx.job.id, ctx.signal);
    const started = Date.now();
    const id = await this.client.createContainer(tempName, body, ctx.signal);
    await ctx.journal("new container created", { "new.id": id });
    for (const connect of cloneNetworkConnects(old)) {
      await this.client.json("POST", `/networks/${encodeURIComponent(connect.network)}/connect`, {
        body: { Container: id, EndpointConfig: connect.EndpointConfig },
        signal: ctx.signal,
      });
    }
    ctx.output(`created ${tempName} (${short(id)}) from ${ref} as a copy of ${name}'s configuration\n`);

    // Renames first (cheap, allowed on running containers), then the only gap: stop old, start new.
    await ctx.journal("rename the old container", {});
    await this.rename(old.Id, oldName, ctx.signal);
    await ctx.journal("rename the new container", {});
    await this.rename(id, name, ctx.signal);
    const gapStart = Date.now();
    await ctx.journal("stop the old container", {});
    await this.stop(old.Id, old, ctx.signal);
    await ctx.journal("start the new container", {});
    await this.client.startContainer(id, ctx.signal);
    const now = Date.now();
    ctx.output(
      `swapped: old container kept stopped as ${oldName}; new container started as ${name} (stop+start ${now - gapStart} ms, whole swap ${now - started} ms)\n`,
    );
  }

  // ---- health verdict ----

  async healthcheck(ctx: StepContext): Promise<void> {
    const id = ctx.job.journal.facts["new.id"] ?? this.opts.appContainer;
    await this.verdict(id, ctx, "the new container");
    await this.recordInComposeEnv(ctx);
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

  // ---- commit ----

  async commit(ctx: StepContext): Promise<void> {
    const facts = ctx.job.journal.facts;
    const oldId = facts["app.id"];
    if (!oldId) return;
    await ctx.journal("remove the previous container", {});
    await this.client.removeContainer(oldId, { force: true }).catch((err: unknown) => {
      if (!(err instanceof UpdaterError && err.code === "not_found")) throw err;
    });
    ctx.output(`removed the previous container ${short(oldId)}\n`);
    if (this.opts.removeOldImage && facts["app.image"]) {
      await this.client
        .json("DELETE", `/images/${encodeURIComponent(facts["app.image"])}`, { signal: ctx.signal })
        .then(() => ctx.output(`removed the previous image ${short(facts["app.image"] ?? "")}\n`))
        .catch((err: unknown) => ctx.output(`kept the previous image: ${errorMessage(err)}\n`));
    }
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
      // 1. The new container (and a migration container left by a crash) goes.
      await ctx.journal("remove the new container", { "rollback.started": "true" });
      for (const c of await this.ours(ctx.job.id, ctx.signal)) {
        if (c.Id === oldId) continue;
        await this.client.removeContainer(c.Id, { force: true }).catch(() => {});
        ctx.output(`removed ${c.Names?.[0]?.replace(/^\//, "") ?? short(c.Id)}\n`);
      }
      const old = await this.previousContainer(ctx, oldId);
      // 2. The data comes back before the old container may start on it.
      if (facts["migration.started"] === "true") {
        await this.stop(old.Id, old, ctx.signal);
        await ctx.journal("restore the snapshot", {});
        await this.restore(ctx, old);
      }
      // 3. The old container takes its name back and starts.
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
    } catch (err) {
      if (err instanceof UpdaterError && err.manualSteps) throw err;
      throw new UpdaterError(err instanceof UpdaterError ? err.code : "internal", errorMessage(err), {
        cause: err,
        manualSteps: this.manualSteps(ctx),
      });
    }
  }

  /**
   * The previous container, or, when it is gone, the same container re-created from the
   * configuration saved at the swap (under the app's name, from the previous image, on the same
   * volumes, which the restore below then brings back to the snapshot). Idempotent across restarts.
   */
  private async previousContainer(ctx: StepContext, oldId: string): Promise<ContainerInspect> {
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
    for (const c of await this.ours(ctx.job.id, ctx.signal).catch(() => [])) {
      if (c.Labels?.[LABEL_ROLE]) await this.client.removeContainer(c.Id, { force: true }).catch(() => {});
    }
    if (ctx.job.journal.facts["snapshot.complete"] !== "true") {
      await rm(this.snapshotPath(ctx.job.id), { recursive: true, force: true });
    }
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

  private snapshotPath(jobId: string): string {
    return join(this.opts.snapshotDir, jobId);
  }

  private async restore(ctx: StepContext, old: ContainerInspect): Promise<void> {
    const dir = ctx.job.journal.facts["snapshot.dir"] ?? this.snapshotPath(ctx.job.id);
    const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as SnapshotManifest;
    for (const m of manifest.mounts) {
      const helperName = `${this.opts.appContainer}-pgu-restore-${short(ctx.job.id)}`;
      await this.removeIfOurs(helperName, ctx.job.id, ctx.signal);
      const mount =
        m.type === "volume"
          ? { Type: "volume", Source: m.name, Target: m.destination }
          : { Type: "bind", Source: m.source, Target: m.destination };
      const helper = await this.client.createContainer(
        helperName,
        {
          Image: old.Image,
          Entrypoint: [
            "/bin/sh",
            "-c",
            'cd "$1" && rm -rf -- ./* ./.[!.]* ./..?* ; ls -A "$1" | wc -l',
            "sh",
            m.destination,
          ],
          Cmd: [],
          Labels: { [LABEL_JOB]: ctx.job.id, [LABEL_ROLE]: "restore" },
          HostConfig: { NetworkMode: "none", Mounts: [mount] },
        },
        ctx.signal,
      );
      const began = Date.now();
      try {
        await this.client.startContainer(helper, ctx.signal);
        const code = await this.client.wait(helper, ctx.signal, { timeoutMs: 10 * 60_000 });
        if (code !== 0) {
          const logs = await this.client.logs(helper, { maxBytes: 4096 }).catch(() => undefined);
          throw new UpdaterError(
            "failed_precondition",
            `could not empty ${m.destination} before restoring it (exit ${code}): ${logs?.output.trim() ?? ""}`,
          );
        }
        const hash = createHash("sha256");
        const file = join(dir, m.file);
        for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
        if (hash.digest("hex") !== m.sha256)
          throw new UpdaterError(
            "failed_precondition",
            `the snapshot file ${file} is damaged (sha256 mismatch)`,
          );
        await this.client.archivePut(
          helper,
          posix.dirname(m.destination),
          createReadStream(file),
          ctx.signal,
        );
        ctx.output(
          `restored ${m.destination} (${m.name ?? m.source ?? m.type}) from the snapshot (${formatBytes(m.bytes)}) in ${Date.now() - began} ms\n`,
        );
      } finally {
        await this.client.removeContainer(helper, { force: true }).catch(() => {});
      }
    }
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

  private async volumeSizes(signal: AbortSignal): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    const df = await this.client
      .json<{ Volumes?: Array<{ Name: string; UsageData?: { Size?: number } }> | null }>(
        "GET",
        "/system/df",
        { signal, timeoutMs: 60_000 },
      )
      .catch(() => ({ Volumes: [] }));
    for (const v of df.Volumes ?? []) sizes.set(v.Name, v.UsageData?.Size ?? -1);
    return sizes;
  }

  private authFor(registry: string): RegistryAuth | undefined {
    const auth = this.opts.registryAuth;
    if (!auth || auth.registry !== registry) return undefined;
    return { username: auth.username, password: auth.password, serveraddress: auth.registry };
  }

  private async pruneSnapshots(keepJob: string): Promise<void> {
    const entries = await readdir(this.opts.snapshotDir, { withFileTypes: true }).catch(() => []);
    const complete: Array<{ dir: string; at: string }> = [];
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const dir = join(this.opts.snapshotDir, e.name);
      const m = await readFile(join(dir, "manifest.json"), "utf8")
        .then((t) => JSON.parse(t) as SnapshotManifest)
        .catch(() => undefined);
      if (m) complete.push({ dir, at: m.createdAt });
    }
    complete.sort((a, b) => (a.at < b.at ? 1 : -1));
    for (const old of complete.slice(this.settings.snapshotKeep)) {
      if (!old.dir.endsWith(keepJob)) await rm(old.dir, { recursive: true, force: true });
    }
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
    if (f["migration.started"] === "true") {
      steps.push(
        `The migration ran: restore the data before starting the previous version. The snapshot is in ${f["snapshot.dir"] ?? this.snapshotPath(ctx.job.id)} (manifest.json lists each mount and its tar file); for each, empty the volume and extract the tar into the parent of its destination, e.g. docker run --rm -v VOLUME:/restore -v SNAPSHOT_DIR:/snap:ro IMAGE sh -c 'rm -rf /restore/* /restore/.[!.]* && tar -xpf /snap/mount-0.tar -C /restore --strip-components=1'`,
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

function dataMounts(c: ContainerInspect): MountPoint[] {
  return (c.Mounts ?? []).filter(
    (m) =>
      (m.Type === "volume" || m.Type === "bind") &&
      !m.Destination.endsWith("docker.sock") &&
      m.Destination !== "/",
  );
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
