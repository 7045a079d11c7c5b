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

export type PlainRoute = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
) => { status: number; contentType: string; body: string } | undefined;

export interface ServerOptions {
  host: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  /** Largest request message accepted, in bytes. */
  readMaxBytes?: number;
  /** Plain HTTP routes outside the RPC router (no auth): /healthz, later /metrics. */
  plain?: PlainRoute;
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
    shutdownSignal: shutdown.signal,
    fallback: (req, res) => {
      const answer = opts.plain?.(req);
      if (answer) {
        res.writeHead(answer.status, { "content-type": answer.contentType, "cache-control": "no-store" });
        if (req.method === "HEAD") res.end();
        else res.end(answer.body);
        return;
      }
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: "not_found", message: `no route for ${req.method} ${req.url}` }));
    },
  });

  const h1 = http.createServer(
    { requestTimeout: 0, headersTimeout: 10_000, keepAliveTimeout: 5_000 },
    handler,
  );
  const h2 = http2.createServer({}, handler);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
  });
  for (const s of [h1, h2]) s.on("clientError", (_err: unknown, socket: net.Socket) => socket.destroy());

  let stopping = false;
  const front = net.createServer({ noDelay: true }, (socket) => {
    if (stopping) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    route(socket, h1, h2);
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
function route(socket: net.Socket, h1: http.Server, h2: http2.Http2Server): void {
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
      h2.emit("connection", socket);
    } else {
      h1.emit("connection", socket);
      socket.resume();
    }
  };
  socket.on("data", onData);
}
