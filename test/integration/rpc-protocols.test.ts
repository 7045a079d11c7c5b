/**
 * The real server on 127.0.0.1:0, called by clients we did not write (curl, grpcurl, buf curl,
 * @grpc/grpc-js) and by the generated TypeScript client over Connect, gRPC and gRPC-Web.
 * The container engine and the release source are fakes here: this file is about the API.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, UpdaterService, UpdaterState } from "../../gen/processgit/updater/v1/updater_pb.js";
import { FakeEngine } from "../fakes/fake-engine.js";
import { connectEnvelope, connectFrames, run, splitJsonStream } from "../helpers/run.js";
import { startTestUpdater, type TestUpdater } from "../helpers/test-updater.js";
import { bufPath, grpcurlPath } from "../helpers/tools.js";

const SERVICE = "processgit.updater.v1.UpdaterService";
let current: TestUpdater | undefined;

async function updater(...args: Parameters<typeof startTestUpdater>): Promise<TestUpdater> {
  current = await startTestUpdater(...args);
  return current;
}

afterEach(async () => {
  await current?.close();
  current = undefined;
});

type Protocol = "connect-h1" | "connect-h2" | "connect-binary-h1" | "connect-binary-h2" | "grpc" | "grpc-web";
const PROTOCOLS: Protocol[] = [
  "connect-h1",
  "connect-h2",
  "connect-binary-h1",
  "connect-binary-h2",
  "grpc",
  "grpc-web",
];

function transport(protocol: Protocol, baseUrl: string, token?: string): Transport {
  const interceptors = token
    ? [
        (next: Parameters<import("@connectrpc/connect").Interceptor>[0]) =>
          async (req: Parameters<typeof next>[0]) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
      ]
    : [];
  switch (protocol) {
    case "connect-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
    case "connect-h2":
      return createConnectTransport({ baseUrl, httpVersion: "2", interceptors });
    case "connect-binary-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors });
    case "connect-binary-h2":
      return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, interceptors });
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
  }
}

function client(
  u: TestUpdater,
  protocol: Protocol,
  token: string | undefined = u.token,
): Client<typeof UpdaterService> {
  return createClient(UpdaterService, transport(protocol, u.url, token));
}

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/**
 * Holds a new job in planning (at its pre-flight step) until a watcher has connected, so that an
 * outside client sees the stream from the start: the first snapshot, the changes, the end.
 */
function holdUntilWatched(u: TestUpdater): () => Promise<void> {
  const gate = u.engine.gate("preflight");
  return async () => {
    for (let i = 0; i < 1000 && u.updater.runner.watchers < 1; i++)
      await new Promise((r) => setTimeout(r, 10));
    gate.open();
  };
}

async function watchToEnd(c: Client<typeof UpdaterService>, id: string): Promise<JobState[]> {
  const states: JobState[] = [];
  for await (const res of c.watchJob({ id })) states.push(res.job?.state ?? JobState.UNSPECIFIED);
  return states;
}

