/**
 * Logging setup on LogTape: one place that decides where log lines go and
 * in which format, for both programs.
 * @module
 */

import {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogLevel,
  reset,
} from "@logtape/logtape";

/** Root category of every logger in this product. */
export const LOG_ROOT = "broker";

/** How logging is set up at start. */
export interface LoggingOptions {
  /** Print informational lines on the console (warnings and errors always are). */
  console: boolean;
  /** Lowest level logged. */
  level: LogLevel;
  /** `text` for people, `json` for log shippers (one JSON object a line). */
  format: "text" | "json";
}

/** A logger under the product's root category, e.g. `logger("server")`. */
export function logger(...category: string[]): Logger {
  return getLogger([LOG_ROOT, ...category]);
}

/** Configures LogTape for the process; call once at start. */
export async function setupLogging(options: LoggingOptions): Promise<void> {
  const formatter = options.format === "json" ? getJsonLinesFormatter() : getTextFormatter({
    timestamp: "date-time-tz",
    category: ".",
    // Strings as they are: session ids and addresses read better unquoted.
    value: (v: unknown) => typeof v === "string" ? v : Deno.inspect(v),
  });
  await configure({
    reset: true,
    sinks: { console: getConsoleSink({ formatter }) },
    loggers: [
      {
        category: [LOG_ROOT],
        lowestLevel: options.console ? options.level : "warning",
        sinks: ["console"],
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

/** Undoes setupLogging (tests and shutdown). */
export async function teardownLogging(): Promise<void> {
  await reset();
}
