/**
 * Fixtures on the private Docker engine of `scripts/engine.sh` for tests that need a real one:
 * the engine check, tiny busybox images built without Docker Hub (`docker import` of a busybox
 * rootfs, then `docker build` FROM it) and pushed to the loopback registry, and the cleanup of
 * everything a test created. The docker CLI is used here only to set fixtures up; the code under
 * test talks to the engine through DockerClient.
 *
 * Network rule: every container a fixture starts uses `--network none` or `host`, and carries the
 * label {@link TEST_LABEL}=1 plus {@link RUN_LABEL}=<this run's id>, so that cleanup removes only
 * what this run created.
 */
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "./run.js";

/** Label on every container a test creates. */
export const TEST_LABEL = "io.processgit.updater.test";
/** Label holding the id of the run that created a container. */
export const RUN_LABEL = "io.processgit.updater.test.run";
/** Busybox, statically linked (Debian's busybox-static), the only program in the fixture images. */
export const BUSYBOX = "/bin/busybox";

/**
 * The image the snapshot helper runs in during tests: the updater's own image, as in production
 * (scripts/test.sh builds it before the tests). PGU_HELPER_IMAGE overrides it (any image with node).
 */
export const HELPER_IMAGE = process.env.PGU_HELPER_IMAGE ?? "processgit-updater:test";

const START_HINT =
  'run `eval "$(bash scripts/engine.sh start)"` in this shell first (it starts a private engine and a loopback registry)';

/** What {@link requireEngine} found. */
export interface EngineEnv {
  /** The DOCKER_HOST the tests use, e.g. unix:///tmp/pgu-engine/docker.sock. */
  dockerHost: string;
  /** host:port of the loopback registry (PGU_REGISTRY, default 127.0.0.1:25000). */
  registry: string;
  /** The engine's API version, e.g. "1.41". */
  apiVersion: string;
}

/**
 * Checks that DOCKER_HOST is set, the engine answers and the registry answers; throws an Error that
 * says how to start them otherwise. Tests call it in beforeAll: a missing engine fails the file, it
 * never skips it.
 */
