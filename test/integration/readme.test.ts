/**
 * The README's tour, run as written against the demo (`npm run demo`, built), with only the
 * address and the state directory changed: the demo here listens on a free port, not 9000.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../helpers/run.js";

const root = join(import.meta.dirname, "../..");
let demo: ChildProcess;
let stateDir: string;
let address = "";

beforeAll(async () => {
  stateDir = await mkdtemp(join(tmpdir(), "pgu-readme-"));
  demo = spawn("npm", ["run", "--silent", "demo"], {
    cwd: root,
    // Without DOCKER_HOST: the tour's update stops at pre-flight, the same on every machine.
    env: {
      ...withoutDocker(process.env),
      PROCESSGIT_UPDATER_LISTEN: "127.0.0.1:0",
      PROCESSGIT_UPDATER_STATE_DIR: stateDir,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  demo.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  for (let i = 0; i < 750 && !address; i++) {
    await new Promise((r) => setTimeout(r, 20));
    address = /serving on http:\/\/(127\.0\.0\.1:\d+)/.exec(out)?.[1] ?? "";
  }
  if (!address) throw new Error(`the demo did not start:\n${out}`);
});

afterAll(async () => {
  demo?.kill("SIGTERM");
  await new Promise((r) => demo?.once("exit", r));
  await rm(stateDir, { recursive: true, force: true });
});

function withoutDocker(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { DOCKER_HOST: _ignored, ...rest } = env;
  return rest;
}

async function tourBlocks(): Promise<string[]> {
  const readme = await readFile(join(root, "README.md"), "utf8");
  const tour = readme.slice(readme.indexOf("## A short tour"), readme.indexOf("What the demo's update does"));
  return [...tour.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

describe("README tour", () => {
  it("runs every command of the tour, in order, successfully", async () => {
    const blocks = await tourBlocks();
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    const script = blocks
      .join("\n")
      .replaceAll("127.0.0.1:9000", address)
      .replaceAll(".demo-state/token", join(stateDir, "token"));
    const result = await run("bash", ["-euo", "pipefail", "-c", `cd ${JSON.stringify(root)}\n${script}`], {
      timeoutMs: 60_000,
    });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('{"status":"ok"}');
    expect(result.stdout).toContain("processgit.updater.v1.UpdaterService");
    expect(result.stdout).toContain('"tag":"v2.0.0"');
    expect(result.stdout).toContain("signature verified (key)");
    expect(result.stdout).toContain("JOB_STATE_ABORTED");
    expect(result.stdout).toContain("ENGINE_UNAVAILABLE");
    expect(result.stdout).toContain("message Job {");
  });
});
