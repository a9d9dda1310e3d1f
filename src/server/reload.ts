/**
 * Live configuration reload: its triggers (SIGHUP on Linux, changes to the
 * file on disk: the directory is watched rather than the file, because
 * editors often save by replacing it), what each key does on reload (applies
 * at once, for new sessions, or takes a restart or a re-install), and the
 * settle rule: a file that weakens security (removes ADMISSION_KEY,
 * STATUS_ACCESS_KEY, TLS or the log file, raises a limit) is applied only once it has read
 * the same for a settle time, so a file caught half-way through a save never
 * opens the door, not even for a moment.
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { ConfigError, decodeIniBytes, parseIni } from "../config/ini.ts";
import type { ServerLimits } from "../config/security.ts";
import { type ServerConfig, serverConfigFromIni } from "../config/server_config.ts";
import { formatDuration, formatHostPort, formatSize } from "../config/values.ts";
import { describePeers } from "../config/cluster.ts";
import { logger } from "../ops/log.ts";
import { sleep } from "../session/backoff.ts";

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
  if (watcher || sighup) {
    log.info("Changes to {path} are applied live ({how})", {
      path: target,
      how: [watcher ? "when the file changes" : "", sighup ? "on SIGHUP" : ""].filter(Boolean).join(" and "),
    });
  }

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

/** When a changed key takes effect. */
export type KeyEffect = "now" | "new sessions" | "logging" | "restart" | "install";

/** One key of appserver.ini and what a reload does with it. */
export interface KeyRule {
  /** The key, e.g. LOG_LEVEL. */
  key: string;
  /** When a change takes effect. */
  effect: KeyEffect;
  /** Its value in a configuration. */
  read: (c: ServerConfig) => string | number | boolean | null;
  /** How a value is shown (default: as is). */
  show?: (value: never) => string;
  /** A secret: changes are reported as set, changed or removed, never with the value. */
  secret?: boolean;
}

const duration = formatDuration;
const size = formatSize;
const switched = (on: boolean) => (on ? "1" : "0");

/**
 * Every key of appserver.ini but REMOTE_SERVER_<xx> and SORT_METHOD (the
 * balancer reports those), with when a change to it takes effect.
 */
