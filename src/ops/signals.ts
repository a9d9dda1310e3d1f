/**
 * Turns the operating system's stop signals into an AbortSignal, so the
 * programs shut down through one path whatever the platform, and keeps
 * SIGHUP from ending a program that uses it for something else. On Windows,
 * closing the console window, logoff and shutdown are watched too
 * (`console_control.ts`).
 * @module
 */

import { type ConsoleWatch, inertConsoleWatch, watchConsoleStop } from "./console_control.ts";
import { logger } from "./log.ts";

/** An AbortSignal that aborts on SIGINT (Ctrl-C), SIGTERM (Linux) or SIGBREAK (Windows). */
export function shutdownSignal(): AbortSignal {
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT", "SIGBREAK"] : ["SIGINT", "SIGTERM"];
  const stop = () => {
    for (const s of signals) Deno.removeSignalListener(s, stop);
    controller.abort();
  };
  for (const s of signals) Deno.addSignalListener(s, stop);
  return controller.signal;
}

/** Resolves when `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/**
 * Keeps SIGHUP from ending the process until disposed, calling `onHangup`
 * (if given) for each one; nothing on Windows, which has no SIGHUP. Without
 * any listener SIGHUP's default action ends the process (exit 129), and
 * Deno restores that default whenever the last listener is removed: a
 * program that reloads on SIGHUP holds this for its whole life, so that a
 * SIGHUP before its reload listener exists, or after it is gone (while
 * stopping), does no harm.
 */
export function holdHangup(onHangup: () => void = () => {}): Disposable {
  if (Deno.build.os === "windows") return { [Symbol.dispose]() {} };
  const listener = () => onHangup();
  Deno.addSignalListener("SIGHUP", listener);
  return {
    [Symbol.dispose]() {
      Deno.removeSignalListener("SIGHUP", listener);
    },
  };
}

/**
 * Watches the console for a stop (Windows: closing the window, logoff,
 * shutdown) when `enabled`, logging what happens as `program`; a watch that
 * never fires otherwise. Call its `finished()` once the stop is complete.
 */
export async function watchConsole(
  enabled: boolean,
  program: "broker-server" | "broker-client",
): Promise<ConsoleWatch> {
  const log = logger(program === "broker-server" ? "server" : "client");
  const watch = enabled ? await watchConsoleStop() : inertConsoleWatch();
  if (watch.problem) {
    log.warn("{problem}: closing the console window ends {program} without a graceful stop", {
      problem: watch.problem,
      program,
    });
  } else if (enabled && Deno.build.os === "windows") {
    log.debug("Console control handler in place: closing this window, logoff and shutdown stop {program} gracefully", {
      program,
    });
  }
  watch.signal.addEventListener("abort", () => {
    log.info("{reason}: {program} is stopping", { reason: watch.signal.reason, program });
  }, { once: true });
  return watch;
}
