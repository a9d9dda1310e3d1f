/**
 * Installing broker-server as a service: one small interface, with the
 * systemd (Linux) and Service Control Manager (Windows) implementations in
 * their own modules.
 * @module
 */

import { readIniFile } from "../config/ini.ts";
import { BROKER_SECTION, DEFAULT_SERVICE_NAME } from "../config/server_config.ts";
import { runtimeFlags } from "../runtime_flags.ts";

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
  return [execPath, "run", ...runtimeFlags("server"), path];
}

/**
 * SERVICE_NAME from appserver.ini, read alone: `--uninstall` needs nothing
 * else, so a file that is invalid in other ways does not keep a service from
 * being removed. Throws a ConfigError when the file cannot be read.
 */
export async function readServiceName(path: string): Promise<string> {
  const doc = await readIniFile(path);
  const entry = doc.sections.get(BROKER_SECTION.toLowerCase())?.entries
    .find((e) => e.key.toUpperCase() === "SERVICE_NAME");
  return entry ? entry.value.trim() : DEFAULT_SERVICE_NAME;
}
