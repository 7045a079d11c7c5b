/**
 * GitHub Releases as a ReleaseSource, over the GitHub REST API (github.com or GitHub Enterprise
 * Server): lists releases (bounded pagination, conditional requests), looks one up by tag, and
 * downloads assets through the storage redirect. The token goes to the API origin only, and no
 * error message ever carries it.
 */
import { UpdaterError } from "../errors.js";
import type {
  Channel,
  ReleaseAsset,
  ReleaseInfo,
  ReleaseSource,
  ReleaseWithAssets,
} from "../orchestrator/ports.js";
import { compareVersions, parseVersion } from "./version.js";

/** How to reach one repository's releases. */
export interface GitHubReleasesOptions {
  /** "owner/name". */
  repo: string;
  /** REST API root: https://api.github.com (default), or e.g. https://ghe.example.com/api/v3. */
  apiBase?: string;
  /** Sent as `Authorization: Bearer` to the API origin only, never to the host assets redirect to. */
  token?: string;
  fetch?: typeof fetch;
  /** Time allowed for each API request (one page, one lookup), in ms. Default 30 000. */
  timeoutMs?: number;
  /** Time allowed for a whole asset download, redirects and body included, in ms. Default 300 000. */
  downloadTimeoutMs?: number;
  /** Default "processgit-updater". GitHub refuses requests without a User-Agent. */
  userAgent?: string;
  /** Releases asked per page when listing, 1 to 100. Default 100. */
  perPage?: number;
}

/** Pages `latest` reads at most (with 100 per page, the 1000 most recently created releases). */
export const MAX_RELEASE_PAGES = 10;
/** Redirects a download follows at most. */
export const MAX_DOWNLOAD_REDIRECTS = 5;

const DEFAULT_API_BASE = "https://api.github.com";
const API_VERSION = "2022-11-28";
const JSON_MEDIA_TYPE = "application/vnd.github+json";
const MAX_JSON_BYTES = 32 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MAX_CACHED_RESPONSES = 64;
const MAX_QUOTED_MESSAGE = 300;
const TOKEN_ENV = "PROCESSGIT_UPDATER_GITHUB_TOKEN";

const REPO_PATTERN = /^([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))\/([A-Za-z0-9._-]{1,100})$/;
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;
const ASSET_PATH = /\/repos\/[^/]+\/[^/]+\/releases\/assets\/\d+$/;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

interface GitHubRelease {
  tag: string;
  name: string | null;
  draft: boolean;
  prerelease: boolean;
  htmlUrl: string;
  publishedAt: string | null;
  body: string | null;
  assets: ReleaseAsset[];
}

interface CachedResponse {
  etag: string;
  body: unknown;
  next: string | undefined;
}

/** What a request is about, for error messages. */
interface Subject {
  /** What was asked for, e.g. `repository owner/name`; read as "GitHub has no <what>". */
  what: string;
  /** Said after a 404. */
  notFoundHint?: string;
}

/** Reads releases of one GitHub repository. Safe for concurrent use. */
export class GitHubReleases implements ReleaseSource {
  readonly repo: string;
  private readonly owner: string;
  private readonly name: string;
  private readonly apiRoot: string;
  private readonly apiPath: string;
  private readonly apiOrigin: string;
  private readonly token: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;
  private readonly downloadTimeoutMs: number;
  private readonly userAgent: string;
  private readonly perPage: number;
  private readonly cache = new Map<string, CachedResponse>();

