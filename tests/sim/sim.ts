/**
 * `deno task sim`: runs simulated worlds (see world.ts) and reports the
 * failing ones with their seed, the command that replays each, and its
 * trace.
 *
 *   deno task sim --worlds 1000 --seed 1     worlds with seeds 1..1000
 *   deno task sim --seed 4711 --trace        one world, its whole trace
 * @module
 */

import { parseArgs } from "node:util";
import { runWorld, type WorldReport } from "./world.ts";

const USAGE = `deno task sim [--worlds N] [--seed S] [--trace] [--max-sessions N] [--max-bytes N]

Runs N simulated worlds with seeds S, S+1, ... (default: 100 worlds from seed 1)
and prints each failure with the command that replays it. --trace prints the
trace of every world run (use it with one world).`;

/** Options of a batch of worlds. */
export interface BatchOptions {
  first: number;
  worlds: number;
  maxSessions?: number;
  maxBytes?: number;
  /** Called after each world. */
  progress?: (report: WorldReport, index: number) => void;
}

/** Runs `worlds` worlds from seed `first`; returns the failing ones. */
export async function runWorlds(options: BatchOptions): Promise<WorldReport[]> {
  const failed: WorldReport[] = [];
  for (let i = 0; i < options.worlds; i++) {
    const report = await runWorld({
      seed: options.first + i,
      ...(options.maxSessions === undefined ? {} : { maxSessions: options.maxSessions }),
      ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }),
    });
    if (report.problems.length > 0) failed.push(report);
    options.progress?.(report, i);
  }
  return failed;
}

/** The command that replays one world. */
export function replayCommand(report: WorldReport): string {
  return `deno task sim --seed ${report.seed} --trace`;
}

/** A failing world, as printed: its problems, how to replay it, the end of its trace. */
export function describeFailure(report: WorldReport, traceLines = 60): string {
  const tail = report.trace.slice(-traceLines);
  return [
    `World ${report.seed} failed (${report.sessions} sessions, ${report.faults} faults, ${report.hostile} hostile links, ${
      (report.simulatedMs / 1000).toFixed(1)
    } s simulated):`,
    ...report.problems.map((p) => `  - ${p}`),
    `  replay: ${replayCommand(report)}`,
    `  last ${tail.length} of ${report.trace.length} trace lines:`,
    ...tail.map((l) => `    ${l}`),
  ].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      worlds: { type: "string" },
      seed: { type: "string" },
      trace: { type: "boolean" },
      "max-sessions": { type: "string" },
      "max-bytes": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const number = (text: string | undefined, fallback: number) => {
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isSafeInteger(n) || n < 0) {
      console.error(`sim: expected a whole number, got "${text}"\n\n${USAGE}`);
      Deno.exit(2);
    }
    return n;
  };
  const first = number(values.seed, 1);
  const worlds = number(values.worlds, values.seed !== undefined && values.worlds === undefined ? 1 : 100);
  const started = performance.now();
  let simulated = 0;
  let lastLine = 0;
  let failures = 0;
  const failed = await runWorlds({
    first,
    worlds,
    ...(values["max-sessions"] ? { maxSessions: number(values["max-sessions"], 6) } : {}),
    ...(values["max-bytes"] ? { maxBytes: number(values["max-bytes"], 200_000) } : {}),
    progress: (report, i) => {
      simulated += report.simulatedMs;
      if (values.trace) console.log(report.trace.join("\n"));
      if (report.problems.length > 0) {
        failures++;
        console.log(describeFailure(report));
      }
      const now = performance.now();
      if (now - lastLine > 2_000 || i === worlds - 1) {
        lastLine = now;
        const seconds = (now - started) / 1000;
        console.log(
          `${i + 1}/${worlds} worlds, ${failures} failed, ${((i + 1) / seconds).toFixed(1)} worlds/s, ${
            (simulated / 3_600_000).toFixed(1)
          } h simulated`,
        );
      }
    },
  });
  console.log(
    failed.length === 0
      ? `All ${worlds} worlds passed (seeds ${first}-${first + worlds - 1}).`
      : `${failed.length} of ${worlds} worlds failed: seeds ${failed.map((f) => f.seed).join(", ")}`,
  );
  Deno.exit(failed.length === 0 ? 0 : 1);
}
