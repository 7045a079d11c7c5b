/**
 * gRPC reflection and health on a real h2c server, exercised only by clients we did not write:
 * @grpc/grpc-js (with .proto files loaded by @grpc/proto-loader), grpcurl and buf curl.
 */
import { execFile } from "node:child_process";
import { on } from "node:events";
import { createServer, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { UpdaterService } from "../../gen/processgit/updater/v1/updater_pb.js";
import { HealthState, registerHealth, ServingStatus } from "../../src/rpc/health.js";
import { registerReflection } from "../../src/rpc/reflection.js";
import { bufPath, grpcurlPath } from "../helpers/tools.js";

const run = promisify(execFile);

const UPDATER = "processgit.updater.v1.UpdaterService";
const UPDATER_FILE = "processgit/updater/v1/updater.proto";
const TIMESTAMP_FILE = "google/protobuf/timestamp.proto";
const ADVERTISED = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
  UPDATER,
];

interface TestServer {
  readonly address: string;
  close(): Promise<void>;
}

async function startServer(state: HealthState): Promise<TestServer> {
  const shutdown = new AbortController();
  const routes = (router: ConnectRouter): void => {
    registerHealth(router, state);
    registerReflection(router, [UpdaterService, Health]);
  };
  const server = createServer(connectNodeAdapter({ routes, shutdownSignal: shutdown.signal }));
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    async close() {
      shutdown.abort();
      const closed = new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      );
      for (const session of sessions) session.close();
      await closed;
    },
  };
}

const protos = protoLoader.loadSync(
  [
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
  ],
  {
    includeDirs: [fileURLToPath(new URL("../../third_party", import.meta.url))],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  },
);

function methodOf(service: string, name: string): protoLoader.MethodDefinition<object, object> {
  const method = (protos[service] as protoLoader.ServiceDefinition | undefined)?.[name];
  if (!method) throw new Error(`${service}/${name} is not in the loaded protos`);
  return method;
}

function unary<Response>(
  client: grpc.Client,
  service: string,
  name: string,
  request: object,
): Promise<Response> {
  const method = methodOf(service, name);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      (error, response) => (error ? reject(error) : resolve(response as Response)),
    );
  });
}

/** The final status of a call, whether or not it also emitted an error. */
function statusOf(call: grpc.ClientReadableStream<object> | grpc.ClientDuplexStream<object, object>) {
  return new Promise<grpc.StatusObject>((resolve) => call.once("status", resolve));
}

interface HealthCheckResponse {
  status: string;
}

/** A server-streaming Watch call read one message at a time. */
class WatchCall {
  readonly call: grpc.ClientReadableStream<object>;
  readonly #updates: AsyncIterator<unknown[]>;

  constructor(client: grpc.Client, service: string) {
    const method = methodOf("grpc.health.v1.Health", "Watch");
    this.call = client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      {
        service,
      },
    );
    this.#updates = on(this.call, "data");
  }

  async next(): Promise<string> {
    const { value } = await this.#updates.next();
    return (value as [HealthCheckResponse])[0].status;
  }

  async cancel(): Promise<grpc.StatusObject> {
    const status = statusOf(this.call);
    this.call.cancel();
    const result = await status;
    await this.#updates.return?.();
    return result;
  }
}

interface ReflectionRequest {
  host?: string;
  file_by_filename?: string;
  file_containing_symbol?: string;
  file_containing_extension?: { containing_type: string; extension_number: number };
  all_extension_numbers_of_type?: string;
  list_services?: string;
}

interface ReflectionResponse {
  valid_host: string;
  original_request: (ReflectionRequest & { message_request: string }) | null;
  message_response: string;
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  all_extension_numbers_response?: { base_type_name: string; extension_number: number[] };
  list_services_response?: { service: { name: string }[] };
  error_response?: { error_code: number; error_message: string };
}

