/**
 * What an accept loop does when accept() fails: how long to wait before the
 * next try and what to log. A peer that resets before it is accepted is the
 * peer's doing (debug, summed up at most every 10 s); running out of file
 * descriptors is said once, with the limit and how to raise it, and retried
 * with backoff instead of at once. Also the process's descriptor limit, and
 * how many descriptors a broker-server's limits need; and `acceptLoop`,
 * the one accept loop both programs run on that policy. Pure but for
 * openFileLimit and acceptLoop, with an injectable clock.
 * @module
 */

import { sleep } from "../session/backoff.ts";
import { type Clock, systemClock } from "../session/clock.ts";
import type { NetConn, NetListener } from "../session/network.ts";

/** What went wrong in accept(). */
export type AcceptFailure = "peer" | "descriptors" | "other";

/** A log line the accept loop should write. */
export interface AcceptNote {
  /** Its level. */
  level: "debug" | "info" | "warning" | "error";
  /** The message template (logtape {placeholders}). */
  message: string;
  /** The placeholders' values. */
  fields: Record<string, unknown>;
}

/** Options of AcceptErrors. */
export interface AcceptErrorsOptions {
  /** What is accepted, for the messages ("links", "Smart Client connections"). */
  what: string;
  /** How to get more descriptors, for the message ("raise it (...) or lower MAX_SESSIONS"). */
  advice: string;
  /**
   * The process's open-file limit, when known (see openFileLimit); a
   * function is asked only when descriptors run out, so that starting an
   * accept loop costs no look-up.
   */
  openFileLimit?: number | null | (() => number | null);
  /** Clock in ms (injectable). */
  now?: () => number;
}

/** Minimum ms between two summaries of the same kind of failure. */
const SUMMARY_MS = 10_000;
/** First and largest wait after a failure that is not the peer's. */
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1_000;

const PEER_ERRORS = ["ECONNRESET", "ECONNABORTED", "ENOTCONN", "EPROTO", "EPIPE"];

/** Sorts an accept() error: the peer's doing, out of descriptors, or anything else. */
export function classifyAcceptError(err: unknown): AcceptFailure {
  const code = (err as { code?: unknown })?.code;
  if (code === "EMFILE" || code === "ENFILE" || /too many open files/i.test(String((err as Error)?.message))) {
    return "descriptors";
  }
  if (
    err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.ConnectionAborted ||
    err instanceof Deno.errors.NotConnected || (typeof code === "string" && PEER_ERRORS.includes(code))
  ) {
    return "peer";
  }
  return "other";
}

/** The accept loop's memory of failures: backoff and rate-limited notes. */
export class AcceptErrors {
  #what: string;
  #advice: string;
  #limit: number | null | (() => number | null);
  #now: () => number;
  /** Failures in a row that were not the peer's (drives the backoff). */
  #streak = 0;
  /** When the current run out of descriptors began, or null. */
  #outSince: number | null = null;
  #outFailures = 0;
  #summaries = new Map<AcceptFailure, { at: number; count: number }>();

  /** Creates the policy for one accept loop. */
  constructor(options: AcceptErrorsOptions) {
    this.#what = options.what;
    this.#advice = options.advice;
    this.#limit = options.openFileLimit ?? null;
    this.#now = options.now ?? Date.now;
  }

