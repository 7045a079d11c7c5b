/**
 * A small typed HTTP client for the Docker Engine API over its socket (node:http only): JSON calls,
 * image pulls with progress, container archives (tar in and out), wait and logs. It owns the mapping
 * of engine failures to UpdaterError codes and the rule that no call waits forever: every call has a
 * deadline (the client's `timeoutMs` unless the call sets its own) combined with the caller's signal.
 *
 * The types below describe only the inspect fields the updater reads or passes back to the engine;
 * every other field is kept as `unknown` so that a round trip (inspect, then create) loses nothing.
 */
import * as http from "node:http";
import type { Readable } from "node:stream";
import { UpdaterError } from "../errors.js";

export interface DockerClientOptions {
  /** `unix:///var/run/docker.sock`, `tcp://host:port` or `http://host:port`. */
  dockerHost: string;
  /** Deadline of one call in milliseconds (default 30 000); pulls use it as an inactivity limit. */
  timeoutMs?: number;
  /** The API version prefix of every path (default "v1.41", Engine 20.10). */
  apiVersion?: string;
}

export type QueryValue = string | number | boolean | undefined;

export interface JsonCallOptions {
  query?: Record<string, QueryValue>;
  /** Sent as JSON. */
  body?: unknown;
  signal?: AbortSignal;
  /** Overrides the client's deadline for this call; 0 or Infinity means none (then pass a signal). */
  timeoutMs?: number;
  /** Statuses that count as success besides 2xx, e.g. 304 for starting a running container. */
  okStatuses?: readonly number[];
}

/** Registry credentials for one pull; sent as the X-Registry-Auth header, never logged. */
export interface RegistryAuth {
  username: string;
  password: string;
  serveraddress: string;
}

export interface PullOptions {
  auth?: RegistryAuth;
  signal?: AbortSignal;
  /**
   * Compressed layer bytes downloaded so far and in total, over the layers the engine downloads
   * (layers it already has count for nothing). Called at most every `progressIntervalMs` and once
   * at the end, when done equals total.
   */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Minimum time between two progress calls (default 100 ms). */
  progressIntervalMs?: number;
  /** Longest silence of the engine during the pull (default: the client's timeoutMs). */
  idleTimeoutMs?: number;
}

export interface PullResult {
  /** The manifest digest the engine reported (`sha256:...`), when it reported one. */
  digest: string | undefined;
  /** The engine's closing status line, e.g. "Status: Downloaded newer image for ...". */
  status: string;
  totalBytes: number;
}

