/**
 * Roaming (issue 18) attacked from the application's side: broker-client
 * shutting down while a race is under way. Deno's sanitizers fail the test
 * if a spare link (or any socket or timer) is left behind.
 */
import { equal, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { BrokerClient } from "../../src/client/client.ts";
import { systemNetwork } from "../../src/session/network.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { Digest, receiveAll, sendStream, streamDigest, Trickle } from "../../tools/streams.ts";

const TIMERS = { HEARTBEAT_INTERVAL: "1s", LINK_TIMEOUT: "4s" };
const RACING = /broker\.client: Session \w+: link suspected .*racing a new link/;

Deno.test("race: broker-client closes while spares wait for their CHALLENGE; close() returns within its grace and leaves no spare open", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const server = startServer(serverConfig([erp.port], TIMERS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const apps: Trickle[] = [];
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 5; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      conns.push(conn);
      apps.push(new Trickle(conn, 11 + i, { everyMs: 20 }));
    }
    await waitFor(
      () => client.sessions.length === 5 && client.sessions.every((s) => s.probesAnswered),
      "the sessions to open and their first probes to be answered",
    );
    chaos.freezeAll();
    chaos.setMode("blackhole"); // the spares connect and hear nothing
    await waitFor(() => logs.lines.filter((l) => RACING.test(l)).length === 5, "every session to race");
    const started = Date.now();
    await client.close();
    const took = Date.now() - started;
    // ABORT unanswered on the frozen links (3 s), then the shutdown's farewell grace (3 s) at most.
    ok(took < 8_000, `close() took ${took} ms`);
    ok(client.sessionCount === 0);
  } finally {
    // broker-client closed their connections: the applications stop with an error, their sockets are ours to close.
    await Promise.all(apps.map((app) => app.finish().catch(() => {})));
    for (const conn of conns) {
      try {
        conn.close();
      } catch { /* finish() closed it */ }
    }
    await client.close();
    await server.close();
    chaos.dropFrozen();
    await chaos.close();
  }
});

