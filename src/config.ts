/**
 * Configuration: every environment variable is read here, once, and every problem is reported
 * at once (ConfigError lists them all). Secrets are read but never echoed in any message.
 * docs/configuration.md documents each variable; keep the two in step.
 */
import { readFileSync } from "node:fs";
import { ConfigError } from "./errors.js";
import type { LogLevel } from "./log.js";

export interface Config {
  listen: { host: string; port: number };
  /** The bearer token every RPC needs. Secret: never log it. */
  token: string;
  stateDir: string;
  appContainer: string;
  github: { repo: string; apiBase: string; token?: string };
  dockerHost: string;
  logLevel: LogLevel;
  shutdownGraceMs: number;
  /** The signer policy pinned in the updater's own configuration: exactly one. */
  signer: SignerPolicy;
  /** When set, releases come from this local directory instead of GitHub (air-gapped sites). */
  releasesDir?: string;
  engine: {
    snapshotDir: string;
    snapshotKeep: number;
    /** An image with node to run the snapshot helper in; default: the updater's own container's image. */
    helperImage?: string;
    healthUrl?: string;
    healthDeadlineMs: number;
    healthSoakMs: number;
    migrationTimeoutMs: number;
    removeOldImage: boolean;
    /** Registry credentials, sent only to `registry`. The password is secret: never log it. */
    registryAuth?: { registry: string; username: string; password: string };
    /** The Compose project's .env where the new image is recorded after an update. */
    composeEnv?: { file: string; variable: string };
  };
}

export type SignerPolicy =
  | { policy: "keyless"; issuer: string; identity: string; trustedRootPath?: string }
  | { policy: "key"; publicKeyPath: string };