export interface LogsOptions {
  stdout?: boolean;
  stderr?: boolean;
  /** Bytes kept per stream (and for the interleaved output): the head and the tail (default 64 KiB). */
  maxBytes?: number;
  /** Only the last N lines, as the engine counts them. */
  tail?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface ContainerLogs {
  stdout: string;
  stderr: string;
  /** Both streams in the order the engine recorded them. */
  output: string;
  /** True when something was elided because a stream exceeded maxBytes. */
  truncated: boolean;
}

export type WaitCondition = "not-running" | "next-exit" | "removed";

/** Container healthcheck as the engine stores it (durations in nanoseconds). */
export interface HealthConfig {
  Test?: string[] | null;
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  Retries?: number;
  [field: string]: unknown;
}

/** `Config` of a container, and of an image (the image's defaults). */
export interface ContainerConfig {
  Hostname?: string;
  Domainname?: string;
  User?: string;
  Tty?: boolean;
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  Image?: string;
  WorkingDir?: string;
  Labels?: Record<string, string> | null;
  Volumes?: Record<string, object> | null;
  ExposedPorts?: Record<string, object> | null;
  Healthcheck?: HealthConfig | null;
  StopSignal?: string;
  StopTimeout?: number | null;
  Shell?: string[] | null;
  OnBuild?: string[] | null;
  ArgsEscaped?: boolean;
  MacAddress?: string;
  [field: string]: unknown;
}

/** One entry of `HostConfig.Mounts` (the `--mount` form). */
export interface MountSpec {
  Type?: string;
  Source?: string;
  Target?: string;
  ReadOnly?: boolean;
  [field: string]: unknown;
}

export interface HostConfig {
  NetworkMode?: string;
  Binds?: string[] | null;
  Mounts?: MountSpec[] | null;
  Tmpfs?: Record<string, string> | null;
  VolumesFrom?: string[] | null;
  RestartPolicy?: { Name?: string; MaximumRetryCount?: number };
  Init?: boolean | null;
  [field: string]: unknown;
}

/** A container's endpoint on one network (inspect `NetworkSettings.Networks[name]`). */
export interface EndpointSettings {
  IPAMConfig?: Record<string, unknown> | null;
  Links?: string[] | null;
  Aliases?: string[] | null;
  DriverOpts?: Record<string, string> | null;
  NetworkID?: string;
  [field: string]: unknown;
}

/** One entry of the container's top-level `Mounts` (what is mounted now, with volume names). */
export interface MountPoint {
  Type?: string;
  Name?: string;
  Source?: string;
  Destination: string;
  RW?: boolean;
  [field: string]: unknown;
}

export interface ContainerState {
  Status?: string;
  Running?: boolean;
  ExitCode?: number;
  Health?: { Status?: string; [field: string]: unknown } | null;
  [field: string]: unknown;
}

/** GET /containers/{id}/json, the fields the updater uses. */
export interface ContainerInspect {
  Id: string;
  Name: string;
  /** The local image ID (sha256:...), not a registry digest. */
  Image: string;
  Config: ContainerConfig;
  HostConfig: HostConfig;
  NetworkSettings?: { Networks?: Record<string, EndpointSettings> | null; [field: string]: unknown };
  Mounts?: MountPoint[] | null;
  State?: ContainerState;
  [field: string]: unknown;
}

/** GET /images/{name}/json, the fields the updater uses. */
export interface ImageInspect {
  Id: string;
  RepoTags?: string[] | null;
  /** `repo@sha256:...` for every registry the image was pulled from or pushed to. */
  RepoDigests?: string[] | null;
  Config?: ContainerConfig | null;
  [field: string]: unknown;
}

/** The body of POST /containers/create. */
export interface ContainerCreateBody extends ContainerConfig {
  HostConfig: HostConfig;
  NetworkingConfig?: { EndpointsConfig: Record<string, EndpointSettings> };
}

type Target = { socketPath: string } | { host: string; port: number };

interface Call {
  method: string;
  path: string;
  query?: Record<string, QueryValue> | undefined;
  headers?: Record<string, string>;
  body?: Buffer | Readable | undefined;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

interface Opened {
  req: http.ClientRequest;
  res: http.IncomingMessage;
  deadline: Deadline;
  fail: (err: unknown) => unknown;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_ERROR_BODY = 64 * 1024;

/** Docker Engine API client; one keep-alive connection pool per instance (see {@link close}). */
export class DockerClient {
  readonly dockerHost: string;
  private readonly target: Target;
  private readonly timeoutMs: number;
  private readonly apiVersion: string;
  private readonly agent = new http.Agent({ keepAlive: true });

  constructor(options: DockerClientOptions) {
    this.dockerHost = options.dockerHost;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.apiVersion = (options.apiVersion ?? "v1.41").replace(/^\/+|\/+$/g, "");
    this.target = parseDockerHost(options.dockerHost);
  }

  /** Closes idle keep-alive connections; calls still running are not affected. */
  close(): void {
    this.agent.destroy();
  }

