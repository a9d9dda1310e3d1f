import { deepEqual, equal } from "node:assert/strict";
import { problemKind, replayCommand, shrinkWorld } from "./shrink.ts";
import type { WorldOptions, WorldReport } from "./world.ts";

/** A pretend world: it fails with a lost byte once it has two sessions or more and 40 KB or more. */
function pretend(options: WorldOptions): WorldReport {
  const sessions = Math.min(options.maxSessions ?? 6, 6);
  const bytes = options.maxBytes ?? 1_000_000;
  const failing = sessions >= 2 && bytes >= 40_000;
  return {
    seed: options.seed,
    problems: failing ? [`session 1 (bulk-both, ${"3f2a9c01"}): ERP read ${bytes - 7} of ${bytes} bytes`] : [],
    trace: [],
    simulatedMs: 1_000,
    sessions,
    faults: Math.min(options.maxFaults ?? 9, 9),
    hostile: options.hostile === false ? 0 : 3,
  };
}

Deno.test("shrinking keeps the smallest caps under which the world still fails alike", async () => {
  const first = pretend({ seed: 42 });
  const shrunk = await shrinkWorld(first, (o) => Promise.resolve(pretend(o)));
  deepEqual(shrunk.options, { seed: 42, hostile: false, maxSessions: 2, maxFaults: 0, maxBytes: 64_000 });
  equal(shrunk.report.problems.length, 1);
  equal(
    replayCommand(shrunk.options),
    "deno task sim --seed 42 --max-sessions 2 --max-bytes 64000 --max-faults 0 --no-hostile --trace",
  );
});

Deno.test("shrinking never takes a world that fails differently, and stops at its budget", async () => {
  const first = pretend({ seed: 7 });
  let runs = 0;
  const other = (o: WorldOptions): Promise<WorldReport> => {
    runs++;
    return Promise.resolve({ ...pretend(o), problems: ["hang: the applications did not finish"] });
  };
  const shrunk = await shrinkWorld(first, other, 5);
  equal(shrunk.report, first, "a hang is not the lost byte we shrink");
  deepEqual(shrunk.options, { seed: 7 });
  equal(runs, 5);
});

Deno.test("a problem's kind leaves out the numbers, ids and quotes that vary", () => {
  equal(
    problemKind('session 2 (bulk-both, 3f2a9c01): ERP read 8192 of 15588 bytes (ends: server "x", client "y")'),
    problemKind("session 0 (echo, 00ff00ff): ERP read 1 of 2 bytes"),
  );
  equal(problemKind("3 timers still set after everything stopped"), "# timers still set after everything stopped");
});
