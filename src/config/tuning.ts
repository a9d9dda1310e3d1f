/**
 * Session tuning shared by both programs: the resume window, heartbeats,
 * timeouts and the replay buffer cap, with the defaults documented in docs/configuration.md.
 * @module
 */

import { type BoundedKey, BOUNDS, describeBounds, readDuration, readSize, withinBounds } from "./bounds.ts";
import type { SectionReader } from "./section.ts";

/** Timers and limits of resilient sessions. */
export interface SessionTuning {
  /** How long a detached session waits for its client to come back (ms). */
  resumeTimeoutMs: number;
  /** Interval between heartbeats on an otherwise quiet link (ms). */
  heartbeatIntervalMs: number;
  /** A link that delivers nothing for this long is dead (ms). */
  linkTimeoutMs: number;
  /** Time a new link has to complete its handshake (ms). */
  handshakeTimeoutMs: number;
  /** Most unacknowledged bytes kept per session and direction. */
  replayBufferBytes: number;
  /** Time allowed for one TCP connect (ms). */
  connectTimeoutMs: number;
  /**
   * How long broker-server holds a new session whose client never showed
   * that it got the welcome, once its link is gone (ms; at most the resume window).
   */
  unconfirmedTimeoutMs: number;
}

/** The defaults: 180 s window, 2 s heartbeat, 6 s dead link, 4 MiB replay cap. */
export const DEFAULT_TUNING: Readonly<SessionTuning> = Object.freeze({
  resumeTimeoutMs: 180_000,
  heartbeatIntervalMs: 2_000,
  linkTimeoutMs: 6_000,
  handshakeTimeoutMs: 10_000,
  replayBufferBytes: 4 * 1024 * 1024,
  connectTimeoutMs: 5_000,
  unconfirmedTimeoutMs: 30_000,
});

/** Smallest replay cap accepted: below it throughput collapses. */
export const MIN_REPLAY_BUFFER_BYTES: number = BOUNDS.REPLAY_BUFFER_SIZE.min;
/** Largest replay cap accepted: each session may hold this much per direction. */
export const MAX_REPLAY_BUFFER_BYTES: number = BOUNDS.REPLAY_BUFFER_SIZE.max;

/** Reads REPLAY_BUFFER_SIZE (64K to 1G, see bounds.ts). */
export function readReplayBufferSize(section: SectionReader): number {
  return readSize(section, "REPLAY_BUFFER_SIZE", DEFAULT_TUNING.replayBufferBytes);
}

/**
 * Checks the timers broker-client adopts from a broker server's WELCOME:
 * each within what the configuration accepts, and the link timeout at least
 * twice the heartbeat interval. Throws a RangeError that says which timer
 * and why (a nonsense value would make every link look dead, or never).
 */
export function checkAdoptedTimers(
  timers: Pick<SessionTuning, "resumeTimeoutMs" | "heartbeatIntervalMs" | "linkTimeoutMs" | "replayBufferBytes">,
): void {
  const named: [string, BoundedKey, number, string][] = [
    ["replay buffer cap", "REPLAY_BUFFER_SIZE", timers.replayBufferBytes, "bytes"],
    ["resume window", "RESUME_TIMEOUT", timers.resumeTimeoutMs, "ms"],
    ["heartbeat interval", "HEARTBEAT_INTERVAL", timers.heartbeatIntervalMs, "ms"],
    ["link timeout", "LINK_TIMEOUT", timers.linkTimeoutMs, "ms"],
  ];
  for (const [name, key, value, unit] of named) {
    if (!Number.isInteger(value) || !withinBounds(key, value)) {
      throw new RangeError(`${name} (${key}) of ${value} ${unit} is out of range: expected ${describeBounds(key)}`);
    }
  }
  if (timers.linkTimeoutMs < 2 * timers.heartbeatIntervalMs) {
    throw new RangeError(
      `link timeout (LINK_TIMEOUT) of ${timers.linkTimeoutMs} ms is less than twice the heartbeat interval (HEARTBEAT_INTERVAL) of ${timers.heartbeatIntervalMs} ms: healthy links would be declared dead`,
    );
  }
}

/** Reads every tuning key of a section, validating their relations. */
export function readTuning(section: SectionReader): SessionTuning {
  const tuning: SessionTuning = {
    resumeTimeoutMs: readDuration(section, "RESUME_TIMEOUT", DEFAULT_TUNING.resumeTimeoutMs),
    heartbeatIntervalMs: readDuration(section, "HEARTBEAT_INTERVAL", DEFAULT_TUNING.heartbeatIntervalMs),
    linkTimeoutMs: readDuration(section, "LINK_TIMEOUT", DEFAULT_TUNING.linkTimeoutMs),
    handshakeTimeoutMs: readDuration(section, "HANDSHAKE_TIMEOUT", DEFAULT_TUNING.handshakeTimeoutMs),
    replayBufferBytes: readReplayBufferSize(section),
    connectTimeoutMs: readDuration(section, "CONNECT_TIMEOUT", DEFAULT_TUNING.connectTimeoutMs),
    unconfirmedTimeoutMs: readDuration(section, "UNCONFIRMED_TIMEOUT", DEFAULT_TUNING.unconfirmedTimeoutMs),
  };
  if (tuning.linkTimeoutMs < 2 * tuning.heartbeatIntervalMs) {
    throw section.error(
      section.entry("LINK_TIMEOUT")?.line ?? section.entry("HEARTBEAT_INTERVAL")?.line,
      `LINK_TIMEOUT (${tuning.linkTimeoutMs} ms) must be at least twice HEARTBEAT_INTERVAL (${tuning.heartbeatIntervalMs} ms), or healthy links would be declared dead`,
    );
  }
  return tuning;
}
