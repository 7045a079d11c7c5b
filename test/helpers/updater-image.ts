/**
 * The updater's own image on the test engine: built from the unchanged Dockerfile by
 * scripts/image.sh, and run the way docs/operations.md and deploy/docker-compose.yml run it
 * (non-root, the socket through its numeric group, read-only root, no capabilities, a state
 * volume), but on host networking and 127.0.0.1 (the loopback rule of this machine).
 */
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { type DockerJanitor, docker, labelArgs } from "./docker.js";

const root = [join(import.meta.dirname, "../.."), join(import.meta.dirname, "../../..")].find((dir) =>
  existsSync(join(dir, "scripts/image.sh")),
) as string;

export const UPDATER_IMAGE = process.env.PGU_UPDATER_IMAGE ?? "processgit-updater:test";

/** Builds (BuildKit reuses its cache when nothing changed) and returns the image reference. */
export function buildUpdaterImage(tag = UPDATER_IMAGE): string {
  return execFileSync("bash", [join(root, "scripts/image.sh"), tag], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 20 * 60_000,
  }).trim();
}

/** The engine's socket path on this host, from DOCKER_HOST. */
export function socketPath(): string {
  const host = process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
  if (!host.startsWith("unix://")) throw new Error(`DOCKER_HOST ${host} is not a unix socket`);
  return host.slice("unix://".length);
}

export interface UpdaterContainer {
  name: string;
  url: string;
  stateVolume: string;
}

/**
 * `docker run -d` of the updater image with `env` (PROCESSGIT_UPDATER_*), listening on
 * 127.0.0.1:`port`; extra `-v` mounts in `mounts`. Does not wait for it.
 */
export async function runUpdaterContainer(
  janitor: DockerJanitor,
  image: string,
  port: number,
  env: Record<string, string>,
  mounts: string[] = [],
): Promise<UpdaterContainer> {
  const name = janitor.name(`updater-${port}`);
  const stateVolume = janitor.volume(`${name}-state`);
  janitor.container(name);
  const sock = socketPath();
  const args = [
    "run",
    "-d",
    "--name",
    name,
    ...labelArgs(janitor),
    "--network",
    "host",
    "--group-add",
    String(statSync(sock).gid),
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "-v",
    `${sock}:/var/run/docker.sock`,
    "-v",
    `${stateVolume}:/var/lib/processgit-updater`,
    "-e",
    `PROCESSGIT_UPDATER_LISTEN=127.0.0.1:${port}`,
  ];
  for (const m of mounts) args.push("-v", m);
  for (const [k, v] of Object.entries(env)) args.push("-e", `${k}=${v}`);
  await docker([...args, image]);
  return { name, url: `http://127.0.0.1:${port}`, stateVolume };
}

/** Resolves when GET /healthz answers 200, or throws after `ms` with the container's logs. */
export async function waitReady(c: UpdaterContainer, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const res = await fetch(`${c.url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const logs = await docker(["logs", "--tail", "30", c.name]).catch((e: Error) => e.message);
  throw new Error(`${c.name} did not answer /healthz within ${ms} ms; logs:\n${logs}`);
}

/** Docker's health status of the container: starting, healthy or unhealthy. */
export async function healthStatus(name: string): Promise<string> {
  return (await docker(["inspect", "-f", "{{.State.Health.Status}}", name])).trim();
}
