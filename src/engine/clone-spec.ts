/**
 * The create body that re-creates a container on a new image with everything else unchanged.
 * Pure: works on inspect JSON only, no engine calls.
 *
 * The difficulty is that a container's inspected `Config` already merges the image's defaults into
 * the user's settings (ENV, LABEL, CMD, ENTRYPOINT, WORKDIR, USER, HEALTHCHECK, VOLUME, EXPOSE,
 * STOPSIGNAL, SHELL). Passing it back unchanged would freeze the OLD image's defaults onto the new
 * version. So every value equal to the old image's own default is dropped, and the engine fills
 * the new image's defaults in at create time, exactly as it does for `docker run`.
 */
import { UpdaterError } from "../errors.js";
import type {
  ContainerConfig,
  ContainerCreateBody,
  ContainerInspect,
  EndpointSettings,
  HealthConfig,
  HostConfig,
  ImageInspect,
  MountPoint,
} from "./docker-client.js";

export interface CloneOptions {
  /** Labels set on the clone, over any label it would otherwise carry. */
  labels?: Record<string, string>;
}

/** A network the clone must join after create (POST /networks/{network}/connect). */
export interface NetworkConnect {
  network: string;
  EndpointConfig: EndpointSettings;
}

const COMPOSE_LABEL_PREFIX = "com.docker.compose.";

/** Endpoint fields a user can set; the others (IDs, addresses, gateway) are the engine's runtime state. */
const ENDPOINT_USER_FIELDS = ["IPAMConfig", "Links", "Aliases", "DriverOpts"] as const;

/**
 * The body of `POST /containers/create?name=...` that re-creates `old` on `newImageRef` (the
 * reference stored as the clone's `Config.Image`, e.g. `repo@sha256:...`) with every user setting
 * kept and every default of the old image replaced by the new image's. Throws `invalid_argument`
 * when `newImageRef` does not name `newImage` (neither its ID, a RepoTag nor its digest).
 *
 * Rules, applied to `old.Config` against `oldImage.Config`:
 * - `Env`: entries equal to an old image entry (same `KEY=value`) are dropped; the rest are kept, so
 *   a user's override of an image default with another value survives and beats the new default.
 * - `Labels`: labels with the same value on the old image are dropped; `com.docker.compose.*` labels
 *   and any other label are kept; `options.labels` is merged over them.
 * - `Entrypoint`: dropped when equal to the old image's. `Cmd`: dropped when equal to the old
 *   image's and the entrypoint is dropped or empty (with a user entrypoint the engine never fills
 *   the image's Cmd, so it is the user's and is kept). `ArgsEscaped` goes with `Cmd`.
 * - `WorkingDir`, `User`, `StopSignal`, `Shell`, `OnBuild`: dropped when equal to the old image's.
 * - `Healthcheck`: each field (Test, Interval, Timeout, StartPeriod, Retries) equal to the old
 *   image's is dropped; the engine fills the dropped fields from the new image. Dropped entirely
 *   when nothing is left.
 * - `Volumes`, `ExposedPorts`: keys the old image declares are dropped, the user's kept.
 * - `Hostname`: dropped when it is the engine's default (the old container's short ID, or anything
 *   under `host` or `container:` network mode); a hostname the user chose is kept. `Domainname`:
 *   kept when set, except under `host`/`container:` mode. `MacAddress` is dropped (the clone
 *   briefly coexists with the old container).
 * - A user value that happens to equal the old image's default cannot be told apart from the
 *   default; it is dropped and the new image's default applies.
 *
 * `HostConfig` is kept as inspected, with one addition: volumes mounted without a name of the
 * user's choosing (anonymous volumes from an image VOLUME or `-v /path`, and `--mount type=volume`
 * without a source) are mounted into the clone by name, so their data survives the update as it
 * does with `docker compose up`.
 *
 * `NetworkingConfig` holds the endpoint on the network of `HostConfig.NetworkMode`, with only the
 * user's fields (IPAMConfig, Links, Aliases without the old short ID, DriverOpts). Nothing is sent
 * for `host`, `none` and `container:` modes. Engine API 1.41 accepts one endpoint at create; the
 * other networks are listed by {@link cloneNetworkConnects}.
 */
