/**
 * broker-server configuration: the `[BALANCE_SMART_CLIENT_DESKTOP]` section
 * of a TOTVS appserver.ini (plus `[GENERAL] CONSOLELOG`), parsed and
 * validated in one place. Other sections are ignored.
 * @module
 */

import { readDuration } from "./bounds.ts";
import { type ClusterConfig, readCluster } from "./cluster.ts";
import { ConfigError, type IniDocument, type IniSection, readIniFile } from "./ini.ts";
import { type LogSettings, readLogSettings } from "./logging.ts";
import { readAdmissionKey, readLimits, readServerTls, type ServerLimits, type ServerTls } from "./security.ts";
import { SectionReader } from "./section.ts";
import { readTuning, type SessionTuning } from "./tuning.ts";
import {
  formatHostPort,
  type HostPort,
  isLoopback,
  parseHostPort,
  parsePort,
  parsePortOrOff,
  parseSwitch,
} from "./values.ts";

/** Name of the appserver.ini section that configures the broker. */
export const BROKER_SECTION = "BALANCE_SMART_CLIENT_DESKTOP";

/** Balancing methods we implement. */
export type SortMethod = "CONNECTION" | "ROUND_ROBIN";

/** One `REMOTE_SERVER_<suffix>` entry: an ERP application server. */
export interface RemoteServer extends HostPort {
  /** The full key, e.g. `REMOTE_SERVER_01`. */
  name: string;
  /** Line of the key in the file. */
  line: number;
  /** Relative share of new sessions (`weight=N`, default 1). */
  weight: number;
  /** Most sessions at once (`max=N`), 0 for no limit. */
  maxSessions: number;
}

/** The status page listener. */
export interface StatusConfig {
  /** Off with `STATUS_PORT = 0`. */
  enabled: boolean;
  /** Address and port. */
  listen: HostPort;
  /** Access key required from clients, or null (only allowed on the loopback). */
  accessKey: string | null;
}

/** Default DRAIN_TIMEOUT: live sessions get 10 s to finish when the server stops. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

/** Default status page port (HAProxy's customary stats port). */
export const DEFAULT_STATUS_PORT = 8404;

/** Active health checks of the ERP servers. */
export interface HealthCheckConfig {
  /** Interval between TCP connect probes (ms); 0 disables them. */
  intervalMs: number;
  /** Good probes in a row that bring a down server back. */
  rise: number;
  /** Failed probes in a row that take a server down. */
  fall: number;
}

/** Everything broker-server needs from appserver.ini. */
export interface ServerConfig {
  /** File the configuration was read from. */
  path: string;
  /** `[GENERAL] CONSOLELOG`: log to the console (default on). */
  consoleLog: boolean;
  /** Address and port broker-clients connect to. */
  listen: HostPort;
  /** The ERP servers, in file order. */
  remoteServers: RemoteServer[];
  /** Effective balancing method. */
  sortMethod: SortMethod;
  /** `SERVICE_NAME`: Windows service / systemd unit name. */
  serviceName: string;
  /** `SERVICE_DISPLAY_NAME`: the service's display name. */
  serviceDisplayName: string;
  /** Session timers and limits. */
  tuning: SessionTuning;
  /** Active health checks. */
  health: HealthCheckConfig;
  /** On stop, how long live sessions get to finish (ms); 0 ends them at once. */
  drainTimeoutMs: number;
  /** Log level, format and file. */
  log: LogSettings;
  /** The status page and metrics listener. */
  status: StatusConfig;
  /** Shared secret that broker-clients must prove to open sessions, or null. */
  admissionKey: string | null;
  /** TLS on the link (certificate and key files), or null for plain TCP. */
  tls: ServerTls | null;
  /** Limits on sessions, handshakes, rates, frames and buffers. */
  limits: ServerLimits;
  /** The other broker-servers of the site and the cluster key (docs/cluster.md), or null. */
  cluster: ClusterConfig | null;
  /** Oddities found while reading, to be logged at start. */
  warnings: string[];
}

/** Health check defaults, as HAProxy's: every 2 s, rise 2, fall 3. */
export const DEFAULT_HEALTH_CHECK: Readonly<HealthCheckConfig> = Object.freeze({ intervalMs: 2_000, rise: 2, fall: 3 });

/** Default bind address: every IPv4 interface. */
export const DEFAULT_SERVER_BIND = "0.0.0.0";
/** Default service name when SERVICE_NAME is absent. */
export const DEFAULT_SERVICE_NAME = "PROTHEUS_BROKER_SERVER";

