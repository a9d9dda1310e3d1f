/**
 * Every ending reaches the other side: a session that one end closes,
 * resets or gives up is ended on the other end too, even when the notice
 * was sent on a link that died, and well before the resume window runs out.
 * The link is frozen (bytes vanish) before the ending, so the notice is
 * written into the void, and dropped after the ending was acted on: the
 * worst moment, forced rather than hoped for.
 */
import net from "node:net";
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, deadline, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo, roundTrip } from "../helpers/apps.ts";
import { connectResettableApp, startResettableErp } from "../helpers/node_apps.ts";

/** A resume window far longer than any wait below: an ending that waits for it fails the test. */
const LONG_WINDOW = { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "1s", RESUME_TIMEOUT: "60s" };

/** Resolves when `app` is closed or reset by the broker. */
function closed(app: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (app.destroyed) resolve();
    else app.once("close", () => resolve());
  });
}

Deno.test("a Smart Client reset whose ABORT dies with the link still ends the session on broker-server", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOW));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await connectResettableApp(client.address.port);

  chaos.freezeAll(); // the link dies silently: the ABORT below is written into the void
  const resetAt = Date.now();
  app.resetAndDestroy();
  await logs.waitFor(/broker\.client: Session \w+ closed: Smart Client connection failed/);
  chaos.dropFrozen(); // and then the link is gone
  await deadline(
    waitFor(() => server.sessions.length === 0, "broker-server to end the session", 15_000),
    20_000,
    () => "the session is still on broker-server",
  );
  const endedIn = Date.now() - resetAt;
  await erp.firstEnded;
  const counters = server.status().totals;
  equal(counters.sessionsAborted, 1, "broker-server counts the session as aborted");
  equal(counters.sessionsExpired, 0, "not as expired");
  ok(endedIn < 5_000, `ended on broker-server ${endedIn} ms after the reset (resume window 60 s)`);
  await logs.waitFor(/broker\.server: Session \w+ closed: peer ended the session: Smart Client connection failed/);
  await chaos.close();
});

Deno.test("Smart Client leaving while the link is down ends the session on broker-server once a link exists", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOW));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await connectResettableApp(client.address.port);

  chaos.setMode("refuse");
  chaos.resetAll();
  await logs.waitFor(/broker\.client: Session \w+: link lost/);
  app.resetAndDestroy();
  await logs.waitFor(/broker\.client: Session \w+ closed: Smart Client connection failed/);
  chaos.setMode("pass");
  const backAt = Date.now();
  await waitFor(() => server.sessions.length === 0, "broker-server to end the session", 15_000);
  ok(Date.now() - backAt < 5_000, `ended ${Date.now() - backAt} ms after the network came back`);
  equal(server.status().totals.sessionsAborted, 1);
  equal(server.status().totals.sessionsExpired, 0);
  await logs.waitFor(/broker\.client: Session \w+: told broker server .* that the session had ended/);
  await chaos.close();
});

Deno.test("broker-client stopping while the link is down still tells broker-server within its shutdown", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOW));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const app = await connectResettableApp(client.address.port);

  chaos.setMode("refuse");
  chaos.resetAll();
  await logs.waitFor(/broker\.client: Session \w+: resume attempt failed/);
  // The network is back the moment broker-client stops: it is detached, and
  // nothing but its shutdown can tell broker-server now.
  chaos.setMode("pass");
  const stoppedAt = Date.now();
  await client.close();
  const stopTook = Date.now() - stoppedAt;
  await closed(app);
  ok(stopTook < 5_000, `broker-client stopped in ${stopTook} ms`);
  await waitFor(() => server.sessions.length === 0, "broker-server to end the session", 5_000);
  equal(server.status().totals.sessionsAborted, 1);
  await chaos.close();
});

Deno.test("an ERP reset while the link is frozen reaches Smart Client as soon as a link exists", async () => {
  await using logs = await captureLogs();
  // An ERP that resets its connection on command.
  await using erp = await startResettableErp();
  await using server = startServer(serverConfig([erp.port], LONG_WINDOW));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(app, "hi"), "hi");

  chaos.freezeAll();
  erp.sockets[0]?.resetAndDestroy();
  await logs.waitFor(/broker\.server: Session \w+ closed: ERP server connection failed/);
  chaos.dropFrozen();
  const droppedAt = Date.now();
  const end = await app.read(new Uint8Array(16)).catch(() => null);
  equal(end, null, "Smart Client's connection ends");
  ok(Date.now() - droppedAt < 5_000, `Smart Client saw the end ${Date.now() - droppedAt} ms after the link dropped`);
  await waitFor(() => client.sessionCount === 0, "broker-client to end the session");
  app.close();
  await chaos.close();
});
