/**
 * Broker-servers of one cluster for end-to-end tests: each on 127.0.0.1,
 * with its own cluster port and the others as PEER_ entries.
 * @module
 */

import type { ServerConfig } from "../../src/config/server_config.ts";
import type { BrokerServer } from "../../src/server/server.ts";
import { freePort } from "./apps.ts";
import { serverConfig, startServer } from "./setup.ts";

/** The cluster key the tests use. */
export const TEST_CLUSTER_KEY = "test-cluster-key-0123456789";

/** Configurations of `count` broker-servers of one cluster in front of `erpPorts`. */
export function clusterConfigs(count: number, erpPorts: number[], extra: Record<string, string> = {}): ServerConfig[] {
  const ports = Array.from({ length: count }, () => freePort());
  return ports.map((port, i) => {
    const peers = Object.fromEntries(
      ports.flatMap((p, j) => j === i ? [] : [[`PEER_${String.fromCharCode(65 + j)}`, `127.0.0.1 ${p}`]]),
    );
    return serverConfig(erpPorts, { CLUSTER_KEY: TEST_CLUSTER_KEY, CLUSTER_PORT: String(port), ...peers, ...extra });
  });
}

/** Starts the broker-servers of `configs`; dispose of them with `await using`. */
export function startCluster(configs: ServerConfig[]): (BrokerServer & AsyncDisposable)[] & AsyncDisposable {
  const servers = configs.map((c) => startServer(c)) as (BrokerServer & AsyncDisposable)[] & AsyncDisposable;
  servers[Symbol.asyncDispose] = async () => {
    await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
  };
  return servers;
}

/**
 * Writes an appserver.ini for a broker-server process of a cluster in front
 * of the ERP at `erpPort` (`lines` replace or add keys, e.g. the timers);
 * resolves to its path and LOCAL_SERVER_PORT.
 */
export async function writeClusterIni(
  erpPort: number,
  keys: Record<string, string> = {},
): Promise<{ path: string; port: number }> {
  const dir = await Deno.makeTempDir();
  const port = freePort();
  const path = `${dir}/appserver.ini`;
  const all: Record<string, string> = {
    LOCAL_SERVER_ADDRESS: "127.0.0.1",
    LOCAL_SERVER_PORT: String(port),
    REMOTE_SERVER_01: `127.0.0.1 ${erpPort}`,
    HEARTBEAT_INTERVAL: "200ms",
    LINK_TIMEOUT: "1s",
    RESUME_TIMEOUT: "60s",
    DRAIN_TIMEOUT: "0",
    STATUS_PORT: "0",
    HEALTH_CHECK_INTERVAL: "0",
    CLUSTER_KEY: TEST_CLUSTER_KEY,
    CLUSTER_PORT: String(freePort()),
    HANDOVER_TIMEOUT: "2m",
    ...keys,
  };
  const lines = ["[BALANCE_SMART_CLIENT_DESKTOP]", ...Object.entries(all).map(([k, v]) => `${k} = ${v}`)];
  await Deno.writeTextFile(path, lines.join("\r\n"));
  return { path, port };
}
