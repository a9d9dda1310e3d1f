/**
 * broker-server as a systemd service on Linux: the unit file (pure text
 * from a spec, tested byte for byte) and install/uninstall steps that either
 * complete or undo themselves, and that never touch a unit broker-server did
 * not write.
 * @module
 */

import { join } from "node:path";
import type { ServiceSpec } from "./service.ts";
import { VERSION } from "../version.ts";

/**
 * How every unit broker-server writes begins (its first line, with the
 * version after it): uninstall and "already installed" go by it.
 */
const UNIT_MARK = "# Installed by broker-server ";

/**
 * Folders systemd loads system units from (relative to the root), most
 * specific first: a unit of the same name in any of them would be shadowed
 * by ours, so the name counts as taken.
 */
const UNIT_FOLDERS = [
  "etc/systemd/system",
  "run/systemd/system",
  "run/systemd/transient",
  "run/systemd/generator",
  "run/systemd/generator.late",
  "usr/local/lib/systemd/system",
  "usr/lib/systemd/system",
  "lib/systemd/system",
];

/** Quotes one ExecStart word the way systemd reads it (spaces, quotes, control characters, %, $). */
export function systemdQuote(word: string): string {
  const escaped = word.replace(/%/g, "%%").replace(/\$/g, "$$$$");
  if (!/[\s"'\\\p{Cc}]/u.test(escaped) && escaped !== "") return escaped;
  const quoted = escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')
    .replace(/\p{Cc}/gu, (c) => {
      const code = c.charCodeAt(0);
      return code < 0x80 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    });
  return `"${quoted}"`;
}

/**
 * SERVICE_DISPLAY_NAME as a `Description=` value: `%` escaped (systemd reads
 * `%x` as a specifier). systemd has no escape for a final backslash (it joins
 * the next line, swallowing a directive) nor for control characters, so
 * those are refused.
 */
function systemdDescription(displayName: string): string {
  if (/\p{Cc}/u.test(displayName)) {
    throw new RangeError(
      `Cannot write SERVICE_DISPLAY_NAME into a systemd unit: it holds a control character, got ${
        JSON.stringify(displayName)
      }`,
    );
  }
  if (displayName.endsWith("\\")) {
    throw new RangeError(
      `Cannot write SERVICE_DISPLAY_NAME into a systemd unit: a final backslash would join the next line to Description=, got "${displayName}"`,
    );
  }
  return displayName.replace(/%/g, "%%");
}

/** Refuses a SERVICE_NAME that is not a plain systemd unit name (it becomes a file name under /etc). */
function checkUnitName(name: string): void {
  if (!/^[A-Za-z0-9:_.-]+$/.test(name) || name.startsWith(".") || name.length > 240) {
    throw new RangeError(
      `Cannot use SERVICE_NAME "${name}" as a systemd unit name: expected letters, digits, "_", "-", ":" and "."`,
    );
  }
}

/**
 * The unit file for `spec`. The stop has no systemd deadline
 * (`TimeoutStopSec=infinity`): broker-server bounds its own stop by the
 * DRAIN_TIMEOUT in force when the stop begins, so raising DRAIN_TIMEOUT later
 * (by a reload or a restart) never gets it killed in the middle of a drain.
 * `NotifyAccess=all` lets the process that takes over after SIGUSR2 tell
 * systemd that it is the main process now (src/server/upgrade.ts).
 */
export function systemdUnit(spec: ServiceSpec): string {
  checkUnitName(spec.name);
  const exec = [...spec.command, "--config", spec.configPath].map(systemdQuote).join(" ");
  return `${UNIT_MARK}${VERSION}; remove it with broker-server --uninstall.
[Unit]
Description=${systemdDescription(spec.displayName)}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${exec}
ExecReload=/bin/kill -HUP $MAINPID
# Upgrades that keep sessions (CLUSTER_KEY, docs/cluster.md): install the new
# version as a second unit (broker-server --install --service-name NAME) and
# start it; this one exits by itself once its sessions end. Or in place:
# replace the executable, then systemctl kill --signal=SIGUSR2
# --kill-whom=main on this unit; the new process takes over and runs
# systemd-notify --pid to become the main process, which systemd accepts
# only from a process of the unit with NotifyAccess=all.
NotifyAccess=all
Restart=on-failure
RestartSec=2
# Stop: SIGTERM; broker-server drains live sessions for DRAIN_TIMEOUT (the
# value in force at the stop) and exits by itself within DRAIN_TIMEOUT + 10 s.
KillSignal=SIGTERM
TimeoutStopSec=infinity
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

/** A unit file found on the system, and whether broker-server wrote it. */
interface FoundUnit {
  /** Where it is. */
  path: string;
  /** True when broker-server wrote it (it starts with UNIT_MARK). */
  ours: boolean;
  /** What it runs, in words, for messages. */
  what: string;
}

/** Looks at one path (a unit file, or a SysV init script when `script`): null when nothing is there. */
async function inspectUnit(path: string, script = false): Promise<FoundUnit | null> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  if (info.isSymlink) {
    return { path, ours: false, what: `a link to ${await Deno.readLink(path).catch(() => "an unreadable target")}` };
  }
  if (!info.isFile) return { path, ours: false, what: "not a regular file" };
  const text = await Deno.readTextFile(path);
  const exec = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => /^ExecStart\s*=/.test(l));
  const what = script ? "a SysV init script" : exec.length > 0 ? exec.join("; ") : "no ExecStart";
  return { path, ours: text.startsWith(UNIT_MARK), what };
}

/** The unit (or SysV init script) that holds `name` on this system, if any, most specific first. */
async function findUnit(host: SystemdHost, name: string): Promise<FoundUnit | null> {
  for (const folder of UNIT_FOLDERS) {
    const found = await inspectUnit(join(host.root, folder, `${name}.service`));
    if (found) return found;
  }
  return await inspectUnit(join(host.root, "etc", "init.d", name), true);
}

/** Writes, reloads and enables the unit; on any failure removes what it did. Returns what it did, in words. */
export async function installSystemd(spec: ServiceSpec, host: SystemdHost): Promise<string[]> {
  const unit = systemdUnit(spec);
  if (!host.isRoot) {
    throw new Error(`Installing the systemd service ${spec.name} needs root: run it again with sudo`);
  }
  const path = unitPath(host, spec.name);
  const existing = await findUnit(host, spec.name);
  if (existing?.ours && existing.path === path) {
    throw new Error(`The service ${spec.name} is already installed (${path}): run --uninstall first`);
  }
  if (existing) {
    throw new Error(
      `The service name ${spec.name} is taken by another service (${existing.path}: ${existing.what}): choose another SERVICE_NAME`,
    );
  }
  await Deno.mkdir(join(host.root, "etc", "systemd", "system"), { recursive: true });
  const temporary = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(temporary, unit);
  await Deno.rename(temporary, path);
  const done = [`wrote ${path}`];
  if (!host.systemdRunning) {
    done.push(
      `systemd is not running here: enable it later with systemctl daemon-reload && systemctl enable ${spec.name}.service`,
    );
    return done;
  }
  // The unit's full name: "NAME" alone would be another unit for a NAME that
  // ends like one (ssh.socket, multi-user.target).
  for (const args of [["daemon-reload"], ["enable", `${spec.name}.service`]]) {
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
  done.push(`start it with: systemctl start ${spec.name}.service`);
  return done;
}

/** Stops, disables and removes the unit, if broker-server wrote it; refuses any other. */
export async function uninstallSystemd(name: string, host: SystemdHost): Promise<string[]> {
  checkUnitName(name);
  const path = unitPath(host, name);
  const found = await inspectUnit(path) ?? await findUnit(host, name);
  if (!found) throw new Error(`The service ${name} is not installed (no ${path})`);
  if (!found.ours || found.path !== path) {
    throw new Error(
      `Refusing to remove the service ${name}: broker-server did not install it (${found.path}: ${found.what}); it was left as it is`,
    );
  }
  if (!host.isRoot) throw new Error(`Removing the systemd service ${name} needs root: run it again with sudo`);
  const done: string[] = [];
  if (host.systemdRunning) {
    await host.systemctl(["disable", "--now", `${name}.service`]);
    done.push(`systemctl disable --now ${name}.service`);
  }
  await Deno.remove(path);
  done.push(`removed ${path}`);
  if (host.systemdRunning) {
    await host.systemctl(["daemon-reload"]);
    done.push("systemctl daemon-reload");
  }
  return done;
}
