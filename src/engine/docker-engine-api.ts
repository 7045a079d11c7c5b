/**
 * The container engine over the Docker Engine API (the socket at DOCKER_HOST), the way Watchtower
 * and balena-supervisor talk to it: structured JSON answers, no docker CLI.
 *
 * This build reads the app container for Status and planning. The container surgery (snapshot,
 * pull by digest, migrate, swap, health verdict, rollback) is the next piece of work; until it
 * lands, those verbs refuse with NOT_IMPLEMENTED so that a job aborts before it changes anything.
 */
import * as http from "node:http";
import { UpdaterError } from "../errors.js";
import type { AppInfo, ContainerEngine, StepContext } from "../orchestrator/ports.js";

export interface DockerEngineApiOptions {
  /** unix:///var/run/docker.sock or tcp://host:port / http://host:port. */
  dockerHost: string;
  appContainer: string;
  timeoutMs?: number;
}

const API_VERSION = "v1.41";
const VERSION_LABEL = "org.opencontainers.image.version";

export class DockerEngineApi implements ContainerEngine {
  private readonly target: { socketPath: string } | { host: string; port: number };
  private readonly timeoutMs: number;

  constructor(private readonly opts: DockerEngineApiOptions) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    if (opts.dockerHost.startsWith("unix://")) {
      this.target = { socketPath: opts.dockerHost.slice("unix://".length) };
    } else {
      const u = new URL(opts.dockerHost.replace(/^tcp:/, "http:"));
      this.target = { host: u.hostname, port: Number(u.port || 2375) };
    }
  }

  async inspectApp(signal?: AbortSignal): Promise<AppInfo> {
    const name = this.opts.appContainer;
    const container = (await this.request("GET", `/containers/${encodeURIComponent(name)}/json`, signal, {
      404: `the app container ${name} does not exist (PROCESSGIT_UPDATER_APP_CONTAINER)`,
    })) as { Config?: { Image?: string }; Image?: string; State?: { Running?: boolean } };
    const info: AppInfo = {
      container: name,
      running: container.State?.Running === true,
      image: container.Config?.Image ?? "",
    };
    if (container.Image) {
      const image = (await this.request(
        "GET",
        `/images/${encodeURIComponent(container.Image)}/json`,
        signal,
        {
          404: `the image of ${name} is no longer in the engine`,
        },
      )) as { RepoDigests?: string[]; Config?: { Labels?: Record<string, string> | null } };
      const repo = info.image.replace(/@sha256:[0-9a-f]{64}$/, "").replace(/:[^/:]+$/, "");
      const digest = image.RepoDigests?.find((d) => d.startsWith(`${repo}@`)) ?? image.RepoDigests?.[0];
      if (digest) info.digest = digest.slice(digest.indexOf("@") + 1);
      const version = image.Config?.Labels?.[VERSION_LABEL];
      if (version) info.version = version;
    }
    return info;
  }

  preflight(_ctx: StepContext): Promise<void> {
    return notYet("pre-flight checks");
  }
  snapshot(_ctx: StepContext): Promise<void> {
    return notYet("snapshots");
  }
  pull(_ctx: StepContext): Promise<void> {
    return notYet("image pulls");
  }
  verifyImage(_ctx: StepContext): Promise<void> {
    return notYet("image verification");
  }
  migrate(_ctx: StepContext): Promise<boolean> {
    return notYet("migrations");
  }
  swap(_ctx: StepContext): Promise<void> {
    return notYet("container swaps");
  }
  healthcheck(_ctx: StepContext): Promise<void> {
    return notYet("health verdicts");
  }
  commit(_ctx: StepContext): Promise<void> {
    return notYet("commits");
  }
  rollback(_ctx: StepContext): Promise<void> {
    return notYet("rollbacks");
  }
  async discard(_ctx: StepContext): Promise<void> {}

  private request(
    method: string,
    path: string,
    signal: AbortSignal | undefined,
    messages: Record<number, string>,
  ): Promise<unknown> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          ...this.target,
          method,
          path: `/${API_VERSION}${path}`,
          signal: combined,
          headers: { accept: "application/json" },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              try {
                resolve(text === "" ? undefined : JSON.parse(text));
              } catch {
                reject(
                  new UpdaterError(
                    "bad_gateway",
                    `the Docker engine answered ${method} ${path} with invalid JSON`,
                  ),
                );
              }
              return;
            }
            let message = text.trim();
            try {
              message = (JSON.parse(text) as { message?: string }).message ?? message;
            } catch {}
            const known = messages[status];
            reject(
              new UpdaterError(
                status === 404 ? "not_found" : "unavailable",
                known ?? `Docker engine: ${method} ${path}: HTTP ${status}: ${message}`,
              ),
            );
          });
          res.on("error", reject);
        },
      );
      req.on("error", (err) => {
        const why = timeout.aborted ? `no answer within ${this.timeoutMs} ms` : err.message;
        reject(
          new UpdaterError(
            "unavailable",
            `cannot reach the Docker engine at ${this.opts.dockerHost}: ${why}`,
            { reason: "ENGINE_UNAVAILABLE", cause: err },
          ),
        );
      });
      req.end();
    });
  }
}

function notYet(what: string): Promise<never> {
  return Promise.reject(
    new UpdaterError(
      "failed_precondition",
      `${what} are not implemented in this build of the updater; nothing was changed`,
      {
        reason: "NOT_IMPLEMENTED",
      },
    ),
  );
}
