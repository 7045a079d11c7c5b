/**
 * cloneCreateBody and cloneNetworkConnects on hand-written inspect JSON shaped like Engine 20.10's
 * (the real-engine comparison lives in test/integration/docker-client.test.ts).
 */
import { describe, expect, it } from "vitest";
import { cloneCreateBody, cloneNetworkConnects } from "../../src/engine/clone-spec.js";
import type {
  ContainerConfig,
  ContainerInspect,
  EndpointSettings,
  HostConfig,
  ImageInspect,
} from "../../src/engine/docker-client.js";
import { UpdaterError } from "../../src/errors.js";

const ID = "1379fb19eafddb50bf37fe11913338beb034bd5cb30481b2108277efe64d7e6c";
const SHORT_ID = ID.slice(0, 12);
const REPO = "127.0.0.1:25000/pgu-test/app";
const OLD_DIGEST = `sha256:${"c".repeat(64)}`;
const NEW_DIGEST = `sha256:${"d".repeat(64)}`;
const NEW_REF = `${REPO}@${NEW_DIGEST}`;
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const ANON = "a".repeat(64);

const oldImageConfig: ContainerConfig = {
  Hostname: "",
  Domainname: "",
  User: "1000:1000",
  Env: [PATH_ENV, "A=1", "B=img"],
  Cmd: ["/bin/busybox", "sleep", "1000"],
  Healthcheck: { Test: ["CMD", "/bin/busybox", "true"], Interval: 1e9, Timeout: 2e9 },
  Image: "sha256:bb6fe3e4e116dcd2ee0d407d3efd6f83b4289bd7b3c117607a1e9afa711d9441",
  Volumes: { "/data": {} },
  ExposedPorts: { "20001/tcp": {} },
  WorkingDir: "/app",
  Entrypoint: null,
  OnBuild: null,
  StopSignal: "SIGUSR1",
  Labels: {
    "org.opencontainers.image.version": "1.0.0",
    "x.from.image": "v1",
    "com.docker.compose.project": "baked-into-image",
  },
};

function oldImage(): ImageInspect {
  return {
    Id: "sha256:4d3d3b57b349e21f341bd596da0bf2b00bd247516a892f8959501660fca62f92",
    RepoTags: [`${REPO}:v1`],
    RepoDigests: [`${REPO}@${OLD_DIGEST}`],
    Config: structuredClone(oldImageConfig),
  };
}

function newImage(): ImageInspect {
  return {
    Id: "sha256:22d8dc2060df982c77dd1de35f1a5707eae29efb3f1d905252875671a9ea6897",
    RepoTags: [`${REPO}:v2`],
    RepoDigests: [`${REPO}@${NEW_DIGEST}`],
    Config: {
      User: "2000:2000",
      Env: [PATH_ENV, "A=2", "B=img2", "C=new"],
      Entrypoint: ["/bin/busybox"],
      Cmd: ["sleep", "2000"],
      WorkingDir: "/app2",
      Labels: { "org.opencontainers.image.version": "2.0.0" },
    },
  };
}

const hostConfig: HostConfig = {
  Binds: ["pgu-vol:/data", "/srv/bind:/bind:ro"],
  ContainerIDFile: "",
  LogConfig: { Type: "json-file", Config: { "max-file": "2", "max-size": "1m" } },
  NetworkMode: "host",
  PortBindings: {},
  RestartPolicy: { Name: "unless-stopped", MaximumRetryCount: 0 },
  AutoRemove: false,
  VolumesFrom: null,
  CapAdd: null,
  CapDrop: ["NET_RAW"],
  CgroupnsMode: "host",
  Dns: [],
  IpcMode: "private",
  ReadonlyRootfs: true,
  ShmSize: 67108864,
  Runtime: "runc",
  ConsoleSize: [0, 0],
  Memory: 67108864,
  MemorySwap: 134217728,
  MemorySwappiness: null,
  PidsLimit: null,
  Ulimits: [{ Name: "nofile", Hard: 2048, Soft: 1024 }],
  Tmpfs: { "/scratch": "size=1m" },
  MaskedPaths: ["/proc/asound", "/proc/acpi", "/proc/kcore"],
  ReadonlyPaths: ["/proc/bus", "/proc/fs"],
  Init: true,
};

