/**
 * Outside a container, with no PROCESSGIT_UPDATER_HELPER_IMAGE, the snapshot helper runs in an
 * image made from the node that runs the updater: checked on the real engine.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerClient } from "../../src/engine/docker-client.js";
import {
  ensureLocalHelperImage,
  filesOfNode,
  localHelperImageName,
} from "../../src/snapshots/local-helper-image.js";
import { SnapshotStore } from "../../src/snapshots/snapshot-store.js";
import { DockerJanitor, docker, type EngineEnv, requireEngine, runOnce } from "../helpers/docker.js";

let env: EngineEnv;
let janitor: DockerJanitor;
let work: string;
beforeAll(async () => {
  env = await requireEngine();
  janitor = new DockerJanitor(env);
  work = await mkdtemp(join(tmpdir(), "pgu-local-helper-"));
}, 60_000);
afterAll(async () => {
  await janitor?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the helper image made from the updater's node", () => {
  it("lists node, the libraries it loaded and its ELF interpreter", async () => {
    const files = await filesOfNode();
    const paths = files.map((f) => f.path);
    expect(paths).toContain("usr/local/bin/node");
    expect(paths.some((p) => /libc\.so/.test(p))).toBe(true);
    expect(files.some((f) => f.linkTo !== undefined || /ld-linux/.test(f.path))).toBe(true);
  });

  it("is imported once, runs node -e without a shell, and is what a store outside a container uses", async () => {
    const client = new DockerClient({ dockerHost: env.dockerHost });
    const name = await ensureLocalHelperImage(client);
    expect(name).toBe(localHelperImageName());
    const id = (await docker(["image", "inspect", "-f", "{{.Id}}", name])).trim();
    expect(await ensureLocalHelperImage(client)).toBe(name);
    expect((await docker(["image", "inspect", "-f", "{{.Id}}", name])).trim()).toBe(id);
    const out = await runOnce(janitor, name, ["node", "-e", "console.log(process.version)"]);
    expect(out.trim()).toBe(process.version);
    await expect(
      docker(["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", name, "-c", "true"]),
    ).rejects.toThrow();

    // A store with no helper image configured, outside a container, looks at real data with it.
    const volume = janitor.volume(janitor.name("local-helper"));
    await docker(["volume", "create", volume]);
    await runOnce(janitor, name, ["node", "-e", "require('fs').writeFileSync('/data/a', 'x'.repeat(1000))"], {
      mounts: [`${volume}:/data`],
    });
    const store = new SnapshotStore({ client, dir: join(work, "snapshots") });
    const estimate = await store.estimate({
      jobId: "local-helper-test",
      mounts: [{ index: 0, type: "volume", name: volume, destination: "/data" }],
      signal: new AbortController().signal,
    });
    expect(estimate).toMatchObject({ files: 1, bytes: 1000, newBytes: 1000 });
    client.close();
  }, 120_000);
});