export const RELOAD_RULES: readonly KeyRule[] = [
  { key: "LOCAL_SERVER_ADDRESS", effect: "restart", read: (c) => c.listen.hostname },
  { key: "LOCAL_SERVER_PORT", effect: "restart", read: (c) => c.listen.port },
  { key: "LINK_TLS_CERT", effect: "restart", read: (c) => c.tls?.certFile ?? null },
  { key: "LINK_TLS_KEY", effect: "restart", read: (c) => c.tls?.keyFile ?? null },
  { key: "CLUSTER_KEY", effect: "restart", read: (c) => c.cluster?.key ?? null, secret: true },
  { key: "CLUSTER_ADDRESS", effect: "restart", read: (c) => c.cluster?.listen.hostname ?? null },
  { key: "CLUSTER_PORT", effect: "restart", read: (c) => c.cluster?.listen.port ?? null },
  { key: "PEER_<suffix>", effect: "restart", read: (c) => c.cluster ? describePeers(c.cluster) : null },
  {
    key: "HANDOVER_TIMEOUT",
    effect: "restart",
    read: (c) => c.cluster?.handoverTimeoutMs ?? null,
    show: formatDuration,
  },
  { key: "SERVICE_NAME", effect: "install", read: (c) => c.serviceName },
  { key: "SERVICE_DISPLAY_NAME", effect: "install", read: (c) => c.serviceDisplayName },
  { key: "CONSOLELOG", effect: "logging", read: (c) => c.consoleLog, show: switched },
  { key: "LOG_FILE", effect: "logging", read: (c) => c.log.file },
  { key: "LOG_MAX_SIZE", effect: "logging", read: (c) => c.log.maxSizeBytes, show: size },
  { key: "LOG_FILES", effect: "logging", read: (c) => c.log.maxFiles },
  { key: "LOG_LEVEL", effect: "logging", read: (c) => c.log.level },
  { key: "LOG_FORMAT", effect: "logging", read: (c) => c.log.format },
  { key: "STATUS_PORT", effect: "now", read: (c) => c.status.enabled ? c.status.listen.port : 0 },
  { key: "STATUS_ADDRESS", effect: "now", read: (c) => c.status.listen.hostname },
  { key: "STATUS_ACCESS_KEY", effect: "now", read: (c) => c.status.accessKey, secret: true },
  { key: "ADMISSION_KEY", effect: "new sessions", read: (c) => c.admissionKey, secret: true },
  { key: "HEALTH_CHECK_INTERVAL", effect: "now", read: (c) => c.health.intervalMs, show: duration },
  { key: "HEALTH_CHECK_RISE", effect: "now", read: (c) => c.health.rise },
  { key: "HEALTH_CHECK_FALL", effect: "now", read: (c) => c.health.fall },
  { key: "DRAIN_TIMEOUT", effect: "now", read: (c) => c.drainTimeoutMs, show: duration },
  { key: "RESUME_TIMEOUT", effect: "new sessions", read: (c) => c.tuning.resumeTimeoutMs, show: duration },
  { key: "HEARTBEAT_INTERVAL", effect: "new sessions", read: (c) => c.tuning.heartbeatIntervalMs, show: duration },
  { key: "LINK_TIMEOUT", effect: "new sessions", read: (c) => c.tuning.linkTimeoutMs, show: duration },
  { key: "HANDSHAKE_TIMEOUT", effect: "new sessions", read: (c) => c.tuning.handshakeTimeoutMs, show: duration },
  { key: "CONNECT_TIMEOUT", effect: "new sessions", read: (c) => c.tuning.connectTimeoutMs, show: duration },
  { key: "UNCONFIRMED_TIMEOUT", effect: "new sessions", read: (c) => c.tuning.unconfirmedTimeoutMs, show: duration },
  { key: "REPLAY_BUFFER_SIZE", effect: "new sessions", read: (c) => c.tuning.replayBufferBytes, show: size },
  { key: "MAX_SESSIONS", effect: "now", read: (c) => c.limits.maxSessions },
  { key: "MAX_HANDSHAKES", effect: "now", read: (c) => c.limits.maxHandshakes },
  { key: "MAX_HANDSHAKES_PER_ADDRESS", effect: "now", read: (c) => c.limits.maxHandshakesPerAddress },
  { key: "NEW_SESSIONS_PER_MINUTE", effect: "now", read: (c) => c.limits.newSessionsPerMinute },
  { key: "MAX_FRAME_SIZE", effect: "new sessions", read: (c) => c.limits.maxFrameBytes, show: size },
  { key: "MAX_BUFFERED", effect: "now", read: (c) => c.limits.maxBufferedBytes, show: size },
];

/** One key whose value differs between the configuration in force and the file. */
export interface KeyChange {
  /** The key, e.g. LOG_LEVEL. */
  key: string;
  /** When the change takes effect. */
  effect: KeyEffect;
  /** In words, without secret values: "info -> debug", "changed", "removed". */
  detail: string;
}

function shown(rule: KeyRule, value: string | number | boolean | null): string {
  if (value === null) return "none";
  return rule.show ? rule.show(value as never) : String(value);
}

/** The keys whose values differ between `old` and `next`, in RELOAD_RULES order. */
export function keyChanges(old: ServerConfig, next: ServerConfig): KeyChange[] {
  const changes: KeyChange[] = [];
  for (const rule of RELOAD_RULES) {
    const [a, b] = [rule.read(old), rule.read(next)];
    if (a === b) continue;
    const detail = rule.secret
      ? (a === null ? "set" : b === null ? "removed" : "changed")
      : `${shown(rule, a)} -> ${shown(rule, b)}`;
    changes.push({ key: rule.key, effect: rule.effect, detail });
  }
  return changes;
}

