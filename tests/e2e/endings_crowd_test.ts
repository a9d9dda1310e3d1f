/**
 * Many endings at once: hundreds of sessions that their applications reset
 * while the link is down must all be ended on broker-server once the
 * network returns (through its per-address handshake caps), and a stopping
 * broker-client with hundreds of farewells pending stops within its grace.
 */
import net from "node:net";
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { FAREWELL_GRACE_MS } from "../../src/client/client.ts";
import { connectResettableApp } from "../helpers/node_apps.ts";

/** Wine's socket layer crawls past ~100 sockets in a process: tools/test_windows.sh runs fewer. */
const SESSIONS = Number(Deno.env.get("ENDINGS_CROWD_SESSIONS") ?? 200);

/** Long windows: a session left to its window fails the test. */
const LONG_WINDOW = {
  HEARTBEAT_INTERVAL: "250ms",
  LINK_TIMEOUT: "2s",
  RESUME_TIMEOUT: "120s",
  // Fewer handshake slots per address than sessions coming back at once.
  MAX_HANDSHAKES_PER_ADDRESS: String(Math.max(2, Math.floor(SESSIONS / 6))),
};

/** Opens SESSIONS sessions through `chaos`, cuts the link for good, then resets every application. */
async function resetAllWhileDown(
  client: { address: { port: number }; sessionCount: number; sessions: { state: string }[] },
  chaos: ChaosLink,
): Promise<void> {
  const apps: net.Socket[] = [];
  for (let i = 0; i < SESSIONS; i += 20) {
    const batch = Math.min(20, SESSIONS - i);
    apps.push(...await Promise.all(Array.from({ length: batch }, () => connectResettableApp(client.address.port))));
  }
  await waitFor(() => client.sessions.every((s) => s.state === "attached"), "every session attached");
  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => client.sessions.every((s) => s.state === "detached"), "every session detached");
  for (const app of apps) app.resetAndDestroy();
  await waitFor(() => client.sessionCount === 0, "broker-client to end every session");
}

Deno.test(`${SESSIONS} sessions reset while the link is down are all ended on broker-server once it is back`, async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOW));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  await resetAllWhileDown(client, chaos);
  equal(server.sessions.length as number, SESSIONS, "broker-server still holds them all (it could not be told)");

  chaos.setMode("pass");
  const backAt = Date.now();
  await waitFor(() => server.sessions.length === 0, "broker-server to end every session", 30_000).catch(() => {});
  const took = Date.now() - backAt;
  const totals = server.status().totals;
  ok(
    server.sessions.length === 0,
    `${server.sessions.length} of ${SESSIONS} sessions still held by broker-server ${took} ms after the network came back`,
  );
  equal(totals.sessionsAborted, SESSIONS, "every one counted as aborted");
  equal(totals.sessionsExpired, 0, "none expired");
  ok(took < 15_000, `all ended within ${took} ms`);
  ok(!logs.lines.some((l) => /could not tell broker server/.test(l)), "no farewell given up");
  await chaos.close();
});

Deno.test(`broker-client stopping with ${SESSIONS} farewells pending stops within its grace and tells broker-server`, async () => {
  await using _logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOW));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  await resetAllWhileDown(client, chaos);

  chaos.setMode("pass");
  const stoppedAt = Date.now();
  await client.close();
  const took = Date.now() - stoppedAt;
  ok(took < FAREWELL_GRACE_MS + 1_500, `broker-client stopped in ${took} ms (grace ${FAREWELL_GRACE_MS} ms)`);
  // Whatever was told is told by now (a farewell cut by the grace is not).
  const left = server.sessions.length;
  ok(left === 0, `${left} of ${SESSIONS} sessions still held by broker-server after broker-client stopped`);
  equal(server.status().totals.sessionsExpired, 0);
  await chaos.close();
});
