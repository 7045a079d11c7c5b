/** Runs an external program (curl, grpcurl, buf) with a timeout and collects what it printed. */
import { execFile } from "node:child_process";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(
  file: string,
  args: string[],
  options: { timeoutMs?: number; input?: Buffer } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 20_000, maxBuffer: 16 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") {
          reject(new Error(`${file} ${args.join(" ")} failed to run: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: typeof err?.code === "number" ? err.code : 0, stdout, stderr });
      },
    );
    if (options.input) child.stdin?.end(options.input);
  });
}

/** Splits the pretty-printed JSON messages grpcurl writes one after another. */
export function splitJsonStream(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === "{") {
      if (depth === 0) start = i;
      depth++;
    } else if (c === "}") {
      depth--;
      if (depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return out;
}

/** Decodes a Connect streaming body: frames of 1 flag byte, 4 length bytes, JSON. */
export function connectFrames(body: Buffer): Array<{ end: boolean; json: Record<string, unknown> }> {
  const frames: Array<{ end: boolean; json: Record<string, unknown> }> = [];
  let at = 0;
  while (at + 5 <= body.length) {
    const flags = body[at] as number;
    const length = body.readUInt32BE(at + 1);
    const json = JSON.parse(body.subarray(at + 5, at + 5 + length).toString("utf8")) as Record<
      string,
      unknown
    >;
    frames.push({ end: (flags & 0x02) !== 0, json });
    at += 5 + length;
  }
  if (at !== body.length) throw new Error(`trailing ${body.length - at} bytes after the last Connect frame`);
  return frames;
}

/** One Connect streaming request frame holding `message` as JSON. */
export function connectEnvelope(message: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}
