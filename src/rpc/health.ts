/**
 * gRPC health checking (grpc.health.v1): the serving status of the whole server (service "") and
 * of each named service, and the Health service that reports it through Check, List and Watch.
 */
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";

export { ServingStatus };

/**
 * Serving status per service name; "" is the server as a whole. Watchers see every change, but a
 * slow watcher only sees the latest status, never a stale backlog.
 */
export class HealthState {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #wakers = new Set<() => void>();
  #shutDown = false;

  /** Starts with the server as a whole (service "") at `overall`. */
  constructor(overall: ServingStatus = ServingStatus.SERVING) {
    this.#statuses.set("", overall);
  }

  /** Sets the status of `service` ("" for the whole server). Ignored once {@link shutdown} ran. */
  set(service: string, status: ServingStatus): void {
    if (!this.#shutDown) this.#update(service, status);
  }

  /** The status of `service`, or `undefined` if it was never set. */
  get(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /** True once {@link shutdown} ran. */
  get isShutDown(): boolean {
    return this.#shutDown;
  }

  /** A snapshot of every known service's status. */
  list(): ReadonlyMap<string, ServingStatus> {
    return new Map(this.#statuses);
  }

  /**
   * Marks every known service NOT_SERVING and ignores later {@link set} calls, so load balancers
   * and watchers stop sending traffic while the server drains.
   */
  shutdown(): void {
    this.#shutDown = true;
    for (const service of this.#statuses.keys()) this.#update(service, ServingStatus.NOT_SERVING);
  }

  /**
   * Yields the status of `service` at once (SERVICE_UNKNOWN if never set), then each change, until
   * `signal` aborts.
   */
  async *watch(service: string, signal: AbortSignal): AsyncGenerator<ServingStatus, void> {
    let sent: ServingStatus | undefined;
    while (!signal.aborted) {
      const current = this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (current === sent) {
        await this.#nextChange(signal);
      } else {
        sent = current;
        yield current;
      }
    }
  }

  #update(service: string, status: ServingStatus): void {
    if (this.#statuses.get(service) === status) return;
    this.#statuses.set(service, status);
    for (const wake of [...this.#wakers]) wake();
  }

  #nextChange(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.#wakers.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      this.#wakers.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }
}

/**
 * Serves grpc.health.v1.Health on `router` from `state`. Check of a service that was never set
 * fails with NOT_FOUND; Watch of one reports SERVICE_UNKNOWN and keeps watching. A Watch stream
 * ends when the call's signal aborts: with UNAVAILABLE when the server shuts down (retry
 * elsewhere), else with the abort reason (CANCELLED for a client cancel or deadline).
 */
export function registerHealth(router: ConnectRouter, state: HealthState): ConnectRouter {
  return router.service(Health, {
    check(request) {
      const status = state.get(request.service);
      if (status === undefined) {
        throw new ConnectError(`unknown service "${request.service}"`, Code.NotFound);
      }
      return { status };
    },
    list() {
      const statuses: Record<string, { status: ServingStatus }> = {};
      for (const [service, status] of state.list()) statuses[service] = { status };
      return { statuses };
    },
    async *watch(request, context) {
      for await (const status of state.watch(request.service, context.signal)) yield { status };
      if (state.isShutDown) {
        // Retryable: the client should reconnect to the next instance.
        throw new ConnectError("the server is shutting down", Code.Unavailable);
      }
      throw ConnectError.from(context.signal.reason, Code.Canceled);
    },
  });
}
