/**
 * Parsers for the value types found in our configuration files: ports,
 * host/port pairs, durations and byte sizes. Each returns the value or throws
 * a `SyntaxError`/`RangeError` whose message quotes what it got; callers add
 * the file, line and key.
 * @module
 */

/** A host name or address with a TCP port. */
export interface HostPort {
  /** Host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** TCP port, 1..65535. */
  port: number;
}

/** Parses a TCP port number in 1..65535. */
export function parsePort(text: string): number {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) {
    throw new SyntaxError(`expected a port number, got "${text}"`);
  }
  const port = Number(trimmed);
  if (port < 1 || port > 65535) {
    throw new RangeError(`expected a port in 1..65535, got "${text}"`);
  }
  return port;
}

/** A port that may be turned off: `0`, `off` or `none` give 0, anything else a port in 1..65535. */
export function parsePortOrOff(text: string): number {
  return /^\s*(0|off|none)\s*$/i.test(text) ? 0 : parsePort(text);
}

/**
 * Parses a server address in any of the spellings administrators use:
 * `host port` (TOTVS), `host:port`, `[ipv6]:port` and `ipv6 port`.
 */
export function parseHostPort(text: string): HostPort {
  const trimmed = text.trim();
  let hostname: string;
  let portText: string;
  const bracket = /^\[([^\]]*)\]\s*:?\s*(\S*)$/.exec(trimmed);
  const spaced = /^(\S+)\s+(\S+)$/.exec(trimmed);
  if (bracket) {
    hostname = bracket[1] ?? "";
    portText = bracket[2] ?? "";
  } else if (spaced) {
    hostname = spaced[1] ?? "";
    portText = spaced[2] ?? "";
  } else {
    const colon = trimmed.lastIndexOf(":");
    if (colon < 0 || trimmed.indexOf(":") !== colon) {
      throw new SyntaxError(
        `expected "host port", "host:port" or "[ipv6]:port", got "${text}"`,
      );
    }
    hostname = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
  }
  if (hostname === "") {
    throw new SyntaxError(`expected a host name before the port, got "${text}"`);
  }
  // A colon belongs only in an IPv6 address (two or more); "host:5000 6000"
  // is a port written twice, not a host.
  if (!bracket && hostname.includes(":") && !/^[0-9a-f]*:[0-9a-f]*:[0-9a-f:.]*(%[\w.-]+)?$/i.test(hostname)) {
    throw new SyntaxError(
      `"${hostname}" is neither a host name nor an IPv6 address: expected "host port", "host:port" or "[ipv6]:port", got "${text}"`,
    );
  }
  if (portText === "") {
    throw new SyntaxError(`expected a port after the host, got "${text}"`);
  }
  return { hostname, port: parsePort(portText) };
}

/** Formats an address for logs: IPv6 in brackets. */
export function formatHostPort(address: HostPort): string {
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a duration in milliseconds: `180` (seconds), `500ms`, `2s`, `3m`,
 * `1h`. The key's own bounds (bounds.ts) are checked by its reader.
 */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i.exec(text.trim());
  if (!match) {
    throw new SyntaxError(
      `expected a duration such as "180", "500ms", "2s" or "3m", got "${text}"`,
    );
  }
  const unit = (match[2] ?? "s").toLowerCase();
  return Math.round(Number(match[1]) * (DURATION_UNITS[unit] ?? 1000));
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/**
 * Parses a byte size: `4194304`, `512K`, `4M`, `4MiB`, `1G` (binary units).
 * The key's own bounds (bounds.ts) are checked by its reader.
 */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = SIZE_UNITS[(match?.[2] ?? "").toLowerCase()];
  if (!match || unit === undefined) {
    throw new SyntaxError(
      `expected a size such as "4194304", "512K" or "4M", got "${text}"`,
    );
  }
  return Math.round(Number(match[1]) * unit);
}

/** Parses a boolean switch as TOTVS writes them: 1/0, also true/false, yes/no, on/off. */
export function parseSwitch(text: string): boolean {
  const value = text.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new SyntaxError(`expected 1 or 0, got "${text}"`);
}

/** Tells whether a host is a loopback name or address. */
export function isLoopback(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Formats a byte count for people: `4 MiB`, `512 KiB`, `100 B`. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  }
  return `${bytes} B`;
}

/** Formats a duration for people: `180 s`, `500 ms`. */
export function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
