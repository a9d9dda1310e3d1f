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
