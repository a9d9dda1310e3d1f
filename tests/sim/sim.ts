/**
 * `deno task sim`: runs simulated worlds (see world.ts) and reports the
 * failing ones with their seed, the command that replays each, a smaller
 * world that fails alike (see shrink.ts), and its trace.
 *
 *   deno task sim --worlds 1000 --seed 1     worlds with seeds 1..1000
 *   deno task sim --worlds 100000 --jobs 2   the same on two cores
 *   deno task sim --seed 4711 --trace        one world, its whole trace
 * @module
 */

import { parseArgs } from "node:util";
import { replayCommand, shrinkWorld } from "./shrink.ts";
import { runWorld, type WorldOptions, type WorldReport } from "./world.ts";

const USAGE = `deno task sim [--worlds N] [--seed S] [--jobs J] [--trace] [--no-shrink]
                    [--max-sessions N] [--max-bytes N] [--max-faults N] [--no-hostile]

Runs N simulated worlds with seeds S, S+1, ... (default: 100 worlds from seed 1)
on J workers (default 1), prints a progress line every 2 s and each failure
with the command that replays it, then shrinks each failure to a smaller world
that fails alike (--no-shrink: do not). --trace prints the trace of every
world run (use it with one world). The --max-* caps and --no-hostile make
smaller worlds; exit status 1 when any world failed.`;

/** Caps every world of a batch shares. */
export type WorldCaps = Omit<WorldOptions, "seed">;

/** Options of a batch of worlds. */
export interface BatchOptions {
  first: number;
  worlds: number;
  caps?: WorldCaps;
  /** Called after each world. */
  progress?: (report: WorldReport, index: number) => void;
}

/** Runs `worlds` worlds from seed `first`, one after another; returns the failing ones. */
export async function runWorlds(options: BatchOptions): Promise<WorldReport[]> {
  const failed: WorldReport[] = [];
  for (let i = 0; i < options.worlds; i++) {
    const report = await runWorld({ ...options.caps, seed: options.first + i });
    if (report.problems.length > 0) failed.push(report);
    options.progress?.(report, i);
  }
  return failed;
}

/**
 * Runs the same batch on `jobs` workers (seeds dealt out in turn); reports
 * of passing worlds come back without their trace unless `keepTraces`.
 */
export function runWorldsParallel(
  options: BatchOptions & { jobs: number; keepTraces?: boolean },
): Promise<WorldReport[]> {
  const failed: WorldReport[] = [];
  let index = 0;
  const one = (job: number) =>
    new Promise<void>((resolve, reject) => {
      const worker = new Worker(new URL("./sim_worker.ts", import.meta.url), { type: "module" });
      worker.onmessage = (event: MessageEvent<{ report: WorldReport } | { done: true }>) => {
        if ("done" in event.data) {
          worker.terminate();
          resolve();
          return;
        }
        const report = event.data.report;
        if (report.problems.length > 0) failed.push(report);
        options.progress?.(report, index++);
      };
      worker.onerror = (event) => {
        event.preventDefault();
        worker.terminate();
        reject(new Error(`simulation worker ${job} failed: ${event.message}`));
      };
      worker.postMessage({
        seeds: Array.from({ length: options.worlds }, (_, i) => options.first + i).filter((_, i) =>
          i % options.jobs === job
        ),
        caps: options.caps ?? {},
        keepTraces: options.keepTraces ?? false,
      });
    });
  return Promise.all(Array.from({ length: options.jobs }, (_, job) => one(job))).then(() =>
    failed.sort((a, b) => a.seed - b.seed)
  );
}

/** A failing world, as printed: its problems, how to replay it, the end of its trace. */
export function describeFailure(report: WorldReport, traceLines = 60, caps: WorldCaps = {}): string {
  const tail = report.trace.slice(-traceLines);
  return [
    `World ${report.seed} failed (${report.sessions} sessions, ${report.faults} faults, ${report.hostile} hostile links, ${
      (report.simulatedMs / 1000).toFixed(1)
    } s simulated):`,
    ...report.problems.map((p) => `  - ${p}`),
    `  replay: ${replayCommand({ ...caps, seed: report.seed })}`,
    `  last ${tail.length} of ${report.trace.length} trace lines:`,
    ...tail.map((l) => `    ${l}`),
  ].join("\n");
}