  /**
   * One JSON call: `path` without the version prefix, e.g. `/containers/x/json`. Resolves the parsed
   * answer (undefined for an empty one). Rejects with an UpdaterError carrying the engine's message:
   * 400 `invalid_argument`, 404 `not_found`, 409 `failed_precondition`, 5xx and unreachable engine
   * `unavailable` (reason ENGINE_UNAVAILABLE), deadline `deadline_exceeded`, invalid JSON
   * `bad_gateway`. A caller's abort rejects with the signal's reason.
   */
  async json<T>(method: string, path: string, options: JsonCallOptions = {}): Promise<T> {
    const opened = await this.open({
      method,
      path,
      query: options.query,
      headers: options.body === undefined ? {} : { "content-type": "application/json" },
      body: options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body)),
      signal: options.signal,
      timeoutMs: options.timeoutMs,
    });
    try {
      const status = opened.res.statusCode ?? 0;
      const ok = (status >= 200 && status < 300) || (options.okStatuses ?? []).includes(status);
      if (!ok) throw await this.httpError(method, path, opened);
      const text = (await readAll(opened.res, Number.POSITIVE_INFINITY)).toString("utf8");
      if (text.trim() === "") return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch (err) {
        throw new UpdaterError(
          "bad_gateway",
          `the Docker engine answered ${method} ${path} with invalid JSON`,
          {
            cause: err,
          },
        );
      }
    } catch (err) {
      throw opened.fail(err);
    } finally {
      opened.deadline.clear();
    }
  }

  /** GET /containers/{id}/json. */
  inspectContainer(id: string, signal?: AbortSignal): Promise<ContainerInspect> {
    return this.json<ContainerInspect>("GET", `/containers/${encodeURIComponent(id)}/json`, { signal });
  }

  /** GET /images/{ref}/json; `ref` is an image ID, `repo:tag` or `repo@sha256:...`. */
  inspectImage(ref: string, signal?: AbortSignal): Promise<ImageInspect> {
    return this.json<ImageInspect>("GET", `/images/${encodeURIComponent(ref)}/json`, { signal });
  }

  /** POST /containers/create; resolves the new container's ID. */
  async createContainer(name: string, body: ContainerCreateBody, signal?: AbortSignal): Promise<string> {
    const created = await this.json<{ Id: string }>("POST", "/containers/create", {
      query: { name },
      body,
      signal,
    });
    return created.Id;
  }

  /** POST /containers/{id}/start; starting a running container is not an error. */
  async startContainer(id: string, signal?: AbortSignal): Promise<void> {
    await this.json("POST", `/containers/${encodeURIComponent(id)}/start`, { signal, okStatuses: [304] });
  }

  /** DELETE /containers/{id}; `volumes` also removes its anonymous volumes. */
  async removeContainer(
    id: string,
    options: { force?: boolean; volumes?: boolean; signal?: AbortSignal } = {},
  ): Promise<void> {
    await this.json("DELETE", `/containers/${encodeURIComponent(id)}`, {
      query: { force: options.force ?? false, v: options.volumes ?? false },
      signal: options.signal,
    });
  }

