/**
 * The console control handler's thread of JavaScript (see
 * `console_control.ts`): Windows' handler thread waits for this worker's
 * callback, which passes a close, logoff or shutdown on to the main thread
 * and then blocks, on this worker's thread, until the main thread sets the
 * event object or the deadline passes. Ctrl-C and Ctrl-Break are answered
 * "not handled" at once, so that Deno's own handler takes them.
 * @module
 */

import { type ConsoleWorkerMessage, isConsoleStop } from "./console_control.ts";

const scope = globalThis as unknown as {
  postMessage(message: ConsoleWorkerMessage): void;
  onmessage: ((e: MessageEvent<ConsoleWorkerMessage>) => void) | null;
};

let remove: () => void = () => {};

scope.onmessage = (e) => {
  if (e.data.type === "install") {
    try {
      remove = install(Deno.UnsafePointer.create(e.data.event), e.data.deadlineMs);
      scope.postMessage({ type: "ready" });
    } catch (err) {
      scope.postMessage({ type: "failed", error: (err as Error).message });
    }
  } else if (e.data.type === "remove") {
    remove();
    scope.postMessage({ type: "removed" });
  }
};

/** Registers the handler; returns what unregisters it. */
function install(event: Deno.PointerValue, deadlineMs: number): () => void {
  const lib = Deno.dlopen("kernel32.dll", {
    SetConsoleCtrlHandler: { parameters: ["function", "i32"], result: "i32" },
    WaitForSingleObject: { parameters: ["pointer", "u32"], result: "u32" },
    GetLastError: { parameters: [], result: "u32" },
  });
  const handler = Deno.UnsafeCallback.threadSafe(
    { parameters: ["u32"], result: "i32" } as const,
    (code: number) => {
      if (!isConsoleStop(code)) return 0;
      scope.postMessage({ type: "event", code });
      lib.symbols.WaitForSingleObject(event, deadlineMs);
      return 1;
    },
  );
  if (!lib.symbols.SetConsoleCtrlHandler(handler.pointer, 1)) {
    const error = lib.symbols.GetLastError();
    handler.close();
    lib.close();
    throw new Error(`SetConsoleCtrlHandler failed (error ${error})`);
  }
  return () => {
    lib.symbols.SetConsoleCtrlHandler(handler.pointer, 0);
    handler.close();
    lib.close();
  };
}
