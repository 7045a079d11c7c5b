/**
 * A scriptable ContainerEngine for unit tests of the runner and the RPC layer: every verb succeeds
 * by default, can be made to fail, or can be held at a gate until the test opens it.
 */
import { UpdaterError } from "../../src/errors.js";
import type { AppInfo, ContainerEngine, StepContext } from "../../src/orchestrator/ports.js";

export type Verb =
  | "preflight"
  | "snapshot"
  | "pull"
  | "verifyImage"
  | "migrate"
  | "swap"
  | "healthcheck"
  | "commit"
  | "rollback"
  | "discard";

export interface Gate {
  /** Resolves when the verb has been entered and is waiting. */
  reached: Promise<void>;
  open(): void;
}

export class FakeEngine implements ContainerEngine {
  app: AppInfo = {
    container: "processgit",
    running: true,
    image: "registry.test/processgit:1.0.0",
    version: "1.0.0",
  };
  readonly calls: Verb[] = [];
  readonly failures = new Map<Verb, Error>();
  private readonly gates = new Map<Verb, { reached: () => void; wait: Promise<void> }>();
  /** Output the verb writes into its step before finishing. */
  readonly outputs = new Map<Verb, string[]>();
  migrationRuns = true;

  failOn(verb: Verb, message = `${verb} failed`, reason?: string, manualSteps?: string): this {
    this.failures.set(
      verb,
      new UpdaterError("failed_precondition", message, {
        ...(reason ? { reason } : {}),
        ...(manualSteps ? { manualSteps } : {}),
      }),
    );
    return this;
  }

  /** Holds `verb` until `open()`; `reached` resolves once the verb is waiting. */
  gate(verb: Verb): Gate {
    let reached!: () => void;
    const reachedP = new Promise<void>((r) => {
      reached = r;
    });
    let open!: () => void;
    const wait = new Promise<void>((r) => {
      open = r;
    });
    this.gates.set(verb, { reached, wait });
    return { reached: reachedP, open };
  }

  async inspectApp(): Promise<AppInfo> {
    return { ...this.app };
  }
  preflight(ctx: StepContext) {
    return this.act("preflight", ctx);
  }
  snapshot(ctx: StepContext) {
    return this.act("snapshot", ctx);
  }
  async pull(ctx: StepContext) {
    ctx.progress(50, 100, "bytes");
    ctx.progress(100, 100, "bytes");
    return this.act("pull", ctx);
  }
  verifyImage(ctx: StepContext) {
    return this.act("verifyImage", ctx);
  }
  async migrate(ctx: StepContext) {
    await this.act("migrate", ctx);
    return this.migrationRuns;
  }
  swap(ctx: StepContext) {
    return this.act("swap", ctx);
  }
  healthcheck(ctx: StepContext) {
    return this.act("healthcheck", ctx);
  }
  commit(ctx: StepContext) {
    return this.act("commit", ctx);
  }
  rollback(ctx: StepContext) {
    return this.act("rollback", ctx);
  }
  async discard(ctx: StepContext) {
    await this.act("discard", ctx).catch(() => {});
  }

  private async act(verb: Verb, ctx: StepContext): Promise<void> {
    this.calls.push(verb);
    await ctx.journal(`about to ${verb}`, { [`${verb}.started`]: "yes" });
    for (const line of this.outputs.get(verb) ?? []) ctx.output(line);
    const gate = this.gates.get(verb);
    if (gate) {
      gate.reached();
      ctx.signal.throwIfAborted();
      await Promise.race([
        gate.wait,
        new Promise((_, reject) =>
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }),
        ),
      ]);
    }
    const failure = this.failures.get(verb);
    if (failure) throw failure;
  }
}