describe("generated TypeScript client", () => {
  for (const protocol of PROTOCOLS) {
    it(`drives Status, StartUpdate, WatchJob, GetJob and History over ${protocol}`, async () => {
      const u = await updater();
      const c = client(u, protocol);
      const status = await c.status({});
      expect(status.state).toBe(UpdaterState.IDLE);
      expect(status.appImage).toBe("registry.test/processgit:1.0.0");
      expect(status.appVersion).toBe("1.0.0");
      expect(status.updaterVersion).toMatch(/^\d+\.\d+\.\d+/);

      const release = holdUntilWatched(u);
      const started = await c.startUpdate({ tag: "v1.2.0" });
      expect(started.job?.state).toBe(JobState.PLANNING);
      const id = started.job?.id ?? "";
      const [states] = await Promise.all([watchToEnd(c, id), release()]);
      expect(states[0]).toBe(JobState.PLANNING);
      expect(states.at(-1)).toBe(JobState.COMMITTED);
      expect(new Set(states)).toContain(JobState.PULLING);

      const got = await c.getJob({ id });
      expect(got.job?.state).toBe(JobState.COMMITTED);
      expect(got.job?.targetVersion).toBe("1.2.0");
      expect(got.job?.targetDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(got.job?.steps.map((s) => s.title)).toContain("run the migration");
      expect(got.job?.finishedAt).toBeDefined();
      const history = await c.history({});
      expect(history.jobs.map((j) => j.id)).toEqual([id]);
      const after = await c.status({});
      expect(after.counts?.committed).toBe(1);
      expect(after.lastCommittedAt).toBeDefined();
    });

    it(`maps errors to codes over ${protocol}`, async () => {
      const u = await updater();
      const c = client(u, protocol);
      expect((await codeOf(c.getJob({ id: "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10" }))).code).toBe(
        Code.NotFound,
      );
      expect((await codeOf(c.getJob({ id: "nope" }))).code).toBe(Code.InvalidArgument);
      const empty = await codeOf(c.startUpdate({ tag: "" }));
      expect(empty.code).toBe(Code.InvalidArgument);
      expect(empty.message).toMatch(/tag is empty/);
      expect((await codeOf(c.startUpdate({ tag: "../../etc/passwd" }))).code).toBe(Code.InvalidArgument);
      const unauth = await codeOf(client(u, protocol, "x".repeat(40)).status({}));
      expect(unauth.code).toBe(Code.Unauthenticated);
      expect((await codeOf(client(u, protocol, "").status({}))).code).toBe(Code.Unauthenticated);
      expect((await c.history({})).jobs).toHaveLength(0);
    });
  }

  it("lets exactly one of 50 concurrent StartUpdate calls win; the others name the active job", async () => {
    const engine = new FakeEngine();
    const gate = engine.gate("snapshot");
    const u = await updater({ engine });
    const c = client(u, "connect-h2");
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => c.startUpdate({ tag: "v1.2.0" })),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    expect(won).toHaveLength(1);
    const id = (won[0] as PromiseFulfilledResult<{ job?: { id: string } }>).value.job?.id ?? "";
    for (const r of results.filter((r) => r.status === "rejected")) {
      const e = ConnectError.from((r as PromiseRejectedResult).reason);
      expect(e.code).toBe(Code.AlreadyExists);
      expect(e.rawMessage).toContain(id);
    }
    await gate.reached;
    gate.open();
    expect((await watchToEnd(c, id)).at(-1)).toBe(JobState.COMMITTED);
    expect((await c.history({})).jobs).toHaveLength(1);
  });

  it("keeps the job running when the caller goes away", async () => {
    const engine = new FakeEngine();
    const gate = engine.gate("pull");
    const u = await updater({ engine });
    const abort = new AbortController();
    const c = client(u, "connect-h1");
    const started = await c.startUpdate({ tag: "v1.2.0" }, { signal: abort.signal });
    const id = started.job?.id ?? "";
    // A watcher that disconnects mid-job does not stop it either.
    const watcher = c.watchJob({ id }, { signal: abort.signal });
    await watcher[Symbol.asyncIterator]().next();
    abort.abort();
    await gate.reached;
    gate.open();
    expect((await watchToEnd(client(u, "grpc"), id)).at(-1)).toBe(JobState.COMMITTED);
  });

  it("streams step output and pull progress while the job runs", async () => {
    const engine = new FakeEngine();
    engine.outputs.set("migrate", ["migrating table a\n", "migrating table b\n"]);
    const gate = engine.gate("migrate");
    const u = await updater({ engine });
    const c = client(u, "grpc");
    const id = (await c.startUpdate({ tag: "v1.2.0" })).job?.id ?? "";
    const seen: string[] = [];
    let sawProgress = false;
    for await (const res of c.watchJob({ id })) {
      const job = res.job;
      const migration = job?.steps.find((s) => s.title === "run the migration");
      if (migration?.output.includes("table b") && !seen.includes("output")) {
        seen.push("output");
        gate.open();
      }
      if (job?.steps.some((s) => s.progress && s.progress.total === 100n)) sawProgress = true;
      if (job?.state === JobState.COMMITTED) seen.push("committed");
    }
    expect(seen).toEqual(["output", "committed"]);
    expect(sawProgress).toBe(true);
  });

  it("ends every open stream with Unavailable on shutdown", async () => {
    const engine = new FakeEngine();
    engine.gate("pull");
    const u = await updater({ engine });
    const id = (await client(u, "connect-h1").startUpdate({ tag: "v1.2.0" })).job?.id ?? "";
    const outcomes = PROTOCOLS.map(async (p) => {
      const it = client(u, p).watchJob({ id })[Symbol.asyncIterator]();
      await it.next();
      return codeOf(
        (async () => {
          for (;;) if ((await it.next()).done) return;
        })(),
      );
    });
    await new Promise((r) => setTimeout(r, 50));
    await u.updater.close();
    for (const o of await Promise.all(outcomes)) expect(o.code).toBe(Code.Unavailable);
    current = undefined;
  });
});

