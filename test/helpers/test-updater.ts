/**
 * Starts the real updater (real config parsing, real file store, real one-port server on
 * 127.0.0.1:0) with the adapters a test chooses: fakes for the parts the test is not about.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startUpdater, type Updater, type UpdaterParts } from "../../src/app.js";
import { loadConfig } from "../../src/config.js";
import { createLogger } from "../../src/log.js";
import { FakeEngine } from "../fakes/fake-engine.js";
import { FakeVerifier, MemoryReleaseSource } from "../fakes/fake-release.js";

export const TEST_TOKEN = "test-token-3f9c1a7e5b2d4c6e8f0a1b3c5d7e9f01";

/** A keyless signer policy for tests whose releases are checked by a fake verifier (or refused). */
export const TEST_SIGNER_ENV = {
  PROCESSGIT_UPDATER_SIGNER_ISSUER: "https://token.actions.githubusercontent.com",
  PROCESSGIT_UPDATER_SIGNER_IDENTITY:
    "https://github\\.com/acme/processgit/\\.github/workflows/release\\.yml@refs/tags/v.*",
};

export interface TestUpdater {
  updater: Updater;
  url: string;
  port: number;
  token: string;
  stateDir: string;
  engine: FakeEngine;
  source: MemoryReleaseSource | "real";
  /** Every log line the updater wrote. */
  logs: string[];
  close(): Promise<void>;
}

export async function startTestUpdater(
  options: {
    env?: Record<string, string>;
    parts?: UpdaterParts;
    engine?: FakeEngine;
    /** A release source; "real" uses the GitHub client the configuration names (e.g. a stand-in). */
    source?: MemoryReleaseSource | "real";
  } = {},
): Promise<TestUpdater> {
  const stateDir = await mkdtemp(join(tmpdir(), "pgu-state-"));
  const config = loadConfig({
    PROCESSGIT_UPDATER_TOKEN: TEST_TOKEN,
    PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
    PROCESSGIT_UPDATER_STATE_DIR: stateDir,
    PROCESSGIT_UPDATER_SHUTDOWN_GRACE_MS: "2000",
    ...TEST_SIGNER_ENV,
    ...options.env,
  });
  const logs: string[] = [];
  const log = createLogger("debug", (line) => {
    logs.push(line);
  });
  const engine = options.engine ?? new FakeEngine();
  const source = options.source ?? new MemoryReleaseSource().add("v1.1.0").add("v1.2.0");
  const updater = await startUpdater(config, log, {
    engine,
    ...(source === "real" ? {} : { source }),
    verifier: new FakeVerifier(),
    ...options.parts,
  });
  return {
    updater,
    url: updater.server.url,
    port: updater.server.port,
    token: TEST_TOKEN,
    stateDir,
    engine,
    source,
    logs,
    async close() {
      await updater.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}
