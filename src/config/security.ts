/**
 * Security settings: the admission key (both files), TLS on the link, and
 * broker-server's limits. Secrets are kept out of `--check` output and logs.
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { readSize } from "./bounds.ts";
import type { SectionReader } from "./section.ts";
import { parseSwitch } from "./values.ts";

/** Shortest admission key accepted. */
export const MIN_ADMISSION_KEY_LENGTH = 16;

/** Reads ADMISSION_KEY (null when absent). */
export function readAdmissionKey(section: SectionReader): string | null {
  const entry = section.entry("ADMISSION_KEY");
  if (!entry || entry.value === "") return null;
  if (entry.value.length < MIN_ADMISSION_KEY_LENGTH) {
    throw section.error(
      entry.line,
      `ADMISSION_KEY is too short: use at least ${MIN_ADMISSION_KEY_LENGTH} characters (a long random string, the same in appserver.ini and smartclient.ini)`,
    );
  }
  return entry.value;
}

/** broker-server's limits. */
export interface ServerLimits {
  /** Most live sessions (attached or detached). */
  maxSessions: number;
  /** Most links in handshake at once that have not named a session they resume. */
  maxHandshakes: number;
  /** The same, per source (IPv4 address, IPv6 /64). */
  maxHandshakesPerAddress: number;
  /** New sessions per source address and minute. */
  newSessionsPerMinute: number;
  /** Largest frame payload accepted. */
  maxFrameBytes: number;
  /** Most bytes buffered over all sessions before new sessions are refused. */
  maxBufferedBytes: number;
}

/** The defaults, sized for a few thousand desktop users on one broker. */
export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze({
  maxSessions: 5_000,
  maxHandshakes: 500,
  maxHandshakesPerAddress: 100,
  newSessionsPerMinute: 6_000,
  maxFrameBytes: 1024 * 1024,
  maxBufferedBytes: 2 * 1024 * 1024 * 1024,
});

function parseCount(text: string): number {
  const value = text.trim();
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new RangeError(`expected a whole number of at least 1, got "${text}"`);
  }
  return Number(value);
}

/** Reads MAX_SESSIONS, MAX_HANDSHAKES(_PER_ADDRESS), NEW_SESSIONS_PER_MINUTE, MAX_FRAME_SIZE and MAX_BUFFERED. */
export function readLimits(section: SectionReader): ServerLimits {
  const limits: ServerLimits = {
    maxSessions: section.value("MAX_SESSIONS", parseCount, DEFAULT_LIMITS.maxSessions),
    maxHandshakes: section.value("MAX_HANDSHAKES", parseCount, DEFAULT_LIMITS.maxHandshakes),
    maxHandshakesPerAddress: section.value(
      "MAX_HANDSHAKES_PER_ADDRESS",
      parseCount,
      DEFAULT_LIMITS.maxHandshakesPerAddress,
    ),
    newSessionsPerMinute: section.value("NEW_SESSIONS_PER_MINUTE", parseCount, DEFAULT_LIMITS.newSessionsPerMinute),
    maxFrameBytes: readSize(section, "MAX_FRAME_SIZE", DEFAULT_LIMITS.maxFrameBytes),
    maxBufferedBytes: readSize(section, "MAX_BUFFERED", DEFAULT_LIMITS.maxBufferedBytes),
  };
  return limits;
}

/** TLS on the link, server side. */
export interface ServerTls {
  /** PEM certificate chain file. */
  certFile: string;
  /** PEM private key file. */
  keyFile: string;
}

/** TLS on the link, client side. */
export interface ClientTls {
  /** PEM file of the CA(s) to trust, or null for the system's. */
  caFile: string | null;
  /** SHA-256 fingerprint of the server certificate to pin (uppercase hex with colons), or null. */
  fingerprint: string | null;
}

function resolveFrom(configPath: string, file: string): string {
  return isAbsolute(file) ? file : join(dirname(configPath), file);
}

/** Reads LINK_TLS_CERT and LINK_TLS_KEY (both or neither). */
export function readServerTls(section: SectionReader, configPath: string): ServerTls | null {
  const cert = section.entry("LINK_TLS_CERT");
  const key = section.entry("LINK_TLS_KEY");
  if (!cert && !key) return null;
  if (!cert || !key || cert.value === "" || key.value === "") {
    throw section.error(
      (cert ?? key)?.line,
      "TLS on the link needs both LINK_TLS_CERT (certificate chain, PEM) and LINK_TLS_KEY (private key, PEM)",
    );
  }
  return { certFile: resolveFrom(configPath, cert.value), keyFile: resolveFrom(configPath, key.value) };
}

/** Normalizes a SHA-256 fingerprint to "AB:CD:..." or throws. */
export function parseFingerprint(text: string): string {
  const hex = text.trim().replace(/^sha256[:=]\s*/i, "").replace(/[:\s]/g, "").toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new SyntaxError(`expected a SHA-256 fingerprint (64 hex digits, colons allowed), got "${text}"`);
  }
  return hex.match(/../g)?.join(":") ?? hex;
}

/** Reads LINK_TLS, LINK_TLS_CA and LINK_TLS_FINGERPRINT (either of the last two turns TLS on). */
export function readClientTls(section: SectionReader, configPath: string): ClientTls | null {
  const on = section.value("LINK_TLS", parseSwitch, false);
  const ca = section.entry("LINK_TLS_CA");
  const fingerprint = section.entry("LINK_TLS_FINGERPRINT");
  if (!on && !ca && !fingerprint) return null;
  return {
    caFile: ca && ca.value !== "" ? resolveFrom(configPath, ca.value) : null,
    fingerprint: fingerprint ? section.parseEntry(fingerprint, parseFingerprint) : null,
  };
}
