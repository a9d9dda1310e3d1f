/**
 * The cluster keys of appserver.ini: the broker-servers of one site that
 * pass links to each other (`PEER_<suffix>`), the key they prove to each
 * other (`CLUSTER_KEY`), where each listens for them (`CLUSTER_ADDRESS`,
 * `CLUSTER_PORT`), and how long a process that a new one took over from
 * keeps its sessions (`HANDOVER_TIMEOUT`). See docs/cluster.md.
 * @module
 */

import { readDuration } from "./bounds.ts";
import type { SectionReader } from "./section.ts";
import { formatHostPort, type HostPort, parseHostPort, parsePort } from "./values.ts";

/** Shortest cluster key accepted. */
export const MIN_CLUSTER_KEY_LENGTH = 16;

/** Default HANDOVER_TIMEOUT: a process taken over from keeps its sessions for at most a day. */
export const DEFAULT_HANDOVER_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/** One `PEER_<suffix>` entry: another broker-server of the site. */
export interface PeerServer extends HostPort {
  /** The full key, e.g. `PEER_B`. */
  name: string;
}

/** The cluster settings; absent (null) without CLUSTER_KEY. */
export interface ClusterConfig {
  /** The shared secret peers prove to each other. */
  key: string;
  /** Where this broker-server listens for peers and for a process taking over. */
  listen: HostPort;
  /** The other broker-servers of the site. */
  peers: PeerServer[];
  /** How long a process that was taken over from keeps its sessions (ms). */
  handoverTimeoutMs: number;
}

const CLUSTER_KEYS = ["CLUSTER_PORT", "CLUSTER_ADDRESS", "HANDOVER_TIMEOUT"];

/** Reads the cluster keys; null without CLUSTER_KEY (then no other cluster key may be set). */
export function readCluster(section: SectionReader, listen: HostPort): ClusterConfig | null {
  const keyEntry = section.entry("CLUSTER_KEY");
  const peerEntries = section.prefixed("PEER_");
  if (!keyEntry || keyEntry.value === "") {
    const stray = [...CLUSTER_KEYS.map((k) => section.entry(k)), ...peerEntries].find((e) => e !== undefined);
    if (stray) {
      throw section.error(
        stray.line,
        `${stray.key.toUpperCase()} needs CLUSTER_KEY: set CLUSTER_KEY (at least ${MIN_CLUSTER_KEY_LENGTH} characters, the same on every broker-server of the site) or remove ${stray.key.toUpperCase()}`,
      );
    }
    return null;
  }
  if (keyEntry.value.length < MIN_CLUSTER_KEY_LENGTH) {
    throw section.error(
      keyEntry.line,
      `CLUSTER_KEY is too short: use at least ${MIN_CLUSTER_KEY_LENGTH} characters (a long random string, the same on every broker-server of the site)`,
    );
  }
  const peers = peerEntries.map((e): PeerServer => {
    const suffix = e.key.slice("PEER_".length);
    if (!/^[A-Za-z0-9]+$/.test(suffix)) {
      throw section.error(e.line, `Cannot parse key ${e.key}: the suffix after PEER_ must be letters and digits`);
    }
    return { name: e.key.toUpperCase(), ...section.parseEntry(e, parseHostPort) };
  });
  const port = section.value("CLUSTER_PORT", parsePort, listen.port < 65535 ? listen.port + 1 : 0);
  if (port === 0) {
    throw section.error(
      section.entry("CLUSTER_PORT")?.line,
      "CLUSTER_PORT is required when LOCAL_SERVER_PORT is 65535",
    );
  }
  if (port === listen.port) {
    throw section.error(
      section.entry("CLUSTER_PORT")?.line,
      `CLUSTER_PORT ${port} is LOCAL_SERVER_PORT: use another port (the default is LOCAL_SERVER_PORT + 1)`,
    );
  }
  const hostname = section.value("CLUSTER_ADDRESS", (t) => {
    if (t.trim() === "") throw new SyntaxError(`expected an address, got ""`);
    return t.trim();
  }, peers.length > 0 ? listen.hostname : "127.0.0.1");
  return {
    key: keyEntry.value,
    listen: { hostname, port },
    peers,
    handoverTimeoutMs: readDuration(section, "HANDOVER_TIMEOUT", DEFAULT_HANDOVER_TIMEOUT_MS),
  };
}

/** The peers as one line, for --check and reload messages. */
export function describePeers(cluster: ClusterConfig | null): string {
  if (!cluster || cluster.peers.length === 0) return "none";
  return cluster.peers.map((p) => `${p.name}=${formatHostPort(p)}`).join(", ");
}