Deno.test("race: 20 sessions roam at once from one address through a server at MAX_HANDSHAKES_PER_ADDRESS = 4; evicted spares leave their sessions to the resume loop, every session moves, every byte intact", async () => {
  const SESSIONS = 20;
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const server = startServer(serverConfig([erp.port], { ...TIMERS, MAX_HANDSHAKES_PER_ADDRESS: "4" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const apps: Trickle[] = [];
  try {
    for (let i = 0; i < SESSIONS; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      apps.push(new Trickle(conn, 31 + i, { everyMs: 50 }));
      // Opened one at a time: the cap applies to openings too.
      await waitFor(
        () => client.sessions.length === i + 1 && client.sessions[i]?.state === "attached",
        "the session to open",
      );
    }
    await waitFor(() => client.sessions.every((s) => s.probesAnswered), "every first probe to be answered");
    chaos.freezeAll();
    await waitFor(() => client.sessions.every((s) => s.stats.resumes >= 1), "every session to move", 30_000);
    for (const app of apps) await app.finish();
    await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end", 20_000);
    ok(logs.lines.some((l) => RACING.test(l)));
  } finally {
    await client.close();
    await server.close();
    chaos.dropFrozen();
    await chaos.close();
  }
});

const CERT = fileURLToPath(new URL("../fixtures/test_cert.pem", import.meta.url));
const KEY = fileURLToPath(new URL("../fixtures/test_key.pem", import.meta.url));

/**
 * A broker-client toward `chaos` on a machine whose addresses are what
 * `addresses()` says (its sockets are the system's), and one session
 * trickling bytes through it; `stop()` closes all three.
 */
async function trickleThrough(
  chaos: ChaosLink,
  extra: Record<string, string>,
  addresses: () => string[],
  seed: number,
): Promise<{ client: BrokerClient; app: Trickle; stop(): Promise<void> }> {
  const client = new BrokerClient(clientConfig([chaos.port], extra), { network: { ...systemNetwork, addresses } });
  client.listen();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  const stop = async () => {
    await client.close();
    try {
      conn.close();
    } catch { /* the application's finish() closed it */ }
    chaos.dropFrozen();
    await chaos.close();
  };
  return { client, app: new Trickle(conn, seed, { everyMs: 20 }), stop };
}

/** A session whose machine loses the address its link was made from (127.0.0.1 here) must race a new link at once. */
async function addressGone(tls: boolean): Promise<void> {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const tlsServer = tls ? { LINK_TLS_CERT: CERT, LINK_TLS_KEY: KEY } : {};
  await using server = startServer(serverConfig([erp.port], { ...TIMERS, ...tlsServer }));
  // The machine's addresses as the test says; sockets are the system's.
  let addresses = ["127.0.0.1", "192.0.2.9"];
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const { client, app, stop } = await trickleThrough(chaos, tls ? { LINK_TLS_CA: CERT } : {}, () => addresses, 3);
  try {
    await waitFor(() => client.sessions[0]?.state === "attached", "the session to open");
    await new Promise((r) => setTimeout(r, 1_200)); // two looks at the addresses with 127.0.0.1 in them
    // The roam: the link's address is gone, and the link with it.
    chaos.freezeAll();
    addresses = ["192.0.2.9"];
    await logs.waitFor(/broker\.client: Session \w+: link suspected \(its local address 127\.0\.0\.1 is gone\)/, 2_000);
    await waitFor(() => client.sessions[0]?.stats.resumes === 1, "the session to move");
    await app.finish();
    await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
    equal(client.sessionCount, 0);
  } finally {
    await stop();
  }
}

Deno.test("address check: a plain TCP link made from an address that went away is raced at once", () =>
  addressGone(false));

Deno.test("address check: a TLS link made from an address that went away is raced at once, as a plain one is", () =>
  addressGone(true));

Deno.test("race during a bulk transfer: 16 MiB each way, the link frozen three times mid-stream; each race moves the session, no byte lost or doubled", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], TIMERS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const SIZE = 16 * 1024 * 1024;
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  try {
    const received = new Digest();
    const transfer = Promise.all([sendStream(app, 9, SIZE).then(() => app.closeWrite()), receiveAll(app, received)]);
    for (let roam = 1; roam <= 3; roam++) {
      await waitFor(() => received.bytes >= (roam * SIZE) / 4, `${roam / 4} of the echo`, 60_000);
      chaos.freezeAll();
      await waitFor(() => client.sessions[0]?.stats.resumes === roam, `roam ${roam} to be raced and won`, 15_000);
    }
    await transfer;
    equal(received.bytes, SIZE);
    equal(received.hex(), streamDigest(9, SIZE));
    ok(logs.lines.filter((l) => RACING.test(l)).length >= 3);
    await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  } finally {
    app.close();
    chaos.dropFrozen();
    await chaos.close();
  }
});

Deno.test("address check: a resume handshake on a link from an address that went away is dropped at once, not after HANDSHAKE_TIMEOUT", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], TIMERS));
  let addresses = ["127.0.0.1", "192.0.2.9"];
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const { client, app, stop } = await trickleThrough(chaos, { HANDSHAKE_TIMEOUT: "20s" }, () => addresses, 5);
  try {
    await waitFor(() => client.sessions[0]?.state === "attached", "the session to open");
    await new Promise((r) => setTimeout(r, 1_200)); // two looks at the addresses with 127.0.0.1 in them
    // The link drops; the first resume dials into a path that answers nothing.
    chaos.setMode("blackhole");
    const dialed = chaos.connections;
    chaos.resetAll();
    await waitFor(() => chaos.connections > dialed, "the first resume attempt to dial");
    // The roam: that attempt's address goes away; the path works again.
    chaos.setMode("pass");
    addresses = ["192.0.2.9"];
    await logs.waitFor(/a link being set up from 127\.0\.0\.1, which is gone, is dropped/, 2_000);
    // The next attempt resumes long before the 20 s handshake timeout.
    await waitFor(() => client.sessions[0]?.stats.resumes === 1, "the session to resume", 5_000);
    await app.finish();
    await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  } finally {
    await stop();
  }
});
