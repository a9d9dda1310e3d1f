/**
 * A stopping broker-client with 40 sessions opening against a broker server
 * that never answers: 16 hold slots, the rest wait for one. close() returns
 * within the farewell grace and leaves no link open.
 */
import { ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { FAREWELL_GRACE_MS, MAX_LINK_HANDSHAKES } from "../../src/client/client.ts";

Deno.test("close() with 40 sessions waiting for handshake slots returns within the farewell grace", async () => {
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  chaos.setMode("blackhole");
  const client = startClient(clientConfig([chaos.port], { HANDSHAKE_TIMEOUT: "60s", NEW_SESSION_TIMEOUT: "120s" }));
  const apps: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 40; i++) apps.push(await Deno.connect({ hostname: "127.0.0.1", port: client.address.port }));
    await waitFor(() => chaos.connections >= MAX_LINK_HANDSHAKES, "16 dials");
    await new Promise((r) => setTimeout(r, 300));
    ok(chaos.connections === MAX_LINK_HANDSHAKES, `${chaos.connections} dials`);
    const started = performance.now();
    await client.close();
    const took = performance.now() - started;
    ok(took < FAREWELL_GRACE_MS + 2_000, `close() took ${Math.round(took)} ms`);
  } finally {
    for (const app of apps) app.close();
    await client.close();
    await server.close();
    chaos.dropFrozen();
    await chaos.close();
  }
});
