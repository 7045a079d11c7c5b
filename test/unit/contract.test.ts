/**
 * The contract's tooling: gen/ must be exactly what `buf generate` makes from proto/ now, and the
 * proto must pass `buf lint` (STANDARD). Breaking-change checks against main run in CI
 * (`npm run breaking`) once main has the contract.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "../helpers/run.js";
import { bufPath } from "../helpers/tools.js";

const root = join(import.meta.dirname, "../..");
const scratch = mkdtemp(join(tmpdir(), "pgu-gen-"));
afterAll(async () => rm(await scratch, { recursive: true, force: true }));

async function files(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out.set(relative(dir, path), await readFile(path, "utf8"));
  }
  return out;
}

describe("the protobuf contract", () => {
  it("gen/ is what buf generate makes from proto/ now (run `npm run generate` and commit if not)", async () => {
    const out = await scratch;
    const env = `${join(root, "node_modules/.bin")}:${process.env.PATH}`;
    const result = await run(
      "env",
      [`PATH=${env}`, bufPath(), "generate", root, "--template", join(root, "buf.gen.yaml"), "-o", out],
      {
        timeoutMs: 60_000,
      },
    );
    expect(result.stderr).toBe("");
    const fresh = await files(join(out, "gen"));
    const committed = await files(join(root, "gen"));
    expect([...committed.keys()].sort()).toEqual([...fresh.keys()].sort());
    for (const [name, text] of fresh) expect(committed.get(name), `gen/${name} is stale`).toBe(text);
  });

  it("passes buf lint", async () => {
    const result = await run(bufPath(), ["lint", root], { timeoutMs: 60_000 });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.code).toBe(0);
  });
});
