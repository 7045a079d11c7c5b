/**
 * One port for everything: Connect (JSON and binary) over HTTP/1.1 and h2c, gRPC over h2c and
 * gRPC-Web, plus plain routes (GET /healthz). Node's http2 server ignores `allowHTTP1` without TLS,
 * so a small net.Server reads the first bytes of each connection: the HTTP/2 connection preface
 * goes to the http2 server, anything else to the HTTP/1.1 server; both share one Connect handler.
 *
 * Shutdown: stop accepting, abort the handlers' shutdown signal (open streams end with
 * Unavailable), send GOAWAY on every HTTP/2 session, close idle HTTP/1 sockets, and destroy what is
 * left after the grace period.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "../log.js";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** A new connection must send its first bytes (preface or request line) within this. */
const FIRST_BYTES_MS = 10_000;
/** An HTTP/2 connection with no frames at all for this long is closed gracefully. */
const H2_IDLE_MS = 120_000;

export type PlainRoute = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
) => PlainAnswer | undefined | Promise<PlainAnswer | undefined>;

export interface PlainAnswer {
  status: number;
  contentType: string;
  body: string;
}

export interface ServerOptions {
  host: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  /** Largest request message accepted, in bytes. */
  readMaxBytes?: number;
  /** Plain HTTP routes outside the RPC router (no auth): /healthz, later /metrics. */
  plain?: PlainRoute;
  /** A new connection must send its first bytes within this (default 10 s). */
  firstBytesTimeoutMs?: number;
  log: Logger;
}

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  /** http://host:port, for clients. */
  readonly url: string;
  /** Graceful shutdown; resolves when every connection is closed. */
  close(graceMs?: number): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const shutdown = new AbortController();
  const handler = connectNodeAdapter({
    routes: opts.routes,
    interceptors: opts.interceptors ?? [],
    readMaxBytes: opts.readMaxBytes ?? 64 * 1024,
    // A misspelt field or enum name is an error the caller should see, not a silent default.
    jsonOptions: { ignoreUnknownFields: false },
    shutdownSignal: shutdown.signal,
    fallback: (req, res) => {
      void Promise.resolve(opts.plain?.(req))
        .catch(() => ({ status: 500, contentType: "text/plain", body: "internal error\n" }))
        .then((answer) => {
          if (answer) {
            res.writeHead(answer.status, { "content-type": answer.contentType, "cache-control": "no-store" });
            if (req.method === "HEAD") res.end();
            else res.end(answer.body);
            return;
          }
          res.writeHead(404, { "content-type": "application/json" });
          res.end(JSON.stringify({ code: "not_found", message: `no route for ${req.method} ${req.url}` }));
        });
    },
  });

  const h1 = http.createServer(
    { requestTimeout: 0, headersTimeout: 10_000, keepAliveTimeout: 5_000 },
    handler,
  );
  const h2 = http2.createServer({}, handler);
  const sockets = new Set<net.Socket>();
  /** Connections that have not yet sent a request the servers could take (no preface, no headers). */
  const unsettled = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    if (session.socket) unsettled.delete(session.socket as net.Socket);
    // An HTTP/2 connection with no traffic at all for this long is closed (gracefully: open
    // streams, even silent ones such as a long WatchJob, are not cut).
    session.setTimeout(H2_IDLE_MS, () => session.close());
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
  });
  h1.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    // Answer what can be answered (headers too large, too slow), then hang up.
    const status =
      err.code === "HPE_HEADER_OVERFLOW"
        ? "431 Request Header Fields Too Large"
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? "408 Request Timeout"
          : "400 Bad Request";
    if (socket.writable && !socket.destroyed)
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.destroy();
  });
  h2.on("sessionError", () => {});

  let stopping = false;
  const front = net.createServer({ noDelay: true }, (socket) => {
    if (stopping) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    unsettled.add(socket);
    socket.on("close", () => {
      sockets.delete(socket);
      unsettled.delete(socket);
    });
    socket.on("error", () => {});
    // A connection that says nothing is dropped; once routed, the HTTP servers' own timeouts apply.
    socket.setTimeout(opts.firstBytesTimeoutMs ?? FIRST_BYTES_MS, () => {
      if (unsettled.has(socket)) socket.destroy();
    });
    route(socket, h1, h2, (kind) => {
      if (kind === "http1") unsettled.delete(socket);
      socket.setTimeout(0);
    });
  });

  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.listen({ host: opts.host, port: opts.port }, () => {
      front.off("error", reject);
      resolve();
    });
  });
  // The HTTP/1 server never listens itself; without this its header timeout and idle-connection
  // bookkeeping stay off.
  h1.emit("listening");
  const address = front.address() as net.AddressInfo;
  const hostForUrl = address.family === "IPv6" ? `[${address.address}]` : address.address;
  opts.log.info("listening", { address: `${hostForUrl}:${address.port}` });

  let closing: Promise<void> | undefined;
  return {
    host: address.address,
    port: address.port,
    url: `http://${hostForUrl}:${address.port}`,
    close(graceMs = 5000) {
      closing ??= (async () => {
        stopping = true;
        const frontClosed = new Promise<void>((resolve) => front.close(() => resolve()));
        shutdown.abort();
        for (const socket of unsettled) socket.destroy();
        const deadline = Date.now() + graceMs;
        while (sockets.size > 0 && Date.now() < deadline) {
          // Repeated: a connection accepted just before the listener closed may only now have
          // become an HTTP/2 session or an idle HTTP/1 connection.
          for (const session of sessions) if (!session.closed) session.close();
          h1.closeIdleConnections();
          await new Promise((r) => setTimeout(r, 10));
        }
        if (sockets.size > 0) {
          opts.log.warn("closing connections still open after the shutdown grace period", {
            connections: sockets.size,
            http2Sessions: sessions.size,
            graceMs,
          });
        }
        for (const socket of sockets) socket.destroy();
        for (const session of sessions) session.destroy();
        h1.close();
        h2.close();
        await frontClosed;
      })();
      return closing;
    },
  };
}

/** Reads just enough of a new connection to tell HTTP/2 prior knowledge from HTTP/1.x. */
function route(
  socket: net.Socket,
  h1: http.Server,
  h2: http2.Http2Server,
  routed: (kind: "http1" | "http2") => void,
): void {
  let seen = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const isH2Prefix = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (isH2Prefix && seen.length < PREFACE.length) return;
    socket.off("data", onData);
    socket.pause();
    socket.unshift(seen);
    if (isH2Prefix) {
      routed("http2");
      h2.emit("connection", socket);
    } else {
      routed("http1");
      h1.emit("connection", socket);
      socket.resume();
    }
  };
  socket.on("data", onData);
}
