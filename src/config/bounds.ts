/**
 * The bounds of every duration and size key, in one table. The readers of
 * both configuration files check values against it, broker-client checks a
 * broker server's timers against it, and docs/configuration.md shows it (a test compares
 * the two).
 * @module
 */

import type { SectionReader } from "./section.ts";
import { parseDuration, parseSize } from "./values.ts";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/** The allowed range of one key. */
export interface KeyBounds {
  /** A duration (milliseconds) or a size (bytes). */
  kind: "duration" | "size";
  /** Smallest value accepted. */
  min: number;
  /** Largest value accepted. */
  max: number;
  /** What `0` means, for the keys that accept it besides min..max. */
  zero?: string;
}

/**
 * Longest duration of any key: 576 h (24 days). Timers cannot wait 2^31 ms or
 * more (setTimeout fires at once instead), and WELCOME carries timers in 32
 * bits; a round bound below both is easier to state.
 */
export const MAX_DURATION_MS = 576 * HOUR;

/** Every duration and size key of both files with its bounds, in the order of docs/configuration.md. */
export const BOUNDS = {
  RESUME_TIMEOUT: { kind: "duration", min: SECOND, max: MAX_DURATION_MS },
  HEARTBEAT_INTERVAL: { kind: "duration", min: 100, max: HOUR },
  LINK_TIMEOUT: { kind: "duration", min: 200, max: 2 * HOUR },
  HANDSHAKE_TIMEOUT: { kind: "duration", min: 100, max: 10 * MINUTE },
  CONNECT_TIMEOUT: { kind: "duration", min: 100, max: 10 * MINUTE },
  UNCONFIRMED_TIMEOUT: { kind: "duration", min: SECOND, max: MAX_DURATION_MS },
  NEW_SESSION_TIMEOUT: { kind: "duration", min: 100, max: HOUR },
  HEALTH_CHECK_INTERVAL: { kind: "duration", min: 100, max: HOUR, zero: "no probes" },
  DRAIN_TIMEOUT: { kind: "duration", min: 100, max: 24 * HOUR, zero: "end sessions at once" },
  HANDOVER_TIMEOUT: { kind: "duration", min: SECOND, max: MAX_DURATION_MS },
  REPLAY_BUFFER_SIZE: { kind: "size", min: 64 * KIB, max: GIB },
  // The largest DATA frame (256 KiB reads) must fit; a link may hold one whole frame in memory.
  MAX_FRAME_SIZE: { kind: "size", min: 320 * KIB, max: 16 * MIB },
  MAX_BUFFERED: { kind: "size", min: 64 * KIB, max: 1024 * GIB },
  LOG_MAX_SIZE: { kind: "size", min: 64 * KIB, max: 1024 * GIB },
} as const satisfies Record<string, KeyBounds>;

/** A key listed in BOUNDS. */
export type BoundedKey = keyof typeof BOUNDS;

/** A bound as it would be written in the file: `100ms`, `1h`, `64K`, `1G`. */
export function formatBound(value: number, kind: KeyBounds["kind"]): string {
  const units: [string, number][] = kind === "duration"
    ? [["h", HOUR], ["m", MINUTE], ["s", SECOND]]
    : [["G", GIB], ["M", MIB], ["K", KIB]];
  for (const [unit, size] of units) {
    if (value >= size && value % size === 0) return `${value / size}${unit}`;
  }
  return kind === "duration" ? `${value}ms` : `${value}`;
}

/** The allowed values of `key` in words: `100ms to 1h, or 0 (no probes)`. */
export function describeBounds(key: BoundedKey): string {
  const bounds: KeyBounds = BOUNDS[key];
  const range = `${formatBound(bounds.min, bounds.kind)} to ${formatBound(bounds.max, bounds.kind)}`;
  return bounds.zero ? `${range}, or 0 (${bounds.zero})` : range;
}

/** Tells whether `value` is allowed for `key`. */
export function withinBounds(key: BoundedKey, value: number): boolean {
  const bounds: KeyBounds = BOUNDS[key];
  return (value >= bounds.min && value <= bounds.max) || (value === 0 && bounds.zero !== undefined);
}

function readBounded(section: SectionReader, key: BoundedKey, fallback: number): number {
  const entry = section.entry(key);
  if (!entry) return fallback;
  const value = section.parseEntry(entry, BOUNDS[key].kind === "duration" ? parseDuration : parseSize);
  // 0 means "off" for some keys: only a value written as zero may mean it, not one rounded to it (0.4ms).
  const writtenZero = /^0*(\.0*)?\s*[a-z]*$/i.test(entry.value.trim());
  if (!withinBounds(key, value) || (value === 0 && !writtenZero)) {
    throw section.error(entry.line, `${key} is out of range: expected ${describeBounds(key)}, got "${entry.value}"`);
  }
  return value;
}

/** Reads a duration key (milliseconds), or `fallback` when absent; out of its bounds is a ConfigError. */
export function readDuration(
  section: SectionReader,
  key: { [K in BoundedKey]: typeof BOUNDS[K]["kind"] extends "duration" ? K : never }[BoundedKey],
  fallback: number,
): number {
  return readBounded(section, key, fallback);
}

/** Reads a size key (bytes), or `fallback` when absent; out of its bounds is a ConfigError. */
export function readSize(
  section: SectionReader,
  key: { [K in BoundedKey]: typeof BOUNDS[K]["kind"] extends "size" ? K : never }[BoundedKey],
  fallback: number,
): number {
  return readBounded(section, key, fallback);
}
