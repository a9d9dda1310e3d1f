/**
 * Review finding: the handshake slots are shared by every broker server in
 * BrokerServer. Handshakes hung on one server (black-holed: it accepts and
 * never answers) hold the slots for HANDSHAKE_TIMEOUT each, and the resumes of
 * sessions on a healthy second server wait behind them.
 */
import { ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { MAX_LINK_HANDSHAKES } from "../../src/client/client.ts";

const HANDSHAKE_TIMEOUT_MS = 2_000;
const ON_B = 8;
const NEW = 2 * MAX_LINK_HANDSHAKES;

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

Deno.test("handshakes hung on a black-holed broker server do not hold up resumes to a healthy one", async () => {
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { LINK_TIMEOUT: "4s", HEARTBEAT_INTERVAL: "1s" }));
  const chaosA = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const chaosB = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(
    clientConfig([chaosA.port, chaosB.port], { HANDSHAKE_TIMEOUT: `${HANDSHAKE_TIMEOUT_MS}ms` }),
  );
  const apps: Deno.TcpConn[] = [];
  try {
    // A refuses at first: these sessions open on B.
    chaosA.setMode("refuse");
    for (let i = 0; i < ON_B; i++) {
      const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      apps.push(app);
      await exchange(app, `hello ${i}`);
    }
    const onB = client.sessions;
    // A now accepts and never answers: new Smart Client connections try it first and hang there.
    chaosA.setMode("blackhole");
    for (let i = 0; i < NEW; i++) apps.push(await Deno.connect({ hostname: "127.0.0.1", port: client.address.port }));
    await waitFor(() => chaosA.connections >= ON_B + MAX_LINK_HANDSHAKES, "the new sessions to dial A");
    // B's links drop: its sessions resume on the healthy server B.
    chaosB.resetAll();
    await waitFor(() => onB.every((s) => s.state !== "attached"), "B's sessions to see the drop");
    const cut = performance.now();
    await waitFor(() => onB.every((s) => s.state === "attached"), "B's sessions to resume", 30_000);
    const took = performance.now() - cut;
    ok(
      took < HANDSHAKE_TIMEOUT_MS,
      `B's sessions resumed in ${Math.round(took)} ms: they waited for slots held by handshakes to A`,
    );
  } finally {
    for (const app of apps) app.close();
    await client.close();
    await server.close();
    chaosA.dropFrozen();
    chaosB.dropFrozen();
    await chaosA.close();
    await chaosB.close();
  }
});
