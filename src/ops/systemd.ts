/**
 * broker-server as a systemd service on Linux: the unit file (pure text
 * from a spec, tested byte for byte) and install/uninstall steps that either
 * complete or undo themselves.
 * @module
 */

import { join } from "node:path";
import type { ServiceSpec } from "./service.ts";

/** Quotes one ExecStart word the way systemd reads it (spaces, quotes, %, $). */
export function systemdQuote(word: string): string {
  const escaped = word.replace(/%/g, "%%").replace(/\$/g, "$$$$");
  if (!/[\s"'\\]/.test(escaped) && escaped !== "") return escaped;
  return `"${escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The unit file for `spec`. */
export function systemdUnit(spec: ServiceSpec): string {
  const exec = [...spec.command, "--config", spec.configPath].map(systemdQuote).join(" ");
  return `# Installed by broker-server --install; remove with broker-server --uninstall.
[Unit]
Description=${spec.displayName.replace(/\n/g, " ")}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${exec}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# Stop: SIGTERM, then the drain period (DRAIN_TIMEOUT) for live sessions.
KillSignal=SIGTERM
TimeoutStopSec=${Math.ceil(spec.stopTimeoutMs / 1000) + 10}
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}

/** How the systemd steps touch the system (injectable for tests). */
export interface SystemdHost {
  /** Folder that holds /etc/systemd/system (normally "/"). */
  root: string;
  /** True when running as root. */
  isRoot: boolean;
  /** True when systemd runs (so daemon-reload and enable make sense). */
  systemdRunning: boolean;
  /** Runs systemctl with arguments; resolves to its exit code and stderr. */
  systemctl(args: string[]): Promise<{ code: number; stderr: string }>;
}

/** The real host. */
export function realSystemdHost(): SystemdHost {
  let running = false;
  try {
    running = Deno.statSync("/run/systemd/system").isDirectory;
  } catch {
    running = false;
  }
  return {
    root: "/",
    isRoot: Deno.uid() === 0,
    systemdRunning: running,
    async systemctl(args) {
      const out = await new Deno.Command("systemctl", { args, stdout: "null", stderr: "piped" }).output();
      return { code: out.code, stderr: new TextDecoder().decode(out.stderr).trim() };
    },
  };
}

function unitPath(host: SystemdHost, name: string): string {
  return join(host.root, "etc", "systemd", "system", `${name}.service`);
}

/** Writes, reloads and enables the unit; on any failure removes what it did. Returns what it did, in words. */
export async function installSystemd(spec: ServiceSpec, host: SystemdHost): Promise<string[]> {
  if (!host.isRoot) {
    throw new Error(`Installing the systemd service ${spec.name} needs root: run it again with sudo`);
  }
  const path = unitPath(host, spec.name);
  try {
    await Deno.stat(path);
    throw new Error(`The service ${spec.name} is already installed (${path}): run --uninstall first`);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.mkdir(join(host.root, "etc", "systemd", "system"), { recursive: true });
  const temporary = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(temporary, systemdUnit(spec));
  await Deno.rename(temporary, path);
  const done = [`wrote ${path}`];
  if (!host.systemdRunning) {
    done.push(
      "systemd is not running here: enable it later with systemctl daemon-reload && systemctl enable " + spec.name,
    );
    return done;
  }
  for (const args of [["daemon-reload"], ["enable", spec.name]]) {
    const result = await host.systemctl(args);
    if (result.code !== 0) {
      await Deno.remove(path).catch(() => {});
      await host.systemctl(["daemon-reload"]);
      throw new Error(
        `systemctl ${args.join(" ")} failed (${result.stderr || `exit ${result.code}`}); the unit was removed again`,
      );
    }
    done.push(`systemctl ${args.join(" ")}`);
  }
  done.push(`start it with: systemctl start ${spec.name}`);
  return done;
}

/** Stops, disables and removes the unit. */
export async function uninstallSystemd(name: string, host: SystemdHost): Promise<string[]> {
  if (!host.isRoot) throw new Error(`Removing the systemd service ${name} needs root: run it again with sudo`);
  const path = unitPath(host, name);
  try {
    await Deno.stat(path);
  } catch {
    throw new Error(`The service ${name} is not installed (no ${path})`);
  }
  const done: string[] = [];
  if (host.systemdRunning) {
    await host.systemctl(["disable", "--now", name]);
    done.push(`systemctl disable --now ${name}`);
  }
  await Deno.remove(path);
  done.push(`removed ${path}`);
  if (host.systemdRunning) {
    await host.systemctl(["daemon-reload"]);
    done.push("systemctl daemon-reload");
  }
  return done;
}
