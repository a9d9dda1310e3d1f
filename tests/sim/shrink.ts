/**
 * Shrinking a failing world: the same seed run again under tighter caps
 * (fewer sessions, fewer bytes, fewer faults, no hostile peers), keeping
 * each cap under which the world still fails the same way. A capped world
 * draws differently from the seed, so it is a smaller world near the first,
 * not a part of it; it replays on its own with the command it prints.
 * @module
 */

import type { WorldOptions, WorldReport } from "./world.ts";

/** What a problem is, without the numbers and ids that change from world to world. */
export function problemKind(problem: string): string {
  return problem
    .replace(/\([^()]*\)/g, "")
    .replace(/"[^"]*"/g, "")
    .replace(/\b[0-9a-f]{8}\b/g, "")
    .replace(/\d+/g, "#")
    .replace(/\s+/g, " ")
    .trim();
}

/** Whether `report` fails in one of the ways `kinds` names. */
function failsAlike(report: WorldReport, kinds: ReadonlySet<string>): boolean {
  return report.problems.some((p) => kinds.has(problemKind(p)));
}

/** The caps to try, smallest first, for one dimension of a world. */
function candidates(current: number, floor: number, factor = 2): number[] {
  const out: number[] = [];
  for (let n = floor; n < current; n = n === 0 ? 1 : n * factor) out.push(n);
  return out;
}

/** A shrunk world: the options that still fail, and their report. */
export interface Shrunk {
  options: WorldOptions;
  report: WorldReport;
  /** Worlds run while shrinking. */
  tries: number;
}

/**
 * Runs `failed`'s seed under tighter and tighter caps while it still fails
 * alike; at most `budget` worlds. Returns the smallest failing world found.
 */
export async function shrinkWorld(
  failed: WorldReport,
  run: (options: WorldOptions) => Promise<WorldReport>,
  budget = 40,
): Promise<Shrunk> {
  const kinds = new Set(failed.problems.map(problemKind));
  let best: Shrunk = { options: { seed: failed.seed }, report: failed, tries: 0 };
  let tries = 0;
  const attempt = async (options: WorldOptions): Promise<boolean> => {
    if (tries >= budget) return false;
    tries++;
    const report = await run(options);
    if (!failsAlike(report, kinds)) return false;
    best = { options, report, tries };
    return true;
  };
  // Rounds until one makes nothing smaller: a cap that took may let another take.
  for (let shrunk = true; shrunk && tries < budget;) {
    shrunk = false;
    // Hostile peers off first: a failure without them is a simpler story.
    if (best.report.hostile > 0) shrunk = await attempt({ ...best.options, hostile: false });
    for (const sessions of candidates(best.report.sessions, 1)) {
      if (await attempt({ ...best.options, maxSessions: sessions })) {
        shrunk = true;
        break;
      }
    }
    for (const faults of candidates(best.report.faults, 0)) {
      if (await attempt({ ...best.options, maxFaults: faults })) {
        shrunk = true;
        break;
      }
    }
    for (const bytes of candidates(best.options.maxBytes ?? 1_000_000, 1_000, 4)) {
      if (await attempt({ ...best.options, maxBytes: bytes })) {
        shrunk = true;
        break;
      }
    }
  }
  return { ...best, tries };
}

/** The command that replays a world with its options. */
export function replayCommand(options: WorldOptions): string {
  const caps = [
    options.maxSessions === undefined ? "" : ` --max-sessions ${options.maxSessions}`,
    options.maxBytes === undefined ? "" : ` --max-bytes ${options.maxBytes}`,
    options.maxFaults === undefined ? "" : ` --max-faults ${options.maxFaults}`,
    options.hostile === false ? " --no-hostile" : "",
  ].join("");
  return `deno task sim --seed ${options.seed}${caps} --trace`;
}
