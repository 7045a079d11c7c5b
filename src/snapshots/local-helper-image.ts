/**
 * The helper image when the updater runs outside a container and none is configured: an image
 * made from the node that runs the updater (its binary and the shared libraries it has loaded),
 * imported into the engine once per node version. The snapshot helper needs nothing else: it is
 * a self-contained program passed to `node -e`. Only for an engine on this host (the binary must
 * run there); in a container the updater's own image is used instead.
 */
import { createReadStream } from "node:fs";
import { open, readFile, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import type { DockerClient } from "../engine/docker-client.js";
import { UpdaterError } from "../errors.js";

export const LOCAL_HELPER_REPO = "processgit-updater-helper";
const LABEL = "io.processgit.updater.node";
/** The node version and the layout revision of the image: a change of either makes it anew. */
const LABEL_VALUE = `${process.version}-layout-2`;

/** The image name for this node: `processgit-updater-helper:<node version>`. */
export function localHelperImageName(version = process.version): string {
  return `${LOCAL_HELPER_REPO}:${version.replace(/^v/, "")}`;
}

/** Makes (once) and returns the local helper image. */
export async function ensureLocalHelperImage(client: DockerClient, signal?: AbortSignal): Promise<string> {
  const name = localHelperImageName();
  const existing = await client.inspectImage(name, signal).catch(() => undefined);
  if (existing?.Config?.Labels?.[LABEL] === LABEL_VALUE) return name;
  const files = await filesOfNode();
  const [repo, tag] = name.split(":") as [string, string];
  await client.importImage(Readable.from(tarOf(files)), {
    repo,
    tag,
    changes: `LABEL ${LABEL}=${LABEL_VALUE}`,
    ...(signal ? { signal } : {}),
  });
  return name;
}

interface TarFile {
  /** Path inside the image. */
  path: string;
  /** Where to read it (absent for a symlink). */
  source?: string;
  /** For a symlink. */
  linkTo?: string;
  size: number;
  mode: number;
}

/** node at /usr/local/bin/node, the libraries it mapped, and its ELF interpreter's path. */
export async function filesOfNode(execPath = process.execPath, maps = "/proc/self/maps"): Promise<TarFile[]> {
  const text = await readFile(maps, "utf8").catch(() => "");
  const libs = new Set<string>();
  for (const line of text.split("\n")) {
    const path = line.split(/\s+/)[5];
    if (path?.startsWith("/") && /\.so(\.|$)/.test(path)) libs.add(path);
  }
  if (libs.size === 0) {
    throw new UpdaterError(
      "failed_precondition",
      "cannot list the libraries node runs with (/proc/self/maps): set PROCESSGIT_UPDATER_HELPER_IMAGE to an image with node",
      { reason: "PREFLIGHT_FAILED" },
    );
  }
  const files: TarFile[] = [];
  const node = await stat(execPath);
  files.push({ path: "usr/local/bin/node", source: execPath, size: node.size, mode: 0o755 });
  for (const lib of libs) {
    const s = await stat(lib);
    files.push({ path: lib.slice(1), source: lib, size: s.size, mode: s.mode & 0o777 });
    // The loader looks libraries up by their soname (libstdc++.so.6), which is often a link to
    // the file the process mapped (libstdc++.so.6.0.30).
    const soname = /^(.*\.so\.\d+)\.[\d.]+$/.exec(lib)?.[1];
    if (soname && !libs.has(soname) && (await stat(soname).catch(() => undefined))) {
      files.push({
        path: soname.slice(1),
        linkTo: lib.slice(lib.lastIndexOf("/") + 1),
        size: 0,
        mode: 0o777,
      });
    }
  }
  const interp = await interpreterOf(execPath);
  if (interp && !libs.has(interp)) {
    const loader = [...libs].find((l) => l.endsWith(interp.slice(interp.lastIndexOf("/"))));
    if (loader) files.push({ path: interp.slice(1), linkTo: loader, size: 0, mode: 0o777 });
  }
  return files;
}

/** The PT_INTERP of a 64-bit little-endian ELF file (e.g. /lib64/ld-linux-x86-64.so.2). */
async function interpreterOf(path: string): Promise<string | undefined> {
  const fh = await open(path, "r");
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return undefined;
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    await fh.read(ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const at = i * phentsize;
      if (ph.readUInt32LE(at) !== 3) continue;
      const offset = Number(ph.readBigUInt64LE(at + 8));
      const size = Number(ph.readBigUInt64LE(at + 32));
      const buf = Buffer.alloc(size);
      await fh.read(buf, 0, size, offset);
      return buf.toString("utf8").replace(/\0+$/, "");
    }
    return undefined;
  } finally {
    await fh.close();
  }
}

/** A ustar archive of `files` (directories implied by the paths are added first). */
async function* tarOf(files: TarFile[]): AsyncGenerator<Buffer> {
  const dirs = new Set<string>(["tmp/"]);
  for (const f of files) {
    const parts = f.path.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(`${parts.slice(0, i).join("/")}/`);
  }
  for (const dir of [...dirs].sort()) {
    yield header(dir, 0, dir === "tmp/" ? 0o1777 : 0o755, "5");
  }
  for (const f of files) {
    if (f.linkTo) {
      yield header(f.path, 0, 0o777, "2", f.linkTo);
      continue;
    }
    yield header(f.path, f.size, f.mode, "0");
    let sent = 0;
    for await (const chunk of createReadStream(f.source ?? "")) {
      const b = chunk as Buffer;
      sent += b.length;
      yield b;
    }
    if (sent !== f.size) throw new Error(`${f.source} changed size while being packed`);
    const pad = (512 - (f.size % 512)) % 512;
    if (pad) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(1024);
}

function header(name: string, size: number, mode: number, type: string, link = ""): Buffer {
  const h = Buffer.alloc(512);
  let path = name;
  let prefix = "";
  if (Buffer.byteLength(path) > 100) {
    const cut = path.lastIndexOf("/", path.length - 2 - Math.max(0, path.length - 101));
    prefix = path.slice(0, cut);
    path = path.slice(cut + 1);
  }
  h.write(path, 0, 100, "utf8");
  h.write(`${mode.toString(8).padStart(7, "0")}\0`, 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write(
    `${Math.floor(Date.now() / 1000)
      .toString(8)
      .padStart(11, "0")}\0`,
    136,
  );
  h.write("        ", 148);
  h.write(type, 156);
  h.write(link, 157, 100, "utf8");
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.write(prefix, 345, 155, "utf8");
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}
