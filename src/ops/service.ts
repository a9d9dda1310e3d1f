/**
 * Installing broker-server as a service: one small interface, with the
 * systemd (Linux) and Service Control Manager (Windows) implementations in
 * their own modules.
 * @module
 */

import { V8_FLAGS_ARG } from "../runtime_flags.ts";

/** What a service runs and how it is named. */
export interface ServiceSpec {
  /** SERVICE_NAME. */
  name: string;
  /** SERVICE_DISPLAY_NAME. */
  displayName: string;
  /** The program and its fixed arguments (the compiled executable, or deno run … server.ts). */
  command: string[];
  /** Absolute path of appserver.ini. */
  configPath: string;
  /** How long a stop may take: the drain period (ms). */
  stopTimeoutMs: number;
}

/**
 * The command that starts this program again: the compiled executable
 * itself (its V8 flags are embedded), or `deno run` with the same V8 flags,
 * permissions and entry file when run from source.
 */
export function selfCommand(execPath: string, mainModule: string, fromSource: boolean): string[] {
  if (!fromSource) return [execPath];
  const entry = mainModule.startsWith("file://") ? decodeURIComponent(new URL(mainModule).pathname) : mainModule;
  const path = /^\/[A-Za-z]:\//.test(entry) ? entry.slice(1).replaceAll("/", "\\") : entry;
  return [
    execPath,
    "run",
    V8_FLAGS_ARG,
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys",
    "--allow-run",
    "--allow-ffi",
    path,
  ];
}
