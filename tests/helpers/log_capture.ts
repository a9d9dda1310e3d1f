/**
 * Captures the brokers' log lines during a test, to check that events are
 * reported (and that payload never is).
 * @module
 */

import { configure, type LogRecord, reset } from "@logtape/logtape";
import { LOG_ROOT } from "../../src/ops/log.ts";

/** Captured lines, as "LEVEL category: message". */
export interface LogCapture extends AsyncDisposable {
  /** Lines so far. */
  lines: string[];
  /** Resolves when a line matching `pattern` has been logged. */
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
}

function render(record: LogRecord): string {
  const message = record.message.map((part) => typeof part === "string" ? part : String(part)).join("");
  return `${record.level.toUpperCase()} ${record.category.join(".")}: ${message}`;
}

/** Starts capturing every log line of the product. */
export async function captureLogs(): Promise<LogCapture> {
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  await configure({
    reset: true,
    sinks: {
      memory: (record: LogRecord) => {
        const line = render(record);
        lines.push(line);
        for (const w of [...waiters]) {
          if (w.pattern.test(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      },
    },
    loggers: [
      { category: [LOG_ROOT], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  return {
    lines,
    waitFor(pattern, ms = 10_000) {
      const found = lines.find((l) => pattern.test(l));
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`No log line matching ${pattern} within ${ms} ms`)), ms);
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
      });
    },
    async [Symbol.asyncDispose]() {
      await reset();
    },
  };
}