/** A container created from the old image with `docker create` and user settings, as inspected. */
function container(
  changes: { Config?: Partial<ContainerConfig>; HostConfig?: Partial<HostConfig> } = {},
): ContainerInspect {
  return {
    Id: ID,
    Created: "2026-11-26T02:56:14.556355596Z",
    Path: "/bin/busybox",
    Args: ["sleep", "1000"],
    State: { Status: "running", Running: true, Pid: 20861, ExitCode: 0, Health: { Status: "starting" } },
    Image: "sha256:4d3d3b57b349e21f341bd596da0bf2b00bd247516a892f8959501660fca62f92",
    Name: "/app",
    RestartCount: 0,
    Driver: "overlay2",
    HostConfig: { ...structuredClone(hostConfig), ...changes.HostConfig },
    Mounts: [
      {
        Type: "volume",
        Name: "pgu-vol",
        Source: "/var/lib/docker/volumes/pgu-vol/_data",
        Destination: "/data",
        Driver: "local",
        Mode: "z",
        RW: true,
        Propagation: "",
      },
      {
        Type: "bind",
        Source: "/srv/bind",
        Destination: "/bind",
        Mode: "ro",
        RW: false,
        Propagation: "rprivate",
      },
    ],
    Config: {
      Hostname: "vm",
      Domainname: "",
      User: "1000:1000",
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      Tty: false,
      OpenStdin: false,
      StdinOnce: false,
      Env: ["A=override", "EXTRA=x", PATH_ENV, "B=img"],
      Cmd: ["/bin/busybox", "sleep", "1000"],
      Healthcheck: { Test: ["CMD", "/bin/busybox", "true"], Interval: 1e9, Timeout: 2e9 },
      Image: `${REPO}@${OLD_DIGEST}`,
      Volumes: { "/data": {} },
      ExposedPorts: { "20001/tcp": {} },
      WorkingDir: "/app",
      Entrypoint: null,
      OnBuild: null,
      Labels: {
        "io.processgit.updater.test": "1",
        "org.opencontainers.image.version": "1.0.0",
        "user.label": "u",
        "x.from.image": "v1",
        "com.docker.compose.project": "baked-into-image",
        "com.docker.compose.service": "app",
      },
      StopSignal: "SIGUSR1",
      StopTimeout: 7,
      ...changes.Config,
    },
    NetworkSettings: {
      Bridge: "",
      SandboxID: "b71607601926",
      Ports: {},
      Networks: {
        host: {
          IPAMConfig: null,
          Links: null,
          Aliases: null,
          NetworkID: "e4bfbeb3669a0038b57117ff27248e6cc52e37c096fcd2ba81aa814fe663a011",
          EndpointID: "baf63ea7fefe3cde5dc5c6cb782d90d1bb69ff4b4cd3aed3360973d879e6ff7e",
          Gateway: "",
          IPAddress: "",
          IPPrefixLen: 0,
          MacAddress: "",
          DriverOpts: null,
        },
      },
    },
  };
}

function clone(old: ContainerInspect, options?: { labels?: Record<string, string> }) {
  return cloneCreateBody(old, oldImage(), newImage(), NEW_REF, options);
}