/** Keeps the running value of a key that takes a restart (or a re-install) in `next`. */
export function keepRunningValue(key: string, old: ServerConfig, next: ServerConfig): void {
  if (key === "LOCAL_SERVER_ADDRESS" || key === "LOCAL_SERVER_PORT") next.listen = old.listen;
  else if (key === "LINK_TLS_CERT" || key === "LINK_TLS_KEY") next.tls = old.tls;
  else if (key === "SERVICE_NAME") next.serviceName = old.serviceName;
  else if (key === "SERVICE_DISPLAY_NAME") next.serviceDisplayName = old.serviceDisplayName;
  else if (key === "CONSOLELOG") next.consoleLog = old.consoleLog;
  else if (key.startsWith("CLUSTER_") || key.startsWith("PEER_") || key === "HANDOVER_TIMEOUT") {
    next.cluster = old.cluster;
  } else if (key.startsWith("LOG_")) next.log = old.log;
}

/**
 * How a key that is not applied on reload is reported (the value is shown,
 * unless the key is secret: CLUSTER_KEY "changed"); `running` is where the server really listens.
 */
export function restartMessage(change: KeyChange, old: ServerConfig, next: ServerConfig, running: string): string {
  const [from, to] = change.detail.split(" -> ");
  const path = next.path;
  if (change.key === "LOCAL_SERVER_ADDRESS" || change.key === "LOCAL_SERVER_PORT") {
    return `The listening address changed from ${formatHostPort(old.listen)} to ${
      formatHostPort(next.listen)
    } in ${path} (${change.key}): that takes a restart; still listening on ${running}`;
  }
  if (change.effect === "install") {
    return `${change.key} changed from ${from} to ${to} in ${path}: it names the service that --install creates and --uninstall removes; the running service is not renamed (uninstall, then install again, to rename it)`;
  }
  if (to === undefined) return `${change.key} ${from} in ${path}: that takes a restart; the running value stays`;
  return `${change.key} changed from ${from} to ${to} in ${path}: that takes a restart; the running value stays`;
}

const LIMIT_KEYS: [keyof ServerLimits, string][] = [
  ["maxSessions", "MAX_SESSIONS"],
  ["maxHandshakes", "MAX_HANDSHAKES"],
  ["maxHandshakesPerAddress", "MAX_HANDSHAKES_PER_ADDRESS"],
  ["newSessionsPerMinute", "NEW_SESSIONS_PER_MINUTE"],
  ["maxFrameBytes", "MAX_FRAME_SIZE"],
  ["maxBufferedBytes", "MAX_BUFFERED"],
];

/**
 * What `next` loosens compared with `old`, among the security settings
 * (src/config/security.ts, the status page's key and the log file): a key,
 * TLS or LOG_FILE removed, a limit raised, a secret or LOG_FILE cut to a
 * prefix of itself (what a file read
 * half-way through a save looks like). A new secret or a lower limit is not
 * weaker. Empty when nothing is.
 */
export function securityWeakenings(old: ServerConfig, next: ServerConfig): string[] {
  const found: string[] = [];
  const secret = (key: string, a: string | null, b: string | null) => {
    if (a !== null && b === null) found.push(`${key} removed`);
    else if (a !== null && b !== null && b !== a && a.startsWith(b)) found.push(`${key} cut short`);
  };
  secret("ADMISSION_KEY", old.admissionKey, next.admissionKey);
  secret("STATUS_ACCESS_KEY", old.status.accessKey, next.status.accessKey);
  if (old.tls && !next.tls) found.push("LINK_TLS_CERT and LINK_TLS_KEY removed");
  // The log is the record of what happened: a file without its LOG_FILE line,
  // or with the name cut short, would stop it or start a stray one.
  const [oldLog, nextLog] = [old.log.file, next.log.file];
  if (oldLog !== null && nextLog === null) found.push("LOG_FILE removed");
  else if (oldLog !== null && nextLog !== null && nextLog !== oldLog && oldLog.startsWith(nextLog)) {
    found.push("LOG_FILE cut short");
  }
  for (const [field, key] of LIMIT_KEYS) {
    if (next.limits[field] > old.limits[field]) {
      found.push(`${key} raised from ${old.limits[field]} to ${next.limits[field]}`);
    }
  }
  return found;
}

/** A settling file is read again at least this often (ms). */
const SETTLE_POLL_MS = 200;

