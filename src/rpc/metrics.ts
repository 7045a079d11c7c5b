/**
 * Prometheus metrics in the text exposition format, computed on each scrape from the runner's job
 * history (the last 50 jobs) and the app the engine reports. Served at GET /metrics, behind the
 * same bearer token as the RPCs (Prometheus: `authorization: { credentials_file: ... }`).
 */
import type { JobState } from "../orchestrator/job.js";
import type { ContainerEngine } from "../orchestrator/ports.js";
import type { JobRunner } from "../orchestrator/runner.js";

const OUTCOMES = ["committed", "rolled_back", "failed", "aborted"] as const;

export async function renderMetrics(
  runner: JobRunner,
  engine: ContainerEngine,
  updaterVersion: string,
): Promise<string> {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: Array<[string, number]>) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  const jobs = runner.history();
  metric("processgit_updater_info", "gauge", "The updater's version.", [
    [`{version="${esc(updaterVersion)}"}`, 1],
  ]);
  metric(
    "processgit_updater_jobs",
    "gauge",
    "Jobs in the kept history (the last 50) by outcome.",
    OUTCOMES.map((o) => [`{outcome="${o}"}`, jobs.filter((j) => j.state === o).length]),
  );
  metric("processgit_updater_active_job", "gauge", "1 while an update job is active.", [
    ["", runner.activeJob() ? 1 : 0],
  ]);
  metric(
    "processgit_updater_blocked",
    "gauge",
    "1 while a failed job that no operator acknowledged blocks new updates.",
    [["", runner.blockingJob() ? 1 : 0]],
  );
  const lastCommit = runner.counts().lastCommittedAt;
  metric(
    "processgit_updater_last_success_timestamp_seconds",
    "gauge",
    "When the last update committed (0: none kept).",
    [["", lastCommit ? Date.parse(lastCommit) / 1000 : 0]],
  );
  // Summed in whole milliseconds, so the seconds print without float noise (0.412, not 0.41200000000000003).
  const durations = new Map<JobState, { sumMs: number; count: number }>();
  for (const job of jobs) {
    for (const step of job.steps) {
      if (!step.endedAt) continue;
      const d = durations.get(step.state) ?? { sumMs: 0, count: 0 };
      d.sumMs += Date.parse(step.endedAt) - Date.parse(step.startedAt);
      d.count += 1;
      durations.set(step.state, d);
    }
  }
  lines.push(
    "# HELP processgit_updater_step_duration_seconds How long the steps of the kept jobs took, by job state.",
    "# TYPE processgit_updater_step_duration_seconds summary",
  );
  for (const [state, d] of durations) {
    lines.push(`processgit_updater_step_duration_seconds_sum{state="${state}"} ${d.sumMs / 1000}`);
    lines.push(`processgit_updater_step_duration_seconds_count{state="${state}"} ${d.count}`);
  }
  const app = await engine.inspectApp(AbortSignal.timeout(2000)).catch(() => undefined);
  metric(
    "processgit_updater_app_info",
    "gauge",
    "The app version that runs (from its image label), when the engine answers.",
    [
      [
        `{container="${esc(app?.container ?? "")}",version="${esc(app?.version ?? "")}",image="${esc(app?.image ?? "")}"}`,
        app?.running ? 1 : 0,
      ],
    ],
  );
  return `${lines.join("\n")}\n`;
}

function esc(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
