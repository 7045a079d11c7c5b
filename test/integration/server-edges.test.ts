/**
 * The one-port server at its edges, with raw sockets and curl: connections that never speak,
 * oversized headers, misspelt JSON fields and enum names.
 */
import { connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/log.js";
import { type RunningServer, startServer } from "../../src/rpc/server.js";
import { run } from "../helpers/run.js";
import { startTestUpdater, type TestUpdater } from "../helpers/test-updater.js";

let server: RunningServer | undefined;
let u: TestUpdater | undefined;
afterEach(async () => {
  await server?.close(500);
  await u?.close();
  server = undefined;
  u = undefined;
});

function openSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port }, () => resolve(s));
    s.on("error", reject);
  });
}

const closed = (s: Socket) => new Promise<void>((resolve) => s.once("close", () => resolve()));

describe("connections", () => {
  it("drops a connection that sends nothing, and one that stops inside the HTTP/2 preface", async () => {
    server = await startServer({
      host: "127.0.0.1",
      port: 0,
      routes: () => {},
      log: silentLogger,
      firstBytesTimeoutMs: 200,
    });
    const silent = await openSocket(server.port);
    const partial = await openSocket(server.port);
    partial.write("PRI * HTTP/2.0\r\n");
    await Promise.all([closed(silent), closed(partial)]);
    expect(silent.destroyed && partial.destroyed).toBe(true);
  });

  it("shuts down without waiting for connections that never sent a request", async () => {
    server = await startServer({ host: "127.0.0.1", port: 0, routes: () => {}, log: silentLogger });
    const silent = await openSocket(server.port);
    const gone = closed(silent);
    // The grace period is long; the silent connection must not hold the shutdown for it.
    const closing = server.close(60_000);
    await gone;
    await closing;
    server = undefined;
  });
});

describe("HTTP edge cases", () => {
  it("answers 431 to oversized headers instead of resetting the connection", async () => {
    u = await startTestUpdater();
    const r = await run("curl", [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-H",
      `X-Big: ${"a".repeat(20_000)}`,
      `${u.url}/healthz`,
    ]);
    expect(r.stdout).toBe("431");
  });

  it("refuses misspelt fields and unknown enum names with InvalidArgument", async () => {
    u = await startTestUpdater();
    const call = async (method: string, body: string) => {
      const r = await run("curl", [
        "-sS",
        "-H",
        "Content-Type: application/json",
        "-H",
        `Authorization: Bearer ${u?.token}`,
        "--data-binary",
        body,
        `${u?.url}/processgit.updater.v1.UpdaterService/${method}`,
      ]);
      return JSON.parse(r.stdout) as { code?: string; message?: string };
    };
    const field = await call("StartUpdate", '{"tga":"v1.2.0"}');
    expect(field.code).toBe("invalid_argument");
    expect(field.message).toContain("tga");
    const enumName = await call("LatestRelease", '{"channel":"PRERELEASE"}');
    expect(enumName.code).toBe("invalid_argument");
    expect(enumName.message).toContain("PRERELEASE");
    expect((await call("History", "{}")).code).toBeUndefined();
  });
});
