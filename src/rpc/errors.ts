/**
 * The one place where domain errors become RPC status codes. Anything that is not an UpdaterError
 * (or a ConnectError raised at the edge) is our bug: the caller gets Internal with a short id, and
 * the log gets the whole error under that id.
 */
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { type ErrorCode, errorMessage, UpdaterError } from "../errors.js";
import type { Logger } from "../log.js";

const CODES: Record<ErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  unavailable: Code.Unavailable,
  bad_gateway: Code.Unavailable,
  deadline_exceeded: Code.DeadlineExceeded,
  internal: Code.Internal,
};

export function toConnectError(err: unknown, log: Logger, method: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof UpdaterError) {
    if (err.code === "internal") log.error("rpc failed", { method, error: err.message });
    return new ConnectError(err.message, CODES[err.code], undefined, undefined, err);
  }
  const id = randomUUID().slice(0, 8);
  log.error("rpc failed with an unexpected error", { method, errorId: id, error: errorMessage(err) });
  return new ConnectError(`internal error ${id}; the updater's log has the details`, Code.Internal);
}

/** Wraps each handler of a service so that every thrown error goes through `toConnectError`. */
export function mapErrors<T extends object>(impl: T, log: Logger): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(impl)) {
    if (typeof fn !== "function") continue;
    if (fn.constructor.name === "AsyncGeneratorFunction") {
      out[name] = async function* (...args: unknown[]) {
        try {
          yield* fn.apply(impl, args);
        } catch (err) {
          throw toConnectError(err, log, name);
        }
      };
    } else {
      out[name] = async (...args: unknown[]) => {
        try {
          return await fn.apply(impl, args);
        } catch (err) {
          throw toConnectError(err, log, name);
        }
      };
    }
  }
  return out as T;
}
