/**
 * A session's opening whose WELCOME is lost is retried by broker-client
 * with the same open token. Behind a balancer without affinity the retry
 * reaches another broker-server of the cluster: it should find the first
 * attempt (as a single broker-server does, "the client retried opening
 * it"), not open a second ERP connection and leave the first one's session
 * orphaned until RESUME_TIMEOUT.
 */
import { equal } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { clusterConfigs, startCluster } from "../helpers/cluster.ts";
import { echo, roundTrip } from "../helpers/apps.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";

/** A relay to `port` that loses everything the server sends on its first connection, closed by `cut()`. */
function loseFirstWelcome(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let first: Deno.Conn[] = [];
  let accepted = 0;
  const pipe = async (from: Deno.Conn, to: Deno.Conn | null) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        if (to) await to.write(buf.subarray(0, n));
      }
    } catch { /* cut */ }
    for (const c of [from, to]) {
      try {
        c?.close();
      } catch { /* closed */ }
    }
  };
  const loop = (async () => {
    for (;;) {
      let front: Deno.Conn;
      try {
        front = await listener.accept();
      } catch {
        return;
      }
      const back = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.add(front).add(back);
      const lose = accepted++ === 0;
      if (lose) first = [front, back];
      pipe(front, back);
      pipe(back, lose ? null : front);
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cut() {
      for (const c of first) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
    async close() {
      listener.close();
      await loop;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

Deno.test("cluster: an opening retried on another broker-server (its welcome lost) opens no second ERP connection", async () => {
  await using erp = startErp(echo);
  await using servers = startCluster(
    clusterConfigs(3, [erp.port], { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "500ms" }),
  );
  // The balancer without affinity: each new connection goes to the next broker-server.
  const balancer = await ChaosLink.start(servers.map((s) => ({ host: "127.0.0.1", port: s.address.port })));
  const relay = loseFirstWelcome(balancer.port);
  await using client = startClient(clientConfig([relay.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  // The first broker-server opened the session and sent its welcome, which was lost: cut that link.
  await waitFor(() => servers.some((s) => s.sessions.length === 1), "the first attempt's session");
  relay.cut();
  equal(await roundTrip(app, "hello"), "hello");
  const held = servers.map((s) => s.sessions.length);
  const erpConnections = erp.connections;
  app.close();
  await waitFor(() => client.sessionCount === 0, "the client's session to end");
  await relay.close();
  await balancer.close();
  equal(erpConnections, 1, `ERP connections for one Smart Client session (sessions per broker-server ${held})`);
  equal(held.reduce((a, b) => a + b, 0), 1, `sessions per broker-server: ${held}`);
});
