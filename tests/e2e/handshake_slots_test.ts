/**
 * broker-client sets up at most MAX_LINK_HANDSHAKES links at once: when every
 * session loses its link together and the broker server does not answer,
 * the first 16 wait out their handshake timeout before the 17th dials, and
 * once the server answers again every session resumes with its bytes.
 */
import { deepEqual, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { MAX_LINK_HANDSHAKES } from "../../src/client/client.ts";

const SESSIONS = MAX_LINK_HANDSHAKES + 8;
const HANDSHAKE_TIMEOUT_MS = 3_000;

async function exchange(app: Deno.Conn, text: string): Promise<string> {
  await app.write(new TextEncoder().encode(text));
  const buf = new Uint8Array(text.length);
  for (let got = 0; got < buf.length;) {
    const n = await app.read(buf.subarray(got));
    if (n === null) throw new Error("the session ended");
    got += n;
  }
  return new TextDecoder().decode(buf);
}

Deno.test(`${SESSIONS} sessions cut at once against a silent server dial ${MAX_LINK_HANDSHAKES} links at a time, then all resume`, async () => {
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { LINK_TIMEOUT: "4s", HEARTBEAT_INTERVAL: "1s" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port], { HANDSHAKE_TIMEOUT: `${HANDSHAKE_TIMEOUT_MS}ms` }));
  const apps: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < SESSIONS; i++) {
      const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      apps.push(app);
      await exchange(app, `hello ${i}`);
    }
    // New links are accepted and never answered; every link now is reset.
    chaos.setMode("blackhole");
    const before = chaos.connections;
    chaos.resetAll();
    await waitFor(() => chaos.connections > before, "the first resume to dial");
    const first = performance.now();
    await waitFor(() => chaos.connections >= before + MAX_LINK_HANDSHAKES, `${MAX_LINK_HANDSHAKES} dials`);
    await waitFor(() => chaos.connections > before + MAX_LINK_HANDSHAKES, "one more dial", 20_000);
    const waited = performance.now() - first;
    ok(
      waited >= HANDSHAKE_TIMEOUT_MS - 500,
      `dial ${MAX_LINK_HANDSHAKES + 1} came ${Math.round(waited)} ms after the first: before a slot was free`,
    );
    chaos.setMode("pass");
    chaos.dropFrozen();
    await waitFor(
      () => client.sessions.length === SESSIONS && client.sessions.every((s) => s.state === "attached"),
      "every session to resume",
      60_000,
    );
    const echoes = await Promise.all(apps.map((app, i) => exchange(app, `again ${i}`)));
    deepEqual(echoes, apps.map((_, i) => `again ${i}`));
  } finally {
    for (const app of apps) app.close();
    await client.close();
    await server.close();
    chaos.dropFrozen();
    await chaos.close();
  }
});