export async function requireEngine(): Promise<EngineEnv> {
  const dockerHost = process.env.DOCKER_HOST;
  if (!dockerHost) throw new Error(`DOCKER_HOST is not set: ${START_HINT}.`);
  const version = await run("docker", ["version", "--format", "{{.Server.APIVersion}}"], {
    timeoutMs: 10_000,
  });
  if (version.code !== 0) {
    throw new Error(
      `the Docker engine at ${dockerHost} does not answer (${version.stderr.trim()}): ${START_HINT}.`,
    );
  }
  const registry = process.env.PGU_REGISTRY ?? "127.0.0.1:25000";
  if (!/^127\.0\.0\.1:\d+$/.test(registry)) throw new Error(`PGU_REGISTRY=${registry} is not on 127.0.0.1`);
  try {
    const res = await fetch(`http://${registry}/v2/`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (err) {
    throw new Error(`the registry at ${registry} does not answer (${String(err)}): ${START_HINT}.`);
  }
  return { dockerHost, registry, apiVersion: version.stdout.trim() };
}

/** Runs the docker CLI against DOCKER_HOST; resolves stdout, throws with stderr on failure. */
export async function docker(args: string[], options: { timeoutMs?: number } = {}): Promise<string> {
  const result = await run("docker", args, { timeoutMs: options.timeoutMs ?? 60_000 });
  if (result.code !== 0) {
    throw new Error(
      `docker ${args.join(" ")} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`,
    );
  }
  return result.stdout;
}

/** One image variant pushed to the registry. */
export interface PushedImage {
  /** repo:tag as built and pushed. */
  tag: string;
  /** The manifest digest, sha256:... */
  digest: string;
  /** repo@sha256:..., the reference to pull by digest. */
  ref: string;
  /** The local image ID, sha256:... */
  id: string;
}

/** Dockerfile lines (after FROM) of the default v1 fixture: every image default the clone rules handle. */
export const V1_DOCKERFILE = [
  "ENV A=1 B=img",
  "LABEL org.opencontainers.image.version=1.0.0 x.from.image=v1 x.same=in-both",
  "WORKDIR /app",
  "USER 1000:1000",
  "VOLUME /data",
  "EXPOSE 20001",
  "STOPSIGNAL SIGUSR1",
  'HEALTHCHECK --interval=1s --timeout=2s CMD ["/bin/busybox","true"]',
  'CMD ["/bin/busybox","sleep","1000"]',
];

/** Dockerfile lines of the default v2 fixture: every default of v1 changed, plus an ENTRYPOINT. */
export const V2_DOCKERFILE = [
  "ENV A=2 B=img2 C=new",
  "LABEL org.opencontainers.image.version=2.0.0 x.from.image=v2 x.same=in-both",
  "WORKDIR /app2",
  "USER 2000:2000",
  "VOLUME /data /cache",
  "EXPOSE 20002",
  "STOPSIGNAL SIGINT",
  'HEALTHCHECK --interval=2s --timeout=3s --retries=5 CMD ["/bin/busybox","echo","ok"]',
  'ENTRYPOINT ["/bin/busybox"]',
  'CMD ["sleep","2000"]',
];

export interface FixtureImagesOptions {
  /** Repository inside the registry. Default "pgu-test/app". */
  repository?: string;
  /** Dockerfile lines after FROM for each variant, keyed by tag prefix. Default v1 and v2 above. */
  variants?: Record<string, string[]>;
  /**
   * Bytes of random data in each variant (COPY payload /payload): unique layers, so a pull always
   * downloads something. Default 1 MiB.
   */
  payloadBytes?: number;
  /** Remove the images from the engine after the push, so that a pull has to download them. Default true. */
  removeLocal?: boolean;
}

/** The images of {@link buildFixtureImages}. */
export interface FixtureImages {
  /** registry/repository. */
  repo: string;
  /** The imported busybox image (local only), for one-shot helper containers. */
  base: string;
  images: Record<string, PushedImage>;
}

/**
 * Builds a busybox base image with `docker import`, then one image per variant FROM it with
 * `docker build`, and pushes each to the loopback registry as `<repo>:<variant>-<run id>`.
 * Everything is registered with `janitor` for removal (local images and registry manifests).
 */
export async function buildFixtureImages(
  env: EngineEnv,
  janitor: DockerJanitor,
  options: FixtureImagesOptions = {},
): Promise<FixtureImages> {
  const repo = `${env.registry}/${options.repository ?? "pgu-test/app"}`;
  const variants = options.variants ?? { v1: V1_DOCKERFILE, v2: V2_DOCKERFILE };
  const dir = await mkdtemp(join(tmpdir(), "pgu-docker-fixture-"));
  janitor.onCleanup(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, "rootfs");
  await mkdir(join(root, "bin"), { recursive: true });
  await mkdir(join(root, "tmp"), { recursive: true });
  await copyFile(BUSYBOX, join(root, "bin/busybox"));
  await symlink("busybox", join(root, "bin/sh"));
  await run("tar", ["-C", root, "-cf", join(dir, "rootfs.tar"), "."]);
  const base = `pgu-test/base:${janitor.runId}`;
  await docker(["import", join(dir, "rootfs.tar"), base]);
  janitor.image(base);

  const images: Record<string, PushedImage> = {};
  for (const [name, lines] of Object.entries(variants)) {
    const context = join(dir, `ctx-${name}`);
    await mkdir(context);
    await writeFile(join(context, "payload"), randomBytes(options.payloadBytes ?? 1024 * 1024));
    await writeFile(
      join(context, "Dockerfile"),
      [`FROM ${base}`, "COPY payload /payload", ...lines, ""].join("\n"),
    );
    const tag = `${repo}:${name}-${janitor.runId}`;
    await docker(["build", "-q", "-t", tag, context], { timeoutMs: 120_000 });
    janitor.image(tag);
    const pushed = await docker(["push", tag], { timeoutMs: 120_000 });
    const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed)?.[1];
    if (!digest) throw new Error(`docker push ${tag} printed no digest:\n${pushed}`);
    janitor.manifest(repo, digest);
    janitor.image(`${repo}@${digest}`);
    const id = (await docker(["image", "inspect", "--format", "{{.Id}}", tag])).trim();
    images[name] = { tag, digest, ref: `${repo}@${digest}`, id };
  }
  if (options.removeLocal ?? true) {
    await docker(["rmi", ...Object.values(images).map((i) => i.tag)]);
  }
  return { repo, base, images };
}

/** `--label` arguments for a container this run creates. */
export function labelArgs(janitor: DockerJanitor): string[] {
  return ["--label", `${TEST_LABEL}=1`, "--label", `${RUN_LABEL}=${janitor.runId}`];
}

/** The labels for a container created through the Engine API. */
export function testLabels(janitor: DockerJanitor): Record<string, string> {
  return { [TEST_LABEL]: "1", [RUN_LABEL]: janitor.runId };
}

/**
 * Runs a one-shot container (`docker run --rm --network none`, labelled) and resolves its stdout.
 * `mounts` are `-v` values.
 */
export async function runOnce(
  janitor: DockerJanitor,
  image: string,
  command: string[],
  options: { mounts?: string[]; user?: string } = {},
): Promise<string> {
  const args = ["run", "--rm", "--network", "none", ...labelArgs(janitor)];
  for (const mount of options.mounts ?? []) args.push("-v", mount);
  if (options.user) args.push("--user", options.user);
  return docker([...args, image, ...command]);
}

/**
 * Remembers what a test run created on the engine (containers, volumes, images, registry
 * manifests, temporary files) and removes exactly that, newest first, in {@link cleanup}.
 */
export class DockerJanitor {
  /** Unique per janitor: in names, tags and the {@link RUN_LABEL} label. */
  readonly runId = `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
  private readonly steps: Array<() => Promise<unknown>> = [];

  constructor(private readonly env: EngineEnv) {}

  /** A name unique to this run, e.g. `pgu-test-clone-<run id>`. */
  name(what: string): string {
    return `pgu-test-${what}-${this.runId}`;
  }

  /** Removes the container (forced, with its anonymous volumes). */
  container(idOrName: string): string {
    this.steps.push(() => run("docker", ["rm", "-f", "-v", idOrName]));
    return idOrName;
  }

  volume(name: string): string {
    this.steps.push(() => run("docker", ["volume", "rm", "-f", name]));
    return name;
  }

  image(ref: string): string {
    this.steps.push(() => run("docker", ["rmi", "-f", ref]));
    return ref;
  }

  /** Deletes the manifest from the loopback registry (its storage has deletes enabled). */
  manifest(repo: string, digest: string): void {
    const name = repo.slice(this.env.registry.length + 1);
    this.steps.push(() =>
      fetch(`http://${this.env.registry}/v2/${name}/manifests/${digest}`, {
        method: "DELETE",
        signal: AbortSignal.timeout(5_000),
      }).catch(() => undefined),
    );
  }

  onCleanup(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }

  /**
   * Runs every removal, newest first, then removes any container still labelled with this run's id
   * (one a failed test created but did not register). Never throws.
   */
  async cleanup(): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      await step?.().catch(() => undefined);
    }
    const left = await run("docker", ["ps", "-aq", "--filter", `label=${RUN_LABEL}=${this.runId}`]);
    const ids = left.stdout.split("\n").filter((id) => id.trim() !== "");
    if (ids.length > 0) await run("docker", ["rm", "-f", "-v", ...ids]);
  }
}