export const MIN_TOKEN_LENGTH = 32;
const REPO = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/[A-Za-z0-9._-]{1,100}$/;
const CONTAINER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };

  const listen = parseListen(get("PROCESSGIT_UPDATER_LISTEN") ?? "0.0.0.0:9000", problems);
  const token = readSecret(env, "PROCESSGIT_UPDATER_TOKEN", problems, { required: true });
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    problems.push(
      `${env.PROCESSGIT_UPDATER_TOKEN_FILE ? `the token in PROCESSGIT_UPDATER_TOKEN_FILE (${env.PROCESSGIT_UPDATER_TOKEN_FILE})` : "PROCESSGIT_UPDATER_TOKEN"} is ${token.length} characters long; use at least ${MIN_TOKEN_LENGTH} (for example: openssl rand -hex 32)`,
    );
  }

  const stateDir = get("PROCESSGIT_UPDATER_STATE_DIR") ?? "/var/lib/processgit-updater";
  if (!stateDir.startsWith("/"))
    problems.push(`PROCESSGIT_UPDATER_STATE_DIR must be an absolute path, got ${JSON.stringify(stateDir)}`);

  const appContainer = get("PROCESSGIT_UPDATER_APP_CONTAINER") ?? "processgit";
  if (!CONTAINER_NAME.test(appContainer)) {
    problems.push(
      `PROCESSGIT_UPDATER_APP_CONTAINER ${JSON.stringify(appContainer)} is not a valid container name`,
    );
  }

  const repo = get("PROCESSGIT_UPDATER_REPO") ?? "Algomation-AI/ProcessGit";
  if (!REPO.test(repo) || /\/\.{1,2}$/.test(repo))
    problems.push(`PROCESSGIT_UPDATER_REPO must be owner/name, got ${JSON.stringify(repo)}`);
  const apiBase = (get("PROCESSGIT_UPDATER_GITHUB_API") ?? "https://api.github.com").replace(/\/+$/, "");
  if (!isHttpUrl(apiBase)) {
    problems.push(`PROCESSGIT_UPDATER_GITHUB_API must be an http(s) URL, got ${JSON.stringify(apiBase)}`);
  }
  const githubToken = readSecret(env, "PROCESSGIT_UPDATER_GITHUB_TOKEN", problems, { required: false });

  const dockerHost = get("DOCKER_HOST") ?? "unix:///var/run/docker.sock";
  if (!/^(unix:\/\/\/.+|tcp:\/\/.+|http:\/\/.+)$/.test(dockerHost)) {
    problems.push(
      `DOCKER_HOST must be unix:///path/to/docker.sock or tcp://host:port, got ${JSON.stringify(dockerHost)}`,
    );
  }

  const level = (get("PROCESSGIT_UPDATER_LOG_LEVEL") ?? "info").toLowerCase();
  if (!LOG_LEVELS.includes(level as LogLevel)) {
    problems.push(
      `PROCESSGIT_UPDATER_LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(level)}`,
    );
  }
  const shutdownGraceMs = parseInteger(
    get("PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS") ?? "5000",
    "PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS",
    0,
    120_000,
    problems,
  );

  const snapshotDirSet = get("PROCESSGIT_UPDATER_SNAPSHOT_DIR");
  const snapshotDir = snapshotDirSet ?? `${stateDir.replace(/\/+$/, "")}/snapshots`;
  if (snapshotDirSet !== undefined && !snapshotDirSet.startsWith("/"))
    problems.push(
      `PROCESSGIT_UPDATER_SNAPSHOT_DIR must be an absolute path, got ${JSON.stringify(snapshotDir)}`,
    );
  const snapshotKeep = parseInteger(
    get("PROCESSGIT_UPDATER_SNAPSHOT_KEEP") ?? "3",
    "PROCESSGIT_UPDATER_SNAPSHOT_KEEP",
    1,
    100,
    problems,
  );
  const helperImage = get("PROCESSGIT_UPDATER_HELPER_IMAGE");
  if (helperImage !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/.test(helperImage)) {
    problems.push(
      `PROCESSGIT_UPDATER_HELPER_IMAGE must be an image reference (e.g. processgit-updater:1.2.0 or an image id), got ${JSON.stringify(helperImage.slice(0, 200))}`,
    );
  }
  const healthUrl = get("PROCESSGIT_UPDATER_HEALTH_URL");
  if (healthUrl !== undefined && !isHttpUrl(healthUrl)) {
    problems.push(`PROCESSGIT_UPDATER_HEALTH_URL must be an http(s) URL, got ${JSON.stringify(healthUrl)}`);
  }
  const healthDeadlineMs = parseSeconds(
    get("PROCESSGIT_UPDATER_HEALTH_DEADLINE_SECONDS") ?? "120",
    "PROCESSGIT_UPDATER_HEALTH_DEADLINE_SECONDS",
    1,
    3600,
    problems,
  );
  const healthSoakMs = parseSeconds(
    get("PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS") ?? "10",
    "PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS",
    0,
    600,
    problems,
  );
  if (healthSoakMs >= healthDeadlineMs) {
    problems.push(
      "PROCESSGIT_UPDATER_HEALTH_SOAK_SECONDS must be shorter than PROCESSGIT_UPDATER_HEALTH_DEADLINE_SECONDS",
    );
  }
  const migrationTimeoutMs = parseSeconds(
    get("PROCESSGIT_UPDATER_MIGRATION_TIMEOUT_SECONDS") ?? "1800",
    "PROCESSGIT_UPDATER_MIGRATION_TIMEOUT_SECONDS",
    1,
    86_400,
    problems,
  );
  const removeOld = (get("PROCESSGIT_UPDATER_REMOVE_OLD_IMAGE") ?? "false").toLowerCase();
  if (removeOld !== "true" && removeOld !== "false") {
    problems.push(
      `PROCESSGIT_UPDATER_REMOVE_OLD_IMAGE must be true or false, got ${JSON.stringify(removeOld)}`,
    );
  }
  const registry = get("PROCESSGIT_UPDATER_REGISTRY");
  const registryUser = get("PROCESSGIT_UPDATER_REGISTRY_USERNAME");
  const registryPassword = readSecret(env, "PROCESSGIT_UPDATER_REGISTRY_PASSWORD", problems, {
    required: false,
  });
  if ((registry || registryUser || registryPassword) && !(registry && registryUser && registryPassword)) {
    problems.push(
      "registry credentials need all three: PROCESSGIT_UPDATER_REGISTRY (e.g. ghcr.io), PROCESSGIT_UPDATER_REGISTRY_USERNAME and PROCESSGIT_UPDATER_REGISTRY_PASSWORD (or _FILE)",
    );
  }
  if (registry && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/.test(registry)) {
    problems.push(
      `PROCESSGIT_UPDATER_REGISTRY must be a registry host[:port] such as ghcr.io, got ${JSON.stringify(registry)}`,
    );
  }

  const composeEnvFile = get("PROCESSGIT_UPDATER_COMPOSE_ENV_FILE");
  const composeVariable = get("PROCESSGIT_UPDATER_COMPOSE_IMAGE_VARIABLE") ?? "PROCESSGIT_IMAGE";
  if (composeEnvFile !== undefined && !composeEnvFile.startsWith("/")) {
    problems.push(
      `PROCESSGIT_UPDATER_COMPOSE_ENV_FILE must be an absolute path (the project's .env as mounted in the updater, e.g. /deploy/.env), got ${JSON.stringify(composeEnvFile)}`,
    );
  }
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(composeVariable)) {
    problems.push(
      `PROCESSGIT_UPDATER_COMPOSE_IMAGE_VARIABLE must be a variable name such as PROCESSGIT_IMAGE, got ${JSON.stringify(composeVariable)}`,
    );
  } else if (/TOKEN|PASSWORD|SECRET|KEY/i.test(composeVariable)) {
    problems.push(
      `PROCESSGIT_UPDATER_COMPOSE_IMAGE_VARIABLE names the variable holding the app's image; ${composeVariable} looks like a secret, which the updater must never overwrite or record`,
    );
  }

  const signer = parseSignerPolicy(get, problems);
  const releasesDir = get("PROCESSGIT_UPDATER_RELEASES_DIR");
  if (releasesDir !== undefined && !releasesDir.startsWith("/")) {
    problems.push(
      `PROCESSGIT_UPDATER_RELEASES_DIR must be an absolute path, got ${JSON.stringify(releasesDir)}`,
    );
  }

  if (problems.length > 0) throw new ConfigError(problems);
  const config: Config = {
    listen,
    token: token as string,
    stateDir,
    appContainer,
    github: { repo, apiBase },
    dockerHost,
    logLevel: level as LogLevel,
    shutdownGraceMs,
    signer: signer as SignerPolicy,
    engine: {
      snapshotDir,
      snapshotKeep,
      healthDeadlineMs,
      healthSoakMs,
      migrationTimeoutMs,
      removeOldImage: removeOld === "true",
    },
  };
  if (healthUrl) config.engine.healthUrl = healthUrl;
  if (helperImage) config.engine.helperImage = helperImage;
  if (composeEnvFile) config.engine.composeEnv = { file: composeEnvFile, variable: composeVariable };
  if (releasesDir) config.releasesDir = releasesDir;
  if (registry && registryUser && registryPassword) {
    config.engine.registryAuth = { registry, username: registryUser, password: registryPassword };
  }
  if (githubToken) config.github.token = githubToken;
  return config;
}

