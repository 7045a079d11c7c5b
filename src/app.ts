/**
 * Builds a running updater from a configuration: the store, the adapters, the runner and the
 * one-port server. main.ts calls it with the real adapters; tests may pass other ones (fakes for
 * the parts a test is not about) and still get the real server.
 */
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { UpdaterService } from "../gen/processgit/updater/v1/updater_pb.js";
import type { Config, SignerPolicy } from "./config.js";
import { DockerEngineApi } from "./engine/docker-engine-api.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./log.js";
import type {
  Clock,
  ContainerEngine,
  JobStore,
  ReleaseSource,
  ReleaseVerifier,
} from "./orchestrator/ports.js";
import { systemClock } from "./orchestrator/ports.js";
import { JobRunner } from "./orchestrator/runner.js";
import { GitHubReleases } from "./releases/github-releases.js";
import { LocalDirectoryReleases } from "./releases/local-directory.js";
import { bearerAuth, tokenMatches } from "./rpc/auth.js";
import { HealthState, registerHealth, ServingStatus } from "./rpc/health.js";
import { renderMetrics } from "./rpc/metrics.js";
import { registerReflection } from "./rpc/reflection.js";
import { type RunningServer, startServer } from "./rpc/server.js";
import { updaterService } from "./rpc/updater-service.js";
import { FileJobStore } from "./store/file-job-store.js";
import { acquireStateLock, type StateLock } from "./store/state-lock.js";
import { KeyVerifier, loadPublicKey } from "./verify/key-verifier.js";
import { KeylessVerifier, loadTrustedRoot } from "./verify/keyless-verifier.js";

export interface UpdaterParts {
  store?: JobStore;
  source?: ReleaseSource;
  verifier?: ReleaseVerifier;
  engine?: ContainerEngine;
  clock?: Clock;
  newId?: () => string;
}

export interface Updater {
  readonly server: RunningServer;
  readonly runner: JobRunner;
  readonly health: HealthState;
  /** Graceful shutdown: health NOT_SERVING, watches end with Unavailable, connections close. */
  close(): Promise<void>;
}

/** Largest request message the server reads. Requests are small; anything bigger is refused. */
export const READ_MAX_BYTES = 64 * 1024;

export async function startUpdater(config: Config, log: Logger, parts: UpdaterParts = {}): Promise<Updater> {
  // One updater per state directory, before anything reads or reconciles the journal.
  const lock = parts.store ? undefined : await acquireStateLock(config.stateDir);
  if (lock?.tookOverFrom) {
    log.warn("took over a stale state directory lock", { path: lock.path, previous: lock.tookOverFrom });
  }
  try {
    return await start(config, log, parts, lock);
  } catch (err) {
    await lock?.release();
    throw err;
  }
}

async function start(
  config: Config,
  log: Logger,
  parts: UpdaterParts,
  lock: StateLock | undefined,
): Promise<Updater> {
  const store = parts.store ?? new FileJobStore(config.stateDir);
  const source =
    parts.source ??
    (config.releasesDir
      ? new LocalDirectoryReleases(config.releasesDir)
      : new GitHubReleases({
          repo: config.github.repo,
          apiBase: config.github.apiBase,
          ...(config.github.token ? { token: config.github.token } : {}),
          userAgent: `processgit-updater/${updaterVersion()}`,
        }));
  const engine =
    parts.engine ??
    new DockerEngineApi({
      dockerHost: config.dockerHost,
      appContainer: config.appContainer,
      ...config.engine,
    });
  const verifier = parts.verifier ?? verifierFor(config.signer);
  const runner = new JobRunner({
    store,
    source,
    verifier,
    engine,
    clock: parts.clock ?? systemClock,
    newId: parts.newId ?? randomUUID,
    log,
  });
  await runner.open();
  try {
    const updater = await serve(config, log, runner, source, engine, lock);
    // Say at once, not at the first update, when the engine or the app cannot be read (a socket
    // mounted without its group, a wrong container name). Never blocks or fails the start.
    engine.inspectApp(AbortSignal.timeout(10_000)).then(
      (app) =>
        log.info("app container found", { container: app.container, running: app.running, image: app.image }),
      (err: unknown) =>
        log.warn("cannot read the app container; updates will stop at pre-flight until this is fixed", {
          container: config.appContainer,
          error: errorMessage(err),
        }),
    );
    return updater;
  } catch (err) {
    // The port is taken, for example: stop the reconciliation that open() may have started.
    await runner.shutdown(0);
    throw err;
  }
}

async function serve(
  config: Config,
  log: Logger,
  runner: JobRunner,
  source: ReleaseSource,
  engine: ContainerEngine,
  lock: StateLock | undefined,
): Promise<Updater> {
  const health = new HealthState(ServingStatus.SERVING);
  health.set(UpdaterService.typeName, ServingStatus.SERVING);
  const routes = (router: ConnectRouter) => {
    router.service(
      UpdaterService,
      updaterService({
        runner,
        source,
        engine,
        appContainer: config.appContainer,
        updaterVersion: updaterVersion(),
        log,
      }),
    );
    registerHealth(router, health);
    registerReflection(router, [UpdaterService, Health]);
  };
  const tokenDigest = createHash("sha256").update(config.token).digest();
  const server = await startServer({
    host: config.listen.host,
    port: config.listen.port,
    routes,
    interceptors: [bearerAuth(config.token)],
    readMaxBytes: READ_MAX_BYTES,
    log,
    plain: (req) => {
      const path = (req.url ?? "").split("?")[0];
      if (req.method !== "GET" && req.method !== "HEAD") return undefined;
      if (path === "/metrics") {
        if (!tokenMatches(tokenDigest, req.headers.authorization ?? null)) {
          return {
            status: 401,
            contentType: "text/plain",
            body: "missing or invalid Authorization: Bearer <token>\n",
          };
        }
        return renderMetrics(runner, engine, updaterVersion()).then((body) => ({
          status: 200,
          contentType: "text/plain; version=0.0.4",
          body,
        }));
      }
      if (path !== "/healthz") return undefined;
      const stopping = runner.state === "stopping";
      return {
        status: stopping ? 503 : 200,
        contentType: "application/json",
        body: `${JSON.stringify({ status: stopping ? "stopping" : "ok" })}\n`,
      };
    },
  });

  let closing: Promise<void> | undefined;
  return {
    server,
    runner,
    health,
    close() {
      closing ??= (async () => {
        // One grace period for the whole shutdown, shared by the runner and the connections.
        const started = Date.now();
        health.shutdown();
        await runner.shutdown(config.shutdownGraceMs);
        const runnerMs = Date.now() - started;
        await server.close(Math.max(0, config.shutdownGraceMs - runnerMs));
        await lock?.release();
        log.info("shutdown complete", { runnerMs, totalMs: Date.now() - started });
      })();
      return closing;
    },
  };
}

/** The verifier of the one signer policy the configuration pins (config checked there is one). */
export function verifierFor(signer: SignerPolicy): ReleaseVerifier {
  if (signer.policy === "key") return new KeyVerifier(loadPublicKey(signer.publicKeyPath));
  return new KeylessVerifier({
    trustedRoot: loadTrustedRoot(signer.trustedRootPath),
    issuer: signer.issuer,
    identity: signer.identity,
  });
}

let cachedVersion: string | undefined;

/** The updater's version, from its package.json (found from this file, built or not). */
export function updaterVersion(): string {
  if (cachedVersion) return cachedVersion;
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "processgit-updater" && pkg.version) {
        cachedVersion = pkg.version;
        return cachedVersion;
      }
    } catch {}
  }
  cachedVersion = "unknown";
  return cachedVersion;
}
