/**
 * broker-client configuration: the active driver section of a TOTVS
 * smartclient.ini (`[drivers] active=<section>`), parsed and validated.
 *
 * Two layouts are accepted (see DESIGN.md):
 * - with `BrokerServer`: Smart Client connects to `server:port`, which must be
 *   the local broker-client (a loopback address), and the broker servers are
 *   listed in `BrokerServer`;
 * - without it (the file exactly as TOTVS documents it): `server:port` is the
 *   broker server and broker-client listens on `127.0.0.1:<port>`.
 * @module
 */

import { ConfigError, type IniDocument, type IniSection, readIniFile } from "./ini.ts";
import { type LogSettings, readLogSettings } from "./logging.ts";
import { type ClientTls, readAdmissionKey, readClientTls } from "./security.ts";
import { SectionReader } from "./section.ts";
import { readDuration } from "./bounds.ts";
import { DEFAULT_TUNING, readReplayBufferSize } from "./tuning.ts";
import {
  formatHostPort,
  type HostPort,
  isLoopback,
  parseHostPort,
  parsePort,
  parsePortOrOff,
  parseSwitch,
} from "./values.ts";

/** Everything broker-client needs from smartclient.ini. */
export interface ClientConfig {
  /** File the configuration was read from. */
  path: string;
  /** Name of the driver section used. */
  driver: string;
  /** Where broker-client listens for Smart Client. */
  listen: HostPort;
  /** Broker servers, tried in turn for new sessions. */
  brokerServers: HostPort[];
  /** How long new sessions keep trying unreachable broker servers (ms). */
  newSessionTimeoutMs: number;
  /** Time allowed for one TCP connect to a broker server (ms). */
  connectTimeoutMs: number;
  /** Time allowed for one handshake with a broker server (ms). */
  handshakeTimeoutMs: number;
  /** Most unacknowledged bytes kept per session toward the server. */
  replayBufferBytes: number;
  /** Log level, format and file (by default broker-client.log beside the configuration file). */
  log: LogSettings;
  /** Shared secret proven to broker-servers when opening sessions, or null. */
  admissionKey: string | null;
  /** TLS on the link (trusted CA, pinned fingerprint), or null for plain TCP. */
  tls: ClientTls | null;
  /** Port of the status page and status.json on 127.0.0.1 (never another address); 0 when off. */
  statusPort: number;
  /** Plain-language notes for the log: how the file was understood. */
  notes: string[];
  /** Oddities found while reading, to be logged at start. */
  warnings: string[];
}

/** Default log file of broker-client, beside its configuration (a desktop user has no console). */
export const DEFAULT_CLIENT_LOG_FILE = "broker-client.log";

/**
 * Default STATUS_PORT of broker-client: beside broker-server's 8404, so that
 * both can run on one machine (a test bench, the demo) and a helpdesk has
 * one number to remember.
 */
export const DEFAULT_CLIENT_STATUS_PORT = 8405;

/** Default for NEW_SESSION_TIMEOUT: how long a new session may wait for a broker server. */
export const DEFAULT_NEW_SESSION_TIMEOUT_MS = 30_000;

function parseBrokerServers(text: string): HostPort[] {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length === 0) {
    throw new SyntaxError(`expected one or more "host:port" separated by commas, got "${text}"`);
  }
  return items.map(parseHostPort);
}

function parseHost(text: string): string {
  const host = text.trim().replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw new SyntaxError(`expected a host name or address, got ""`);
  return host;
}

/** Builds the client configuration from a parsed smartclient.ini. */
export function clientConfigFromIni(doc: IniDocument, driverOverride?: string): ClientConfig {
  const warnings: string[] = [];
  const notes: string[] = [];
  const raw = connectionSection(doc, driverOverride, warnings);
  const section = new SectionReader(doc, raw, warnings);
  const { listen, brokerServers } = readEndpoints(section, raw, notes);
  const config: ClientConfig = {
    path: doc.path,
    driver: raw.name,
    listen,
    brokerServers,
    newSessionTimeoutMs: readDuration(section, "NEW_SESSION_TIMEOUT", DEFAULT_NEW_SESSION_TIMEOUT_MS),
    connectTimeoutMs: readDuration(section, "CONNECT_TIMEOUT", DEFAULT_TUNING.connectTimeoutMs),
    handshakeTimeoutMs: readDuration(section, "HANDSHAKE_TIMEOUT", DEFAULT_TUNING.handshakeTimeoutMs),
    replayBufferBytes: readReplayBufferSize(section),
    log: readLogSettings(section, doc.path, DEFAULT_CLIENT_LOG_FILE),
    admissionKey: readAdmissionKey(section),
    tls: readClientTls(section, doc.path),
    statusPort: section.value("STATUS_PORT", parsePortOrOff, DEFAULT_CLIENT_STATUS_PORT),
    notes,
    warnings,
  };
  // Smart Client keeps its own keys in the same section; only report keys
  // that look like ours, so a typo such as "BrokerServr" does not go unseen.
  section.reportUnknownKeys((key) => !key.startsWith("broker") && !/^[a-z0-9]+(_[a-z0-9]+)+$/.test(key));
  return config;
}

