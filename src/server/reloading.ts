/**
 * broker-server's configuration reloads, one at a time: reads the file once
 * it has settled, sorts its changes by when they take effect (RELOAD_RULES in
 * reload.ts), applies the log settings first, hands the rest to the server,
 * and logs what changed.
 * @module
 */

import type { ServerConfig } from "../config/server_config.ts";
import { formatDuration } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import { appliedMessage, keepRunningValue, keyChanges, readSettledConfig, restartMessage } from "./reload.ts";

const log = logger("server");

/** Options of a Reloader. */
export interface ReloaderOptions {
  /** The configuration in force. */
  current: () => ServerConfig;
  /** Where the server listens now (host:port), for the lines about keys that take a restart. */
  running: () => string;
  /** Aborted when the server shuts down. */
  signal: AbortSignal;
  /** How long a file that weakens security must read the same (ms). */
  settleMs: number;
  /** Applies reloaded log settings; null when those keys take a restart. */
  applyLogging: ((config: ServerConfig) => Promise<void>) | null;
  /**
   * Applies `next` to the running server; `applied` are the lines for the
   * keys applied so far. Resolves to every line saying what changed.
   */
  apply: (next: ServerConfig, old: ServerConfig, applied: string[]) => Promise<string[]>;
  /** Clock in ms. */
  now: () => number;
}

/** How a reloaded file's changes sort out. */
interface SortedChanges {
  /** Keys that take a restart or a re-install (they keep their running value). */
  pending: string[];
  /** Lines for keys applied at once. */
  applied: string[];
  /** Lines for the log settings. */
  logging: string[];
}

/** Runs configuration reloads one at a time. */
export class Reloader {
  #server: ReloaderOptions;
  #reloading: Promise<unknown> = Promise.resolve();
  #reloadedAt: number | null = null;
  #pendingRestart: string[] = [];

  /** A reloader for the server that `options` describe. */
  constructor(options: ReloaderOptions) {
    this.#server = options;
  }

  /** When a reload last applied the file (clock ms), or null. */
  get reloadedAt(): number | null {
    return this.#reloadedAt;
  }

  /** Keys changed in the file that take a restart or a re-install. */
  get pendingRestart(): readonly string[] {
    return this.#pendingRestart;
  }

  /** Settles once the reload under way (if any) is over. */
  get idle(): Promise<unknown> {
    return this.#reloading;
  }

  /** Queues a reload after the one under way; resolves true when the file was applied. */
  reload(): Promise<boolean> {
    const run = this.#reloading.then(() => this.#reload());
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(): Promise<boolean> {
    const old = this.#server.current();
    const settled = await this.#read(old);
    if (!settled) return false;
    const { config: next, weakenings } = settled;
    for (const w of next.warnings) log.warn("{warning}", { warning: w });
    const { pending, applied, logging } = this.#sort(old, next);
    if (logging.length > 0) await this.#applyLogging(old, next, logging, applied);
    const changes = await this.#server.apply(next, old, applied);
    this.#pendingRestart = pending;
    this.#reloadedAt = this.#server.now();
    log.info("Configuration reloaded from {path}: {changes}{settled}", {
      path: next.path,
      changes: changes.length > 0 ? changes.join("; ") : "no change",
      settled: weakenings.length > 0 ? ` (the file read the same for ${formatDuration(this.#server.settleMs)})` : "",
    });
    return true;
  }

  /** The file once it has settled; null (logged when it is invalid) to change nothing. */
  async #read(old: ServerConfig): Promise<{ config: ServerConfig; weakenings: string[] } | null> {
    try {
      return await readSettledConfig(old.path, old, { settleMs: this.#server.settleMs, signal: this.#server.signal });
    } catch (err) {
      log.error("Configuration reload failed; the running configuration stays as it was: {error}", {
        error: (err as Error).message,
      });
      return null;
    }
  }

  /** Sorts the changes by effect; keys that take a restart are logged and keep their running value in `next`. */
  #sort(old: ServerConfig, next: ServerConfig): SortedChanges {
    const running = this.#server.running();
    const sorted: SortedChanges = { pending: [], applied: [], logging: [] };
    for (const change of keyChanges(old, next)) {
      if (
        change.effect === "restart" || change.effect === "install" ||
        (change.effect === "logging" && !this.#server.applyLogging)
      ) {
        log.warn("{warning}", { warning: restartMessage(change, old, next, running) });
        sorted.pending.push(change.key);
      } else {
        (change.effect === "logging" ? sorted.logging : sorted.applied).push(appliedMessage(change));
      }
    }
    for (const key of sorted.pending) keepRunningValue(key, old, next);
    return sorted;
  }

  /** Applies the new log settings first, so that the lines that follow go where they say. */
  async #applyLogging(old: ServerConfig, next: ServerConfig, logging: string[], applied: string[]): Promise<void> {
    if (!this.#server.applyLogging) return;
    try {
      await this.#server.applyLogging(next);
      applied.unshift(...logging);
    } catch (err) {
      log.error("Cannot apply the new log settings ({error}); the running log settings stay", {
        error: (err as Error).message,
      });
      keepRunningValue("CONSOLELOG", old, next);
      keepRunningValue("LOG_FILE", old, next);
    }
  }
}