describe("cloneCreateBody", () => {
  it("keeps the user's settings and drops every value that came from the old image", () => {
    const old = container();
    const body = clone(old);
    expect(body).toEqual({
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      Tty: false,
      OpenStdin: false,
      StdinOnce: false,
      Env: ["A=override", "EXTRA=x"],
      Image: NEW_REF,
      StopTimeout: 7,
      Labels: {
        "io.processgit.updater.test": "1",
        "user.label": "u",
        "com.docker.compose.project": "baked-into-image",
        "com.docker.compose.service": "app",
      },
      HostConfig: hostConfig,
    });
    for (const key of ["Hostname", "Domainname", "MacAddress", "Cmd", "Entrypoint", "WorkingDir", "User"]) {
      expect(Object.hasOwn(body, key), key).toBe(false);
    }
    for (const key of [
      "Healthcheck",
      "Volumes",
      "ExposedPorts",
      "StopSignal",
      "OnBuild",
      "NetworkingConfig",
    ]) {
      expect(Object.hasOwn(body, key), key).toBe(false);
    }
  });

  it("neither changes its input nor shares objects with it", () => {
    const old = container();
    const before = JSON.stringify(old);
    const body = clone(old);
    expect(JSON.stringify(old)).toBe(before);
    body.Env?.push("LATER=1");
    (body.HostConfig.Binds as string[]).push("x:/x");
    (body.Labels as Record<string, string>).later = "1";
    expect(JSON.stringify(old)).toBe(before);
  });

  it.each([
    {
      name: "user override of an image default, with another value, is kept",
      env: ["A=override", PATH_ENV, "B=img"],
      kept: ["A=override"],
    },
    {
      name: "a user value equal to the old default cannot be told apart: dropped",
      env: [PATH_ENV, "A=1", "B=img"],
      kept: undefined,
    },
    { name: "an empty value is a value", env: ["B=", PATH_ENV, "A=1"], kept: ["B="] },
    { name: "no Env at all", env: null, kept: undefined },
    {
      name: "a user PATH differing from the image's is kept",
      env: ["PATH=/opt/bin", "A=1", "B=img"],
      kept: ["PATH=/opt/bin"],
    },
  ])("Env: $name", ({ env, kept }) => {
    expect(clone(container({ Config: { Env: env } })).Env).toEqual(kept);
  });

  it.each([
    {
      name: "entrypoint and cmd from the image: both dropped",
      config: { Entrypoint: null, Cmd: ["/bin/busybox", "sleep", "1000"] },
      image: {},
      expected: {},
    },
    {
      name: "user cmd under the image's entrypoint: cmd kept",
      config: { Entrypoint: ["/init"], Cmd: ["serve", "--port=20001"] },
      image: { Entrypoint: ["/init"], Cmd: ["serve"] },
      expected: { Cmd: ["serve", "--port=20001"] },
    },
    {
      name: "user entrypoint without cmd: the engine must not fill the new image's cmd",
      config: { Entrypoint: ["/bin/busybox", "httpd", "-f"], Cmd: null },
      image: {},
      expected: { Entrypoint: ["/bin/busybox", "httpd", "-f"], Cmd: null },
    },
    {
      name: "user entrypoint with a cmd equal to the image's: the cmd is the user's, kept",
      config: { Entrypoint: ["/bin/busybox"], Cmd: ["/bin/busybox", "sleep", "1000"] },
      image: {},
      expected: { Entrypoint: ["/bin/busybox"], Cmd: ["/bin/busybox", "sleep", "1000"] },
    },
    {
      name: "entrypoint reset to empty with the image's cmd: reset kept, cmd dropped",
      config: { Entrypoint: [], Cmd: ["/bin/busybox", "sleep", "1000"] },
      image: { Entrypoint: ["/init"] },
      expected: { Entrypoint: [] },
    },
    {
      name: "entrypoint reset to empty with a user cmd: both kept",
      config: { Entrypoint: [], Cmd: ["/bin/busybox", "true"] },
      image: { Entrypoint: ["/init"] },
      expected: { Entrypoint: [], Cmd: ["/bin/busybox", "true"] },
    },
  ])("Entrypoint/Cmd: $name", ({ config, image, expected }) => {
    const oldImg = oldImage();
    Object.assign(oldImg.Config as ContainerConfig, image);
    const body = cloneCreateBody(container({ Config: config }), oldImg, newImage(), NEW_REF);
    expect({ Entrypoint: body.Entrypoint, Cmd: body.Cmd }).toEqual({
      Entrypoint: undefined,
      Cmd: undefined,
      ...expected,
    });
    expect(Object.hasOwn(body, "Cmd")).toBe("Cmd" in expected);
    expect(Object.hasOwn(body, "Entrypoint")).toBe("Entrypoint" in expected);
  });

  it("drops ArgsEscaped together with the image's Cmd", () => {
    expect(Object.hasOwn(clone(container({ Config: { ArgsEscaped: true } })), "ArgsEscaped")).toBe(false);
    expect(clone(container({ Config: { ArgsEscaped: true, Cmd: ["x"] } })).ArgsEscaped).toBe(true);
  });

  it.each([
    { name: "equal to the image's: dropped", health: { ...oldImageConfig.Healthcheck }, expected: undefined },
    {
      name: "only the user's --health-timeout is kept; the engine fills the rest from the new image",
      health: { Test: ["CMD", "/bin/busybox", "true"], Interval: 1e9, Timeout: 4e9 },
      expected: { Timeout: 4e9 },
    },
    {
      name: "--no-healthcheck is kept",
      health: { Test: ["NONE"], Interval: 1e9, Timeout: 2e9 },
      expected: { Test: ["NONE"] },
    },
    { name: "absent stays absent", health: null, expected: undefined },
  ])("Healthcheck: $name", ({ health, expected }) => {
    expect(clone(container({ Config: { Healthcheck: health } })).Healthcheck).toEqual(expected);
  });

  it("keeps a user healthcheck whole when the old image had none", () => {
    const img = oldImage();
    delete (img.Config as ContainerConfig).Healthcheck;
    const health = { Test: ["CMD", "/bin/busybox", "true"], Interval: 1e9, Timeout: 2e9 };
    expect(cloneCreateBody(container(), img, newImage(), NEW_REF).Healthcheck).toEqual(health);
  });

  it.each([
    { field: "WorkingDir", user: "/srv" },
    { field: "User", user: "0:0" },
    { field: "StopSignal", user: "SIGQUIT" },
  ] as const)("$field set by the user is kept, the image's is dropped", ({ field, user }) => {
    expect(clone(container({ Config: { [field]: user } }))[field]).toBe(user);
    expect(Object.hasOwn(clone(container()), field)).toBe(false);
  });

  it("keeps the user's Volumes and ExposedPorts keys and drops the image's", () => {
    const body = clone(
      container({
        Config: {
          Volumes: { "/data": {}, "/extra": {} },
          ExposedPorts: { "20001/tcp": {}, "20005/udp": {} },
        },
      }),
    );
    expect(body.Volumes).toEqual({ "/extra": {} });
    expect(body.ExposedPorts).toEqual({ "20005/udp": {} });
  });

  it("keeps Shell and OnBuild only when they differ from the image's", () => {
    const img = oldImage();
    Object.assign(img.Config as ContainerConfig, { Shell: ["/bin/sh", "-c"] });
    const same = cloneCreateBody(
      container({ Config: { Shell: ["/bin/sh", "-c"] } }),
      img,
      newImage(),
      NEW_REF,
    );
    expect(Object.hasOwn(same, "Shell")).toBe(false);
    const other = cloneCreateBody(
      container({ Config: { Shell: ["/bin/ash", "-c"] } }),
      img,
      newImage(),
      NEW_REF,
    );
    expect(other.Shell).toEqual(["/bin/ash", "-c"]);
  });

  it("keeps compose labels and the user's, drops the image's, and merges options.labels over them", () => {
    const body = clone(
      container({
        Config: {
          Labels: {
            "x.from.image": "user-changed",
            "user.label": "u",
            "org.opencontainers.image.version": "1.0.0",
          },
        },
      }),
      { labels: { "user.label": "replaced", "io.processgit.updater.clone-of": SHORT_ID } },
    );
    expect(body.Labels).toEqual({
      "x.from.image": "user-changed",
      "user.label": "replaced",
      "io.processgit.updater.clone-of": SHORT_ID,
    });
    expect(clone(container({ Config: { Labels: null } })).Labels).toBeUndefined();
    expect(clone(container({ Config: { Labels: null } }), { labels: { a: "b" } }).Labels).toEqual({ a: "b" });
  });

  it.each([
    {
      name: "engine default under bridge (the short ID)",
      mode: "default",
      hostname: SHORT_ID,
      domain: "",
      kept: {},
    },
    {
      name: "user-chosen under bridge",
      mode: "default",
      hostname: "app-host",
      domain: "example.internal",
      kept: { Hostname: "app-host", Domainname: "example.internal" },
    },
    { name: "host network", mode: "host", hostname: "vm", domain: "", kept: {} },
    {
      name: "another container's namespace",
      mode: `container:${"e".repeat(64)}`,
      hostname: "x",
      domain: "y",
      kept: {},
    },
  ])("Hostname/Domainname: $name", ({ mode, hostname, domain, kept }) => {
    const body = clone(
      container({
        Config: { Hostname: hostname, Domainname: domain, MacAddress: "02:42:ac:11:00:02" },
        HostConfig: { NetworkMode: mode },
      }),
    );
    expect({ Hostname: body.Hostname, Domainname: body.Domainname }).toEqual({
      Hostname: undefined,
      Domainname: undefined,
      ...kept,
    });
    expect(Object.hasOwn(body, "MacAddress")).toBe(false);
  });

  it("throws invalid_argument when the reference does not name the new image", () => {
    const wrong = `${REPO}@sha256:${"e".repeat(64)}`;
    expect(() => cloneCreateBody(container(), oldImage(), newImage(), wrong)).toThrow(UpdaterError);
    try {
      cloneCreateBody(container(), oldImage(), newImage(), wrong);
    } catch (err) {
      expect((err as UpdaterError).code).toBe("invalid_argument");
    }
    const hub: ImageInspect = {
      ...newImage(),
      RepoTags: ["nginx:1.27"],
      RepoDigests: [`nginx@${NEW_DIGEST}`],
    };
    for (const ref of [
      `docker.io/library/nginx@${NEW_DIGEST}`,
      "nginx:1.27",
      "docker.io/library/nginx:1.27",
      hub.Id,
      hub.Id.slice("sha256:".length),
    ]) {
      expect(cloneCreateBody(container(), oldImage(), hub, ref).Image).toBe(ref);
    }
    expect(() => cloneCreateBody(container(), oldImage(), hub, "nginx:1.26")).toThrow(/does not name/);
    expect(() => cloneCreateBody(container(), oldImage(), hub, "nginx")).toThrow(/does not name/);
  });
});