/** The connection's section: the one --driver names, else the one [drivers] active= names. */
function connectionSection(doc: IniDocument, driverOverride: string | undefined, warnings: string[]): IniSection {
  let driver = driverOverride;
  if (driver === undefined) {
    const drivers = doc.sections.get("drivers");
    if (!drivers) {
      throw new ConfigError(
        `${doc.path}: Cannot find section [drivers]: expected "active=<section>" naming the connection to use (or pass --driver NAME)`,
      );
    }
    const active = new SectionReader(doc, drivers, warnings).entry("active");
    if (!active || active.value === "") {
      throw new ConfigError(
        `${doc.path}:${drivers.line}: Cannot find key active in [drivers]: expected "active=<section>" naming the connection to use (or pass --driver NAME)`,
      );
    }
    driver = active.value;
  }
  const raw = doc.sections.get(driver.toLowerCase());
  if (!raw) {
    throw new ConfigError(
      `${doc.path}: Cannot find section [${driver}] named by ${
        driverOverride === undefined ? "[drivers] active" : "--driver"
      }: the sections in this file are ${[...doc.sections.values()].map((s) => `[${s.name}]`).join(", ")}`,
    );
  }
  return raw;
}

/** Throws unless the section enables the broker (BrokerProxy=1): broker-client carries no other connection. */
function requireBrokerProxy(section: SectionReader, raw: IniSection): void {
  const proxy = section.entry("BrokerProxy");
  if (!proxy || section.parseEntry(proxy, parseSwitch) !== true) {
    throw section.error(
      proxy?.line ?? raw.line,
      `Section [${raw.name}] does not enable the broker: expected "BrokerProxy=1"${
        proxy ? `, got "${proxy.value}"` : ""
      }. broker-client only carries connections whose section says BrokerProxy=1`,
    );
  }
}

/**
 * Where broker-client listens and which broker servers it uses: from
 * server/port and BrokerServer (with LISTEN_ADDRESS, LISTEN_PORT), after
 * checking that the section enables the broker (BrokerProxy=1).
 */
function readEndpoints(
  section: SectionReader,
  raw: IniSection,
  notes: string[],
): { listen: HostPort; brokerServers: HostPort[] } {
  requireBrokerProxy(section, raw);
  const serverEntry = section.entry("server");
  const portEntry = section.entry("port");
  if (!serverEntry) {
    throw section.error(raw.line, `Cannot find key server in [${raw.name}]: expected a host name or address`);
  }
  if (!portEntry) {
    throw section.error(raw.line, `Cannot find key port in [${raw.name}]: expected a port number`);
  }
  const server = section.parseEntry(serverEntry, parseHost);
  const port = section.parseEntry(portEntry, parsePort);
  const listenAddressEntry = section.entry("LISTEN_ADDRESS");
  const listenAddress = listenAddressEntry ? section.parseEntry(listenAddressEntry, parseHost) : undefined;
  const brokerEntry = section.entry("BrokerServer");

  let listen: HostPort;
  let brokerServers: HostPort[];
  if (brokerEntry) {
    brokerServers = section.parseEntry(brokerEntry, parseBrokerServers);
    if (listenAddress === undefined && !isLoopback(server)) {
      throw section.error(
        serverEntry.line,
        `Cannot listen on server=${server}: with BrokerServer set, "server" is where Smart Client finds the local broker-client, and broker-client listens on the loopback only. Use server=127.0.0.1, or set LISTEN_ADDRESS explicitly to listen elsewhere`,
      );
    }
    listen = { hostname: listenAddress ?? server, port };
  } else {
    brokerServers = [{ hostname: server, port }];
    listen = { hostname: listenAddress ?? "127.0.0.1", port: section.value("LISTEN_PORT", parsePort, port) };
    notes.push(
      `BrokerServer is not set, so server=${server} port=${port} is taken as the broker server. broker-client listens on ${
        formatHostPort(listen)
      }: point Smart Client at it (server=${listen.hostname}, port=${listen.port}) or add BrokerServer=${
        formatHostPort({ hostname: server, port })
      } and set server=127.0.0.1`,
    );
    if (isLoopback(server) && listen.port === port && isLoopback(listen.hostname)) {
      throw section.error(
        serverEntry.line,
        `Cannot use server=${server} port=${port} as the broker server: broker-client itself listens on ${
          formatHostPort(listen)
        } and would connect to itself. Add BrokerServer=host:port naming the broker server`,
      );
    }
  }
  if (!isLoopback(listen.hostname)) {
    section.warn(
      listenAddressEntry?.line ?? serverEntry.line,
      `broker-client listens on ${
        formatHostPort(listen)
      }, which is not a loopback address: other machines can reach it`,
    );
  }
  return { listen, brokerServers };
}

/** Reads and validates a smartclient.ini file. */
export async function loadClientConfig(path: string, driver?: string): Promise<ClientConfig> {
  return clientConfigFromIni(await readIniFile(path), driver);
}