export function cloneCreateBody(
  old: ContainerInspect,
  oldImage: ImageInspect,
  newImage: ImageInspect,
  newImageRef: string,
  options: CloneOptions = {},
): ContainerCreateBody {
  assertNames(newImageRef, newImage);
  const config = cloneConfig(old, oldImage.Config ?? {});
  if (options.labels) config.Labels = { ...(config.Labels ?? {}), ...options.labels };
  const body: ContainerCreateBody = { ...config, Image: newImageRef, HostConfig: cloneHostConfig(old) };
  const primary = primaryNetwork(old);
  if (primary)
    body.NetworkingConfig = { EndpointsConfig: { [primary.name]: userEndpoint(old, primary.endpoint) } };
  return body;
}

/**
 * The networks of `old` besides the one of its NetworkMode, each with the user's endpoint fields, in
 * the order the engine lists them: connect the clone to each after creating it.
 */
export function cloneNetworkConnects(old: ContainerInspect): NetworkConnect[] {
  if (!joinsNetworks(old.HostConfig.NetworkMode)) return [];
  const primary = primaryNetwork(old);
  return Object.entries(old.NetworkSettings?.Networks ?? {})
    .filter(([name]) => name !== primary?.name)
    .map(([network, endpoint]) => ({ network, EndpointConfig: userEndpoint(old, endpoint) }));
}

function cloneConfig(old: ContainerInspect, image: ContainerConfig): ContainerConfig {
  const config: ContainerConfig = structuredClone(old.Config);
  delete config.MacAddress;
  const mode = old.HostConfig.NetworkMode ?? "default";
  const sharedUts = mode === "host" || mode.startsWith("container:");
  if (sharedUts || !config.Hostname || config.Hostname === old.Id.slice(0, 12)) delete config.Hostname;
  if (sharedUts || !config.Domainname) delete config.Domainname;

  setOrDelete(
    config,
    "Env",
    config.Env?.filter((entry) => !(image.Env ?? []).includes(entry)),
  );
  setOrDelete(config, "Labels", userLabels(config.Labels, image.Labels));

  const entrypointFromImage = sameList(config.Entrypoint, image.Entrypoint);
  if (entrypointFromImage) delete config.Entrypoint;
  if ((entrypointFromImage || config.Entrypoint?.length === 0) && sameList(config.Cmd, image.Cmd)) {
    delete config.Cmd;
    delete config.ArgsEscaped;
  }
  for (const key of ["WorkingDir", "User", "StopSignal"] as const) {
    if ((config[key] ?? "") === (image[key] ?? "")) delete config[key];
  }
  for (const key of ["Shell", "OnBuild"] as const) {
    if (sameList(config[key], image[key])) delete config[key];
  }
  setOrDelete(config, "Healthcheck", userHealthcheck(config.Healthcheck, image.Healthcheck));
  setOrDelete(config, "Volumes", withoutKeys(config.Volumes, image.Volumes));
  setOrDelete(config, "ExposedPorts", withoutKeys(config.ExposedPorts, image.ExposedPorts));
  return config;
}

function cloneHostConfig(old: ContainerInspect): HostConfig {
  const host: HostConfig = structuredClone(old.HostConfig);
  const volumes = new Map<string, MountPoint>();
  for (const mount of old.Mounts ?? []) {
    if (mount.Type === "volume" && mount.Name) volumes.set(mount.Destination, mount);
  }
  if (host.Mounts) {
    host.Mounts = host.Mounts.map((m) => {
      const current = m.Target === undefined ? undefined : volumes.get(m.Target);
      return m.Type === "volume" && !m.Source && current?.Name ? { ...m, Source: current.Name } : m;
    });
  }
  const covered = new Set<string>([
    ...(host.Binds ?? []).map(bindDestination),
    ...(host.Mounts ?? []).flatMap((m) => (m.Target === undefined ? [] : [m.Target])),
    ...Object.keys(host.Tmpfs ?? {}),
  ]);
  const anonymous = [...volumes.values()]
    .filter((m) => !covered.has(m.Destination))
    .map((m) => `${m.Name}:${m.Destination}${m.RW === false ? ":ro" : ""}`);
  if (anonymous.length > 0) host.Binds = [...(host.Binds ?? []), ...anonymous];
  return host;
}