/** What is safe to log about a configuration: everything but the secrets. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    listen: `${config.listen.host}:${config.listen.port}`,
    stateDir: config.stateDir,
    appContainer: config.appContainer,
    repo: config.github.repo,
    githubApi: config.github.apiBase,
    githubToken: config.github.token ? "set" : "not set",
    dockerHost: config.dockerHost,
    logLevel: config.logLevel,
    signer:
      config.signer.policy === "keyless"
        ? {
            policy: "keyless",
            issuer: config.signer.issuer,
            identity: config.signer.identity,
            trustedRoot: config.signer.trustedRootPath ?? "public-good (shipped)",
          }
        : { policy: "key", publicKey: config.signer.publicKeyPath },
    releaseSource: config.releasesDir ? `directory ${config.releasesDir}` : `GitHub ${config.github.repo}`,
    snapshotDir: config.engine.snapshotDir,
    snapshotKeep: config.engine.snapshotKeep,
    helperImage: config.engine.helperImage ?? "the updater's own image",
    healthUrl: config.engine.healthUrl ?? "not set",
    healthDeadlineMs: config.engine.healthDeadlineMs,
    healthSoakMs: config.engine.healthSoakMs,
    migrationTimeoutMs: config.engine.migrationTimeoutMs,
    removeOldImage: config.engine.removeOldImage,
    composeEnv: config.engine.composeEnv
      ? `${config.engine.composeEnv.variable} in ${config.engine.composeEnv.file}`
      : "not set",
    registryCredentials: config.engine.registryAuth
      ? `set for ${config.engine.registryAuth.registry}`
      : "not set",
  };
}

export function parseListen(value: string, problems: string[]): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    problems.push(
      `PROCESSGIT_UPDATER_LISTEN must be host:port (e.g. 0.0.0.0:9000, 127.0.0.1:0 or [::1]:9000), got ${JSON.stringify(value)}`,
    );
    return { host: "0.0.0.0", port: 9000 };
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

function readSecret(
  env: NodeJS.ProcessEnv,
  name: string,
  problems: string[],
  opts: { required: boolean },
): string | undefined {
  const direct = env[name];
  const file = env[`${name}_FILE`];
  if (direct !== undefined && direct !== "" && file !== undefined && file !== "") {
    problems.push(`set only one of ${name} and ${name}_FILE`);
    return undefined;
  }
  if (file !== undefined && file !== "") {
    let content: string;
    try {
      content = readFileSync(file, "utf8");
    } catch (err) {
      // A value that is not a path may be the secret itself, pasted into the wrong variable: never echo it.
      const where =
        file.startsWith("/") || file.startsWith("./")
          ? file
          : "the file it names (not a path: is the secret itself in this variable?)";
      problems.push(
        `${name}_FILE: cannot read ${where}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`,
      );
      return undefined;
    }
    const secret = content.replace(/\r?\n$/, "");
    if (secret.trim() === "") {
      problems.push(`${name}_FILE: ${file} is empty`);
      return undefined;
    }
    if (/\s/.test(secret)) {
      problems.push(`${name}_FILE: ${file} holds whitespace inside the secret; it must be one line`);
      return undefined;
    }
    return secret;
  }
  if (direct === undefined || direct === "") {
    if (opts.required) {
      problems.push(
        `${name} or ${name}_FILE is required: the updater refuses to serve without a bearer token (for example: openssl rand -hex 32)`,
      );
    }
    return undefined;
  }
  if (/\s/.test(direct)) {
    problems.push(`${name} holds whitespace; it must be a single word`);
    return undefined;
  }
  return direct;
}

function parseInteger(value: string, name: string, min: number, max: number, problems: string[]): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    problems.push(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
    return min;
  }
  return Number(value);
}

const POLICY_HELP =
  "set PROCESSGIT_UPDATER_SIGNER_ISSUER and PROCESSGIT_UPDATER_SIGNER_IDENTITY (keyless: Sigstore bundles from GitHub Actions) or PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY (a cosign public key file); see docs/configuration.md";

/** Exactly one signer policy, or a problem: the updater never trusts a release without one. */
function parseSignerPolicy(
  get: (name: string) => string | undefined,
  problems: string[],
): SignerPolicy | undefined {
  const issuer = get("PROCESSGIT_UPDATER_SIGNER_ISSUER");
  const identity = get("PROCESSGIT_UPDATER_SIGNER_IDENTITY");
  const trustedRoot = get("PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT");
  const publicKey = get("PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY");
  const keyless = issuer !== undefined || identity !== undefined;
  if (keyless && publicKey !== undefined) {
    problems.push(`two signer policies are configured; use exactly one: ${POLICY_HELP}`);
    return undefined;
  }
  if (publicKey !== undefined) {
    if (trustedRoot !== undefined)
      problems.push("PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT only applies to the keyless policy; remove it");
    if (!publicKey.startsWith("/"))
      problems.push(
        `PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY must be the absolute path of a PEM public key, got ${JSON.stringify(publicKey)}`,
      );
    else {
      try {
        readFileSync(publicKey);
      } catch (err) {
        problems.push(
          `PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: cannot read ${publicKey}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`,
        );
      }
    }
    return { policy: "key", publicKeyPath: publicKey };
  }
  if (!keyless) {
    problems.push(
      `no signer policy is configured, so no release could be trusted (fail closed): ${POLICY_HELP}`,
    );
    return undefined;
  }
  if (issuer === undefined || identity === undefined) {
    problems.push(
      "the keyless signer policy needs both PROCESSGIT_UPDATER_SIGNER_ISSUER and PROCESSGIT_UPDATER_SIGNER_IDENTITY",
    );
    return undefined;
  }
  if (!isHttpUrl(issuer) || !issuer.startsWith("https://")) {
    problems.push(
      `PROCESSGIT_UPDATER_SIGNER_ISSUER must be the OIDC issuer URL (e.g. https://token.actions.githubusercontent.com), got ${JSON.stringify(issuer)}`,
    );
  }
  try {
    // Alone first: a pattern such as `x)|(.*` compiles only once wrapped, and would escape the anchors.
    new RegExp(identity);
    new RegExp(`^(?:${identity})$`);
  } catch (err) {
    problems.push(
      `PROCESSGIT_UPDATER_SIGNER_IDENTITY is not a valid regular expression: ${(err as Error).message}`,
    );
  }
  const policy: SignerPolicy = { policy: "keyless", issuer, identity };
  if (trustedRoot !== undefined) {
    if (!trustedRoot.startsWith("/"))
      problems.push(
        `PROCESSGIT_UPDATER_SIGSTORE_TRUSTED_ROOT must be an absolute path, got ${JSON.stringify(trustedRoot)}`,
      );
    policy.trustedRootPath = trustedRoot;
  }
  return policy;
}

function parseSeconds(value: string, name: string, min: number, max: number, problems: string[]): number {
  if (!/^\d+(\.\d{1,3})?$/.test(value) || Number(value) < min || Number(value) > max) {
    problems.push(
      `${name} must be a number of seconds from ${min} to ${max} (up to 3 decimals), got ${JSON.stringify(value)}`,
    );
    return min * 1000;
  }
  return Math.round(Number(value) * 1000);
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === "https:" || u.protocol === "http:";
  } catch {
    return false;
  }
}

/**
 * The URL a client on the same host (the image's HEALTHCHECK, the CLI inside the container) uses
 * to reach a server listening on `listen`: a wildcard address is reached on loopback.
 */
export function loopbackUrlFor(listen: string): string | undefined {
  const problems: string[] = [];
  const { host, port } = parseListen(listen, problems);
  if (problems.length > 0) return undefined;
  const reach = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `http://${reach.includes(":") ? `[${reach}]` : reach}:${port}`;
}
