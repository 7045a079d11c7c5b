/**
 * A scriptable ContainerEngine for unit tests of the runner and the RPC layer: every verb succeeds
 * by default, can be made to fail, or can be held at a gate until the test opens it. It keeps the
 * journal contract of the real adapter: a successful healthcheck journals `verdict.passed` as its
 * last act, and rollback journals the `restore.*` facts set in `restoreFacts`.
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
  /** Facts rollback journals (restore.needed, restore.snapshot, ...) before it may fail. */
  restoreFacts: Record<string, string> = {};
  /** When false, a successful healthcheck does not journal `verdict.passed` (an adapter that forgot). */
  journalsVerdict = true;
  /** What each call saw in `ctx.keepSnapshotsOf`, in call order. */
  readonly keptSnapshots: Array<[Verb, readonly string[]]> = [];

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
  async healthcheck(ctx: StepContext) {
    await this.act("healthcheck", ctx);
    if (this.journalsVerdict) await ctx.journal("health verdict passed", { "verdict.passed": "true" });
  }
  commit(ctx: StepContext) {
    return this.act("commit", ctx);
  }
  async rollback(ctx: StepContext) {
    if (Object.keys(this.restoreFacts).length > 0) await ctx.journal("restore the data", this.restoreFacts);
    return this.act("rollback", ctx);
  }
  async discard(ctx: StepContext) {
    await this.act("discard", ctx).catch(() => {});
  }

  private async act(verb: Verb, ctx: StepContext): Promise<void> {
    this.calls.push(verb);
    this.keptSnapshots.push([verb, ctx.keepSnapshotsOf]);
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