  /**
   * Pulls an image. A digest reference (`repo@sha256:...`) is passed whole as `fromImage`, which
   * Engine 20.10 accepts; a reference without tag pulls `latest` (never every tag). The engine
   * answers 200 and then streams progress; an `error` line in that stream rejects the pull.
   * Failures: `not_found` (no such manifest), `failed_precondition` (refused credentials),
   * `unavailable` (registry or engine unreachable), `deadline_exceeded` (engine silent for
   * `idleTimeoutMs`).
   */
  async pull(reference: string, options: PullOptions = {}): Promise<PullResult> {
    const headers: Record<string, string> = {};
    if (options.auth) headers["x-registry-auth"] = encodeRegistryAuth(options.auth);
    const idleMs = options.idleTimeoutMs ?? this.timeoutMs;
    const what = `pulling ${reference}`;
    const opened = await this.open({
      method: "POST",
      path: "/images/create",
      query: pullQuery(reference),
      headers,
      signal: options.signal,
      timeoutMs: idleMs,
    });
    const progress = new PullProgress(options.onProgress, options.progressIntervalMs ?? 100);
    let digest: string | undefined;
    let status = "";
    try {
      const code = opened.res.statusCode ?? 0;
      if (code < 200 || code >= 300) {
        const err = await this.httpError("POST", "/images/create", opened, what);
        throw code >= 500
          ? new UpdaterError("unavailable", err.message, { cause: err })
          : code === 401 || code === 403
            ? new UpdaterError("failed_precondition", err.message, { cause: err })
            : err;
      }
      for await (const line of ndjsonLines(opened.res, () => opened.deadline.restart())) {
        const msg = parsePullLine(line, reference);
        if (msg.error !== undefined) throw pullStreamError(reference, msg.error);
        if (typeof msg.status === "string") {
          const found = /^Digest: (sha256:[0-9a-f]{64})/.exec(msg.status);
          if (found) digest = found[1];
          if (msg.status.startsWith("Status:")) status = msg.status;
          progress.update(msg);
        }
      }
    } catch (err) {
      opened.req.destroy();
      throw opened.fail(err);
    } finally {
      opened.deadline.clear();
    }
    progress.finish();
    return { digest, status, totalBytes: progress.total };
  }

  /**
   * GET /containers/{id}/archive: `path` in the container (volumes included; the container need not
   * run) as a tar stream whose top entry is the base name of `path`. The deadline covers the
   * engine's answer only; afterwards the caller's signal governs, and the caller must consume or
   * destroy the stream.
   */
  async archiveGet(containerId: string, path: string, signal?: AbortSignal): Promise<Readable> {
    const apiPath = `/containers/${encodeURIComponent(containerId)}/archive`;
    const opened = await this.open({ method: "GET", path: apiPath, query: { path }, signal });
    try {
      const code = opened.res.statusCode ?? 0;
      if (code !== 200) throw await this.httpError("GET", apiPath, opened, `reading ${path}`);
    } catch (err) {
      opened.deadline.clear();
      throw opened.fail(err);
    }
    opened.deadline.clear();
    return opened.res;
  }

  /**
   * PUT /containers/{id}/archive: extracts a tar stream into the directory `path` of the container
   * (owners, modes and symlinks as the tar holds them). The deadline restarts with every chunk
   * sent, so it bounds silence rather than the whole upload. On failure `tar` is destroyed with the
   * error, so that a pipeline feeding it ends too.
   */
  async archivePut(containerId: string, path: string, tar: Readable, signal?: AbortSignal): Promise<void> {
    const apiPath = `/containers/${encodeURIComponent(containerId)}/archive`;
    await this.upload("PUT", apiPath, { path }, tar, signal, `writing into ${path}`);
  }

