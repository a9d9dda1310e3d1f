/**
 * Triggers for a live configuration reload: SIGHUP (Linux) and changes to
 * the configuration file on disk. The directory is watched rather than the
 * file, because editors often save by replacing the file.
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { logger } from "../ops/log.ts";

const log = logger("server");

/** A running watcher; close() stops it. */
export interface ConfigWatcher {
  /** Stops watching and listening for SIGHUP. */
  close(): Promise<void>;
}

/** Options of watchConfig. */
export interface WatchOptions {
  /** Wait this long after the last change before reloading (ms), default 300. */
  debounceMs?: number;
  /** Also reload on SIGHUP (default: on every OS but Windows). */
  sighup?: boolean;
}

/** Calls `reload` when `path` changes on disk or the process gets SIGHUP. */
export function watchConfig(path: string, reload: () => Promise<unknown>, options: WatchOptions = {}): ConfigWatcher {
  const debounceMs = options.debounceMs ?? 300;
  const target = resolve(path);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<unknown> = Promise.resolve();
  const trigger = (why: string) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      log.info("Reloading the configuration ({why})", { why });
      running = running.then(reload, reload);
    }, debounceMs);
  };

  let watcher: Deno.FsWatcher | null = null;
  try {
    watcher = Deno.watchFs(dirname(target), { recursive: false });
  } catch (err) {
    log.warn("Cannot watch {path} for changes ({error}); reload with SIGHUP or a restart", {
      path: target,
      error: (err as Error).message,
    });
  }
  const watching = (async () => {
    if (!watcher) return;
    for await (const event of watcher) {
      if (event.kind === "access") continue;
      if (event.paths.some((p) => resolve(p) === target || basename(p) === basename(target))) {
        trigger(`${basename(target)} changed on disk`);
      }
    }
  })();

  const sighup = Deno.build.os !== "windows" && (options.sighup ?? true);
  const onHangup = () => trigger("SIGHUP");
  if (sighup) Deno.addSignalListener("SIGHUP", onHangup);

  return {
    async close() {
      clearTimeout(timer);
      if (sighup) Deno.removeSignalListener("SIGHUP", onHangup);
      watcher?.close();
      await watching;
      await running;
    },
  };
}
