/**
 * Logging setup on LogTape: one place that decides where log lines go and
 * in which format, for both programs: the console (informational lines only
 * when wanted; warnings and errors always) and an optional rotating file.
 * @module
 */

import {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  reset,
  type Sink,
  withFilter,
} from "@logtape/logtape";
import { getRotatingFileSink } from "@logtape/file";
import { dirname } from "node:path";
import type { LogLevelName, LogSettings } from "../config/logging.ts";
import { peerText } from "./peer_text.ts";

/** Root category of every logger in this product. */
export const LOG_ROOT = "broker";

/** How logging is set up at start. */
export interface LoggingOptions {
  /** Print informational lines on the console (warnings and errors always are). */
  console: boolean;
  /** Lowest level logged. */
  level: LogLevelName;
  /** `text` for people, `json` for log shippers (one JSON object a line). */
  format: "text" | "json";
  /** A log file with size-based rotation, if any. */
  file?: { path: string; maxSizeBytes: number; maxFiles: number } | null;
}

/** A logger under the product's root category, e.g. `logger("server")`. */
export function logger(...category: string[]): Logger {
  return getLogger([LOG_ROOT, ...category]);
}

/**
 * The logging options for a program from its configured LogSettings, with
 * `--log-level` / `--log-format` taking precedence when given.
 */
export function loggingFrom(
  settings: LogSettings,
  console: boolean,
  overrides: { logLevel?: LogLevelName; logFormat?: "text" | "json" },
): LoggingOptions {
  return {
    console,
    level: overrides.logLevel ?? settings.level,
    format: overrides.logFormat ?? settings.format,
    file: settings.file
      ? { path: settings.file, maxSizeBytes: settings.maxSizeBytes, maxFiles: settings.maxFiles }
      : null,
  };
}

/** Configures LogTape for the process; call once at start. Throws when the log file cannot be opened. */
export async function setupLogging(options: LoggingOptions): Promise<void> {
  const formatter = options.format === "json" ? getJsonLinesFormatter() : getTextFormatter({
    timestamp: "date-time-tz",
    category: ".",
    // Strings unquoted (session ids and addresses read better so), but with
    // control characters escaped: whatever a value holds, it cannot start a
    // line of its own. Text from the network is also capped where it enters
    // (see peerText).
    value: (v: unknown) => typeof v === "string" ? peerText(v, { maxChars: Infinity }) : Deno.inspect(v),
  });
  const sinks: Record<string, Sink> = {
    console: options.console ? getConsoleSink({ formatter }) : withFilter(getConsoleSink({ formatter }), "warning"),
  };
  if (options.file) {
    const { path, maxSizeBytes, maxFiles } = options.file;
    try {
      await Deno.mkdir(dirname(path), { recursive: true });
      sinks.file = getRotatingFileSink(path, {
        formatter,
        // Each line reaches the disk at once: an administrator tailing the log
        // (or reading it after a crash) must see the latest events.
        bufferSize: 0,
        maxSize: maxSizeBytes,
        maxFiles,
      });
    } catch (err) {
      throw new Error(`Cannot open the log file "${path}": ${(err as Error).message}`);
    }
  }
  await configure({
    reset: true,
    sinks,
    loggers: [
      { category: [LOG_ROOT], lowestLevel: options.level, sinks: Object.keys(sinks) },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

/**
 * setupLogging for a program that must run whatever happens to its log file:
 * when the file cannot be opened, each of `fallbacks` is tried in turn, then
 * the console alone (informational lines included: nothing else keeps them).
 * Resolves to what was done instead, in words (null when the configured file
 * opened), for the program to log as a warning.
 */
export async function setupLoggingWithFallback(options: LoggingOptions, fallbacks: string[]): Promise<string | null> {
  const file = options.file;
  if (!file) {
    await setupLogging(options);
    return null;
  }
  const problems: string[] = [];
  for (const path of [file.path, ...fallbacks]) {
    try {
      await setupLogging({ ...options, file: { ...file, path } });
      return problems.length > 0 ? `${problems.join("; ")}; logging to "${path}" instead` : null;
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  await setupLogging({ ...options, console: true, file: null });
  return `${problems.join("; ")}; logging to the console only`;
}

/** Undoes setupLogging, flushing and closing the log file. */
export async function teardownLogging(): Promise<void> {
  await reset();
}