  /**
   * POST /images/create?fromSrc=-: imports a root filesystem (a tar stream) as the image
   * `repo:tag`, with one Dockerfile instruction in `changes` (e.g. a LABEL). The engine answers
   * with a progress stream; an `error` line in it rejects.
   */
  async importImage(
    tar: Readable,
    options: { repo: string; tag: string; changes?: string; signal?: AbortSignal },
  ): Promise<void> {
    const query = { fromSrc: "-", repo: options.repo, tag: options.tag, changes: options.changes };
    const answer = await this.upload(
      "POST",
      "/images/create",
      query,
      tar,
      options.signal,
      "importing an image",
    );
    const failed = /"error"\s*:\s*"([^"]*)"/.exec(answer.toString("utf8"));
    if (failed) {
      throw new UpdaterError(
        "failed_precondition",
        `the engine refused to import ${options.repo}:${options.tag}: ${failed[1]}`,
      );
    }
  }

  /**
   * Sends a tar stream as a request body and resolves the answer's body (at most 64 KiB). The
   * deadline restarts with every chunk sent; on failure `tar` is destroyed with the error, so that
   * a pipeline feeding it ends too.
   */
  private async upload(
    method: string,
    apiPath: string,
    query: Record<string, QueryValue>,
    tar: Readable,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<Buffer> {
    try {
      const opened = await this.open({
        method,
        path: apiPath,
        query,
        headers: { "content-type": "application/x-tar" },
        body: tar,
        signal,
      });
      try {
        const code = opened.res.statusCode ?? 0;
        if (code !== 200) throw await this.httpError(method, apiPath, opened, what);
        return await readAll(opened.res, MAX_ERROR_BODY);
      } catch (err) {
        opened.req.destroy();
        throw opened.fail(err);
      } finally {
        opened.deadline.clear();
      }
    } catch (err) {
      if (!tar.destroyed) tar.destroy(err instanceof Error ? err : undefined);
      throw err;
    }
  }

  /**
   * POST /containers/{id}/wait: resolves the exit code once the container is not running (or per
   * `condition`). Bounded by the client's deadline unless `timeoutMs` says otherwise.
   */
  async wait(
    containerId: string,
    signal?: AbortSignal,
    options: { condition?: WaitCondition; timeoutMs?: number } = {},
  ): Promise<number> {
    const answer = await this.json<{ StatusCode: number; Error?: { Message?: string } | null }>(
      "POST",
      `/containers/${encodeURIComponent(containerId)}/wait`,
      { query: { condition: options.condition ?? "not-running" }, signal, timeoutMs: options.timeoutMs },
    );
    const message = answer.Error?.Message;
    if (message) {
      throw new UpdaterError(
        "failed_precondition",
        `waiting for container ${containerId} failed: ${message}`,
      );
    }
    return answer.StatusCode;
  }

  /**
   * The logs a container wrote so far, split into stdout and stderr (the engine multiplexes them
   * unless the container has a TTY, in which case everything is stdout). Each stream keeps at most
   * `maxBytes`: its head and its tail, with a marker saying how much was elided in between.
   */
  async logs(containerId: string, options: LogsOptions = {}): Promise<ContainerLogs> {
    const maxBytes = options.maxBytes ?? 64 * 1024;
    const wantStdout = options.stdout ?? true;
    const wantStderr = options.stderr ?? true;
    const deadline = new Deadline(options.timeoutMs ?? this.timeoutMs);
    const signal = combine(options.signal, deadline.signal);
    try {
      const inspect = await this.json<ContainerInspect>(
        "GET",
        `/containers/${encodeURIComponent(containerId)}/json`,
        { signal, timeoutMs: 0 },
      );
      const apiPath = `/containers/${encodeURIComponent(containerId)}/logs`;
      const opened = await this.open({
        method: "GET",
        path: apiPath,
        query: {
          stdout: wantStdout,
          stderr: wantStderr,
          follow: false,
          tail: options.tail === undefined ? "all" : options.tail,
        },
        signal,
        timeoutMs: 0,
      });
      const out = {
        stdout: new HeadTail(maxBytes),
        stderr: new HeadTail(maxBytes),
        all: new HeadTail(maxBytes),
      };
      try {
        const code = opened.res.statusCode ?? 0;
        if (code !== 200) throw await this.httpError("GET", apiPath, opened);
        const sink = (stream: 1 | 2, chunk: Buffer) => {
          (stream === 2 ? out.stderr : out.stdout).push(chunk);
          out.all.push(chunk);
        };
        if (inspect.Config.Tty === true) {
          for await (const chunk of opened.res) sink(1, chunk as Buffer);
        } else {
          const demux = new Demultiplexer(sink);
          for await (const chunk of opened.res) demux.push(chunk as Buffer);
          demux.end();
        }
      } catch (err) {
        throw opened.fail(err);
      }
      return {
        stdout: out.stdout.text(),
        stderr: out.stderr.text(),
        output: out.all.text(),
        truncated: out.stdout.elided + out.stderr.elided + out.all.elided > 0,
      };
    } catch (err) {
      if (deadline.expired) {
        throw new UpdaterError(
          "deadline_exceeded",
          `reading the logs of ${containerId} took longer than ${deadline.ms} ms`,
          { cause: err },
        );
      }
      throw err;
    } finally {
      deadline.clear();
    }
  }

  /** Sends a request and resolves once the engine's status line and headers arrived. */
  private open(call: Call): Promise<Opened> {
    const deadline = new Deadline(call.timeoutMs ?? this.timeoutMs);
    const signal = combine(call.signal, deadline.signal);
    const label = `${call.method} ${call.path}`;
    let sourceError: unknown;
    const fail = (err: unknown): unknown => {
      if (err instanceof UpdaterError) return err;
      if (sourceError !== undefined) {
        return sourceError instanceof UpdaterError
          ? sourceError
          : new UpdaterError("internal", `the data sent to ${label} failed: ${errorText(sourceError)}`, {
              cause: sourceError,
            });
      }
      if (deadline.expired) {
        return new UpdaterError(
          "deadline_exceeded",
          `the Docker engine at ${this.dockerHost} did not answer ${label} within ${deadline.ms} ms`,
          { cause: err },
        );
      }
      if (call.signal?.aborted) return callerAbort(call.signal, label);
      const denied = (err as NodeJS.ErrnoException).code === "EACCES";
      return new UpdaterError(
        "unavailable",
        `cannot reach the Docker engine at ${this.dockerHost} (${label}): ${errorText(err)}${
          denied
            ? `; this process (uid ${process.getuid?.() ?? "?"}) may not use the socket: run it with the socket's group, e.g. docker run --group-add "$(stat -c %g /var/run/docker.sock)", or group_add: ["\${DOCKER_GID}"] in Compose`
            : ""
        }`,
        { reason: "ENGINE_UNAVAILABLE", cause: err },
      );
    };
    return new Promise<Opened>((resolve, reject) => {
      if (signal.aborted) {
        deadline.clear();
        reject(fail(signal.reason));
        return;
      }
      const headers: Record<string, string> = { accept: "application/json", ...call.headers };
      if (Buffer.isBuffer(call.body)) headers["content-length"] = String(call.body.length);
      const req = http.request({
        ...this.target,
        agent: this.agent,
        method: call.method,
        path: `/${this.apiVersion}${call.path}${queryString(call.query)}`,
        headers,
        signal,
      });
      req.on("response", (res) => resolve({ req, res, deadline, fail }));
      req.on("error", (err) => {
        deadline.clear();
        reject(fail(err));
      });
      if (call.body === undefined) req.end();
      else if (Buffer.isBuffer(call.body)) req.end(call.body);
      else {
        const source = call.body;
        source.on("data", () => deadline.restart());
        source.on("error", (err) => {
          sourceError = err;
          req.destroy(err);
        });
        source.pipe(req);
      }
    });
  }

  private async httpError(
    method: string,
    path: string,
    opened: Opened,
    what?: string,
  ): Promise<UpdaterError> {
    const status = opened.res.statusCode ?? 0;
    const raw = (await readAll(opened.res, MAX_ERROR_BODY)).toString("utf8").trim();
    let message = raw;
    try {
      const parsed = JSON.parse(raw) as { message?: unknown };
      if (typeof parsed.message === "string") message = parsed.message;
    } catch {}
    const text = `Docker engine: ${what ?? `${method} ${path}`}: ${message || `HTTP ${status}`}`;
    if (status === 400) return new UpdaterError("invalid_argument", text);
    if (status === 404) return new UpdaterError("not_found", text);
    if (status === 409) return new UpdaterError("failed_precondition", text);
    if (status >= 500) return new UpdaterError("unavailable", text, { reason: "ENGINE_UNAVAILABLE" });
    return new UpdaterError("bad_gateway", `${text} (HTTP ${status})`);
  }
}

/** The X-Registry-Auth value: base64url (with padding, as the docker CLI sends it) of the JSON. */
export function encodeRegistryAuth(auth: RegistryAuth): string {
  return Buffer.from(JSON.stringify(auth), "utf8")
    .toString("base64")
    .replaceAll("+", "-")
    .replaceAll("/", "_");
}

/** Query of POST /images/create for a reference: digest whole, else repository and tag. */
export function pullQuery(reference: string): Record<string, string> {
  if (reference.includes("@")) return { fromImage: reference };
  const slash = reference.lastIndexOf("/");
  const colon = reference.lastIndexOf(":");
  if (colon > slash) return { fromImage: reference.slice(0, colon), tag: reference.slice(colon + 1) };
  return { fromImage: reference, tag: "latest" };
}

function parseDockerHost(dockerHost: string): Target {
  if (dockerHost.startsWith("unix://")) {
    const socketPath = dockerHost.slice("unix://".length);
    if (socketPath.startsWith("/")) return { socketPath };
  } else if (/^(tcp|http):\/\//.test(dockerHost)) {
    const url = new URL(dockerHost.replace(/^tcp:/, "http:"));
    if (url.hostname) return { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 2375) };
  }
  throw new UpdaterError(
    "invalid_argument",
    `DOCKER_HOST ${JSON.stringify(dockerHost)} is not unix:///absolute/path, tcp://host:port or http://host:port`,
  );
}

function queryString(query: Record<string, QueryValue> | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    params.set(key, typeof value === "boolean" ? (value ? "1" : "0") : String(value));
  }
  const text = params.toString();
  return text === "" ? "" : `?${text}`;
}