  /** After a failed accept(): ms to wait before the next, and a line to log if any. */
  failed(err: unknown): { delayMs: number; note: AcceptNote | null } {
    const kind = classifyAcceptError(err);
    const error = (err as Error)?.message ?? String(err);
    if (kind === "peer") return { delayMs: 0, note: this.#summary(kind, error) };
    this.#streak++;
    const delayMs = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (this.#streak - 1));
    if (kind === "other") return { delayMs, note: this.#summary(kind, error) };
    this.#outFailures++;
    if (this.#outSince !== null) return { delayMs, note: null };
    this.#outSince = this.#now();
    const known = typeof this.#limit === "function" ? this.#limit() : this.#limit;
    const limit = known === null ? "" : ` (the limit is ${known} open files)`;
    return {
      delayMs,
      note: {
        level: "error",
        message:
          "Cannot accept {what}: out of file descriptors{limit}: {error}. New {what} wait in the queue and are retried up to every {maxWait} ms, without further log lines until one is accepted: {advice}",
        fields: { what: this.#what, limit, error, maxWait: MAX_BACKOFF_MS, advice: this.#advice },
      },
    };
  }

  /** After a successful accept(): a line to log when it ends a run out of descriptors. */
  succeeded(): AcceptNote | null {
    this.#streak = 0;
    if (this.#outSince === null) return null;
    const seconds = ((this.#now() - this.#outSince) / 1000).toFixed(1);
    const failures = this.#outFailures;
    this.#outSince = null;
    this.#outFailures = 0;
    return {
      level: "warning",
      message: "Accepting {what} again after {seconds} s out of file descriptors ({failures} attempts failed)",
      fields: { what: this.#what, seconds, failures },
    };
  }

  /** One line per kind and 10 s at most, with how many failures it stands for. */
  #summary(kind: AcceptFailure, error: string): AcceptNote | null {
    const now = this.#now();
    const last = this.#summaries.get(kind);
    if (last && now - last.at < SUMMARY_MS) {
      last.count++;
      return null;
    }
    const count = (last?.count ?? 0) + 1;
    this.#summaries.set(kind, { at: now, count: 0 });
    return kind === "peer"
      ? {
        level: "debug",
        message:
          "{count} {what} were closed by their peers before they could be accepted (since the last such line; latest: {error})",
        fields: { count, what: this.#what, error },
      }
      : {
        level: "error",
        message: "Cannot accept {what}: {error} ({count} failures since the last such line; retrying with backoff)",
        fields: { count, what: this.#what, error },
      };
  }
}

/** getrlimit's resource number for open files on Linux. */
const RLIMIT_NOFILE = 7;

/**
 * The process's limit of open files (the soft limit, which Deno raises to
 * the hard one at start), or null where it cannot be read. Linux only:
 * getrlimit through libc (broker-server has --allow-ffi; Deno lets only a
 * process with every permission read /proc/self/limits), else that file;
 * Windows has no such per-process limit for sockets.
 */
export function openFileLimit(): number | null {
  if (Deno.build.os !== "linux") return null;
  try {
    const libc = Deno.dlopen("libc.so.6", { getrlimit: { parameters: ["i32", "buffer"], result: "i32" } });
    try {
      const limits = new BigUint64Array(2); // struct rlimit { rlim_cur, rlim_max }
      if (libc.symbols.getrlimit(RLIMIT_NOFILE, limits) === 0) {
        const soft = limits[0] as bigint;
        return soft >= BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(soft); // RLIM_INFINITY: no limit
      }
    } finally {
      libc.close();
    }
  } catch {
    // No FFI permission, or no glibc (e.g. musl): try the file.
  }
  try {
    return parseOpenFileLimit(Deno.readTextFileSync("/proc/self/limits"));
  } catch {
    return null;
  }
}

/** The soft "Max open files" of a /proc/<pid>/limits text, or null ("unlimited", or not found). */
export function parseOpenFileLimit(text: string): number | null {
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  return match && match[1] !== "unlimited" ? Number(match[1]) : null;
}

/** How to give broker-server more descriptors. */
export const SERVER_DESCRIPTOR_ADVICE =
  "raise the limit (LimitNOFILE= in the systemd unit, ulimit -n in the shell that starts it) or lower MAX_SESSIONS";

/**
 * Descriptors broker-server needs at its limits: a link and an ERP
 * connection per session, a link and perhaps an ERP connection per
 * handshake, and a few for the listeners, the log and health checks.
 */
export function descriptorsNeeded(limits: { maxSessions: number; maxHandshakes: number }): number {
  return 2 * limits.maxSessions + 2 * limits.maxHandshakes + 64;
}

/** Options of acceptLoop. */
export interface AcceptLoopOptions extends Omit<AcceptErrorsOptions, "now"> {
  /** Time and timers (the backoff after a failure); default systemClock. */
  clock?: Clock;
  /** Stops the loop (with the listener's closing). */
  signal: AbortSignal;
  /** Writes a note (the program's logger). */
  log: (note: AcceptNote) => void;
}

/**
 * Accepts connections until `signal` aborts or the listener is closed,
 * handing each to `onConn` with Nagle's algorithm off. Failures are
 * retried and logged as AcceptErrors says; the loop never throws.
 */
export async function acceptLoop<C extends NetConn>(
  listener: NetListener<C>,
  options: AcceptLoopOptions,
  onConn: (conn: C) => void,
): Promise<void> {
  const clock = options.clock ?? systemClock;
  const errors = new AcceptErrors({ ...options, now: () => clock.now() });
  for (;;) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (options.signal.aborted || err instanceof Deno.errors.BadResource) return;
      const { delayMs, note } = errors.failed(err);
      if (note) options.log(note);
      if (delayMs > 0) await sleep(delayMs, options.signal, clock);
      continue;
    }
    const recovered = errors.succeeded();
    if (recovered) options.log(recovered);
    (conn as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    onConn(conn);
  }
}