  /** @throws UpdaterError `invalid_argument` for a malformed repo, API base, token or limit. */
  constructor(options: GitHubReleasesOptions) {
    const repo = REPO_PATTERN.exec(options.repo);
    const owner = repo?.[1];
    const name = repo?.[2];
    if (owner === undefined || name === undefined || name === "." || name === "..") {
      throw new UpdaterError(
        "invalid_argument",
        `GitHub repository ${JSON.stringify(options.repo)} is not of the form "owner/name"`,
      );
    }
    this.repo = `${owner}/${name}`;
    this.owner = owner;
    this.name = name;

    const base = parseApiBase(options.apiBase ?? DEFAULT_API_BASE);
    this.apiOrigin = base.origin;
    this.apiPath = base.pathname.replace(/\/+$/, "");
    this.apiRoot = base.origin + this.apiPath;

    if (options.token !== undefined && !TOKEN_PATTERN.test(options.token)) {
      throw new UpdaterError(
        "invalid_argument",
        `the GitHub token is empty or contains spaces or control characters; check ${TOKEN_ENV}`,
      );
    }
    this.token = options.token;
    this.fetchImpl = options.fetch ?? fetch;
    this.timeoutMs = positive(options.timeoutMs ?? 30_000, "timeoutMs");
    this.downloadTimeoutMs = positive(options.downloadTimeoutMs ?? 300_000, "downloadTimeoutMs");
    this.userAgent = options.userAgent ?? "processgit-updater";
    this.perPage = options.perPage ?? 100;
    if (!Number.isInteger(this.perPage) || this.perPage < 1 || this.perPage > 100) {
      throw new UpdaterError(
        "invalid_argument",
        `perPage must be an integer from 1 to 100, not ${this.perPage}`,
      );
    }
  }

  /**
   * The newest published release of `channel`: "stable" skips prereleases, "prerelease" takes
   * every published release. Drafts never count. Newest means highest semver precedence of the
   * tag when any tag is semver (non-semver tags then lose), else latest `published_at`.
   * Reads at most {@link MAX_RELEASE_PAGES} pages, revalidating each with its ETag.
   */
  async latest(channel: Channel, signal?: AbortSignal): Promise<ReleaseInfo> {
    if (channel !== "stable" && channel !== "prerelease") {
      throw new UpdaterError("invalid_argument", `unknown release channel ${JSON.stringify(channel)}`);
    }
    const releases = await this.listReleases(signal);
    const published = releases.filter((r) => !r.draft);
    const candidates = channel === "stable" ? published.filter((r) => !r.prerelease) : published;
    const newest = pickNewest(candidates);
    if (newest === undefined) {
      const drafts = releases.length - published.length;
      const prereleases = published.length - candidates.length;
      throw new UpdaterError(
        "not_found",
        `${this.repo} has no published ${channel === "stable" ? "stable release" : "release"} on GitHub ` +
          `(${releases.length} listed, of which ${drafts} drafts` +
          (channel === "stable" ? ` and ${prereleases} prereleases)` : ")"),
      );
    }
    return toInfo(newest);
  }

  /** The published release tagged exactly `tag`, with its assets; a draft counts as not found. */
  async release(tag: string, signal?: AbortSignal): Promise<ReleaseWithAssets> {
    if (tag.length === 0 || tag.length > 255 || /[\s\p{Cc}]/u.test(tag)) {
      throw new UpdaterError("invalid_argument", `release tag ${JSON.stringify(tag)} is not a valid tag`);
    }
    const subject: Subject = {
      what: `release ${JSON.stringify(tag)} of ${this.repo}`,
      notFoundHint: "; check the tag, and that the release is published",
    };
    const url = this.apiUrl(`/repos/${this.owner}/${this.name}/releases/tags/${encodeURIComponent(tag)}`);
    const { body } = await this.getJson(url, subject, signal);
    const release = parseRelease(body, subject.what, true);
    if (release.draft) {
      throw new UpdaterError("not_found", `${subject.what} is a draft, not a published release`);
    }
    if (release.tag !== tag) {
      throw new UpdaterError(
        "bad_gateway",
        `GitHub answered ${subject.what} with the release tagged ${JSON.stringify(release.tag)}`,
      );
    }
    return { ...toInfo(release), assets: release.assets };
  }

  /**
   * The bytes of `asset`, whose locator must be an asset URL of this API. Follows GitHub's redirect
   * to the storage host by hand, sending the token to the API origin only. Refuses more than
   * `maxBytes` (from Content-Length, and while reading) with `bad_gateway`.
   */
  async download(asset: ReleaseAsset, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new UpdaterError("invalid_argument", `maxBytes must be a non-negative integer, not ${maxBytes}`);
    }
    const url = this.assetUrl(asset);
    const subject: Subject = { what: `asset ${JSON.stringify(asset.name)} of ${this.repo}` };
    const tooLarge = (size: string) =>
      new UpdaterError(
        "bad_gateway",
        `${subject.what} is ${size} bytes, more than the ${maxBytes} bytes allowed; refusing to download it`,
      );
    if (asset.size > maxBytes) throw tooLarge(String(asset.size));

