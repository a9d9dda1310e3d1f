/**
 * Closing the console window, logging off and shutting down stop the
 * programs gracefully on Windows, as Ctrl-C does.
 *
 * Windows tells a console program through its console control handler
 * (SetConsoleCtrlHandler, kernel32), which it calls on a thread of its own,
 * and ends the process as soon as the handler returns from a close, logoff
 * or shutdown event (or after about 5 s if it does not). So the handler must
 * not return until the stop is done. A Deno FFI callback runs on the thread
 * of the isolate that made it, while the Windows thread waits for it: made
 * on the main thread, a callback that waited would stop the very event loop
 * that has to carry out the stop. The callback therefore lives in a worker
 * (`console_control_worker.ts`): it posts the event to the main thread and
 * then blocks the worker's thread, and with it Windows' thread, in
 * WaitForSingleObject on an event object that the main thread sets
 * (SetEvent) once the stop is complete, or until the deadline passes.
 *
 * Ctrl-C and Ctrl-Break are left to Deno's own handler (SIGINT, SIGBREAK).
 * Elsewhere than Windows everything here does nothing.
 * @module
 */

/** The console control events (wincon.h). */
export const ConsoleEvent = { CtrlC: 0, CtrlBreak: 1, Close: 2, Logoff: 5, Shutdown: 6 } as const;

/**
 * How long the handler holds Windows' thread, at most: Windows gives a
 * closing console about 5 s, and logoff and shutdown as much by default.
 */
export const CONSOLE_STOP_DEADLINE_MS = 5_000;

/** The longest drain broker-server allows its sessions on a console stop, so the rest of the stop fits the deadline. */
export const CONSOLE_DRAIN_MS = 2_000;

/** The event's name as Windows spells it, e.g. `CTRL_CLOSE_EVENT`. */
export function consoleEventName(code: number): string {
  switch (code) {
    case ConsoleEvent.CtrlC:
      return "CTRL_C_EVENT";
    case ConsoleEvent.CtrlBreak:
      return "CTRL_BREAK_EVENT";
    case ConsoleEvent.Close:
      return "CTRL_CLOSE_EVENT";
    case ConsoleEvent.Logoff:
      return "CTRL_LOGOFF_EVENT";
    case ConsoleEvent.Shutdown:
      return "CTRL_SHUTDOWN_EVENT";
    default:
      return `console event ${code}`;
  }
}

/** True for the events that end the process when the handler returns: the handler stops the program and waits. */
export function isConsoleStop(code: number): boolean {
  return code === ConsoleEvent.Close || code === ConsoleEvent.Logoff || code === ConsoleEvent.Shutdown;
}

/** What the program is told of a console stop, in words for its log. */
export function describeConsoleStop(code: number): string {
  const what = code === ConsoleEvent.Close
    ? "the console window is closing"
    : code === ConsoleEvent.Logoff
    ? "the user is logging off"
    : "Windows is shutting down";
  return `${what} (${consoleEventName(code)})`;
}

/** Messages between the main thread and the worker. */
export type ConsoleWorkerMessage =
  | { type: "install"; event: bigint; deadlineMs: number }
  | { type: "remove" }
  | { type: "ready" }
  | { type: "failed"; error: string }
  | { type: "event"; code: number }
  | { type: "removed" };

/** A console watch: aborts its signal on a console stop, and holds Windows' thread until `finished()`. */
export interface ConsoleWatch extends AsyncDisposable {
  /** Aborts on close, logoff or shutdown; the reason is `describeConsoleStop`'s text. */
  readonly signal: AbortSignal;
  /** Null when the handler is in place (or not needed, off Windows), else why it could not be. */
  readonly problem: string | null;
  /** The stop is complete: lets the handler return (Windows then ends the process). */
  finished(): void;
}

/** Watches for console stops (Windows); a watch that never fires elsewhere. */
export async function watchConsoleStop(): Promise<ConsoleWatch> {
  if (Deno.build.os !== "windows") return inertConsoleWatch();
  try {
    return await startWindowsWatch();
  } catch (err) {
    return inertConsoleWatch(`Cannot install the console control handler: ${(err as Error).message}`);
  }
}

/** A watch that never fires (for a program with no console, a service), with why (or null). */
export function inertConsoleWatch(problem: string | null = null): ConsoleWatch {
  return { signal: new AbortController().signal, problem, finished() {}, async [Symbol.asyncDispose]() {} };
}

function openKernel32() {
  return Deno.dlopen("kernel32.dll", {
    CreateEventW: { parameters: ["pointer", "i32", "i32", "pointer"], result: "pointer" },
    SetEvent: { parameters: ["pointer"], result: "i32" },
    CloseHandle: { parameters: ["pointer"], result: "i32" },
  });
}

async function startWindowsWatch(): Promise<ConsoleWatch> {
  const lib = openKernel32();
  // Manual reset: once set, every handler call still waiting (or still to come) returns.
  const event = lib.symbols.CreateEventW(null, 1, 0, null);
  if (event === null) {
    lib.close();
    throw new Error("CreateEventW failed");
  }
  const worker = new Worker(new URL("./console_control_worker.ts", import.meta.url).href, { type: "module" });
  const stop = new AbortController();
  let answered: (message: ConsoleWorkerMessage) => void = () => {};
  worker.onmessage = (e: MessageEvent<ConsoleWorkerMessage>) => {
    if (e.data.type === "event") stop.abort(describeConsoleStop(e.data.code));
    else answered(e.data);
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    answered({ type: "failed", error: e.message });
  };
  const ask = (message: ConsoleWorkerMessage) =>
    new Promise<ConsoleWorkerMessage>((resolve) => {
      answered = resolve;
      worker.postMessage(message);
    });
  const release = () => lib.symbols.SetEvent(event);
  const free = () => {
    worker.terminate();
    lib.symbols.CloseHandle(event);
    lib.close();
  };
  // The handler is unregistered before the worker that runs it goes (Windows would call a dead callback).
  const close = async () => {
    release();
    await ask({ type: "remove" });
    free();
  };
  const answer = await ask({
    type: "install",
    event: BigInt(Deno.UnsafePointer.value(event)),
    deadlineMs: CONSOLE_STOP_DEADLINE_MS,
  });
  if (answer.type !== "ready") {
    free();
    throw new Error(answer.type === "failed" ? answer.error : `unexpected answer ${answer.type}`);
  }
  return { signal: stop.signal, problem: null, finished: release, [Symbol.asyncDispose]: close };
}
