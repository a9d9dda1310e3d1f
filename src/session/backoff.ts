/**
 * Reconnect backoff: exponential with full jitter ("AWS full jitter"), a
 * small first delay and a low cap, so that traffic flows again soon after
 * the network returns while a crowd of clients does not reconnect in step.
 * Pure: randomness is injected.
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";

/** Backoff parameters. */
export interface BackoffOptions {
  /** Ceiling of the first delay (ms); default 100. */
  baseMs?: number;
  /** Largest delay (ms); default 1000. */
  capMs?: number;
  /** Uniform random source in [0, 1); default Math.random. */
  random?: () => number;
}

/** Default first-delay ceiling: the first retry comes within 100 ms. */
export const DEFAULT_BACKOFF_BASE_MS = 100;
/**
 * Default cap: never wait more than 1 s between attempts, so that a crowd
 * of sessions cut at once moves again soon after the network returns
 * (docs/performance.md, resume storm). A retry is one TCP connect, so the
 * extra attempts during an outage cost little, and full jitter still keeps
 * a crowd from reconnecting in step.
 */
export const DEFAULT_BACKOFF_CAP_MS = 1_000;

/** Delay before retry number `attempt` (0-based): uniform in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? DEFAULT_BACKOFF_BASE_MS;
  const cap = options.capMs ?? DEFAULT_BACKOFF_CAP_MS;
  const random = options.random ?? Math.random;
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * The delays of successive attempts that still fit before `deadline`
 * (absolute ms on the same clock as `now`); the last one is shortened to
 * end at the deadline. `now` is read before each delay.
 */
export function* backoffSchedule(
  deadline: number,
  now: () => number,
  options: BackoffOptions = {},
): Generator<number> {
  for (let attempt = 0;; attempt++) {
    const left = deadline - now();
    if (left <= 0) return;
    yield Math.min(left, backoffDelay(attempt, options));
  }
}

/** Waits `ms` on `clock`, or less if `signal` aborts first (then resolves false). */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = systemClock): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clock.clear(timer);
      resolve(false);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