    return this.guarded(subject.what, this.downloadTimeoutMs, signal, async (combined) => {
      const { response, url: finalUrl } = await this.send(
        url,
        "application/octet-stream",
        undefined,
        combined,
      );
      if (!response.ok) throw await this.failure(response, finalUrl, subject);
      const length = response.headers.get("content-length");
      if (length !== null && Number(length) > maxBytes) {
        await response.body?.cancel().catch(() => {});
        throw tooLarge(length);
      }
      return readLimited(response, maxBytes, () => tooLarge(`more than ${maxBytes}`));
    });
  }

  private async listReleases(signal: AbortSignal | undefined): Promise<GitHubRelease[]> {
    const subject: Subject = {
      what: `repository ${this.repo} (or it has no releases list)`,
      notFoundHint: "; check the repository name, and for a private repository that the token can read it",
    };
    const releases: GitHubRelease[] = [];
    let url: URL | undefined = this.apiUrl(`/repos/${this.owner}/${this.name}/releases`);
    url.searchParams.set("per_page", String(this.perPage));
    for (let page = 1; url !== undefined && page <= MAX_RELEASE_PAGES; page++) {
      const { body, next } = await this.getJson(url, subject, signal);
      if (!Array.isArray(body)) {
        throw new UpdaterError("bad_gateway", `GitHub answered ${subject.what} with something not a list`);
      }
      for (const item of body) releases.push(parseRelease(item, subject.what, false));
      url = next === undefined ? undefined : this.nextPageUrl(next, url);
    }
    return releases;
  }

  /** GETs JSON from the API, revalidating with the ETag remembered for `url`. */
  private async getJson(
    url: URL,
    subject: Subject,
    signal: AbortSignal | undefined,
  ): Promise<{ body: unknown; next: string | undefined }> {
    const key = url.href;
    const cached = this.cache.get(key);
    return this.guarded(subject.what, this.timeoutMs, signal, async (combined) => {
      const { response, url: finalUrl } = await this.send(url, JSON_MEDIA_TYPE, cached?.etag, combined);
      const link = nextLink(response.headers.get("link"));
      if (response.status === 304) {
        await response.body?.cancel().catch(() => {});
        if (cached === undefined) {
          throw new UpdaterError(
            "bad_gateway",
            `GitHub answered ${subject.what} with 304 to an unconditional request`,
          );
        }
        this.remember(key, cached);
        return { body: cached.body, next: link ?? cached.next };
      }
      if (!response.ok) throw await this.failure(response, finalUrl, subject);
      const bytes = await readLimited(
        response,
        MAX_JSON_BYTES,
        () =>
          new UpdaterError(
            "bad_gateway",
            `GitHub answered ${subject.what} with more than ${MAX_JSON_BYTES} bytes`,
          ),
      );
      let body: unknown;
      try {
        body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
      } catch (err) {
        throw new UpdaterError(
          "bad_gateway",
          `GitHub answered ${subject.what} with a body that is not JSON`,
          {
            cause: err,
          },
        );
      }
      const etag = response.headers.get("etag");
      if (etag !== null) this.remember(key, { etag, body, next: link });
      else this.cache.delete(key);
      return { body, next: link };
    });
  }

  /**
   * One GET, following redirects by hand: Authorization, the API version and If-None-Match go to the
   * API origin only. Returns the first non-redirect response and the URL that gave it.
   */
  private async send(
    url: URL,
    accept: string,
    etag: string | undefined,
    signal: AbortSignal,
  ): Promise<{ response: Response; url: URL }> {
    let current = url;
    for (let redirects = 0; ; redirects++) {
      const headers: Record<string, string> = { Accept: accept, "User-Agent": this.userAgent };
      if (current.origin === this.apiOrigin) {
        headers["X-GitHub-Api-Version"] = API_VERSION;
        if (this.token !== undefined) headers.Authorization = `Bearer ${this.token}`;
        if (etag !== undefined && redirects === 0) headers["If-None-Match"] = etag;
      }
      const response = await this.fetchImpl(current, { headers, redirect: "manual", signal });
      if (!REDIRECT_STATUSES.has(response.status)) return { response, url: current };
      await response.body?.cancel().catch(() => {});
      if (redirects >= MAX_DOWNLOAD_REDIRECTS) {
        throw new UpdaterError(
          "bad_gateway",
          `GitHub redirected ${describeUrl(url)} more than ${MAX_DOWNLOAD_REDIRECTS} times`,
        );
      }
      current = redirectTarget(response, current);
    }
  }

  /**
   * Runs `run` under a per-call timeout combined with the caller's signal, and turns what is not
   * already an UpdaterError into one. A caller's abort wins: its reason is thrown as it is, except
   * that a timeout reason becomes `deadline_exceeded`.
   */
  private async guarded<T>(
    what: string,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    run: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    if (signal?.aborted) throw callerAbort(signal, what);
    const timeout = AbortSignal.timeout(timeoutMs);
    const combined = signal === undefined ? timeout : AbortSignal.any([signal, timeout]);
    try {
      return await run(combined);
    } catch (err) {
      if (err instanceof UpdaterError) throw err;
      if (signal?.aborted) throw callerAbort(signal, what);
      if (timeout.aborted) {
        throw new UpdaterError("unavailable", `GitHub did not answer for ${what} within ${timeoutMs} ms`, {
          cause: err,
        });
      }
      throw new UpdaterError(
        "unavailable",
        `cannot reach GitHub for ${what}: ${this.redact(describeCause(err))}`,
        {
          cause: err,
        },
      );
    }
  }

  /** The UpdaterError for a non-2xx, non-304 answer. */
  private async failure(response: Response, url: URL, subject: Subject): Promise<UpdaterError> {
    const text = await readLimited(response, MAX_ERROR_BODY_BYTES, () => undefined)
      .then((bytes) => new TextDecoder().decode(bytes))
      .catch(() => "");
    const fromApi = url.origin === this.apiOrigin;
    const who = fromApi ? "GitHub" : `the asset storage host ${url.origin}`;
    const quoted = this.redact(githubMessage(text) ?? response.statusText);
    const status = `${response.status}${quoted === "" ? "" : ` ${JSON.stringify(quoted)}`}`;
    if (response.status === 404) {
      return new UpdaterError(
        "not_found",
        `${who} has no ${subject.what} (${status})${subject.notFoundHint ?? ""}`,
      );
    }
    if (fromApi && response.status === 401) {
      return new UpdaterError(
        "unavailable",
        this.token === undefined
          ? `GitHub requires a token for ${subject.what} (${status}); set ${TOKEN_ENV}`
          : `GitHub rejected the token for ${subject.what} (${status}); check ${TOKEN_ENV}`,
      );
    }
    if (fromApi && (response.status === 403 || response.status === 429)) {
      const limit = rateLimit(response.headers, response.status);
      if (limit !== undefined) {
        const when = limit.resetAt === undefined ? "later" : `after ${limit.resetAt.toISOString()}`;
        return new UpdaterError(
          "unavailable",
          `GitHub rate limit reached for ${subject.what} (${status}); retry ${when}` +
            (this.token === undefined ? ` or set ${TOKEN_ENV} for a higher limit` : ""),
        );
      }
    }
    if (response.status === 403) {
      return new UpdaterError("unavailable", `${who} refused ${subject.what} (${status})`);
    }
    if (response.status >= 500) {
      return new UpdaterError("unavailable", `${who} failed to serve ${subject.what} (${status})`);
    }
    return new UpdaterError("bad_gateway", `${who} answered ${subject.what} with an unexpected ${status}`);
  }

  private remember(key: string, entry: CachedResponse): void {
    this.cache.delete(key);
    this.cache.set(key, entry);
    for (const oldest of this.cache.keys()) {
      if (this.cache.size <= MAX_CACHED_RESPONSES) break;
      this.cache.delete(oldest);
    }
  }

  private apiUrl(path: string): URL {
    return new URL(this.apiRoot + path);
  }

  private nextPageUrl(link: string, current: URL): URL {
    let next: URL;
    try {
      next = new URL(link, current);
    } catch (err) {
      throw new UpdaterError("bad_gateway", "GitHub's Link header holds a malformed next-page URL", {
        cause: err,
      });
    }
    if (next.origin !== this.apiOrigin) {
      throw new UpdaterError("bad_gateway", `GitHub's Link header points the next page at ${next.origin}`);
    }
    return next;
  }

  private assetUrl(asset: ReleaseAsset): URL {
    let url: URL | undefined;
    try {
      url = new URL(asset.locator);
    } catch {
      url = undefined;
    }
    if (
      url === undefined ||
      url.origin !== this.apiOrigin ||
      !url.pathname.startsWith(`${this.apiPath}/repos/`) ||
      !ASSET_PATH.test(url.pathname)
    ) {
      throw new UpdaterError(
        "invalid_argument",
        `asset ${JSON.stringify(asset.name)} has locator ${JSON.stringify(asset.locator)}, not an asset URL of ${this.apiRoot}`,
      );
    }
    return url;
  }

  private redact(text: string): string {
    return this.token === undefined ? text : text.replaceAll(this.token, "[token]");
  }
}

