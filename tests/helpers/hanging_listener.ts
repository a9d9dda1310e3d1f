/**
 * A listener whose connects hang (tests/fixtures/hanging_listener.py: a full
 * accept queue, so SYNs go unanswered), for tests of connect deadlines.
 * Linux with python3 only.
 * @module
 */

/** Whether the hanging listener can run here (Linux, with python3). */
export const canHangConnects: boolean = Deno.build.os === "linux" && (() => {
  try {
    return new Deno.Command("python3", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
})();

/** Starts a hanging listener on 127.0.0.1:`port` (any free port when absent); disposing of it stops it. */
export async function startHangingListener(port?: number): Promise<{ port: number } & AsyncDisposable> {
  const child = new Deno.Command("python3", {
    args: [new URL("../fixtures/hanging_listener.py", import.meta.url).pathname, ...(port ? [String(port)] : [])],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  const stop = async () => {
    child.kill("SIGKILL");
    await reader.cancel();
    await child.status;
  };
  try {
    const { value } = await reader.read();
    return { port: Number(new TextDecoder().decode(value).trim()), [Symbol.asyncDispose]: stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