const MONITORED_METHODS = ["SERVER_MEMORY", "SERVER_USERS", "SERVER_THREADS", "SERVER_CPU"];

function parseSortMethod(text: string): string {
  const method = text.trim().toUpperCase().replace(/^PROTHEUS_/, "");
  if (method === "CONNECTION" || method === "ROUND_ROBIN" || MONITORED_METHODS.includes(method)) {
    return method;
  }
  throw new SyntaxError(
    `expected CONNECTION, ROUND_ROBIN, ${MONITORED_METHODS.join(", ")}, got "${text}"`,
  );
}

/**
 * Parses a REMOTE_SERVER value: the address as TOTVS writes it (`host port`,
 * or `host:port`, `[ipv6]:port`), optionally followed by `weight=N` and
 * `max=N` (0, like no `max=`, is no limit).
 */
export function parseRemoteServer(text: string): HostPort & { weight: number; maxSessions: number } {
  const tokens = text.trim().split(/\s+/);
  const options = tokens.filter((t) => t.includes("="));
  const address = tokens.filter((t) => !t.includes("=")).join(" ");
  let weight = 1;
  let maxSessions = 0;
  for (const option of options) {
    const [name, value = ""] = option.split("=", 2) as [string, string?];
    const number = /^\d+$/.test(value) ? Number(value) : NaN;
    if (name.toLowerCase() === "weight") {
      if (!(number >= 1 && number <= 1000)) throw new RangeError(`expected weight=1..1000, got "${option}"`);
      weight = number;
    } else if (name.toLowerCase() === "max") {
      if (!(number >= 0)) throw new RangeError(`expected max=N with N >= 0 (0: no limit), got "${option}"`);
      maxSessions = number;
    } else {
      throw new SyntaxError(`expected "host port" then optional weight=N and max=N, got "${option}"`);
    }
  }
  return { ...parseHostPort(address), weight, maxSessions };
}

function parseCount(text: string): number {
  const value = text.trim();
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 100) {
    throw new RangeError(`expected a count in 1..100, got "${text}"`);
  }
  return Number(value);
}

function readStatusConfig(section: SectionReader): StatusConfig {
  const port = section.value("STATUS_PORT", parsePortOrOff, DEFAULT_STATUS_PORT);
  const hostname = section.value("STATUS_ADDRESS", (t) => {
    if (t.trim() === "") throw new SyntaxError(`expected an address, got ""`);
    return t.trim();
  }, "127.0.0.1");
  const keyEntry = section.entry("STATUS_ACCESS_KEY");
  const accessKey = keyEntry && keyEntry.value !== "" ? keyEntry.value : null;
  if (accessKey !== null && accessKey.length < 12) {
    throw section.error(keyEntry?.line, "STATUS_ACCESS_KEY is too short: use at least 12 characters");
  }
  if (port > 0 && accessKey === null && !isLoopback(hostname)) {
    throw section.error(
      section.entry("STATUS_ADDRESS")?.line,
      `STATUS_ADDRESS ${hostname} is reachable from other machines: set STATUS_ACCESS_KEY (at least 12 characters) or keep STATUS_ADDRESS = 127.0.0.1`,
    );
  }
  return { enabled: port > 0, listen: { hostname, port }, accessKey };
}

function parseServiceName(text: string): string {
  if (text === "" || /\s/.test(text)) {
    throw new SyntaxError(`expected a name without spaces, got "${text}"`);
  }
  return text;
}

/** A host name lowercased; an IPv6 address in its one canonical spelling (`0:0:0:0:0:0:0:1` is `::1`). */
function canonicalHost(hostname: string): string {
  const host = hostname.toLowerCase();
  if (!host.includes(":") || host.includes("%")) return host;
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host;
  }
}

/** Warns about REMOTE_SERVER_xx entries that name the same server: it would get a double share. */
function warnRepeatedAddresses(section: SectionReader, servers: RemoteServer[]): void {
  const seen = new Map<string, RemoteServer>();
  for (const server of servers) {
    const address = formatHostPort({ hostname: canonicalHost(server.hostname), port: server.port });
    const first = seen.get(address);
    if (!first) {
      seen.set(address, server);
      continue;
    }
    section.warn(
      server.line,
      `${server.name} names the same ERP server as ${first.name} (line ${first.line}), ${address}: it gets the share of new sessions of both entries; remove one, or use weight=N`,
    );
  }
}

