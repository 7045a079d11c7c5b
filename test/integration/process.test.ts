/**
 * The updater as an operator runs it: the built server started with `npm start`, configured only
 * through the environment, stopped with SIGTERM. Also the ways it refuses to start.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEST_SIGNER_ENV } from "../helpers/test-updater.js";

const root = join(import.meta.dirname, "../..");
const TOKEN = "process-test-token-6a1f0c9e8d7b6a5f4e3d2c1b0a";
let stateDir: string;

beforeAll(async () => {
  stateDir = await mkdtemp(join(tmpdir(), "pgu-process-"));
});
afterAll(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function startProcess(env: Record<string, string>, args: string[] = ["start"]): Started {
  const child = spawn("npm", ["--silent", ...args], {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...TEST_SIGNER_ENV, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitFor(check: () => boolean, what: string, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("npm start", () => {
  it("serves, and on SIGTERM ends open streams and exits 0 promptly", async () => {
    const p = startProcess({
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
      PROCESSGIT_UPDATER_STATE_DIR: stateDir,
      DOCKER_HOST: `unix://${stateDir}/no-docker.sock`,
    });
    try {
      await waitFor(() => /"msg":"listening"/.test(p.output()), "the listening log line");
      const port = Number(/"address":"127\.0\.0\.1:(\d+)"/.exec(p.output())?.[1]);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);

      // An open server stream: the gRPC health Watch never ends on its own.
      const def = protoLoader.loadSync("grpc/health/v1/health.proto", {
        includeDirs: [join(root, "third_party")],
        enums: String,
      });
      const pkg = grpc.loadPackageDefinition(def) as unknown as {
        grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
      };
      const client = new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      const statuses: string[] = [];
      const watch = (
        client.Watch as unknown as (r: object) => grpc.ClientReadableStream<{ status: string }>
      ).call(client, { service: "" });
      const ended = new Promise<string>((resolve) => {
        watch.on("data", (m) => statuses.push(m.status));
        watch.on("error", (e: grpc.ServiceError) => resolve(`error ${grpc.status[e.code]}`));
        watch.on("end", () => resolve("end"));
      });
      await waitFor(() => statuses.length > 0, "the first health status");
      expect(statuses[0]).toBe("SERVING");

      // How fast it exits is measured by `npm run bench:server`; here the test timeout is the guard.
      p.child.kill("SIGTERM");
      const code = await p.exited;
      expect(code).toBe(0);
      expect(await ended).toMatch(/end|error (UNAVAILABLE|CANCELLED)/);
      expect(p.output()).toContain('"msg":"stopped"');
      expect(p.output()).not.toContain(TOKEN);
      client.close();
    } finally {
      p.child.kill("SIGKILL");
    }
  });
});

describe("refusing to start", () => {
  it("reports every configuration problem at once and exits 2, without echoing secrets", async () => {
    const secret = "short-secret-xyz";
    const p = startProcess({
      PROCESSGIT_UPDATER_TOKEN: secret,
      PROCESSGIT_UPDATER_LISTEN: "nowhere",
      PROCESSGIT_UPDATER_REPO: "not a repo",
      PROCESSGIT_UPDATER_STATE_DIR: "relative/dir",
    });
    expect(await p.exited).toBe(2);
    const out = p.output();
    expect(out).toContain("PROCESSGIT_UPDATER_TOKEN is 16 characters long; use at least 32");
    expect(out).toContain("PROCESSGIT_UPDATER_LISTEN must be host:port");
    expect(out).toContain("PROCESSGIT_UPDATER_REPO must be owner/name");
    expect(out).toContain("PROCESSGIT_UPDATER_STATE_DIR must be an absolute path");
    expect(out).not.toContain(secret);
  });

  it("refuses to start without a signer policy (fail closed)", async () => {
    const p = startProcess({
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_STATE_DIR: stateDir,
      PROCESSGIT_UPDATER_SIGNER_ISSUER: "",
      PROCESSGIT_UPDATER_SIGNER_IDENTITY: "",
    });
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain(
      "no signer policy is configured, so no release could be trusted (fail closed)",
    );
  });

  it("refuses to start without a token", async () => {
    const p = startProcess({ PROCESSGIT_UPDATER_STATE_DIR: stateDir });
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain("PROCESSGIT_UPDATER_TOKEN or PROCESSGIT_UPDATER_TOKEN_FILE is required");
  });

  it("reads the token from PROCESSGIT_UPDATER_TOKEN_FILE (Docker secrets)", async () => {
    const file = join(stateDir, "token");
    await writeFile(file, `${TOKEN}\n`);
    const p = startProcess({
      PROCESSGIT_UPDATER_TOKEN_FILE: file,
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
      PROCESSGIT_UPDATER_STATE_DIR: join(stateDir, "from-file"),
    });
    try {
      await waitFor(() => /"msg":"listening"/.test(p.output()), "the listening log line");
      const port = Number(/"address":"127\.0\.0\.1:(\d+)"/.exec(p.output())?.[1]);
      const res = await fetch(`http://127.0.0.1:${port}/processgit.updater.v1.UpdaterService/History`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
        body: "{}",
      });
      expect(res.status).toBe(200);
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    } finally {
      p.child.kill("SIGKILL");
    }
  });

  it("refuses to share a state directory with a running updater, and leaves its journal alone", async () => {
    const dir = join(stateDir, "shared");
    const env = {
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
      PROCESSGIT_UPDATER_STATE_DIR: dir,
    };
    const first = startProcess(env);
    try {
      await waitFor(() => /"msg":"listening"/.test(first.output()), "the first updater");
      const second = startProcess(env);
      expect(await second.exited).toBe(3);
      expect(second.output()).toMatch(/another updater \(pid \d+/);
      expect(first.child.exitCode).toBeNull();
      first.child.kill("SIGTERM");
      expect(await first.exited).toBe(0);
    } finally {
      first.child.kill("SIGKILL");
    }
  });

  it("stops with exit 3 on a corrupt state file, names it, and leaves it untouched", async () => {
    const dir = join(stateDir, "corrupt");
    const { mkdir } = await import("node:fs/promises");
    await mkdir(dir, { recursive: true });
    const file = join(dir, "state.json");
    const garbage = '{"schema":"processgit-updater/state","version":1,"jobs":[{"id":';
    await writeFile(file, garbage);
    const p = startProcess({
      PROCESSGIT_UPDATER_TOKEN: TOKEN,
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
      PROCESSGIT_UPDATER_STATE_DIR: dir,
    });
    expect(await p.exited).toBe(3);
    expect(p.output()).toContain(file);
    expect(await readFile(file, "utf8")).toBe(garbage);
  });
});