/** One ServerReflectionInfo bidi stream; each `ask` writes a request and reads its answer. */
class ReflectionStream {
  readonly #call: grpc.ClientDuplexStream<object, object>;
  readonly #responses: AsyncIterator<unknown[]>;

  constructor(client: grpc.Client, version: "v1" | "v1alpha") {
    const method = methodOf(`grpc.reflection.${version}.ServerReflection`, "ServerReflectionInfo");
    this.#call = client.makeBidiStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
    );
    this.#responses = on(this.#call, "data");
  }

  async ask(request: ReflectionRequest): Promise<ReflectionResponse> {
    this.#call.write(request);
    const { value } = await this.#responses.next();
    return (value as [ReflectionResponse])[0];
  }

  async close(): Promise<grpc.StatusObject> {
    const status = statusOf(this.#call);
    this.#call.end();
    const result = await status;
    await this.#responses.return?.();
    return result;
  }
}

function filesOf(response: ReflectionResponse): FileDescriptorProto[] {
  expect(response.message_response).toBe("file_descriptor_response");
  return (response.file_descriptor_response?.file_descriptor_proto ?? []).map((bytes) =>
    fromBinary(FileDescriptorProtoSchema, bytes),
  );
}

describe("reflection and health on a real server", () => {
  const state = new HealthState();
  let server: TestServer;
  let client: grpc.Client;

  beforeAll(async () => {
    state.set(UPDATER, ServingStatus.SERVING);
    server = await startServer(state);
    client = new grpc.Client(server.address, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
  });

  describe("grpc.health.v1 through @grpc/grpc-js", () => {
    it("Check reports the server and each known service", async () => {
      await expect(unary(client, "grpc.health.v1.Health", "Check", { service: "" })).resolves.toEqual({
        status: "SERVING",
      });
      await expect(unary(client, "grpc.health.v1.Health", "Check", { service: UPDATER })).resolves.toEqual({
        status: "SERVING",
      });
    });

    it("Check of an unknown service fails with NOT_FOUND", async () => {
      await expect(
        unary(client, "grpc.health.v1.Health", "Check", { service: "no.Such" }),
      ).rejects.toMatchObject({
        code: grpc.status.NOT_FOUND,
      });
    });

    it("List reports every known service", async () => {
      await expect(unary(client, "grpc.health.v1.Health", "List", {})).resolves.toEqual({
        statuses: { "": { status: "SERVING" }, [UPDATER]: { status: "SERVING" } },
      });
    });

    it("Watch sends the current status at once, then every change", async () => {
      const watch = new WatchCall(client, UPDATER);
      expect(await watch.next()).toBe("SERVING");
      state.set(UPDATER, ServingStatus.NOT_SERVING);
      expect(await watch.next()).toBe("NOT_SERVING");
      state.set(UPDATER, ServingStatus.SERVING);
      expect(await watch.next()).toBe("SERVING");
      expect((await watch.cancel()).code).toBe(grpc.status.CANCELLED);
    });

    it("Watch of an unknown service sends SERVICE_UNKNOWN and keeps watching", async () => {
      const watch = new WatchCall(client, "later.Service");
      expect(await watch.next()).toBe("SERVICE_UNKNOWN");
      state.set("later.Service", ServingStatus.SERVING);
      expect(await watch.next()).toBe("SERVING");
      await watch.cancel();
    });
  });

  describe.each(["v1", "v1alpha"] as const)("grpc.reflection.%s through @grpc/grpc-js", (version) => {
    let stream: ReflectionStream;

    beforeAll(() => {
      stream = new ReflectionStream(client, version);
    });

    afterAll(async () => {
      expect((await stream.close()).code).toBe(grpc.status.OK);
    });

    it("lists the services and echoes host and request", async () => {
      const response = await stream.ask({ host: "updater.test", list_services: "*" });
      expect(response.valid_host).toBe("updater.test");
      expect(response.original_request).toMatchObject({ host: "updater.test", list_services: "*" });
      expect(response.list_services_response?.service.map((s) => s.name)).toEqual(ADVERTISED);
    });

    it("returns the file containing UpdaterService first, then its dependencies", async () => {
      const files = filesOf(await stream.ask({ file_containing_symbol: UPDATER }));
      expect(files.map((f) => f.name)).toEqual([UPDATER_FILE, TIMESTAMP_FILE]);
      const [updater, timestamp] = files;
      expect(updater?.package).toBe("processgit.updater.v1");
      expect(updater?.dependency).toEqual([TIMESTAMP_FILE]);
      expect(updater?.service.map((s) => s.name)).toEqual(["UpdaterService"]);
      expect(updater?.service[0]?.method.map((m) => m.name)).toEqual([
        "Status",
        "LatestRelease",
        "StartUpdate",
        "GetJob",
        "History",
        "WatchJob",
        "AcknowledgeFailure",
      ]);
      expect(updater?.messageType.map((m) => m.name)).toContain("Job");
      expect(updater?.messageType.map((m) => m.name)).toEqual(
        expect.arrayContaining(["Acknowledgement", "DataRestore", "AcknowledgeFailureRequest"]),
      );
      expect(timestamp?.messageType.map((m) => m.name)).toEqual(["Timestamp"]);
    });

    it.each([
      ["processgit.updater.v1.UpdaterService.StartUpdate", UPDATER_FILE],
      ["processgit.updater.v1.Job", UPDATER_FILE],
      [".processgit.updater.v1.Job", UPDATER_FILE],
      ["processgit.updater.v1.Job.created_at", UPDATER_FILE],
      ["processgit.updater.v1.JobState", UPDATER_FILE],
      ["processgit.updater.v1.JOB_STATE_COMMITTED", UPDATER_FILE],
      ["google.protobuf.Timestamp", TIMESTAMP_FILE],
      ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"],
      [`grpc.reflection.${version}.ServerReflection`, `grpc/reflection/${version}/reflection.proto`],
    ])("finds the file containing %s", async (symbol, file) => {
      const files = filesOf(await stream.ask({ file_containing_symbol: symbol }));
      expect(files[0]?.name).toBe(file);
    });

    it("answers an unknown symbol with NOT_FOUND and keeps the stream open", async () => {
      const response = await stream.ask({ file_containing_symbol: "processgit.updater.v1.NoSuchThing" });
      expect(response.message_response).toBe("error_response");
      expect(response.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
      expect(response.error_response?.error_message).toContain("processgit.updater.v1.NoSuchThing");
      expect(response.original_request).toMatchObject({
        file_containing_symbol: "processgit.updater.v1.NoSuchThing",
      });
      const next = filesOf(await stream.ask({ file_by_filename: TIMESTAMP_FILE }));
      expect(next.map((f) => f.name)).toEqual([TIMESTAMP_FILE]);
    });

    it("answers an unknown file with NOT_FOUND", async () => {
      const response = await stream.ask({ file_by_filename: "no/such.proto" });
      expect(response.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
    });

    it("reports that there are no extensions", async () => {
      const extension = await stream.ask({
        file_containing_extension: { containing_type: "processgit.updater.v1.Job", extension_number: 100 },
      });
      expect(extension.error_response?.error_code).toBe(grpc.status.NOT_FOUND);

      const numbers = await stream.ask({ all_extension_numbers_of_type: "processgit.updater.v1.Job" });
      expect(numbers.message_response).toBe("all_extension_numbers_response");
      expect(numbers.all_extension_numbers_response).toEqual({
        base_type_name: "processgit.updater.v1.Job",
        extension_number: [],
      });

      const unknown = await stream.ask({ all_extension_numbers_of_type: "no.Such" });
      expect(unknown.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
    });
  });

  describe("grpcurl", () => {
    const grpcurl = (...args: string[]) =>
      run(grpcurlPath(), ["-plaintext", ...args], { timeout: 20_000, encoding: "utf8" });

    it("lists the services", async () => {
      const { stdout } = await grpcurl(server.address, "list");
      expect(stdout.trim().split("\n")).toEqual(ADVERTISED);
    });

    it("describes UpdaterService", async () => {
      const { stdout } = await grpcurl(server.address, "describe", UPDATER);
      expect(stdout).toContain(`${UPDATER} is a service:`);
      expect(stdout).toContain(
        "rpc StartUpdate ( .processgit.updater.v1.StartUpdateRequest ) returns ( .processgit.updater.v1.StartUpdateResponse );",
      );
      expect(stdout).toContain(
        "rpc WatchJob ( .processgit.updater.v1.WatchJobRequest ) returns ( stream .processgit.updater.v1.WatchJobResponse );",
      );
    });

    it("describes Job, resolving google.protobuf.Timestamp", async () => {
      const { stdout } = await grpcurl(server.address, "describe", "processgit.updater.v1.Job");
      expect(stdout).toContain("processgit.updater.v1.Job is a message:");
      expect(stdout).toContain(".google.protobuf.Timestamp created_at = 10;");
      expect(stdout).toContain("repeated .processgit.updater.v1.Step steps = 13;");
    });

    it("calls Health/Check", async () => {
      const { stdout } = await grpcurl(server.address, "grpc.health.v1.Health/Check");
      expect(JSON.parse(stdout)).toEqual({ status: "SERVING" });
    });

    it("gets NotFound from Health/Check of an unknown service", async () => {
      await expect(
        grpcurl("-d", '{"service":"no.Such"}', server.address, "grpc.health.v1.Health/Check"),
      ).rejects.toMatchObject({ stderr: expect.stringContaining("Code: NotFound") });
    });
  });

  describe("buf curl", () => {
    it.each(["grpc-v1", "grpc-v1alpha"])(
      "calls Health/Check with the schema from %s reflection",
      async (reflect) => {
        const { stdout } = await run(
          bufPath(),
          [
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--reflect-protocol",
            reflect,
            "--data",
            `{"service":"${UPDATER}"}`,
            `http://${server.address}/grpc.health.v1.Health/Check`,
          ],
          { timeout: 20_000, encoding: "utf8" },
        );
        expect(JSON.parse(stdout)).toEqual({ status: "SERVING" });
      },
    );
  });
});

describe("health on shutdown", () => {
  it("turns every service NOT_SERVING, ignores later updates and ends watches with UNAVAILABLE on close", async () => {
    const state = new HealthState();
    state.set(UPDATER, ServingStatus.SERVING);
    const server = await startServer(state);
    const client = new grpc.Client(server.address, grpc.credentials.createInsecure());
    try {
      const watch = new WatchCall(client, "");
      expect(await watch.next()).toBe("SERVING");
      state.shutdown();
      expect(await watch.next()).toBe("NOT_SERVING");
      state.set(UPDATER, ServingStatus.SERVING);
      await expect(unary(client, "grpc.health.v1.Health", "List", {})).resolves.toEqual({
        statuses: { "": { status: "NOT_SERVING" }, [UPDATER]: { status: "NOT_SERVING" } },
      });
      const ended = statusOf(watch.call);
      await server.close();
      // Retryable, so clients reconnect to the next instance.
      expect((await ended).code).toBe(grpc.status.UNAVAILABLE);
    } finally {
      client.close();
    }
  });

  it("ends a Watch when its signal aborts", async () => {
    const state = new HealthState();
    const aborter = new AbortController();
    const seen: ServingStatus[] = [];
    const watching = (async () => {
      for await (const status of state.watch("", aborter.signal)) seen.push(status);
    })();
    await Promise.resolve();
    state.set("", ServingStatus.NOT_SERVING);
    await new Promise((resolve) => setImmediate(resolve));
    aborter.abort();
    await watching;
    expect(seen).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
  });
});
