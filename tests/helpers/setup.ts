/**
 * Builds brokers for end-to-end tests from INI text (so the tests go
 * through the same parsing as production), all on 127.0.0.1 with port 0.
 * @module
 */

import { BrokerClient } from "../../src/client/client.ts";
import { type ClientConfig, clientConfigFromIni } from "../../src/config/client_config.ts";
import { parseIni } from "../../src/config/ini.ts";
import { type ServerConfig, serverConfigFromIni } from "../../src/config/server_config.ts";
import { BrokerServer } from "../../src/server/server.ts";
import { setupLogging } from "../../src/ops/log.ts";
import { join } from "node:path";
import { freePort } from "./apps.ts";

/** Server config for ERP servers at `erpPorts` with extra `KEY = value` lines. */
export function serverConfig(erpPorts: number[], extra: Record<string, string> = {}): ServerConfig {
  const lines = [
    "[BALANCE_SMART_CLIENT_DESKTOP]",
    "LOCAL_SERVER_ADDRESS = 127.0.0.1",
    "LOCAL_SERVER_PORT = 1",
    ...erpPorts.map((p, i) => `REMOTE_SERVER_${String(i + 1).padStart(2, "0")} = 127.0.0.1 ${p}`),
    // Probes would open extra ERP connections in tests that count them, a fixed
    // status port would collide, and a drain would slow every test's end: all
    // three are on only where a test asks.
    ...Object.entries({ HEALTH_CHECK_INTERVAL: "0", STATUS_PORT: "0", DRAIN_TIMEOUT: "0", ...extra }).map(([k, v]) =>
      `${k} = ${v}`
    ),
  ];
  const config = serverConfigFromIni(parseIni(lines.join("\n"), "test-appserver.ini"));
  config.listen.port = 0; // the file needs a valid port; the test wants any free one
  return config;
}

/** Client config toward broker servers at `brokerPorts`, listening on a free port. */
export function clientConfig(brokerPorts: number[], extra: Record<string, string> = {}): ClientConfig {
  const lines = [
    "[drivers]",
    "active=test",
    "[test]",
    "server=127.0.0.1",
    "port=1",
    "BrokerProxy=1",
    `BrokerServer=${brokerPorts.map((p) => `127.0.0.1:${p}`).join(",")}`,
    // A fixed status port would collide between tests: on only where a test asks.
    ...Object.entries({ STATUS_PORT: "0", ...extra }).map(([k, v]) => `${k}=${v}`),
  ];
  const config = clientConfigFromIni(parseIni(lines.join("\n"), "test-smartclient.ini"));
  config.listen.port = 0;
  return config;
}

/** Starts a server and disposes of it with `await using`. */
export function startServer(config: ServerConfig): BrokerServer & AsyncDisposable {
  const server = new BrokerServer(config) as BrokerServer & AsyncDisposable;
  server.listen();
  server[Symbol.asyncDispose] = async () => {
    await server.close();
  };
  return server;
}

/** Starts a client and disposes of it with `await using`. */
export function startClient(config: ClientConfig): BrokerClient & AsyncDisposable {
  const client = new BrokerClient(config) as BrokerClient & AsyncDisposable;
  client.listen();
  client[Symbol.asyncDispose] = () => client.close();
  return client;
}

/**
 * A stand-in ERP server on 127.0.0.1:0 that runs `handler` for each
 * connection; `firstEnded` settles once the first connection's handler is
 * done and the connection closed (the ERP "saw the session end").
 */
export function startErp(handler: (conn: Deno.TcpConn) => Promise<void>): {
  port: number;
  connections: number;
  firstEnded: Promise<void>;
  close(): Promise<void>;
} & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running = new Set<Promise<void>>();
  const conns = new Set<Deno.TcpConn>();
  let firstDone: (() => void) | undefined;
  const erp = {
    port: (listener.addr as Deno.NetAddr).port,
    connections: 0,
    firstEnded: new Promise<void>((resolve) => firstDone = resolve),
    async close() {
      listener.close();
      await loop;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed by the handler */ }
      }
      await Promise.allSettled([...running]);
    },
    [Symbol.asyncDispose]() {
      return erp.close();
    },
  };
  const loop = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      erp.connections++;
      conns.add(conn);
      // Like a real server, close the connection when the handler is done with it.
      const job = handler(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        running.delete(job);
        try {
          conn.close();
        } catch { /* the handler closed it */ }
        firstDone?.();
      });
      running.add(job);
    }
  })();
  return erp;
}

/** Resolves when `condition` holds, polling every few ms; rejects after `ms`. */
export async function waitFor(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The promise `get` returns once it returns one (an application handler that has not started yet), awaited. */
export async function whenStarted<T>(get: () => Promise<T> | undefined): Promise<T> {
  for (;;) {
    const promise = get();
    if (promise) return await promise;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Resolves like `promise`, or rejects after `ms` with the message `what()`
 * returns then (so a hang fails the test with its context instead of
 * stalling the run). A rejection of `promise` gets that context too.
 */
export async function deadline<T>(promise: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what()}`)), ms);
  });
  const failed = promise.catch((err: Error) => {
    throw new Error(`${err.name}: ${err.message}, during ${what()}`, { cause: err });
  });
  try {
    return await Promise.race([failed, expired]);
  } finally {
    clearTimeout(timer);
  }
}

// BROKER_TEST_LOG=debug (or info) shows the brokers' logs while tests run.
const testLogLevel = Deno.env.get("BROKER_TEST_LOG");
if (testLogLevel === "debug" || testLogLevel === "info" || testLogLevel === "warning") {
  await setupLogging({ console: true, level: testLogLevel, format: "text" });
}

/** Writes a smartclient.ini toward `brokerPort` (free listen and status ports) into a new folder; returns its path, ports and a remover. */
export async function writeClientIni(brokerPort: number, extra: string[] = []) {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "smartclient.ini");
  const listenPort = freePort();
  const statusPort = freePort();
  await Deno.writeTextFile(
    path,
    [
      "[drivers]",
      "active=com_broker",
      "[com_broker]",
      "server=127.0.0.1",
      `port=${listenPort}`,
      "BrokerProxy=1",
      `BrokerServer=127.0.0.1:${brokerPort}`,
      `STATUS_PORT=${statusPort}`,
      "LOG_FILE=",
      ...extra,
    ].join("\n"),
  );
  return { path, listenPort, statusPort, remove: () => Deno.remove(dir, { recursive: true }) };
}
