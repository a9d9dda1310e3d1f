/**
 * The headline guarantee: many sessions moving data both ways at once keep
 * every byte intact through random link faults of every kind.
 */
import { equal } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { clientConfig, deadline, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { Digest, receiveAll, seededRandom, sendStream, streamDigest } from "../../tools/streams.ts";

const SESSIONS = Number(Deno.env.get("INTEGRITY_SESSIONS") ?? 32);
const BYTES = Number(Deno.env.get("INTEGRITY_MIB") ?? 16) * 1024 * 1024;

async function readHeader(conn: Deno.Conn): Promise<number> {
  const header = new Uint8Array(4);
  let got = 0;
  while (got < 4) {
    const n = await conn.read(header.subarray(got));
    if (n === null) throw new Error("EOF before header");
    got += n;
  }
  return new DataView(header.buffer).getUint32(0);
}

Deno.test(`${SESSIONS} sessions x ${BYTES >> 20} MiB each way survive random resets, closes and freezes`, async () => {
  const erpReceived = new Map<number, { bytes: number; hex: string }>();
  await using erp = startErp(async (conn) => {
    const index = await readHeader(conn);
    const [, digest] = await Promise.all([
      sendStream(conn, index * 2 + 2, BYTES).then(() => conn.closeWrite()),
      receiveAll(conn),
    ]);
    erpReceived.set(index, { bytes: digest.bytes, hex: digest.hex() });
    conn.close();
  });
  await using server = startServer(
    serverConfig([erp.port], { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "500ms", RESUME_TIMEOUT: "60s" }),
  );
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));

  // Faults at random moments, from a seeded generator so a failure can be replayed.
  const roll = seededRandom(Number(Deno.env.get("INTEGRITY_SEED") ?? 20261128));
  let running = true;
  const faults = (async () => {
    while (running) {
      await new Promise((r) => setTimeout(r, 50 + roll() * 450));
      if (!running) break;
      const pick = roll();
      if (pick < 0.4) chaos.resetAll();
      else if (pick < 0.7) chaos.closeAll();
      else if (pick < 0.9) chaos.freezeAll();
      else chaos.setDelay(chaos.openPairs % 2 === 0 ? 20 : 0);
      // Frozen links are dropped after a while so they do not pile up in the relay.
      if (roll() < 0.3) chaos.dropFrozen();
    }
  })();

  // What each Smart Client has received so far, to say where a stalled session stopped.
  const received = Array.from({ length: SESSIONS }, () => new Digest());
  const stalled = () =>
    `sessions still receiving (index: bytes of ${BYTES}): ${
      received.flatMap((d, i) => d.bytes < BYTES ? [`${i}: ${d.bytes}`] : []).join(", ") || "none"
    }; broker-server sessions: ${
      server.sessions.map((s) => `${s.id.slice(0, 8)} ${s.session.state}`).join(", ") || "none"
    }; faults so far ${JSON.stringify(chaos.faults)}`;
  const results = await deadline(
    Promise.all(Array.from({ length: SESSIONS }, async (_, index) => {
      const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      const header = new Uint8Array(4);
      new DataView(header.buffer).setUint32(0, index);
      await app.write(header);
      const [, digest] = await Promise.all([
        sendStream(app, index * 2 + 1, BYTES).then(() => app.closeWrite()),
        receiveAll(app, received[index]),
      ]).catch((err) => {
        const port = (app.localAddr as Deno.NetAddr).port;
        throw new Error(`Session ${index} (Smart Client port ${port}) failed: ${err}`);
      });
      app.close();
      return { index, bytes: digest.bytes, hex: digest.hex() };
    })),
    120_000,
    stalled,
  ).finally(() => running = false);
  await faults;
  console.log(
    `faults injected: ${chaos.faults.resets} resets, ${chaos.faults.closes} closes, ${chaos.faults.freezes} freezes; ${chaos.connections} links`,
  );
  // The apps have all their bytes; the brokers finish their goodbye (maybe
  // through one more resume, if the last fault hit it) and leave nothing behind.
  chaos.setDelay(0);
  chaos.dropFrozen();
  await deadline(
    waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to finish", 20_000),
    30_000,
    () =>
      `sessions left: server ${
        server.sessions.map((e) =>
          `${
            e.id.slice(0, 8)
          } ${e.session.state} buffered ${e.session.bufferedBytes} pending ${e.session.pendingLocalBytes} received ${e.session.received}`
        ).join("; ")
      }; client ${
        client.sessions.map((s) =>
          `${s.state} buffered ${s.bufferedBytes} pending ${s.pendingLocalBytes} received ${s.received}`
        ).join("; ")
      }`,
  );
  await chaos.close();

  for (const r of results) {
    equal(r.bytes, BYTES, `session ${r.index}: client received ${r.bytes} bytes`);
    equal(r.hex, streamDigest(r.index * 2 + 2, BYTES), `session ${r.index}: client-side SHA-256 differs`);
    const atErp = erpReceived.get(r.index);
    equal(atErp?.bytes, BYTES, `session ${r.index}: ERP received ${atErp?.bytes} bytes`);
    equal(atErp?.hex, streamDigest(r.index * 2 + 1, BYTES), `session ${r.index}: ERP-side SHA-256 differs`);
  }
});
