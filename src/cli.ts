/**
 * Command-line handling shared by broker-server and broker-client: argument
 * parsing (with the TOTVS spellings administrators already type), the default
 * configuration path next to the executable, and exit codes.
 * @module
 */

import { parseArgs } from "node:util";
import { basename, dirname, join } from "node:path";

/** Exit code for success. */
export const EXIT_OK = 0;
/** Exit code for a runtime failure (e.g. the port is taken). */
export const EXIT_FAILURE = 1;
/** Exit code for bad arguments or an invalid configuration file. */
export const EXIT_USAGE = 2;

/** Options common to both programs. */
export interface CliOptions {
  /** `--config FILE`. */
  config?: string;
  /** `--driver NAME` (broker-client only). */
  driver?: string;
  /** `--check`: validate, print the effective settings, exit. */
  check: boolean;
  /** `--help`. */
  help: boolean;
  /** `--version`. */
  version: boolean;
  /** `--console` / TOTVS `-d`: log informational lines to the console whatever the file says. */
  console: boolean;
  /** `--log-level`. */
  logLevel: "debug" | "info" | "warning" | "error";
  /** `--log-format`. */
  logFormat: "text" | "json";
}

/** Raised for unusable command-line arguments. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * TOTVS spellings mapped to ours. `-balance_smart_client_desktop` is how an
 * appserver is told to act as this broker; here it is what we always do.
 */
const TOTVS_ALIASES: Record<string, string | null> = {
  "-balance_smart_client_desktop": null,
  "-d": "--console",
  "-debug": "--console",
  "-console": "--console",
};

const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** Parses command-line arguments; throws UsageError with a readable message. */
export function parseCli(args: string[], options: { driver: boolean }): CliOptions {
  const mapped: string[] = [];
  for (const arg of args) {
    const alias = TOTVS_ALIASES[arg.toLowerCase()];
    if (alias === null) continue;
    mapped.push(alias ?? arg);
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: mapped,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: "string", short: "c" },
        ...(options.driver ? { driver: { type: "string" as const } } : {}),
        check: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
        console: { type: "boolean" },
        "log-level": { type: "string" },
        "log-format": { type: "string" },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const logLevel = (v["log-level"] ?? "info") as string;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`Cannot use --log-level "${logLevel}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  const logFormat = (v["log-format"] ?? "text") as string;
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`Cannot use --log-format "${logFormat}": expected text or json`);
  }
  const result: CliOptions = {
    check: v.check === true,
    help: v.help === true,
    version: v.version === true,
    console: v.console === true,
    logLevel: logLevel as CliOptions["logLevel"],
    logFormat,
  };
  if (typeof v.config === "string") result.config = v.config;
  if (typeof v.driver === "string") result.driver = v.driver;
  return result;
}

/** Where the program runs from; injectable for tests. */
export interface ExecLocation {
  /** `Deno.execPath()`: the compiled program, or the deno binary when run from source. */
  execPath: string;
  /** The current directory. */
  cwd: string;
}

/**
 * The default configuration file: next to the executable when compiled
 * (`dist/broker-server.exe` finds `dist/appserver.ini`), in the current
 * directory when run from source with `deno run`.
 */
export function defaultConfigPath(fileName: string, where: ExecLocation): string {
  const exe = basename(where.execPath.replaceAll("\\", "/")).toLowerCase();
  const fromSource = exe === "deno" || exe === "deno.exe";
  if (fromSource) return join(where.cwd, fileName);
  const sep = where.execPath.includes("\\") && !where.execPath.includes("/") ? "\\" : "/";
  const dir = dirname(where.execPath.replaceAll("\\", "/"));
  return sep === "\\" ? `${dir.replaceAll("/", "\\")}\\${fileName}` : join(dir, fileName);
}

/** The running process' location. */
export function currentExecLocation(): ExecLocation {
  return { execPath: Deno.execPath(), cwd: Deno.cwd() };
}