function combine(caller: AbortSignal | undefined, own: AbortSignal): AbortSignal {
  return caller ? AbortSignal.any([caller, own]) : own;
}

function callerAbort(signal: AbortSignal, what: string): unknown {
  const reason: unknown = signal.reason;
  if (reason instanceof DOMException && reason.name === "TimeoutError") {
    return new UpdaterError("deadline_exceeded", `the deadline passed during ${what}`, { cause: reason });
  }
  return reason;
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

async function readAll(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = chunk as Buffer;
    if (size < limit) chunks.push(buf);
    size += buf.length;
  }
  const all = Buffer.concat(chunks);
  return all.length > limit ? all.subarray(0, limit) : all;
}

/** A restartable timer whose expiry aborts `signal` with a TimeoutError. 0 or Infinity: never. */
class Deadline {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  expired = false;

  constructor(readonly ms: number) {
    this.restart();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  restart(): void {
    if (this.expired || !(this.ms > 0) || !Number.isFinite(this.ms)) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.expired = true;
      this.controller.abort(new DOMException(`no answer within ${this.ms} ms`, "TimeoutError"));
    }, this.ms);
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

async function* ndjsonLines(stream: Readable, onChunk: () => void): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream) {
    onChunk();
    rest += (chunk as Buffer).toString("utf8");
    let nl = rest.indexOf("\n");
    while (nl >= 0) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line !== "") yield line;
      nl = rest.indexOf("\n");
    }
  }
  if (rest.trim() !== "") yield rest.trim();
}

