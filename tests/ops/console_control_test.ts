/**
 * The Windows console control handler: which events stop the programs, and
 * (under the Windows build of Deno: deno task test:windows) that a
 * CTRL_CLOSE_EVENT stops broker-server and broker-client gracefully and
 * holds Windows' handler thread until the stop is complete, that a
 * CTRL_SHUTDOWN_EVENT does too, and that Ctrl-C still reaches Deno's SIGINT
 * with the handler in place. Windows delivers
 * console events by starting a thread at kernelbase's CtrlRoutine in the
 * process; the tests do the same with CreateThread / CreateRemoteThread,
 * since GenerateConsoleCtrlEvent only sends Ctrl-C and Ctrl-Break.
 */
import { equal, match, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  ConsoleEvent,
  consoleEventName,
  describeConsoleStop,
  isConsoleStop,
  watchConsoleStop,
} from "../../src/ops/console_control.ts";
import { freePort } from "../helpers/apps.ts";

const onWindows = Deno.build.os === "windows";
if (!onWindows) {
  console.log("Skipping the console control handler's Windows tests: they need Windows (run deno task test:windows)");
}

Deno.test("close, logoff and shutdown stop the programs; Ctrl-C and Ctrl-Break are left to Deno's handler", () => {
  equal(isConsoleStop(ConsoleEvent.Close), true);
  equal(isConsoleStop(ConsoleEvent.Logoff), true);
  equal(isConsoleStop(ConsoleEvent.Shutdown), true);
  equal(isConsoleStop(ConsoleEvent.CtrlC), false);
  equal(isConsoleStop(ConsoleEvent.CtrlBreak), false);
  equal(isConsoleStop(3), false);
  equal(consoleEventName(2), "CTRL_CLOSE_EVENT");
  equal(consoleEventName(9), "console event 9");
  equal(describeConsoleStop(ConsoleEvent.Close), "the console window is closing (CTRL_CLOSE_EVENT)");
  equal(describeConsoleStop(ConsoleEvent.Logoff), "the user is logging off (CTRL_LOGOFF_EVENT)");
  equal(describeConsoleStop(ConsoleEvent.Shutdown), "Windows is shutting down (CTRL_SHUTDOWN_EVENT)");
});

Deno.test({
  name: "elsewhere than Windows the console watch does nothing",
  ignore: onWindows,
  async fn() {
    await using watch = await watchConsoleStop();
    equal(watch.problem, null);
    equal(watch.signal.aborted, false);
    watch.finished();
  },
});

/** kernel32's thread and process calls, and the address of kernelbase's CtrlRoutine. */
function kernel32() {
  const lib = Deno.dlopen("kernel32.dll", {
    GetModuleHandleW: { parameters: ["buffer"], result: "pointer" },
    GetProcAddress: { parameters: ["pointer", "buffer"], result: "pointer" },
    CreateThread: { parameters: ["pointer", "usize", "pointer", "pointer", "u32", "pointer"], result: "pointer" },
    OpenProcess: { parameters: ["u32", "i32", "u32"], result: "pointer" },
    CreateRemoteThread: {
      parameters: ["pointer", "pointer", "usize", "pointer", "pointer", "u32", "pointer"],
      result: "pointer",
    },
    WaitForSingleObject: { parameters: ["pointer", "u32"], result: "u32", nonblocking: true },
    CloseHandle: { parameters: ["pointer"], result: "i32" },
  });
  const name = new Uint16Array([..."kernelbase.dll"].map((c) => c.charCodeAt(0)).concat(0));
  const module = lib.symbols.GetModuleHandleW(name);
  const ctrlRoutine = lib.symbols.GetProcAddress(module, new TextEncoder().encode("CtrlRoutine\0"));
  ok(ctrlRoutine, "kernelbase.dll exports CtrlRoutine");
  return { lib, ctrlRoutine };
}

const WAIT_OBJECT_0 = 0;
const WAIT_TIMEOUT = 258;

Deno.test({
  name: "a CTRL_CLOSE_EVENT aborts the watch and holds Windows' thread until the stop is finished",
  ignore: !onWindows,
  async fn() {
    const { lib, ctrlRoutine } = kernel32();
    try {
      await using watch = await watchConsoleStop();
      equal(watch.problem, null);
      const thread = lib.symbols.CreateThread(null, 0n, ctrlRoutine, Deno.UnsafePointer.create(2n), 0, null);
      ok(thread, "CreateThread");
      await new Promise<void>((resolve) => watch.signal.addEventListener("abort", () => resolve(), { once: true }));
      equal(watch.signal.reason, "the console window is closing (CTRL_CLOSE_EVENT)");
      equal(await lib.symbols.WaitForSingleObject(thread, 300), WAIT_TIMEOUT, "the handler waits for the stop");
      watch.finished();
      equal(await lib.symbols.WaitForSingleObject(thread, 5_000), WAIT_OBJECT_0, "the handler returned");
      lib.symbols.CloseHandle(thread);
    } finally {
      lib.close();
    }
  },
});

