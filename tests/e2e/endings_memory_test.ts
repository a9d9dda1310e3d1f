/**
 * What broker-client keeps of a session that ended while its server may
 * not know (a farewell, pending for up to the resume window while the
 * link is down) must be small: its id, its key, what it has to say; not
 * the megabytes that were on their way to a Smart Client that is gone.
 */
import net from "node:net";
import { ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { readBufferPool } from "../../src/session/buffer_pool.ts";

const SESSIONS = 16;

/** Memory the process holds (heap and buffers), less the free buffers the read pool keeps for reuse. */
function held(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --v8-flags=--expose-gc");
  gc();
  gc();
  const { heapUsed, external } = Deno.memoryUsage();
  return heapUsed + external - readBufferPool.pooledBytes;
}

Deno.test("farewells pending while the link is down hold little memory, not the bytes that were on their way to Smart Client", async () => {
  await using _logs = await captureLogs();
  // An ERP that streams to its client until the connection goes.
  const chunk = new Uint8Array(64 * 1024).fill(7);
  await using erp = startErp(async (conn) => {
    for (;;) await conn.write(chunk);
  });
  await using server = startServer(
    serverConfig([erp.port], { HEARTBEAT_INTERVAL: "250ms", LINK_TIMEOUT: "2s", RESUME_TIMEOUT: "120s" }),
  );
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));

  // Smart Clients that never read: what the ERP sends waits in broker-client for them.
  const apps: net.Socket[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const app = net.connect({ host: "127.0.0.1", port: client.address.port, noDelay: true });
    app.on("error", () => {});
    app.pause();
    apps.push(app);
  }
  await waitFor(
    () => client.sessions.length === SESSIONS && client.sessions.every((s) => s.pendingLocalBytes >= 2 * 1024 * 1024),
    "every session to hold megabytes for its Smart Client",
    30_000,
  );
  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => client.sessions.every((s) => s.state === "detached"), "every session detached");
  // Both brokers now hold steady: broker-server its detached sessions (its ERP
  // reads stop at the cap), broker-client the bytes for its Smart Clients.
  const pending = client.sessions.reduce((n, s) => n + s.pendingLocalBytes, 0);
  const before = held();
  for (const app of apps) app.resetAndDestroy();
  await waitFor(() => client.sessionCount === 0, "broker-client to end every session");
  // The Smart Clients are gone: the bytes for them are of no use any more.
  const freed = before - held();
  const kept = pending - freed;
  ok(
    kept < SESSIONS * 256 * 1024,
    `of the ${
      (pending / 1024 / 1024).toFixed(1)
    } MiB that waited for the ${SESSIONS} Smart Clients, broker-client still holds ${
      (kept / 1024 / 1024).toFixed(1)
    } MiB (${(kept / SESSIONS / 1024).toFixed(0)} KiB per pending farewell)`,
  );
  chaos.setMode("pass");
  await waitFor(() => server.sessions.length === 0, "the farewells to get through", 15_000);
  await chaos.close();
});
