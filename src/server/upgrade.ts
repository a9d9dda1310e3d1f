/**
 * Upgrading broker-server in place on Linux: SIGUSR2 makes the running
 * process start its successor (the executable now at its path, with the
 * same arguments), which takes over through the cluster port
 * (docs/cluster.md); under systemd the successor then tells systemd that it
 * is the service's main process.
 * @module
 */

import { isRunFromSource } from "../cli.ts";
import { logger } from "../ops/log.ts";
import { selfCommand } from "../ops/service.ts";

const log = logger("server");

/**
 * On SIGUSR2 (not on Windows), starts a successor with `args`; without a
 * cluster (`enabled` false) says why it cannot, rather than letting the
 * signal end the process. Dispose to stop listening.
 */
export function watchUpgradeSignal(args: string[], enabled: boolean): Disposable {
  if (Deno.build.os === "windows") return { [Symbol.dispose]: () => {} };
  const listener = () => {
    if (!enabled) {
      log.warn("SIGUSR2 ignored: an upgrade that keeps sessions needs CLUSTER_KEY in appserver.ini (docs/cluster.md)");
      return;
    }
    const [program, ...rest] = selfCommand(Deno.execPath(), Deno.mainModule, isRunFromSource(Deno.execPath()));
    try {
      const child = new Deno.Command(program as string, {
        args: [...rest, ...args],
        stdin: "null",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
      child.unref();
      log.info("SIGUSR2: started broker-server {program} (pid {pid}) to take over from this process", {
        program,
        pid: child.pid,
      });
    } catch (err) {
      log.error("SIGUSR2: cannot start a new broker-server process: {error}", { error: (err as Error).message });
    }
  };
  Deno.addSignalListener("SIGUSR2", listener);
  return { [Symbol.dispose]: () => Deno.removeSignalListener("SIGUSR2", listener) };
}

/** Under systemd (NOTIFY_SOCKET set), tells it that this process is now the service's main process. */
export async function announceMainProcess(): Promise<void> {
  if (Deno.build.os === "windows" || !Deno.env.get("NOTIFY_SOCKET")) return;
  try {
    const { code, stderr } = await new Deno.Command("systemd-notify", { args: [`--pid=${Deno.pid}`], stdout: "null" })
      .output();
    if (code !== 0) throw new Error(new TextDecoder().decode(stderr).trim() || `exit code ${code}`);
    log.info("Told systemd that pid {pid} is the service's main process now", { pid: Deno.pid });
  } catch (err) {
    log.warn("Cannot tell systemd the new main process (systemd-notify --pid={pid}): {error}", {
      pid: Deno.pid,
      error: (err as Error).message,
    });
  }
}
