/**
 * A local stand-in for the GitHub REST API's release endpoints, for tests and demos. It runs two
 * loopback servers: the API origin (127.0.0.1) and an asset storage origin (127.0.0.2) that asset
 * downloads redirect to with a short-lived signed URL, as github.com does. Releases, the required
 * token, failures, rate limits and delays change at run time, and every request either origin
 * receives is recorded. It listens on loopback only.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";

/** One asset of a stand-in release. */
export interface StandInAsset {
  name: string;
  bytes: Uint8Array | string;
  /** Default "application/octet-stream". */
  contentType?: string;
}

/** One release as the stand-in serves it; omitted fields get GitHub-like defaults. */
export interface StandInRelease {
  tag: string;
  /** Default: the tag. GitHub allows null. */
  name?: string | null;
  draft?: boolean;
  prerelease?: boolean;
  body?: string | null;
  /** ISO 8601. Default: one hour apart, newest first in list order. Always null for a draft. */
  publishedAt?: string | null;
  htmlUrl?: string;
  assets?: StandInAsset[];
}

export interface GitHubStandInOptions {
  /** "owner/name". Default "processgit/processgit". */
  repo?: string;
  /** The numeric repository id GitHub uses in pagination links. Default 1296269. */
  repoId?: number;
  /** Path prefix of the API, as GitHub Enterprise Server's "/api/v3". Default none. */
  apiPrefix?: string;
  /** Listed in this order, which plays GitHub's newest-created-first order. */
  releases?: StandInRelease[];
  /** When set, API requests must carry it (`Bearer` or `token`); otherwise 401. */
  token?: string;
  /** Primary rate limit per window. Default 5000. */
  rateLimit?: number;
  /** Lifetime of a signed storage URL. Default 300 000 ms. */
  signedUrlTtlMs?: number;
}

/** A request as one origin received it. */
export interface RecordedRequest {
  origin: "api" | "storage";
  method: string;
  /** Path and query, exactly as received. */
  path: string;
  headers: IncomingHttpHeaders;
  /** The status answered; undefined until then. */
  status?: number;
  /** Body bytes written so far. */
  bytesSent: number;
  /** Whether the whole response body was written. */
  completed: boolean;
  /** Whether the exchange is over: answered in full, or the connection was closed mid-way. */
  closed: boolean;
}

export interface GitHubStandIn {
  /** The API root to configure as the client's apiBase, e.g. http://127.0.0.1:41234/api/v3. */
  readonly apiUrl: string;
  /** The storage origin, e.g. http://127.0.0.2:41235. */
  readonly storageUrl: string;
  /** "owner/name" as configured. */
  readonly repo: string;
  /** Every request received by either origin, in arrival order. */
  readonly requests: readonly RecordedRequest[];
  apiRequests(): RecordedRequest[];
  storageRequests(): RecordedRequest[];
  clearRequests(): void;
  setReleases(releases: StandInRelease[]): void;
  /** Requires this token from now on; undefined accepts any or none. */
  setToken(token: string | undefined): void;
  /** Answers `status` (e.g. 500, 502, 503) instead of serving, `times` times (default: until cleared). */
  failWith(status: number | undefined, options?: { times?: number; origin?: "api" | "storage" }): void;
  /** Sets the primary rate limit window: `remaining` requests left, resetting at `resetEpochSeconds`. */
  setRateLimit(remaining: number, resetEpochSeconds?: number): void;
  /** Primary rate limit requests left; 304 answers do not use any. */
  rateLimitRemaining(): number;
  /** Answers every API request with a secondary rate limit (`retry-after`) until cleared with undefined. */
  secondaryRateLimit(retryAfterSeconds: number | undefined, status?: 403 | 429): void;
  /** Waits `ms` before answering requests of `origin` (default "api"). */
  setDelay(ms: number, origin?: "api" | "storage"): void;
  /** When false, storage streams asset bodies without Content-Length. Default true. */
  setStorageContentLength(send: boolean): void;
  close(): Promise<void>;
}

interface StoredAsset {
  id: number;
  name: string;
  bytes: Buffer;
  contentType: string;
  releaseId: number;
  tag: string;
}

interface StoredRelease {
  id: number;
  source: StandInRelease;
  publishedAt: string | null;
  createdAt: string;
  assets: StoredAsset[];
}

const DOCS = "https://docs.github.com/rest";
const RELEASE_DOCS = `${DOCS}/releases/releases`;
const RATE_DOCS = `${DOCS}/using-the-rest-api/rate-limits-for-the-rest-api`;
const STORAGE_PATH = "/github-production-release-asset";
const CHUNK = 64 * 1024;