/** Builds the server configuration from a parsed appserver.ini. */
export function serverConfigFromIni(doc: IniDocument): ServerConfig {
  const warnings: string[] = [];
  const raw = doc.sections.get(BROKER_SECTION.toLowerCase());
  if (!raw) {
    throw new ConfigError(
      `${doc.path}: Cannot find section [${BROKER_SECTION}]: broker-server needs it to know its port and the REMOTE_SERVER_xx entries`,
    );
  }
  const section = new SectionReader(doc, raw, warnings);

  const general = doc.sections.get("general");
  const consoleLog = general ? new SectionReader(doc, general, warnings).value("CONSOLELOG", parseSwitch, true) : true;

  const listen = readListen(section, raw);
  const config: ServerConfig = {
    path: doc.path,
    consoleLog,
    listen,
    remoteServers: readRemoteServers(section, raw),
    sortMethod: readSortMethod(section),
    serviceName: section.value("SERVICE_NAME", parseServiceName, DEFAULT_SERVICE_NAME),
    serviceDisplayName: section.value("SERVICE_DISPLAY_NAME", (t) => t, "TOTVS Protheus broker server"),
    tuning: readTuning(section),
    health: {
      intervalMs: readDuration(section, "HEALTH_CHECK_INTERVAL", DEFAULT_HEALTH_CHECK.intervalMs),
      rise: section.value("HEALTH_CHECK_RISE", parseCount, DEFAULT_HEALTH_CHECK.rise),
      fall: section.value("HEALTH_CHECK_FALL", parseCount, DEFAULT_HEALTH_CHECK.fall),
    },
    drainTimeoutMs: readDuration(section, "DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT_MS),
    log: readLogSettings(section, doc.path, null),
    status: readStatusConfig(section),
    admissionKey: readAdmissionKey(section),
    tls: readServerTls(section, doc.path),
    limits: readLimits(section),
    cluster: readCluster(section, listen),
    warnings,
  };
  section.reportUnknownKeys();
  return config;
}

/** LOCAL_SERVER_ADDRESS and LOCAL_SERVER_PORT: where broker-server listens. */
function readListen(section: SectionReader, raw: IniSection): HostPort {
  const portEntry = section.entry("LOCAL_SERVER_PORT");
  if (!portEntry) {
    throw section.error(
      raw.line,
      `Cannot find LOCAL_SERVER_PORT in [${raw.name}]: expected the port broker-clients connect to, e.g. "LOCAL_SERVER_PORT = 4000"`,
    );
  }
  return {
    hostname: section.value("LOCAL_SERVER_ADDRESS", (t) => {
      if (t.trim() === "") throw new SyntaxError(`expected an address, got ""`);
      return t.trim();
    }, DEFAULT_SERVER_BIND),
    port: section.parseEntry(portEntry, parsePort),
  };
}

/** The REMOTE_SERVER_xx entries: at least one. */
function readRemoteServers(section: SectionReader, raw: IniSection): RemoteServer[] {
  const remoteServers = section.prefixed("REMOTE_SERVER_").map((e): RemoteServer => {
    const suffix = e.key.slice("REMOTE_SERVER_".length);
    if (!/^[A-Za-z0-9]+$/.test(suffix)) {
      throw section.error(
        e.line,
        `Cannot parse key ${e.key}: the suffix after REMOTE_SERVER_ must be letters and digits`,
      );
    }
    return { name: e.key.toUpperCase(), line: e.line, ...section.parseEntry(e, parseRemoteServer) };
  });
  warnRepeatedAddresses(section, remoteServers);
  if (remoteServers.length === 0) {
    throw section.error(
      raw.line,
      `Cannot find any REMOTE_SERVER_xx in [${raw.name}]: expected at least one ERP server, e.g. "REMOTE_SERVER_01 = 10.0.0.5 5000"`,
    );
  }
  return remoteServers;
}

/** SORT_METHOD: CONNECTION (default) or ROUND_ROBIN; Protheus' other methods fall back to CONNECTION. */
function readSortMethod(section: SectionReader): SortMethod {
  const methodEntry = section.entry("SORT_METHOD");
  let sortMethod: SortMethod = "CONNECTION";
  if (methodEntry) {
    const method = section.parseEntry(methodEntry, parseSortMethod);
    if (method === "ROUND_ROBIN") sortMethod = "ROUND_ROBIN";
    else if (method !== "CONNECTION") {
      section.warn(
        methodEntry.line,
        `SORT_METHOD ${methodEntry.value} needs Protheus' own monitoring protocol, which this broker does not speak: balancing by CONNECTION (fewest sessions) instead`,
      );
    }
  }

  return sortMethod;
}

/** Reads and validates an appserver.ini file. */
export async function loadServerConfig(path: string): Promise<ServerConfig> {
  return serverConfigFromIni(await readIniFile(path));
}
