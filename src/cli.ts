/**
 * Command-line handling shared by broker-server and broker-client: argument
 * parsing (with the TOTVS spellings administrators already type), the default
 * configuration path next to the executable, exit codes, and what both
 * programs print for --help, --version and a start-up error.
 * @module
 */

import { parseArgs } from "node:util";
import { basename } from "node:path";
import { type LogLevelName, parseLogFormat, parseLogLevel } from "./config/logging.ts";
import { ConfigError } from "./config/ini.ts";
import { VERSION } from "./version.ts";

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
  /** `--status`: ask the running broker-client for its status, print it, exit (broker-client only). */
  status: boolean;
  /** `--help`. */
  help: boolean;
  /** `--version`. */
  version: boolean;
  /** `--install` (TOTVS `-install`): install as a service (broker-server only). */
  install: boolean;
  /** `--uninstall` (TOTVS `-remove`): remove the service (broker-server only). */
  uninstall: boolean;
  /** `--service`: started by the Windows Service Control Manager (broker-server only). */
  service: boolean;
  /**
   * `--service-name NAME` (broker-server only): the service `--uninstall`
   * removes, or `--install` creates, instead of SERVICE_NAME (a second
   * service for an upgrade that keeps sessions, docs/cluster.md).
   */
  serviceName?: string;
  /** `--console` / TOTVS `-d`: log informational lines to the console whatever the file says. */
  console: boolean;
  /** `--log-level`, overriding LOG_LEVEL. */
  logLevel?: LogLevelName;
  /** `--log-format`, overriding LOG_FORMAT. */
  logFormat?: "text" | "json";
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
  "-install": "--install",
  "-remove": "--uninstall",
};

/** The flags each program takes, parsed (node's parseArgs); throws UsageError. */
function parseFlags(
  args: string[],
  options: { driver: boolean; service?: boolean; status?: boolean },
): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: "string", short: "c" },
        ...(options.driver ? { driver: { type: "string" as const } } : {}),
        ...(options.status ? { status: { type: "boolean" as const } } : {}),
        ...(options.service
          ? {
            install: { type: "boolean" as const },
            uninstall: { type: "boolean" as const },
            service: { type: "boolean" as const },
            "service-name": { type: "string" as const },
          }
          : {}),
        check: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
        console: { type: "boolean" },
        "log-level": { type: "string" },
        "log-format": { type: "string" },
      },
    }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Parses command-line arguments; throws UsageError with a readable message. */
export function parseCli(
  args: string[],
  options: { driver: boolean; service?: boolean; status?: boolean },
): CliOptions {
  const mapped: string[] = [];
  for (const arg of args) {
    const alias = TOTVS_ALIASES[arg.toLowerCase()];
    if (alias === null) continue;
    mapped.push(alias ?? arg);
  }
  const v = parseFlags(mapped, options);
  const result: CliOptions = {
    check: v.check === true,
    status: v.status === true,
    help: v.help === true,
    version: v.version === true,
    console: v.console === true,
    install: v.install === true,
    uninstall: v.uninstall === true,
    service: v.service === true,
  };
  const flag = <T>(name: string, parse: (text: string) => T): T | undefined => {
    const text = v[name];
    if (typeof text !== "string") return undefined;
    try {
      return parse(text);
    } catch (err) {
      throw new UsageError(`Cannot use --${name}: ${(err as Error).message}`);
    }
  };
  const logLevel = flag("log-level", parseLogLevel);
  const logFormat = flag("log-format", parseLogFormat);
  if (logLevel) result.logLevel = logLevel;
  if (logFormat) result.logFormat = logFormat;
  if (typeof v.config === "string") result.config = v.config;
  if (typeof v.driver === "string") result.driver = v.driver;
  if (typeof v["service-name"] === "string") {
    if (!result.uninstall && !result.install) {
      throw new UsageError("--service-name goes with --install or --uninstall only");
    }
    if (v["service-name"] === "" || /\s/.test(v["service-name"])) {
      throw new UsageError(`--service-name: expected a name without spaces, got "${v["service-name"]}"`);
    }
    result.serviceName = v["service-name"];
  }
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
  const dir = isRunFromSource(where.execPath) ? where.cwd : parentFolder(where.execPath);
  // Keep the path's own style, whatever the OS running this code.
  const sep = dir.includes("\\") && !dir.includes("/") ? "\\" : "/";
  return dir.endsWith(sep) ? `${dir}${fileName}` : `${dir}${sep}${fileName}`;
}

/** The folder part of a path written with / or \\. */
function parentFolder(path: string): string {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut <= 0 ? path.slice(0, cut + 1) || "." : path.slice(0, cut);
}

/** True when the program runs from source under the deno binary, false when compiled. */
export function isRunFromSource(execPath: string): boolean {
  const exe = basename(execPath.replaceAll("\\", "/")).toLowerCase();
  return exe === "deno" || exe === "deno.exe";
}

/** The running process' location. */
export function currentExecLocation(): ExecLocation {
  return { execPath: Deno.execPath(), cwd: Deno.cwd() };
}

/** Prints the answer to --help or --version and returns the exit code; null when neither was asked. */
export function answerHelpOrVersion(cli: CliOptions, program: string, usage: string): number | null {
  if (cli.help) {
    console.log(usage);
    return EXIT_OK;
  }
  if (cli.version) {
    console.log(`${program} ${VERSION}`);
    return EXIT_OK;
  }
  return null;
}

/**
 * Prints a start-up error the user can fix (a bad option, a bad
 * configuration file) and returns EXIT_USAGE; anything else is rethrown.
 * `configHint`: a line printed after a configuration error.
 */
export function usageFailure(err: unknown, program: string, configHint?: string): number {
  if (!(err instanceof UsageError) && !(err instanceof ConfigError)) throw err;
  console.error(`${program}: ${err.message}`);
  if (err instanceof UsageError) console.error(`Run ${program} --help for the options.`);
  else if (configHint) console.error(configHint);
  return EXIT_USAGE;
}
