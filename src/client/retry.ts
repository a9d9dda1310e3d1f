/**
 * The one retry policy of broker-client: attempts paced by the reconnect
 * backoff (see backoff.ts) until a deadline, each failure classified as
 * final or worth another try. Opening a session, resuming it and saying
 * goodbye to a server differ only in their deadline, what interrupts a
 * wait, and what is final. Pure: clock, randomness and sleep are injected.
 * @module
 */

import { type BackoffOptions, backoffSchedule, sleep as realSleep } from "../session/backoff.ts";

/** What a failed attempt means: give up now, or try again after the next wait. */
export type Verdict = "final" | "retry";

/** How retryUntil ended. */
export type RetryOutcome<T> =
  /** An attempt succeeded with `value`. */
  | { kind: "done"; value: T }
  /** An attempt failed with an error classified final. */
  | { kind: "final"; error: unknown }
  /** The deadline passed before another attempt could start (`error`: the last failure, if any). */
  | { kind: "expired"; error: unknown }
  /** `stop()` said so before an attempt. */
  | { kind: "stopped" };

/** Options of retryUntil. */
export interface RetryOptions<T> extends Pick<BackoffOptions, "random"> {
  /** One attempt (`n`: its number, 0-based); its result ends the retries, a throw is classified. */
  attempt: (n: number) => Promise<T>;
  /** Clock in ms, the one `deadline` is on. */
  now: () => number;
  /** Wait before the first attempt too (a resume after a link loss); default false: the first attempt starts at once. */
  waitFirst?: boolean;
  /** What cuts the current wait short (read before each wait; the next attempt then comes at once). */
  interrupt?: () => AbortSignal | undefined;
  /** Checked after each wait, before an attempt: true ends the retries. */
  stop?: () => boolean;
  /** Called when a retry is scheduled, before its wait, with the failure and the number of the attempt that failed (0-based). */
  retrying?: (error: unknown, attempt: number) => void;
  /** Waits `ms` or until `signal` aborts; default backoff's sleep (injectable for fake time). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<unknown>;
}

/**
 * Runs `options.attempt` until it succeeds, `classify` calls a failure
 * final, the backoff schedule reaches `deadline` (absolute ms on
 * `options.now`'s clock), or `options.stop` says so. `classify` sees every
 * failure.
 */
export async function retryUntil<T>(
  deadline: number,
  classify: (error: unknown) => Verdict,
  options: RetryOptions<T>,
): Promise<RetryOutcome<T>> {
  const sleep = options.sleep ?? realSleep;
  const waits = backoffSchedule(deadline, options.now, options.random ? { random: options.random } : {});
  let error: unknown = undefined;
  for (let n = 0;; n++) {
    if (n > 0 || options.waitFirst) {
      const wait = waits.next();
      if (wait.done) return { kind: "expired", error };
      if (n > 0) options.retrying?.(error, n - 1);
      await sleep(wait.value, options.interrupt?.());
    }
    if (options.stop?.()) return { kind: "stopped" };
    try {
      return { kind: "done", value: await options.attempt(n) };
    } catch (err) {
      if (classify(err) === "final") return { kind: "final", error: err };
      error = err;
    }
  }
}