function parseApiBase(apiBase: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(apiBase);
  } catch {
    url = undefined;
  }
  if (
    url === undefined ||
    (url.protocol !== "https:" && url.protocol !== "http:") ||
    url.username !== "" ||
    url.password !== "" ||
    url.search !== "" ||
    url.hash !== ""
  ) {
    throw new UpdaterError(
      "invalid_argument",
      `GitHub API base ${JSON.stringify(apiBase)} is not an http(s) URL without credentials, query or fragment`,
    );
  }
  return url;
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new UpdaterError(
      "invalid_argument",
      `${name} must be a positive number of milliseconds, not ${value}`,
    );
  }
  return value;
}

function callerAbort(signal: AbortSignal, what: string): unknown {
  const reason: unknown = signal.reason;
  if (reason instanceof DOMException && reason.name === "TimeoutError") {
    return new UpdaterError("deadline_exceeded", `the deadline passed while fetching ${what}`, {
      cause: reason,
    });
  }
  return reason;
}

function redirectTarget(response: Response, current: URL): URL {
  const location = response.headers.get("location");
  let next: URL | undefined;
  try {
    next = location === null ? undefined : new URL(location, current);
  } catch {
    next = undefined;
  }
  if (next === undefined || (next.protocol !== "https:" && next.protocol !== "http:")) {
    throw new UpdaterError(
      "bad_gateway",
      `${describeUrl(current)} answered ${response.status} without a usable http(s) Location`,
    );
  }
  if (current.protocol === "https:" && next.protocol === "http:") {
    throw new UpdaterError(
      "bad_gateway",
      `${describeUrl(current)} redirected from https to plain http; refusing`,
    );
  }
  return next;
}

