/**
 * Turns the operating system's stop signals into an AbortSignal, so the
 * programs shut down through one path whatever the platform.
 * @module
 */

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