describe("a failed job, AcknowledgeFailure and the data restore record", () => {
  const RESTORE = {
    "restore.needed": "true",
    "restore.snapshot": "snap-0001",
    "restore.pointAt": "2026-11-02T10:00:10.000Z",
    "restore.discardedFrom": "2026-11-02T10:00:12.000Z",
    "restore.discardedUntil": "2026-11-02T10:00:40.000Z",
    "restore.done": "false",
  };

  /** Runs a job whose rollback fails, so that it ends FAILED; returns its id. */
  async function failedJob(u: TestUpdater, c: Client<typeof UpdaterService>): Promise<string> {
    u.engine.failOn("healthcheck", "unhealthy", "HEALTHCHECK_FAILED");
    u.engine.failOn(
      "rollback",
      "cannot start the previous container",
      undefined,
      "1. docker start processgit",
    );
    u.engine.restoreFacts = RESTORE;
    const id = (await c.startUpdate({ tag: "v1.2.0" })).job?.id ?? "";
    const states = await watchToEnd(c, id);
    expect(states.at(-1)).toBe(JobState.FAILED);
    u.engine.failures.clear();
    return id;
  }

  for (const protocol of ["connect-h1", "grpc"] as const) {
    it(`blocks StartUpdate until AcknowledgeFailure, over ${protocol}`, async () => {
      const u = await updater();
      const c = client(u, protocol);
      const id = await failedJob(u, c);

      const job = (await c.getJob({ id })).job;
      expect(job?.acknowledgement).toBeUndefined();
      expect(job?.dataRestore).toMatchObject({ needed: true, snapshot: "snap-0001", done: false });
      expect(timestampDate(job?.dataRestore?.pointAt as Timestamp).toISOString()).toBe(
        "2026-11-02T10:00:10.000Z",
      );
      expect(timestampDate(job?.dataRestore?.discardedFrom as Timestamp).toISOString()).toBe(
        "2026-11-02T10:00:12.000Z",
      );
      expect(timestampDate(job?.dataRestore?.discardedUntil as Timestamp).toISOString()).toBe(
        "2026-11-02T10:00:40.000Z",
      );
      expect((await c.status({})).blockingJob?.id).toBe(id);

      const blocked = await codeOf(c.startUpdate({ tag: "v1.2.0" }));
      expect(blocked.code).toBe(Code.FailedPrecondition);
      expect(blocked.message).toContain(`job ${id} (to v1.2.0) failed (ROLLBACK_FAILED)`);
      expect(blocked.message).toContain(`processgit-updater acknowledge ${id}`);

      const unknownId = "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10";
      expect((await codeOf(c.acknowledgeFailure({ id: unknownId }))).code).toBe(Code.NotFound);
      expect((await codeOf(c.acknowledgeFailure({ id: "nope" }))).code).toBe(Code.InvalidArgument);
      const long = await codeOf(c.acknowledgeFailure({ id, note: "x".repeat(3000) }));
      expect(long.code).toBe(Code.InvalidArgument);
      expect(long.message).toContain("note is 3000 characters long");

      const acked = await c.acknowledgeFailure({
        id,
        note: "restored snap-0001 by hand",
        acknowledgedBy: "alice",
      });
      expect(acked.job?.state).toBe(JobState.FAILED);
      expect(acked.job?.acknowledgement).toMatchObject({
        acknowledgedBy: "alice",
        note: "restored snap-0001 by hand",
      });
      expect(acked.job?.acknowledgement?.acknowledgedAt).toBeDefined();
      const again = await c.acknowledgeFailure({ id, note: "other" });
      expect(again.job?.acknowledgement).toEqual(acked.job?.acknowledgement);
      expect((await c.status({})).blockingJob).toBeUndefined();

      const next = (await c.startUpdate({ tag: "v1.2.0" })).job?.id ?? "";
      expect((await watchToEnd(c, next)).at(-1)).toBe(JobState.COMMITTED);
      const notFailed = await codeOf(c.acknowledgeFailure({ id: next }));
      expect(notFailed.code).toBe(Code.FailedPrecondition);
      expect(notFailed.message).toContain(`job ${next} is committed, not failed`);
    });
  }

  it("the curl call the refusal gives acknowledges the job, as written", async () => {
    const u = await updater();
    const c = client(u, "connect-h1");
    const id = await failedJob(u, c);
    const { message } = await codeOf(c.startUpdate({ tag: "v1.2.0" }));
    const command = /(curl .*AcknowledgeFailure")/.exec(message)?.[1];
    expect(command).toBeDefined();
    const result = await run("env", [
      `TOKEN=${u.token}`,
      `PROCESSGIT_UPDATER_URL=${u.url}`,
      "bash",
      "-c",
      `${command} -sS -w '\n%{http_code}'`,
    ]);
    expect(result.stdout.trim().split("\n").at(-1)).toBe("200");
    const job = (await c.getJob({ id })).job;
    expect(job?.acknowledgement?.note).toBe("what you did");
    expect((await c.status({})).blockingJob).toBeUndefined();
  });
});

describe("curl (Connect JSON over HTTP/1.1)", () => {
  const post = (
    u: TestUpdater,
    method: string,
    body: string,
    headers: string[] = [`Authorization: Bearer ${u.token}`],
  ) =>
    run(
      "curl",
      [
        "-sS",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        ...headers.flatMap((h) => ["-H", h]),
        "--data-binary",
        "@-",
        `${u.url}/${SERVICE}/${method}`,
      ],
      { input: Buffer.from(body) },
    );
  const parse = (out: string) => {
    const at = out.lastIndexOf("\n");
    return {
      status: Number(out.slice(at + 1)),
      body: JSON.parse(out.slice(0, at)) as Record<string, unknown>,
    };
  };

  it("answers /healthz without a token and every RPC only with one", async () => {
    const u = await updater();
    const health = await run("curl", ["-sS", "-w", "\n%{http_code}", `${u.url}/healthz`]);
    expect(parse(health.stdout)).toEqual({ status: 200, body: { status: "ok" } });
    const noToken = parse((await post(u, "Status", "{}", [])).stdout);
    expect(noToken.status).toBe(401);
    expect(noToken.body.code).toBe("unauthenticated");
    const wrong = "wrong-token-that-must-never-be-logged-0123456789";
    const bad = parse((await post(u, "Status", "{}", [`Authorization: Bearer ${wrong}`])).stdout);
    expect(bad.status).toBe(401);
    expect(JSON.stringify(bad.body)).not.toContain(wrong);
    expect(u.logs.join("")).not.toContain(wrong);
    expect(u.logs.join("")).not.toContain(u.token);
    const ok = parse((await post(u, "Status", "{}")).stdout);
    expect(ok.status).toBe(200);
    expect(ok.body.state).toBe("UPDATER_STATE_IDLE");
  });

  it("starts a job, streams it with WatchJob, and reads it back with GET", async () => {
    const u = await updater();
    const release = holdUntilWatched(u);
    const started = parse((await post(u, "StartUpdate", '{"tag":"v1.2.0"}')).stdout);
    expect(started.status).toBe(200);
    const id = (started.body.job as { id: string }).id;
    const reqFile = join(u.stateDir, "watch-request.bin");
    await writeFile(reqFile, connectEnvelope({ id }));
    const out = join(u.stateDir, "watch-response.bin");
    const watching = run("curl", [
      "-sS",
      "-N",
      "-o",
      out,
      "-H",
      "Content-Type: application/connect+json",
      "-H",
      `Authorization: Bearer ${u.token}`,
      "--data-binary",
      `@${reqFile}`,
      `${u.url}/${SERVICE}/WatchJob`,
    ]);
    await release();
    const watch = await watching;
    expect(watch.code).toBe(0);
    const { readFile } = await import("node:fs/promises");
    const frames = connectFrames(await readFile(out));
    const end = frames.at(-1);
    expect(end?.end).toBe(true);
    expect(end?.json).toEqual({});
    const states = frames.filter((f) => !f.end).map((f) => (f.json.job as { state: string }).state);
    expect(states[0]).toBe("JOB_STATE_PLANNING");
    expect(states.at(-1)).toBe("JOB_STATE_COMMITTED");

    const message = encodeURIComponent(JSON.stringify({ id }));
    const get = await run("curl", [
      "-sS",
      "-w",
      "\n%{http_code}",
      "-H",
      `Authorization: Bearer ${u.token}`,
      `${u.url}/${SERVICE}/GetJob?encoding=json&message=${message}`,
    ]);
    const got = parse(get.stdout);
    expect(got.status).toBe(200);
    expect((got.body.job as { state: string }).state).toBe("JOB_STATE_COMMITTED");
  });

  it("refuses bad input with the right code and changes nothing", async () => {
    const u = await updater();
    const malformed = parse((await post(u, "StartUpdate", '{"tag": ')).stdout);
    expect(malformed.status).toBe(400);
    expect(malformed.body.code).toBe("invalid_argument");
    const wrongType = parse((await post(u, "StartUpdate", '{"tag": 12}')).stdout);
    expect(wrongType.body.code).toBe("invalid_argument");
    const unknownField = parse((await post(u, "StartUpdate", '{"tga": "v1.2.0"}')).stdout);
    expect(unknownField.body.code).toBe("invalid_argument");
    const badTag = parse((await post(u, "StartUpdate", '{"tag":"v1 2"}')).stdout);
    expect(badTag.body.code).toBe("invalid_argument");
    expect(String(badTag.body.message)).toMatch(/malformed/);
    const big = JSON.stringify({ tag: "v".repeat(200_000) });
    const oversized = parse((await post(u, "StartUpdate", big)).stdout);
    expect(oversized.body.code).toBe("resource_exhausted");
    const unknownJob = parse(
      (await post(u, "GetJob", '{"id":"0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10"}')).stdout,
    );
    expect(unknownJob.status).toBe(404);
    expect(unknownJob.body.code).toBe("not_found");
    const history = parse((await post(u, "History", "{}")).stdout);
    expect(history.body).toEqual({});
  });
});

describe("grpcurl through server reflection", () => {
  const grpcurl = (u: TestUpdater, args: string[], token: string | null = u.token) =>
    run(grpcurlPath(), ["-plaintext", ...(token ? ["-H", `authorization: Bearer ${token}`] : []), ...args]);

  it("lists and describes the service, calls unary methods and follows WatchJob", async () => {
    const u = await updater();
    const addr = `127.0.0.1:${u.port}`;
    const list = await grpcurl(u, [addr, "list"]);
    expect(list.stdout.split("\n")).toContain(SERVICE);
    const describe = await grpcurl(u, [addr, "describe", SERVICE]);
    expect(describe.stdout).toContain(
      "rpc WatchJob ( .processgit.updater.v1.WatchJobRequest ) returns ( stream .processgit.updater.v1.WatchJobResponse )",
    );
    const status = await grpcurl(u, ["-d", "{}", addr, `${SERVICE}/Status`]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).state).toBe("UPDATER_STATE_IDLE");
    const release = holdUntilWatched(u);
    const started = await grpcurl(u, ["-d", '{"tag":"v1.2.0"}', addr, `${SERVICE}/StartUpdate`]);
    const id = JSON.parse(started.stdout).job.id as string;
    const watching = grpcurl(u, ["-d", JSON.stringify({ id }), addr, `${SERVICE}/WatchJob`]);
    await release();
    const watch = await watching;
    expect(watch.code).toBe(0);
    const messages = splitJsonStream(watch.stdout) as Array<{ job: { state: string } }>;
    expect(messages[0]?.job.state).toBe("JOB_STATE_PLANNING");
    expect(messages.at(-1)?.job.state).toBe("JOB_STATE_COMMITTED");
    const history = await grpcurl(u, ["-d", "{}", addr, `${SERVICE}/History`]);
    expect(JSON.parse(history.stdout).jobs[0].id).toBe(id);
  });

  it("reports NotFound, InvalidArgument and Unauthenticated as gRPC status codes", async () => {
    const u = await updater();
    const addr = `127.0.0.1:${u.port}`;
    const missing = await grpcurl(u, [
      "-d",
      '{"id":"0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10"}',
      addr,
      `${SERVICE}/GetJob`,
    ]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("Code: NotFound");
    const bad = await grpcurl(u, ["-d", '{"tag":""}', addr, `${SERVICE}/StartUpdate`]);
    expect(bad.stderr).toContain("Code: InvalidArgument");
    const noAuth = await grpcurl(u, [addr, "list"], null);
    expect(noAuth.code).not.toBe(0);
    expect(noAuth.stderr).toContain("Unauthenticated");
    const wrong = await grpcurl(u, [addr, "list"], "z".repeat(48));
    expect(wrong.stderr).toContain("Unauthenticated");
  });
});

describe("buf curl through server reflection", () => {
  it("calls Status over gRPC and History over Connect", async () => {
    const u = await updater();
    const auth = `Authorization: Bearer ${u.token}`;
    const grpcCall = await run(bufPath(), [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      auth,
      "--reflect-header",
      auth,
      "-d",
      "{}",
      `${u.url}/${SERVICE}/Status`,
    ]);
    expect(grpcCall.stderr).toBe("");
    expect(JSON.parse(grpcCall.stdout).appContainer).toBe("processgit");
    const connectCall = await run(bufPath(), [
      "curl",
      "--protocol",
      "connect",
      "-H",
      auth,
      "--reflect-header",
      auth,
      "-d",
      "{}",
      `${u.url}/${SERVICE}/History`,
    ]);
    expect(connectCall.code).toBe(0);
    expect(JSON.parse(connectCall.stdout)).toEqual({});
  });
});

describe("@grpc/grpc-js", () => {
  it("calls unary methods and a server stream with metadata auth", async () => {
    const u = await updater();
    const def = protoLoader.loadSync("processgit/updater/v1/updater.proto", {
      includeDirs: [join(import.meta.dirname, "../../proto")],
      longs: String,
      enums: String,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      processgit: { updater: { v1: { UpdaterService: grpc.ServiceClientConstructor } } };
    };
    const Ctor = pkg.processgit.updater.v1.UpdaterService;
    const c = new Ctor(`127.0.0.1:${u.port}`, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${u.token}`);
    const unary = <T>(method: string, req: object, meta = md) =>
      new Promise<T>((resolve, reject) => {
        (
          c[method] as unknown as (
            r: object,
            m: grpc.Metadata,
            cb: (e: grpc.ServiceError | null, v: T) => void,
          ) => void
        ).call(c, req, meta, (e, v) => (e ? reject(e) : resolve(v)));
      });
    const status = await unary<{ state: string }>("Status", {});
    expect(status.state).toBe("UPDATER_STATE_IDLE");
    const noAuth = await unary("Status", {}, new grpc.Metadata()).catch((e: grpc.ServiceError) => e);
    expect((noAuth as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
    const release = holdUntilWatched(u);
    const started = await unary<{ job: { id: string } }>("StartUpdate", { tag: "v1.2.0" });
    void release();
    const states = await new Promise<string[]>((resolve, reject) => {
      const seen: string[] = [];
      const watchJob = c.WatchJob as unknown as (
        r: object,
        m: grpc.Metadata,
      ) => grpc.ClientReadableStream<{ job: { state: string } }>;
      const stream = watchJob.call(c, { id: started.job.id }, md);
      stream.on("data", (m) => seen.push(m.job.state));
      stream.on("error", reject);
      stream.on("end", () => resolve(seen));
    });
    expect(states[0]).toBe("JOB_STATE_PLANNING");
    expect(states.at(-1)).toBe("JOB_STATE_COMMITTED");
    const busy = await unary("GetJob", { id: "0b6f3f5e-6c1d-4c36-9d2b-2f4a8e1c9a10" }).catch(
      (e: grpc.ServiceError) => e,
    );
    expect((busy as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    c.close();
  });
});