interface PullLine {
  id?: string;
  status?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
}

function parsePullLine(line: string, reference: string): PullLine {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (err) {
    throw new UpdaterError(
      "bad_gateway",
      `the Docker engine sent an unreadable progress line pulling ${reference}`,
      {
        cause: err,
      },
    );
  }
  const msg = (parsed ?? {}) as PullLine & { errorDetail?: { message?: string } };
  const detail = msg.errorDetail?.message;
  if (msg.error === undefined && typeof detail === "string") msg.error = detail;
  return msg;
}

function pullStreamError(reference: string, error: unknown): UpdaterError {
  const text = String(error);
  const message = `pulling ${reference} failed: ${text}`;
  if (/manifest unknown|not found/i.test(text)) return new UpdaterError("not_found", message);
  if (/unauthorized|denied|authentication required|forbidden/i.test(text)) {
    return new UpdaterError("failed_precondition", message);
  }
  return new UpdaterError("unavailable", message);
}

/** Sums the engine's per-layer download counters into overall bytes, throttled. */
class PullProgress {
  private readonly layers = new Map<string, { done: number; total: number }>();
  private last = 0;

  constructor(
    private readonly report: ((done: number, total: number) => void) | undefined,
    private readonly intervalMs: number,
  ) {}

  get total(): number {
    let sum = 0;
    for (const layer of this.layers.values()) sum += layer.total;
    return sum;
  }

