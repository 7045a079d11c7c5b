/**
 * The container image's HEALTHCHECK, run by node itself (the image has no curl): GET /healthz on
 * the address the server listens on (PROCESSGIT_UPDATER_LISTEN, wildcards reached on loopback).
 * Exit 0 when it answers 200 within 3 s, 1 otherwise, with the reason on stderr.
 */
import { loopbackUrlFor } from "./config.js";

const listen = process.env.PROCESSGIT_UPDATER_LISTEN || "0.0.0.0:9000";
const base = loopbackUrlFor(listen);
if (base === undefined) {
  process.stderr.write(
    `healthcheck: PROCESSGIT_UPDATER_LISTEN is not host:port: ${JSON.stringify(listen)}\n`,
  );
  process.exit(1);
}
try {
  const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(3000) });
  if (res.status !== 200) {
    process.stderr.write(`healthcheck: ${base}/healthz answered ${res.status}\n`);
    process.exit(1);
  }
} catch (err) {
  process.stderr.write(`healthcheck: ${base}/healthz: ${(err as Error).message}\n`);
  process.exit(1);
}
