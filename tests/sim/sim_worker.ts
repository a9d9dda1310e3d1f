/// <reference lib="deno.worker" />
/**
 * One worker of `deno task sim --jobs J`: runs the seeds it is given and
 * posts each world's report back (passing worlds without their trace).
 * @module
 */

import { runWorld, type WorldOptions } from "./world.ts";

self.onmessage = async (
  event: MessageEvent<{ seeds: number[]; caps: Omit<WorldOptions, "seed">; keepTraces: boolean }>,
) => {
  const { seeds, caps, keepTraces } = event.data;
  for (const seed of seeds) {
    const report = await runWorld({ ...caps, seed });
    if (report.problems.length === 0 && !keepTraces) report.trace = [];
    self.postMessage({ report });
  }
  self.postMessage({ done: true });
};
