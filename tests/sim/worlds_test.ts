import { describeFailure, runWorldsParallel } from "./sim.ts";

/** Worlds in the default set (SIM_WORLDS overrides: fewer under Wine, more for a long local run). */
const WORLDS = Number(Deno.env.get("SIM_WORLDS") ?? 600);
/** Workers: the machine's cores, at most 4. */
const JOBS = Math.max(1, Math.min(4, navigator.hardwareConcurrency ?? 1));

Deno.test(`simulation: ${WORLDS} seeded worlds keep every byte, never stall and leave nothing behind`, async () => {
  const started = performance.now();
  const failed = await runWorldsParallel({ first: 1, worlds: WORLDS, jobs: JOBS });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `${WORLDS} worlds in ${seconds.toFixed(1)} s on ${JOBS} workers (${(WORLDS / seconds).toFixed(1)} worlds/s)`,
  );
  if (failed.length > 0) {
    throw new Error(
      `${failed.length} of ${WORLDS} worlds failed:\n\n${failed.map((f) => describeFailure(f, 30)).join("\n\n")}`,
    );
  }
});