/** Parses the command line; exits with the usage on a mistake. */
function parseCommandLine(): {
  first: number;
  worlds: number;
  jobs: number;
  caps: WorldCaps;
  trace: boolean;
  shrink: boolean;
} {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      worlds: { type: "string" },
      seed: { type: "string" },
      jobs: { type: "string" },
      trace: { type: "boolean" },
      "no-shrink": { type: "boolean" },
      "max-sessions": { type: "string" },
      "max-bytes": { type: "string" },
      "max-faults": { type: "string" },
      "no-hostile": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const number = (text: string | undefined, fallback: number, least = 0) => {
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isSafeInteger(n) || n < least) {
      console.error(`sim: expected a whole number of at least ${least}, got "${text}"\n\n${USAGE}`);
      Deno.exit(2);
    }
    return n;
  };
  const caps: WorldCaps = {};
  if (values["max-sessions"] !== undefined) caps.maxSessions = number(values["max-sessions"], 6, 1);
  if (values["max-bytes"] !== undefined) caps.maxBytes = number(values["max-bytes"], 200_000);
  if (values["max-faults"] !== undefined) caps.maxFaults = number(values["max-faults"], 0);
  if (values["no-hostile"]) caps.hostile = false;
  const oneWorld = values.seed !== undefined && values.worlds === undefined;
  return {
    first: number(values.seed, 1),
    worlds: number(values.worlds, oneWorld ? 1 : 100),
    jobs: number(values.jobs, 1, 1),
    caps,
    trace: values.trace ?? false,
    shrink: !values["no-shrink"],
  };
}

if (import.meta.main) {
  const { first, worlds, jobs, caps, trace, shrink } = parseCommandLine();
  const started = performance.now();
  let simulated = 0;
  let lastLine = 0;
  let failures = 0;
  const progress = (report: WorldReport, i: number) => {
    simulated += report.simulatedMs;
    if (trace) console.log(report.trace.join("\n"));
    if (report.problems.length > 0) {
      failures++;
      console.log(describeFailure(report, 60, caps));
    }
    const now = performance.now();
    if (now - lastLine > 2_000 || i === worlds - 1) {
      lastLine = now;
      const seconds = (now - started) / 1000;
      console.log(
        `${i + 1}/${worlds} worlds, ${failures} failed, ${((i + 1) / seconds).toFixed(1)} worlds/s on ${jobs} ${
          jobs === 1 ? "job" : "jobs"
        }, ${(simulated / 3_600_000).toFixed(1)} h simulated`,
      );
    }
  };
  const batch = { first, worlds, caps, progress };
  const failed = jobs === 1 ? await runWorlds(batch) : await runWorldsParallel({ ...batch, jobs, keepTraces: trace });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    failed.length === 0
      ? `All ${worlds} worlds passed (seeds ${first}-${first + worlds - 1}) in ${seconds.toFixed(1)} s.`
      : `${failed.length} of ${worlds} worlds failed: seeds ${failed.map((f) => f.seed).join(", ")}`,
  );
  if (shrink && !trace) {
    for (const report of failed.slice(0, 5)) {
      const shrunk = await shrinkWorld(report, (options) => runWorld(options));
      const smaller = shrunk.report;
      console.log(
        smaller === report
          ? `World ${report.seed}: no smaller world failing alike in ${shrunk.tries} tries.`
          : `World ${report.seed} shrunk in ${shrunk.tries} tries to ${smaller.sessions} sessions, ${smaller.faults} faults, ${smaller.hostile} hostile links (${smaller.trace.length} trace lines):\n  - ${
            smaller.problems.join("\n  - ")
          }\n  replay: ${replayCommand(shrunk.options)}`,
      );
    }
  }
  Deno.exit(failed.length === 0 ? 0 : 1);
}
