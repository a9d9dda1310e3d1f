/**
 * Driving a simulated world: let every promise that can move do so, then
 * move the virtual clock to the next timer, until the world says it is
 * done, nothing can move any more (a hang), or too much virtual time
 * passed.
 * @module
 */

import { setImmediate } from "node:timers";
import type { VirtualClock } from "./clock.ts";
import { cryptoInFlight } from "../../src/protocol/resume_auth.ts";

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Resolves once every promise reaction queued so far (and those they
 * queue) has run, and no WebCrypto call is in flight (those complete on
 * the event loop, after a turn or two).
 */
export async function settle(): Promise<void> {
  await turn();
  while (cryptoInFlight() > 0) await turn();
}

/** How a run ended: done, stuck (no timer left and not done), or out of time. */
export type RunOutcome = "done" | "stuck" | "timeout";

/** Settles and runs timers until `done()`, no timer is left, or the clock passes `untilMs`. */
export async function runUntil(clock: VirtualClock, done: () => boolean, untilMs: number): Promise<RunOutcome> {
  for (;;) {
    await settle();
    if (done()) return "done";
    const next = clock.nextAt;
    if (next === null) return "stuck";
    if (next > untilMs) return "timeout";
    clock.runNext();
  }
}