  update(msg: PullLine): void {
    if (!msg.id || !msg.status) return;
    const layer = this.layers.get(msg.id);
    const current = msg.progressDetail?.current;
    const total = msg.progressDetail?.total;
    if (msg.status === "Downloading" && typeof total === "number" && total > 0) {
      this.layers.set(msg.id, { done: Math.min(current ?? 0, total), total });
    } else if (msg.status === "Extracting" && !layer && typeof total === "number" && total > 0) {
      this.layers.set(msg.id, { done: total, total });
    } else if (
      layer &&
      (msg.status === "Download complete" ||
        msg.status === "Verifying Checksum" ||
        msg.status === "Pull complete")
    ) {
      layer.done = layer.total;
    } else {
      return;
    }
    const now = Date.now();
    if (now - this.last >= this.intervalMs) {
      this.last = now;
      this.emit();
    }
  }

  finish(): void {
    for (const layer of this.layers.values()) layer.done = layer.total;
    this.emit();
  }

  private emit(): void {
    if (!this.report) return;
    let done = 0;
    for (const layer of this.layers.values()) done += layer.done;
    this.report(done, this.total);
  }
}

/** Splits the engine's multiplexed log stream: frames of [stream, 0, 0, 0, size(4, BE)] + payload. */
class Demultiplexer {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly sink: (stream: 1 | 2, chunk: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    while (this.pending.length - at >= 8) {
      const kind = this.pending[at];
      const size = this.pending.readUInt32BE(at + 4);
      if (this.pending.length - at - 8 < size) break;
      const payload = this.pending.subarray(at + 8, at + 8 + size);
      this.sink(kind === 2 ? 2 : 1, payload);
      at += 8 + size;
    }
    this.pending = this.pending.subarray(at);
  }

  end(): void {
    if (this.pending.length > 0) {
      throw new UpdaterError(
        "bad_gateway",
        `the Docker engine's log stream ended inside a frame (${this.pending.length} bytes left over)`,
      );
    }
  }
}

/** Keeps the first and the last half of at most `max` bytes, counting what falls in between. */
class HeadTail {
  private head: Buffer[] = [];
  private headSize = 0;
  private tail: Buffer[] = [];
  private tailSize = 0;
  elided = 0;

  constructor(private readonly max: number) {}

  push(chunk: Buffer): void {
    const headRoom = Math.ceil(this.max / 2) - this.headSize;
    if (headRoom > 0) {
      const part = chunk.subarray(0, headRoom);
      this.head.push(part);
      this.headSize += part.length;
      chunk = chunk.subarray(part.length);
    }
    if (chunk.length === 0) return;
    this.tail.push(chunk);
    this.tailSize += chunk.length;
    const tailMax = Math.floor(this.max / 2);
    while (this.tailSize > tailMax) {
      const first = this.tail[0] as Buffer;
      const excess = this.tailSize - tailMax;
      if (first.length <= excess) {
        this.tail.shift();
        this.tailSize -= first.length;
        this.elided += first.length;
      } else {
        this.tail[0] = first.subarray(excess);
        this.tailSize -= excess;
        this.elided += excess;
      }
    }
  }

  text(): string {
    const head = Buffer.concat(this.head).toString("utf8");
    const tail = Buffer.concat(this.tail).toString("utf8");
    return this.elided > 0 ? `${head}\n[... ${this.elided} bytes elided ...]\n${tail}` : head + tail;
  }
}