describe("cloneCreateBody: volumes", () => {
  it("mounts an anonymous volume of the old container by name, read-only if it was", () => {
    const old = container({ HostConfig: { Binds: ["/srv/bind:/bind:ro"] } });
    old.Mounts = [
      {
        Type: "volume",
        Name: ANON,
        Source: `/var/lib/docker/volumes/${ANON}/_data`,
        Destination: "/data",
        Driver: "local",
        RW: true,
      },
      { Type: "volume", Name: "b".repeat(64), Destination: "/cache", RW: false },
      { Type: "bind", Source: "/srv/bind", Destination: "/bind", RW: false },
      { Type: "tmpfs", Source: "", Destination: "/scratch", RW: true },
    ];
    expect(clone(old).HostConfig.Binds).toEqual([
      "/srv/bind:/bind:ro",
      `${ANON}:/data`,
      `${"b".repeat(64)}:/cache:ro`,
    ]);
  });

  it("leaves volumes the user mounted (binds, --mount, tmpfs) alone", () => {
    const old = container({
      HostConfig: {
        Binds: null,
        Mounts: [{ Type: "volume", Source: "named", Target: "/data" }],
        Tmpfs: { "/run": "" },
      },
    });
    old.Mounts = [
      { Type: "volume", Name: "named", Destination: "/data", RW: true },
      { Type: "volume", Name: ANON, Destination: "/run", RW: true },
    ];
    const host = clone(old).HostConfig;
    expect(host.Binds).toBeNull();
    expect(host.Mounts).toEqual([{ Type: "volume", Source: "named", Target: "/data" }]);
  });

  it("names the volume of a --mount type=volume without a source", () => {
    const old = container({
      HostConfig: { Binds: null, Mounts: [{ Type: "volume", Target: "/data", VolumeOptions: {} }] },
    });
    old.Mounts = [{ Type: "volume", Name: ANON, Destination: "/data", RW: true }];
    const host = clone(old).HostConfig;
    expect(host.Mounts).toEqual([{ Type: "volume", Source: ANON, Target: "/data", VolumeOptions: {} }]);
    expect(host.Binds).toBeNull();
  });
});