function primaryNetwork(old: ContainerInspect): { name: string; endpoint: EndpointSettings } | undefined {
  const mode = old.HostConfig.NetworkMode ?? "default";
  if (!joinsNetworks(mode)) return undefined;
  const networks = old.NetworkSettings?.Networks ?? {};
  const name = mode === "default" ? "bridge" : mode;
  const byName = networks[name];
  if (byName) return { name, endpoint: byName };
  const byId = Object.entries(networks).find(([, e]) => e.NetworkID?.startsWith(mode));
  if (byId) return { name: byId[0], endpoint: byId[1] };
  return undefined;
}

function joinsNetworks(mode: string | undefined): boolean {
  return mode !== "host" && mode !== "none" && !(mode ?? "").startsWith("container:");
}

function userEndpoint(old: ContainerInspect, endpoint: EndpointSettings): EndpointSettings {
  const kept: EndpointSettings = {};
  for (const field of ENDPOINT_USER_FIELDS) {
    const value = endpoint[field];
    if (value !== undefined && value !== null)
      (kept as Record<string, unknown>)[field] = structuredClone(value);
  }
  if (kept.Aliases) {
    const shortId = old.Id.slice(0, 12);
    kept.Aliases = kept.Aliases.filter((alias) => alias !== shortId && alias !== old.Id);
    if (kept.Aliases.length === 0) delete kept.Aliases;
  }
  return kept;
}

function userLabels(
  labels: Record<string, string> | null | undefined,
  imageLabels: Record<string, string> | null | undefined,
): Record<string, string> | undefined {
  if (!labels) return undefined;
  const kept: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    if (key.startsWith(COMPOSE_LABEL_PREFIX) || imageLabels?.[key] !== value) kept[key] = value;
  }
  return kept;
}

function userHealthcheck(
  health: HealthConfig | null | undefined,
  imageHealth: HealthConfig | null | undefined,
): HealthConfig | undefined {
  if (!health) return undefined;
  if (!imageHealth) return health;
  const kept: HealthConfig = {};
  for (const [key, value] of Object.entries(health)) {
    if (!sameJson(value, imageHealth[key])) kept[key] = value;
  }
  return kept;
}

function withoutKeys(
  map: Record<string, object> | null | undefined,
  imageMap: Record<string, object> | null | undefined,
): Record<string, object> | undefined {
  if (!map) return undefined;
  return Object.fromEntries(Object.entries(map).filter(([key]) => !Object.hasOwn(imageMap ?? {}, key)));
}

/** Sets `config[key]` to a non-empty list or map, or removes the key so the image's default applies. */
function setOrDelete<K extends "Env" | "Labels" | "Healthcheck" | "Volumes" | "ExposedPorts">(
  config: ContainerConfig,
  key: K,
  value: ContainerConfig[K] | undefined,
): void {
  const empty =
    value === undefined ||
    value === null ||
    (Array.isArray(value) ? value.length === 0 : Object.keys(value).length === 0);
  if (empty) delete config[key];
  else config[key] = value;
}

/** Entrypoint/Cmd equality: null and absent are the same; an empty list is an explicit reset. */
function sameList(a: readonly string[] | null | undefined, b: readonly string[] | null | undefined): boolean {
  if (a === null || a === undefined) return b === null || b === undefined;
  if (b === null || b === undefined) return false;
  return a.length === b.length && a.every((item, i) => item === b[i]);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The container path of a `source:destination[:options]` bind. */
function bindDestination(bind: string): string {
  return bind.split(":")[1] ?? bind;
}

function assertNames(ref: string, image: ImageInspect): void {
  const digest = /@(sha256:[0-9a-f]{64})$/.exec(ref)?.[1];
  const names = digest
    ? (image.RepoDigests ?? []).some((d) => d.endsWith(`@${digest}`))
    : ref === image.Id ||
      ref === image.Id.replace(/^sha256:/, "") ||
      (image.RepoTags ?? []).some((tag) => normalizeRef(tag) === normalizeRef(ref));
  if (!names) {
    throw new UpdaterError(
      "invalid_argument",
      `the new image reference ${ref} does not name image ${image.Id} (its RepoTags and RepoDigests do not include it)`,
    );
  }
}

function normalizeRef(ref: string): string {
  const slash = ref.lastIndexOf("/");
  const withTag = ref.lastIndexOf(":") > slash ? ref : `${ref}:latest`;
  return withTag.replace(/^docker\.io\//, "").replace(/^library\//, "");
}
