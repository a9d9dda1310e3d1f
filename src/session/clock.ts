/**
 * The clock the broker's timing logic reads and schedules on. Production
 * code uses `systemClock` (Date.now and the runtime's timers); the
 * simulation tests (tests/sim/) pass a virtual clock that jumps from one
 * timer to the next, so that minutes of resume windows and heartbeats run
 * in microseconds and every run with the same seed is the same run.
 * @module
 */

/** A timer handle: the runtime's, or a virtual clock's number. */
export type TimerHandle = ReturnType<typeof setTimeout> | number;

/** Time and timers. */
export interface Clock {
  /** Milliseconds since some fixed point (wall clock for systemClock). */
  now(): number;
  /** Calls `fn` once after `ms`. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Calls `fn` every `ms`. */
  setInterval(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer from either setTimeout or setInterval (undefined: nothing). */
  clear(handle: TimerHandle | undefined): void;
}

/** The runtime's clock and timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