describe("cloneCreateBody: networks", () => {
  function endpoint(fields: Partial<EndpointSettings>): EndpointSettings {
    return {
      IPAMConfig: null,
      Links: null,
      Aliases: null,
      NetworkID: "f".repeat(64),
      EndpointID: "9".repeat(64),
      Gateway: "198.51.100.1",
      IPAddress: "198.51.100.5",
      IPPrefixLen: 16,
      IPv6Gateway: "",
      GlobalIPv6Address: "",
      GlobalIPv6PrefixLen: 0,
      MacAddress: "02:42:ac:14:00:05",
      DriverOpts: null,
      ...fields,
    };
  }

  function onNetworks(mode: string, networks: Record<string, EndpointSettings>): ContainerInspect {
    const old = container({ HostConfig: { NetworkMode: mode } });
    old.NetworkSettings = { Networks: networks };
    return old;
  }

  it("sends the user's endpoint fields for the NetworkMode network and lists the others to connect", () => {
    const old = onNetworks("appnet", {
      appnet: endpoint({
        IPAMConfig: { IPv4Address: "198.51.100.50" },
        Aliases: ["web", SHORT_ID],
        Links: ["/db:/app/db"],
        DriverOpts: { "com.example.opt": "1" },
      }),
      backend: endpoint({ NetworkID: "8".repeat(64), Aliases: [SHORT_ID, "api"] }),
      monitoring: endpoint({ NetworkID: "7".repeat(64), Aliases: [SHORT_ID] }),
    });
    expect(clone(old).NetworkingConfig).toEqual({
      EndpointsConfig: {
        appnet: {
          IPAMConfig: { IPv4Address: "198.51.100.50" },
          Aliases: ["web"],
          Links: ["/db:/app/db"],
          DriverOpts: { "com.example.opt": "1" },
        },
      },
    });
    expect(cloneNetworkConnects(old)).toEqual([
      { network: "backend", EndpointConfig: { Aliases: ["api"] } },
      { network: "monitoring", EndpointConfig: {} },
    ]);
  });

  it("uses the bridge endpoint for NetworkMode default, and finds a network named by ID", () => {
    expect(clone(onNetworks("default", { bridge: endpoint({}) })).NetworkingConfig).toEqual({
      EndpointsConfig: { bridge: {} },
    });
    const byId = onNetworks("f".repeat(12), { appnet: endpoint({ Aliases: ["web"] }) });
    expect(clone(byId).NetworkingConfig).toEqual({ EndpointsConfig: { appnet: { Aliases: ["web"] } } });
    expect(cloneNetworkConnects(byId)).toEqual([]);
  });

  it.each(["host", "none", `container:${"e".repeat(64)}`])(
    "sends no endpoints for NetworkMode %s",
    (mode) => {
      const old = onNetworks(mode, { [mode]: endpoint({}) });
      expect(Object.hasOwn(clone(old), "NetworkingConfig")).toBe(false);
      expect(cloneNetworkConnects(old)).toEqual([]);
    },
  );
});
