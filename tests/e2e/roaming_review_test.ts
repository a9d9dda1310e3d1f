/**
 * Roaming (issue 18) attacked from the application's side: broker-client
 * shutting down while a race is under way. Deno's sanitizers fail the test
 * if a spare link (or any socket or timer) is left behind.
 */
import { ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { Trickle } from "../../tools/streams.ts";

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
