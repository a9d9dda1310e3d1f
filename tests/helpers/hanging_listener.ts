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

/** Listeners whose connects hang until `release()` (tests/fixtures/delayed_accept_listener.py). */
export interface DelayedAcceptListeners extends AsyncDisposable {
  /** Their ports on 127.0.0.1. */
  ports: number[];
  /** From now on connects complete (at their next SYN retransmission) and stay open. */
  release(): Promise<void>;
}

/** Starts `count` listeners whose connects hang until released; Linux with python3 only (see canHangConnects). */
export async function startDelayedAcceptListeners(count: number): Promise<DelayedAcceptListeners> {
  const child = new Deno.Command("python3", {
    args: [new URL("../fixtures/delayed_accept_listener.py", import.meta.url).pathname, String(count)],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  const writer = child.stdin.getWriter();
  const stop = async () => {
    child.kill("SIGKILL");
    await writer.close().catch(() => {});
    await reader.cancel();
    await child.status;
  };
  try {
    const { value } = await reader.read();
    const ports = new TextDecoder().decode(value).trim().split(" ").map(Number);
    return {
      ports,
      release: () => writer.write(new TextEncoder().encode("go\n")),
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Sockets of this host in SYN_SENT toward 127.0.0.1 at one of `ports`
 * (/proc/net/tcp, Linux): connects that have started and not completed.
 */
export async function connectsPending(ports: number[]): Promise<number> {
  // Read by a child process: reading /proc from Deno takes --allow-all.
  const out = await new Deno.Command("cat", { args: ["/proc/net/tcp"], stderr: "null" }).output();
  const text = new TextDecoder().decode(out.stdout);
  const wanted = new Set(ports.map((p) => `0100007F:${p.toString(16).toUpperCase().padStart(4, "0")}`));
  return text.split("\n").slice(1).filter((line) => {
    const [, , remote, state] = line.trim().split(/\s+/);
    return state === "02" && remote !== undefined && wanted.has(remote);
  }).length;
}
