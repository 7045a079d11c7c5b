/**
 * Bearer-token authentication for every RPC except the health service (and the plain /healthz
 * route, which never reaches the router). The comparison is constant-time over SHA-256 digests of
 * both sides, so neither the content nor the length of the token leaks through timing, and a
 * wrong token is never logged or echoed.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

const OPEN_SERVICES = new Set(["grpc.health.v1.Health"]);

export function tokenMatches(expectedDigest: Buffer, header: string | null): boolean {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  const presented = createHash("sha256")
    .update(m?.[1] ?? "")
    .digest();
  // Always compare, even when the header is missing or malformed: same work either way.
  return timingSafeEqual(expectedDigest, presented) && m !== null;
}

export function bearerAuth(token: string): Interceptor {
  const expected = createHash("sha256").update(token).digest();
  return (next) => async (req) => {
    if (OPEN_SERVICES.has(req.service.typeName)) return next(req);
    const header = req.header.get("authorization");
    if (!tokenMatches(expected, header)) {
      throw new ConnectError(
        header ? "the bearer token is not valid" : "missing Authorization: Bearer <token> header",
        Code.Unauthenticated,
      );
    }
    return next(req);
  };
}