/**
 * Reads the body, cancelling the read past `maxBytes`: throws what `tooLarge` returns, or keeps the
 * first `maxBytes` when it returns undefined.
 */
async function readLimited(
  response: Response,
  maxBytes: number,
  tooLarge: () => UpdaterError | undefined,
): Promise<Uint8Array> {
  if (response.body === null) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (total + value.byteLength > maxBytes) {
      await reader.cancel().catch(() => {});
      const err = tooLarge();
      if (err !== undefined) throw err;
      chunks.push(value.subarray(0, maxBytes - total));
      total = maxBytes;
      break;
    }
    chunks.push(value);
    total += value.byteLength;
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/** The URL of the `rel="next"` link of a Link header. */
function nextLink(header: string | null): string | undefined {
  if (header === null) return undefined;
  for (const match of header.matchAll(/<([^>]*)>([^,]*)/g)) {
    const rel = /;\s*rel\s*=\s*"?([^";]*)"?/i.exec(match[2] ?? "")?.[1];
    if (rel?.split(/\s+/).includes("next")) return match[1];
  }
  return undefined;
}

function rateLimit(headers: Headers, status: number): { resetAt: Date | undefined } | undefined {
  const retryAfter = headers.get("retry-after");
  if (retryAfter !== null) {
    const seconds = Number(retryAfter);
    if (retryAfter.trim() !== "" && Number.isFinite(seconds)) {
      return { resetAt: new Date(Date.now() + Math.max(0, seconds) * 1000) };
    }
    const date = Date.parse(retryAfter);
    return { resetAt: Number.isNaN(date) ? undefined : new Date(date) };
  }
  if (headers.get("x-ratelimit-remaining") === "0") {
    const reset = Number(headers.get("x-ratelimit-reset") ?? Number.NaN);
    return { resetAt: Number.isFinite(reset) && reset > 0 ? new Date(reset * 1000) : undefined };
  }
  return status === 429 ? { resetAt: undefined } : undefined;
}