/** Starts the stand-in on 127.0.0.1 (API) and 127.0.0.2 (storage), both on ephemeral ports. */
export async function startGitHubStandIn(options: GitHubStandInOptions = {}): Promise<GitHubStandIn> {
  const repo = options.repo ?? "processgit/processgit";
  const [owner, name] = repo.split("/");
  if (owner === undefined || name === undefined) throw new Error(`repo ${repo} is not owner/name`);
  const repoId = options.repoId ?? 1296269;
  const prefix = (options.apiPrefix ?? "").replace(/\/+$/, "");
  const ttlMs = options.signedUrlTtlMs ?? 300_000;
  const signingKey = randomBytes(32);

  const state = {
    releases: [] as StoredRelease[],
    token: options.token,
    failures: { api: undefined, storage: undefined } as Record<
      "api" | "storage",
      { status: number; times: number } | undefined
    >,
    limit: options.rateLimit ?? 5000,
    remaining: options.rateLimit ?? 5000,
    resetAt: Math.floor(Date.now() / 1000) + 3600,
    secondary: undefined as { retryAfter: number; status: 403 | 429 } | undefined,
    delays: { api: 0, storage: 0 },
    storageContentLength: true,
  };
  const requests: RecordedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let nextId = 1;

  const apiServer = createServer((req, res) => {
    void handle("api", req, res);
  });
  const storageServer = createServer((req, res) => {
    void handle("storage", req, res);
  });
  const apiPort = await listen(apiServer, "127.0.0.1");
  const storagePort = await listen(storageServer, "127.0.0.2");
  const apiOrigin = `http://127.0.0.1:${apiPort}`;
  const apiRoot = apiOrigin + prefix;
  const storageUrl = `http://127.0.0.2:${storagePort}`;

  function setReleases(releases: StandInRelease[]): void {
    const newest = Date.UTC(2025, 0, 1);
    state.releases = releases.map((source, index) => {
      const id = nextId++;
      const createdAt = new Date(newest - index * 3_600_000).toISOString();
      return {
        id,
        source,
        createdAt,
        publishedAt: source.draft ? null : source.publishedAt === undefined ? createdAt : source.publishedAt,
        assets: (source.assets ?? []).map((asset) => ({
          id: nextId++,
          name: asset.name,
          bytes: Buffer.from(asset.bytes),
          contentType: asset.contentType ?? "application/octet-stream",
          releaseId: id,
          tag: source.tag,
        })),
      };
    });
  }
  setReleases(options.releases ?? []);

  async function handle(origin: "api" | "storage", req: IncomingMessage, res: ServerResponse): Promise<void> {
    const record: RecordedRequest = {
      origin,
      method: req.method ?? "",
      path: req.url ?? "",
      headers: { ...req.headers },
      bytesSent: 0,
      completed: false,
      closed: false,
    };
    requests.push(record);
    res.on("finish", () => {
      record.completed = true;
    });
    res.on("close", () => {
      record.closed = true;
    });
    req.resume();
    const delay = state.delays[origin];
    if (delay > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          resolve();
        }, delay);
        timers.add(timer);
      });
      if (res.destroyed) return;
    }
    try {
      if (origin === "api") serveApi(req, res, record);
      else serveStorage(req, res, record);
    } catch (err) {
      if (!res.headersSent) json(res, record, 500, { message: `stand-in error: ${String(err)}` });
    }
  }

  function serveApi(req: IncomingMessage, res: ServerResponse, record: RecordedRequest) {
    const url = new URL(req.url ?? "/", apiOrigin);
    const failure = takeFailure("api");
    if (failure !== undefined) {
      return json(res, record, failure, { message: failure >= 500 ? "Server Error" : "Forced failure" });
    }
    const auth = authenticate(req.headers.authorization);
    if (auth === "missing" || auth === "wrong") {
      return json(res, record, 401, {
        message: auth === "missing" ? "Requires authentication" : "Bad credentials",
        documentation_url: DOCS,
        status: "401",
      });
    }
    if (state.secondary !== undefined) {
      return json(
        res,
        record,
        state.secondary.status,
        {
          message:
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. " +
            "If you reach out to GitHub Support for help, please include the request ID.",
          documentation_url: `${RATE_DOCS}#about-secondary-rate-limits`,
        },
        { "retry-after": String(state.secondary.retryAfter) },
      );
    }
    if (state.remaining <= 0) {
      return json(res, record, 403, {
        message:
          auth === "ok"
            ? "API rate limit exceeded for user ID 1."
            : "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests " +
              "get a higher rate limit. Check out the documentation for more details.)",
        documentation_url: `${RATE_DOCS}#primary-rate-limit`,
      });
    }
    if (req.method !== "GET" || !url.pathname.startsWith(`${prefix}/`)) return notFound(res, record, DOCS);
    const path = url.pathname.slice(prefix.length);

    const list =
      /^\/repos\/([^/]+)\/([^/]+)\/releases$/.exec(path) ?? /^\/repositories\/(\d+)\/releases$/.exec(path);
    if (list !== null) {
      if (!isOurRepo(list)) return notFound(res, record, `${RELEASE_DOCS}#list-releases`);
      return serveList(req, res, record, url, auth === "ok");
    }
    const byTag = /^\/repos\/([^/]+)\/([^/]+)\/releases\/tags\/(.+)$/.exec(path);
    if (byTag !== null) {
      const tag = decodeURIComponent(byTag[3] ?? "");
      const release = state.releases.find((r) => r.source.tag === tag && !r.source.draft);
      if (!isOurRepo(byTag) || release === undefined) {
        return notFound(res, record, `${RELEASE_DOCS}#get-a-release-by-tag-name`);
      }
      return conditionalJson(req, res, record, releaseJson(release));
    }
    const asset = /^\/repos\/([^/]+)\/([^/]+)\/releases\/assets\/(\d+)$/.exec(path);
    if (asset !== null) {
      const found = findAsset(Number(asset[3]));
      if (!isOurRepo(asset) || found === undefined) {
        return notFound(res, record, `${DOCS}/releases/assets#get-a-release-asset`);
      }
      if ((req.headers.accept ?? "").includes("application/octet-stream")) {
        countRequest();
        return send(res, record, 302, { location: signedUrl(found), ...apiHeaders() }, "");
      }
      return conditionalJson(req, res, record, assetJson(found));
    }
    return notFound(res, record, DOCS);
  }

  function serveList(
    req: IncomingMessage,
    res: ServerResponse,
    record: RecordedRequest,
    url: URL,
    authenticated: boolean,
  ) {
    const perPage = clamp(intParam(url, "per_page") ?? 30, 1, 100);
    const page = Math.max(1, intParam(url, "page") ?? 1);
    const visible = state.releases.filter((r) => authenticated || !r.source.draft);
    const lastPage = Math.max(1, Math.ceil(visible.length / perPage));
    const body = visible.slice((page - 1) * perPage, page * perPage).map(releaseJson);
    const pageUrl = (n: number) => `${apiRoot}/repositories/${repoId}/releases?per_page=${perPage}&page=${n}`;
    const links: string[] = [];
    if (page > 1) links.push(`<${pageUrl(Math.min(page - 1, lastPage))}>; rel="prev"`);
    if (page < lastPage)
      links.push(`<${pageUrl(page + 1)}>; rel="next"`, `<${pageUrl(lastPage)}>; rel="last"`);
    if (page > 1) links.push(`<${pageUrl(1)}>; rel="first"`);
    conditionalJson(req, res, record, body, links.length > 0 ? { link: links.join(", ") } : {});
  }

  function serveStorage(req: IncomingMessage, res: ServerResponse, record: RecordedRequest) {
    const failure = takeFailure("storage");
    if (failure !== undefined)
      return xmlError(res, record, failure, "InternalError", "We encountered an internal error.");
    const url = new URL(req.url ?? "/", storageUrl);
    const match = new RegExp(`^${STORAGE_PATH}/(\\d+)/(\\d+)$`).exec(url.pathname);
    if (req.method !== "GET" || match === null || Number(match[1]) !== repoId) {
      return xmlError(res, record, 404, "NoSuchKey", "The specified key does not exist.");
    }
    if (req.headers.authorization !== undefined) {
      return xmlError(
        res,
        record,
        400,
        "InvalidArgument",
        "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string " +
          "parameter or the Authorization header should be specified",
      );
    }
    const id = Number(match[2]);
    const expires = Number(url.searchParams.get("X-Amz-Expires-At"));
    const signature = Buffer.from(url.searchParams.get("X-Amz-Signature") ?? "", "hex");
    const expected = sign(id, expires);
    if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) {
      return xmlError(
        res,
        record,
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match.",
      );
    }
    if (Date.now() > expires * 1000) return xmlError(res, record, 403, "AccessDenied", "Request has expired");
    const asset = findAsset(id);
    if (asset === undefined)
      return xmlError(res, record, 404, "NoSuchKey", "The specified key does not exist.");

    record.status = 200;
    const headers: Record<string, string> = {
      "content-type": "application/octet-stream",
      "content-disposition": `attachment; filename=${asset.name}`,
      etag: `"${createHash("md5").update(asset.bytes).digest("hex")}"`,
    };
    if (state.storageContentLength) headers["content-length"] = String(asset.bytes.length);
    res.writeHead(200, headers);
    let offset = 0;
    const pump = (): void => {
      while (offset < asset.bytes.length && !res.destroyed) {
        const chunk = asset.bytes.subarray(offset, offset + CHUNK);
        offset += chunk.length;
        record.bytesSent += chunk.length;
        if (!res.write(chunk)) {
          res.once("drain", pump);
          return;
        }
      }
      if (!res.destroyed) res.end();
    };
    pump();
  }

  function conditionalJson(
    req: IncomingMessage,
    res: ServerResponse,
    record: RecordedRequest,
    value: unknown,
    extra: Record<string, string> = {},
  ) {
    const body = JSON.stringify(value);
    const etag = `W/"${createHash("sha256").update(body).digest("hex").slice(0, 32)}"`;
    const ifNoneMatch = req.headers["if-none-match"] ?? "";
    if (ifNoneMatch.split(",").some((t) => t.trim() === etag || t.trim() === "*")) {
      return send(res, record, 304, { etag, ...apiHeaders(), ...extra }, "");
    }
    countRequest();
    send(
      res,
      record,
      200,
      { "content-type": "application/json; charset=utf-8", etag, ...apiHeaders(), ...extra },
      body,
    );
  }

  function json(
    res: ServerResponse,
    record: RecordedRequest,
    status: number,
    value: unknown,
    extra: Record<string, string> = {},
  ): void {
    countRequest();
    send(
      res,
      record,
      status,
      { "content-type": "application/json; charset=utf-8", ...apiHeaders(), ...extra },
      JSON.stringify(value),
    );
  }

  function notFound(res: ServerResponse, record: RecordedRequest, documentationUrl: string): void {
    json(res, record, 404, { message: "Not Found", documentation_url: documentationUrl, status: "404" });
  }

  function xmlError(
    res: ServerResponse,
    record: RecordedRequest,
    status: number,
    code: string,
    message: string,
  ): void {
    const body =
      `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code>` +
      `<Message>${message}</Message><RequestId>${randomBytes(8).toString("hex")}</RequestId></Error>`;
    send(res, record, status, { "content-type": "application/xml" }, body);
  }

  function send(
    res: ServerResponse,
    record: RecordedRequest,
    status: number,
    headers: Record<string, string>,
    body: string,
  ): void {
    record.status = status;
    const bytes = Buffer.from(body);
    record.bytesSent = bytes.length;
    res.writeHead(status, status === 304 ? headers : { ...headers, "content-length": String(bytes.length) });
    res.end(status === 304 ? undefined : bytes);
  }

  function apiHeaders(): Record<string, string> {
    return {
      "x-github-api-version-selected": "2022-11-28",
      "x-github-request-id": randomBytes(8).toString("hex").toUpperCase(),
      "x-ratelimit-limit": String(state.limit),
      "x-ratelimit-remaining": String(Math.max(0, state.remaining)),
      "x-ratelimit-reset": String(state.resetAt),
      "x-ratelimit-used": String(state.limit - Math.max(0, state.remaining)),
      "x-ratelimit-resource": "core",
      "cache-control": "private, max-age=60, s-maxage=60",
      vary: "Accept, Authorization, Cookie, X-GitHub-OTP",
    };
  }

  function countRequest(): void {
    if (state.remaining > 0) state.remaining--;
  }

  function authenticate(header: string | undefined): "ok" | "anonymous" | "missing" | "wrong" {
    const presented = /^(?:Bearer|token)\s+(\S+)$/i.exec(header ?? "")?.[1];
    if (state.token === undefined) return presented === undefined ? "anonymous" : "ok";
    if (header === undefined) return "missing";
    return presented === state.token ? "ok" : "wrong";
  }

  function isOurRepo(match: RegExpExecArray): boolean {
    if (match.length === 2) return Number(match[1]) === repoId;
    return (
      match[1]?.toLowerCase() === owner?.toLowerCase() && match[2]?.toLowerCase() === name?.toLowerCase()
    );
  }

  function takeFailure(origin: "api" | "storage"): number | undefined {
    const failure = state.failures[origin];
    if (failure === undefined) return undefined;
    failure.times--;
    if (failure.times <= 0) state.failures[origin] = undefined;
    return failure.status;
  }

  function findAsset(id: number): StoredAsset | undefined {
    for (const release of state.releases) {
      const asset = release.assets.find((a) => a.id === id);
      if (asset !== undefined) return asset;
    }
    return undefined;
  }

  function sign(id: number, expires: number): Buffer {
    return createHmac("sha256", signingKey).update(`${id}:${expires}`).digest();
  }

  function signedUrl(asset: StoredAsset): string {
    const expires = Math.floor((Date.now() + ttlMs) / 1000);
    const query = new URLSearchParams({
      "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
      "X-Amz-Expires-At": String(expires),
      "X-Amz-Signature": sign(asset.id, expires).toString("hex"),
      "response-content-disposition": `attachment; filename=${asset.name}`,
      "response-content-type": "application/octet-stream",
    });
    return `${storageUrl}${STORAGE_PATH}/${repoId}/${asset.id}?${query}`;
  }

  function releaseJson(release: StoredRelease): unknown {
    const { source } = release;
    const releaseUrl = `${apiRoot}/repos/${owner}/${name}/releases/${release.id}`;
    const htmlTag = source.draft ? `untagged-${release.id}` : source.tag;
    return {
      url: releaseUrl,
      assets_url: `${releaseUrl}/assets`,
      upload_url: `${apiOrigin}/uploads/repos/${owner}/${name}/releases/${release.id}/assets{?name,label}`,
      html_url: source.htmlUrl ?? `${apiOrigin}/${owner}/${name}/releases/tag/${htmlTag}`,
      id: release.id,
      author: user(),
      node_id: Buffer.from(`RE_${release.id}`).toString("base64"),
      tag_name: source.tag,
      target_commitish: "main",
      name: source.name === undefined ? source.tag : source.name,
      draft: source.draft ?? false,
      immutable: false,
      prerelease: source.prerelease ?? false,
      created_at: release.createdAt,
      published_at: release.publishedAt,
      assets: release.assets.map(assetJson),
      tarball_url: `${apiRoot}/repos/${owner}/${name}/tarball/${source.tag}`,
      zipball_url: `${apiRoot}/repos/${owner}/${name}/zipball/${source.tag}`,
      body: source.body === undefined ? `Release ${source.tag}` : source.body,
    };
  }

  function assetJson(asset: StoredAsset): unknown {
    return {
      url: `${apiRoot}/repos/${owner}/${name}/releases/assets/${asset.id}`,
      id: asset.id,
      node_id: Buffer.from(`RA_${asset.id}`).toString("base64"),
      name: asset.name,
      label: "",
      uploader: user(),
      content_type: asset.contentType,
      state: "uploaded",
      size: asset.bytes.length,
      download_count: 0,
      created_at: "2025-01-01T00:00:00Z",
      updated_at: "2025-01-01T00:00:00Z",
      browser_download_url: `${apiOrigin}/${owner}/${name}/releases/download/${asset.tag}/${asset.name}`,
    };
  }

  return {
    apiUrl: apiRoot,
    storageUrl,
    repo,
    requests,
    apiRequests: () => requests.filter((r) => r.origin === "api"),
    storageRequests: () => requests.filter((r) => r.origin === "storage"),
    clearRequests: () => {
      requests.length = 0;
    },
    setReleases,
    setToken: (token) => {
      state.token = token;
    },
    failWith: (status, opts) => {
      const origin = opts?.origin ?? "api";
      state.failures[origin] =
        status === undefined ? undefined : { status, times: opts?.times ?? Number.POSITIVE_INFINITY };
    },
    setRateLimit: (remaining, resetEpochSeconds) => {
      state.remaining = remaining;
      if (resetEpochSeconds !== undefined) state.resetAt = resetEpochSeconds;
    },
    rateLimitRemaining: () => state.remaining,
    secondaryRateLimit: (retryAfterSeconds, status = 429) => {
      state.secondary =
        retryAfterSeconds === undefined ? undefined : { retryAfter: retryAfterSeconds, status };
    },
    setDelay: (ms, origin = "api") => {
      state.delays[origin] = ms;
    },
    setStorageContentLength: (sendLength) => {
      state.storageContentLength = sendLength;
    },
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await Promise.all([stop(apiServer), stop(storageServer)]);
    },
  };
}

function user(): unknown {
  return { login: "octocat", id: 1, node_id: "MDQ6VXNlcjE=", type: "User", site_admin: false };
}

function intParam(url: URL, key: string): number | undefined {
  const value = Number.parseInt(url.searchParams.get(key) ?? "", 10);
  return Number.isFinite(value) ? value : undefined;
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

function listen(server: Server, host: "127.0.0.1" | "127.0.0.2"): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function stop(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
