/**
 * The composition root: read the configuration once, start the updater, stop it on SIGTERM or
 * SIGINT. Exit codes: 0 after a clean shutdown, 1 when the server cannot run, 2 for a
 * configuration error, 3 for a state file it will not trust.
 */

import { startUpdater, updaterVersion } from "./app.js";
import { type Config, describeConfig, loadConfig } from "./config.js";
import { ConfigError, errorMessage, StateFileError, UpdaterError } from "./errors.js";
import { createLogger } from "./log.js";

async function main(): Promise<number> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`processgit-updater: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  log.info("starting", { version: updaterVersion(), node: process.version, config: describeConfig(config) });
  let updater: Awaited<ReturnType<typeof startUpdater>>;
  try {
    updater = await startUpdater(config, log);
  } catch (err) {
    if (err instanceof StateFileError) {
      log.error("refusing to start", {
        path: err.path,
        error: err.message,
      });
      process.stderr.write(`processgit-updater: ${err.message}\n`);
      return 3;
    }
    if (err instanceof UpdaterError) {
      // A setting that parsed but cannot be used: the signer's public key or trusted root, say.
      log.error("refusing to start: invalid configuration", { error: err.message });
      process.stderr.write(`processgit-updater: invalid configuration:\n  - ${err.message}\n`);
      return 2;
    }
    log.error("cannot start", { error: errorMessage(err) });
    return 1;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info("shutting down", { signal });
      resolve();
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  const started = Date.now();
  await updater.close();
  log.info("stopped", { ms: Date.now() - started });
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`processgit-updater: fatal: ${errorMessage(err)}\n`);
    process.exitCode = 1;
  },
);