/** Options of readSettledConfig. */
export interface SettleOptions {
  /** How long a file that weakens security (or does not parse) must read the same before it is taken as it is (ms). */
  settleMs: number;
  /** Stops waiting (the server is closing): resolves to null. */
  signal?: AbortSignal;
}

/** A configuration read and validated for a reload. */
export interface SettledConfig {
  /** The new configuration. */
  config: ServerConfig;
  /** What it weakens (it read the same for the settle time), or empty. */
  weakenings: string[];
}

/** The file's bytes, or null when it cannot be read (with the reason). */
async function readBytes(path: string): Promise<{ bytes: Uint8Array | null; error?: ConfigError }> {
  try {
    return { bytes: await Deno.readFile(path) };
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound ? "file not found" : (err as Error).message;
    return { bytes: null, error: new ConfigError(`Cannot read configuration file "${path}": ${why}`) };
  }
}

function sameBytes(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * Reads and validates the file at `path` for a reload over `inForce`. A
 * file that weakens security, or that cannot be read or parsed, may be an
 * editor's save caught half-way: it is read again every 200 ms (every fifth
 * of `settleMs` when that is shorter) and taken as it is only once every read
 * over `settleMs` gave the same bytes. A file that changes meanwhile is
 * judged afresh (and returned at once if it is valid and weakens nothing).
 * Throws ConfigError for a file that stays unreadable or invalid; resolves
 * to null when `signal` aborts.
 */
export async function readSettledConfig(
  path: string,
  inForce: ServerConfig,
  options: SettleOptions,
): Promise<SettledConfig | null> {
  const judge = (read: { bytes: Uint8Array | null; error?: ConfigError }): ServerConfig | ConfigError => {
    if (read.bytes === null) return read.error as ConfigError;
    try {
      return serverConfigFromIni(parseIni(decodeIniBytes(read.bytes), path));
    } catch (err) {
      if (err instanceof ConfigError) return err;
      throw err;
    }
  };
  let read = await readBytes(path);
  for (;;) {
    const config = judge(read);
    let weakenings: string[] = [];
    if (config instanceof ConfigError) {
      log.debug("{path} cannot be read as it is ({error}); reading it again for {settle} in case it is being saved", {
        path,
        error: config.message,
        settle: formatDuration(options.settleMs),
      });
    } else {
      weakenings = securityWeakenings(inForce, config);
      if (weakenings.length === 0) return { config, weakenings };
      log.warn(
        "{path} weakens security ({weakenings}): applied only if the file stays so for {settle} (an editor may be half-way through saving it)",
        { path, weakenings: weakenings.join(", "), settle: formatDuration(options.settleMs) },
      );
    }
    const pollMs = Math.max(1, Math.min(SETTLE_POLL_MS, Math.floor(options.settleMs / 5)));
    let changed: typeof read | null = null;
    for (let waited = 0; waited < options.settleMs && !changed; waited += pollMs) {
      await sleep(Math.min(pollMs, options.settleMs - waited), options.signal);
      if (options.signal?.aborted) return null;
      const again = await readBytes(path);
      if (!sameBytes(again.bytes, read.bytes)) changed = again;
    }
    if (!changed) {
      if (config instanceof ConfigError) throw config;
      return { config, weakenings };
    }
    log.info("{path} changed while settling: reading it again", { path });
    read = changed;
  }
}

/** How an applied change is reported. */
export function appliedMessage(change: KeyChange): string {
  if (change.key === "ADMISSION_KEY") {
    return change.detail === "removed"
      ? "ADMISSION_KEY removed: new sessions no longer need the admission key"
      : `ADMISSION_KEY ${change.detail}: new sessions must prove it`;
  }
  if (change.key === "STATUS_ACCESS_KEY") {
    return change.detail === "removed"
      ? "STATUS_ACCESS_KEY removed: the status page needs no key (it answers on the loopback only)"
      : `STATUS_ACCESS_KEY ${change.detail}: only the new key opens the status page from now on`;
  }
  return `${change.key} ${change.detail}${change.effect === "new sessions" ? " (for new sessions)" : ""}`;
}
