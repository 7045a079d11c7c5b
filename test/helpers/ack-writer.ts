/**
 * A client that measures what an app acknowledged: POST /write?id=N with increasing N, one request
 * at a time every `everyMs`, against the writer fixture (test/fixtures/writer), which answers 200
 * with body N only once record N is durable. Each acknowledged write is recorded with the version
 * that answered (X-App-Version) and when; a write that fails (refused while no app listens, reset,
 * timed out, any status but 200) is counted and never retried, so every id is attempted once.
 * After an update, "acknowledged" minus "in the data" is what the update lost. Loopback only.
 */
import { request } from "node:http";

/** One acknowledged write. */
export interface Ack {
  id: number;
  /** X-App-Version of the answer. */
  version: string;
  /** When the answer arrived (ms since the epoch). */
  at: number;
  /** The request's duration. */
  ms: number;
}

/** One write that was not acknowledged: the data may or may not hold it. */
export interface WriteFailure {
  id: number;
  at: number;
  /** An error code (ECONNREFUSED, ECONNRESET, TIMEOUT, ...) or `HTTP <status>`. */
  reason: string;
}

export interface AckWriterOptions {
  /** The interval between the starts of two writes. Default 20 ms. */
  everyMs?: number;
  /** The loop ends after this many attempts. */
  maxWrites: number;
  /** The loop ends after this long. */
  maxMs: number;
  /** Each request's timeout. Default 1000 ms. */
  timeoutMs?: number;
  /** The first id. Default 1. */
  firstId?: number;
}

export class AckWriter {
  readonly acks: Ack[] = [];
  readonly failures: WriteFailure[] = [];
  private loop: Promise<void> | undefined;
  private stopping = false;
  private wake: (() => void) | undefined;

  /** Starts the loop against 127.0.0.1:`port`; returns this (await {@link done} or {@link stop}). */
  start(port: number, options: AckWriterOptions): this {
    if (this.loop) throw new Error("this AckWriter was already started");
    if (!(options.maxWrites > 0 && options.maxMs > 0))
      throw new Error("maxWrites and maxMs must be positive");
    this.loop = this.run(port, options);
    return this;
  }

  /** Ends the loop (after the request in flight, if any); resolves when it has ended. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
  }

  /** Resolves when the loop has ended, on its bounds or by {@link stop}. */
  async done(): Promise<void> {
    await this.loop;
  }

  get attempts(): number {
    return this.acks.length + this.failures.length;
  }

  /** The acknowledged ids, in order, of every version or of one. */
  acked(version?: string): number[] {
    return this.acks.filter((a) => version === undefined || a.version === version).map((a) => a.id);
  }

  /** The last write `version` acknowledged. */
  lastAckedBy(version: string): Ack | undefined {
    return this.acks.findLast((a) => a.version === version);
  }

  /** The versions that acknowledged writes, in the order they first did. */
  versions(): string[] {
    return [...new Set(this.acks.map((a) => a.version))];
  }

  /** Failures by reason, e.g. {ECONNREFUSED: 12, "HTTP 500": 1}. */
  failureCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const f of this.failures) counts[f.reason] = (counts[f.reason] ?? 0) + 1;
    return counts;
  }

  private async run(port: number, options: AckWriterOptions): Promise<void> {
    const everyMs = options.everyMs ?? 20;
    const timeoutMs = options.timeoutMs ?? 1000;
    const started = Date.now();
    let id = options.firstId ?? 1;
    while (!this.stopping && this.attempts < options.maxWrites && Date.now() - started < options.maxMs) {
      const t0 = Date.now();
      const result = await write(port, id, timeoutMs);
      const at = Date.now();
      if ("reason" in result) this.failures.push({ id, at, reason: result.reason });
      else this.acks.push({ id, version: result.version, at, ms: at - t0 });
      id++;
      const wait = t0 + everyMs - Date.now();
      if (wait > 0 && !this.stopping) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }
}

/** One POST /write?id=N on a fresh connection: the answering version, or why it is no ack. */
function write(
  port: number,
  id: number,
  timeoutMs: number,
): Promise<{ version: string } | { reason: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (value: { version: string } | { reason: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(value);
    };
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: `/write?id=${id}`,
        agent: false,
        headers: { Connection: "close", "Content-Length": "0" },
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("error", (err: NodeJS.ErrnoException) => settle({ reason: err.code ?? err.message }));
        res.on("end", () => {
          if (res.statusCode !== 200) settle({ reason: `HTTP ${res.statusCode}` });
          else if (body.trim() !== String(id)) settle({ reason: `unexpected body ${JSON.stringify(body)}` });
          else settle({ version: String(res.headers["x-app-version"] ?? "?") });
        });
      },
    );
    const timer = setTimeout(() => {
      settle({ reason: "TIMEOUT" });
      req.destroy();
    }, timeoutMs);
    req.on("error", (err: NodeJS.ErrnoException) => settle({ reason: err.code ?? err.message }));
    req.end();
  });
}