/** GitHub's `message` field of an error body, shortened; undefined when there is none. */
function githubMessage(text: string): string | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(parsed) || typeof parsed.message !== "string") return undefined;
  const message = parsed.message.trim();
  return message.length > MAX_QUOTED_MESSAGE ? `${message.slice(0, MAX_QUOTED_MESSAGE)}…` : message;
}

function describeCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause: unknown = err.cause;
  if (cause instanceof Error && cause.message !== "" && cause.message !== err.message) {
    return `${err.message} (${cause.message})`;
  }
  return err.message;
}

/** Origin and path only: the query of a signed storage URL is a credential. */
function describeUrl(url: URL): string {
  return url.origin + url.pathname;
}

function pickNewest(releases: readonly GitHubRelease[]): GitHubRelease | undefined {
  let newest: GitHubRelease | undefined;
  for (const release of releases) {
    if (newest === undefined || isNewerRelease(release, newest)) newest = release;
  }
  return newest;
}

function isNewerRelease(a: GitHubRelease, b: GitHubRelease): boolean {
  const va = parseVersion(a.tag);
  const vb = parseVersion(b.tag);
  if (va !== undefined && vb === undefined) return true;
  if (va === undefined && vb !== undefined) return false;
  if (va !== undefined && vb !== undefined) {
    const order = compareVersions(va, vb);
    if (order !== 0) return order > 0;
  }
  return publishedTime(a) > publishedTime(b);
}

function publishedTime(release: GitHubRelease): number {
  const time = release.publishedAt === null ? Number.NaN : Date.parse(release.publishedAt);
  return Number.isNaN(time) ? Number.NEGATIVE_INFINITY : time;
}

function toInfo(release: GitHubRelease): ReleaseInfo {
  const info: ReleaseInfo = {
    tag: release.tag,
    name: release.name === null || release.name === "" ? release.tag : release.name,
    prerelease: release.prerelease,
    url: release.htmlUrl,
    notes: release.body ?? "",
  };
  if (release.publishedAt !== null) info.publishedAt = release.publishedAt;
  return info;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseRelease(value: unknown, what: string, withAssets: boolean): GitHubRelease {
  const release = record(value, what, "a release");
  const assets: ReleaseAsset[] = [];
  if (withAssets) {
    const list = release.assets;
    if (!Array.isArray(list)) throw shapeError(what, "assets is not a list");
    for (const item of list) {
      const asset = record(item, what, "an asset");
      const size = asset.size;
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
        throw shapeError(what, "an asset size is not a non-negative integer");
      }
      assets.push({ name: field(asset, "name", what), size, locator: field(asset, "url", what) });
    }
  }
  return {
    tag: field(release, "tag_name", what),
    name: optionalField(release, "name", what),
    draft: flag(release, "draft", what),
    prerelease: flag(release, "prerelease", what),
    htmlUrl: field(release, "html_url", what),
    publishedAt: optionalField(release, "published_at", what),
    body: optionalField(release, "body", what),
    assets,
  };
}

function record(value: unknown, what: string, kind: string): Record<string, unknown> {
  if (!isRecord(value)) throw shapeError(what, `${kind} is not an object`);
  return value;
}

function field(obj: Record<string, unknown>, key: string, what: string): string {
  const value = obj[key];
  if (typeof value !== "string") throw shapeError(what, `${key} is not a string`);
  return value;
}

function optionalField(obj: Record<string, unknown>, key: string, what: string): string | null {
  const value = obj[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw shapeError(what, `${key} is neither a string nor null`);
  return value;
}

function flag(obj: Record<string, unknown>, key: string, what: string): boolean {
  const value = obj[key];
  if (typeof value !== "boolean") throw shapeError(what, `${key} is not a boolean`);
  return value;
}

function shapeError(what: string, problem: string): UpdaterError {
  return new UpdaterError("bad_gateway", `GitHub answered ${what} in an unexpected shape: ${problem}`);
}