/** Collects a child's stdout and stderr, and waits for a line. */
function outputOf(child: Deno.ChildProcess): { text(): string; waitFor(re: RegExp): Promise<void> } {
  let text = "";
  const decoder = new TextDecoder();
  let changed = () => {};
  for (const stream of [child.stdout, child.stderr]) {
    (async () => {
      for await (const chunk of stream) {
        text += decoder.decode(chunk, { stream: true });
        changed();
      }
    })();
  }
  return {
    text: () => text,
    async waitFor(re) {
      const deadline = Date.now() + 30_000;
      while (!re.test(text)) {
        if (Date.now() > deadline) throw new Error(`Timed out waiting for ${re} in:\n${text}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 200);
          changed = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    },
  };
}

/** Starts `entry` (server.ts or client.ts) with `config`, sends it console `event`, and returns its exit code and output. */
async function sendConsoleEvent(
  entry: string,
  config: string,
  event: number,
  stopped: RegExp,
): Promise<{ code: number; text: string }> {
  const path = fileURLToPath(new URL(`../../${entry}`, import.meta.url));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, "--config", config, "--console", "--log-level", "debug"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = outputOf(child);
  const { lib, ctrlRoutine } = kernel32();
  try {
    await output.waitFor(/Console control handler in place/);
    const PROCESS_ALL_ACCESS = 0x1f_ffff;
    const process = lib.symbols.OpenProcess(PROCESS_ALL_ACCESS, 0, child.pid);
    ok(process, "OpenProcess");
    const thread = lib.symbols.CreateRemoteThread(
      process,
      null,
      0n,
      ctrlRoutine,
      Deno.UnsafePointer.create(BigInt(event)),
      0,
      null,
    );
    ok(thread, "CreateRemoteThread");
    await output.waitFor(stopped);
    const status = await child.status;
    lib.symbols.CloseHandle(thread);
    lib.symbols.CloseHandle(process);
    return { code: status.code, text: output.text() };
  } catch (err) {
    child.kill();
    await child.status;
    throw err;
  } finally {
    lib.close();
  }
}

/** A folder with an appserver.ini for a broker-server on the loopback. */
async function serverFolder(): Promise<{ dir: string; config: string }> {
  const dir = await Deno.makeTempDir();
  const config = `${dir}\\appserver.ini`;
  await Deno.writeTextFile(
    config,
    [
      "[BALANCE_SMART_CLIENT_DESKTOP]",
      "LOCAL_SERVER_ADDRESS = 127.0.0.1",
      `LOCAL_SERVER_PORT = ${freePort()}`,
      `REMOTE_SERVER_01 = 127.0.0.1 ${freePort()}`,
      "HEALTH_CHECK_INTERVAL = 0",
      "STATUS_PORT = 0",
    ].join("\r\n"),
  );
  return { dir, config };
}

Deno.test({
  name: "closing broker-server's console window stops it gracefully, exit code 0",
  ignore: !onWindows,
  async fn() {
    const { dir, config } = await serverFolder();
    const { code, text } = await sendConsoleEvent("server.ts", config, ConsoleEvent.Close, /broker-server stopped/);
    await Deno.remove(dir, { recursive: true });
    match(text, /the console window is closing \(CTRL_CLOSE_EVENT\): broker-server is stopping/);
    equal(code, 0, text);
  },
});

Deno.test({
  name: "closing broker-client's console window stops it gracefully, exit code 0",
  ignore: !onWindows,
  async fn() {
    const dir = await Deno.makeTempDir();
    const config = `${dir}\\smartclient.ini`;
    await Deno.writeTextFile(
      config,
      `[drivers]\r\nactive=b\r\n[b]\r\nserver=127.0.0.1\r\nport=${freePort()}\r\nBrokerProxy=1\r\n` +
        `BrokerServer=127.0.0.1:${freePort()}\r\nLOG_FILE=\r\n`,
    );
    const { code, text } = await sendConsoleEvent("client.ts", config, ConsoleEvent.Close, /broker-client stopped/);
    await Deno.remove(dir, { recursive: true });
    match(text, /the console window is closing \(CTRL_CLOSE_EVENT\): broker-client is stopping/);
    equal(code, 0, text);
  },
});

Deno.test({
  name: "Ctrl-C still reaches broker-server's SIGINT stop with the console handler in place, exit code 0",
  ignore: !onWindows,
  async fn() {
    const { dir, config } = await serverFolder();
    const { code, text } = await sendConsoleEvent("server.ts", config, ConsoleEvent.CtrlC, /broker-server stopped/);
    await Deno.remove(dir, { recursive: true });
    equal(/_EVENT\)/.test(text), false, `the console handler let Ctrl-C pass:\n${text}`);
    equal(code, 0, text);
  },
});

Deno.test({
  name: "a shutdown (CTRL_SHUTDOWN_EVENT) stops broker-server gracefully, exit code 0",
  ignore: !onWindows,
  async fn() {
    const { dir, config } = await serverFolder();
    const { code, text } = await sendConsoleEvent("server.ts", config, ConsoleEvent.Shutdown, /broker-server stopped/);
    await Deno.remove(dir, { recursive: true });
    match(text, /Windows is shutting down \(CTRL_SHUTDOWN_EVENT\): broker-server is stopping/);
    equal(code, 0, text);
  },
});
