/**
 * Log settings shared by both configuration files: level, format, and an
 * optional log file with size-based rotation.
 * @module
 */

import { dirname, isAbsolute, join, posix, win32 } from "node:path";
import { readSize } from "./bounds.ts";
import type { SectionReader } from "./section.ts";
import { formatSize } from "./values.ts";

/** Log levels, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;
/** A log level. */
export type LogLevelName = typeof LOG_LEVELS[number];

/** Where and how to log. */
export interface LogSettings {
  /** Lowest level logged. */
  level: LogLevelName;
  /** `text` for people, `json` for log shippers. */
  format: "text" | "json";
  /** Log file (absolute), or null for none. */
  file: string | null;
  /** Rotate the file when it reaches this size (bytes). */
  maxSizeBytes: number;
  /** Rotated files kept besides the current one. */
  maxFiles: number;
}

/** Parses a log level name (`warn` is accepted for `warning`). */
export function parseLogLevel(text: string): LogLevelName {
  const value = text.trim().toLowerCase().replace(/^warn$/, "warning");
  if (!(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new SyntaxError(`expected one of ${LOG_LEVELS.join(", ")}, got "${text}"`);
  }
  return value as LogLevelName;
}

/** Parses a log format. */
export function parseLogFormat(text: string): "text" | "json" {
  const value = text.trim().toLowerCase();
  if (value !== "text" && value !== "json") throw new SyntaxError(`expected text or json, got "${text}"`);
  return value;
}

function parseFileCount(text: string): number {
  const value = text.trim();
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 1000) {
    throw new RangeError(`expected a number of files in 1..1000, got "${text}"`);
  }
  return Number(value);
}

/**
 * Reads LOG_FILE, LOG_MAX_SIZE, LOG_FILES, LOG_LEVEL and LOG_FORMAT. A
 * relative LOG_FILE is taken relative to the configuration file's folder
 * (next to the executable by default); `defaultFile` applies when the key is
 * absent, and `LOG_FILE =` (empty) turns the file off.
 */
export function readLogSettings(section: SectionReader, configPath: string, defaultFile: string | null): LogSettings {
  const entry = section.entry("LOG_FILE");
  const name = entry ? entry.value.trim() : defaultFile;
  const base = dirname(configPath);
  const maxSizeBytes = readSize(section, "LOG_MAX_SIZE", 10 * 1024 * 1024);
  return {
    level: section.value("LOG_LEVEL", parseLogLevel, "info"),
    format: section.value("LOG_FORMAT", parseLogFormat, "text"),
    file: name ? (isAbsolute(name) ? name : join(base, name)) : null,
    maxSizeBytes,
    maxFiles: section.value("LOG_FILES", parseFileCount, 5),
  };
}

/** The settings in words, for `--check`. */
export function describeLogSettings(log: LogSettings): string {
  const file = log.file
    ? `file ${log.file} (rotated at ${formatSize(log.maxSizeBytes)}, ${log.maxFiles} kept)`
    : "no file";
  return `level ${log.level}, ${log.format}, ${file}`;
}

/** The folder, in the user's own folder for program state, where a log goes when its own folder cannot take it. */
export const PER_USER_LOG_FOLDER = "protheus-broker";

/** Where perUserLogFile looks (injectable for tests). */
export interface PerUserLogOptions {
  /** The operating system, as `Deno.build.os`. */
  os: typeof Deno.build.os;
  /** Reads an environment variable. */
  env: (name: string) => string | undefined;
}

/**
 * Where a log named `fileName` goes when the configured one cannot be opened
 * (a desktop user cannot write beside a program in Program Files):
 * `%LOCALAPPDATA%\protheus-broker\` on Windows, `$XDG_STATE_HOME/protheus-broker/`
 * or `~/.local/state/protheus-broker/` elsewhere. Null when the environment
 * names no such folder.
 */
export function perUserLogFile(fileName: string, options: PerUserLogOptions): string | null {
  if (options.os === "windows") {
    const local = options.env("LOCALAPPDATA");
    return local ? win32.join(local, PER_USER_LOG_FOLDER, fileName) : null;
  }
  const state = options.env("XDG_STATE_HOME");
  // The XDG specification: a relative path is invalid and ignored.
  if (state && posix.isAbsolute(state)) return posix.join(state, PER_USER_LOG_FOLDER, fileName);
  const home = options.env("HOME");
  return home ? posix.join(home, ".local", "state", PER_USER_LOG_FOLDER, fileName) : null;
}
