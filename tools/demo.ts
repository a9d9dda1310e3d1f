/**
 * `deno task demo`: the whole chain on the loopback, with a link that the
 * demo breaks every few seconds, and a verdict on every byte.
 *
 *   demo apps ──> broker-client ──> chaos link ──> broker-server ──> stand-in ERP
 *
 * The brokers are configured from examples/loopback/*.ini (ports are picked
 * at run time so the demo never collides with anything). Each demo app sends
 * a seeded random stream and the stand-in ERP sends one back; both sides
 * hash what they send and receive, and the verdict compares the hashes.
 * Options: --seconds N (default 20), --sessions N (default 4), --verbose.
 * Ctrl-C ends early, still with a verdict.
 * @module
 */

import { parseArgs } from "node:util";
import { BrokerClient } from "../src/client/client.ts";
import { loadClientConfig } from "../src/config/client_config.ts";
import { loadServerConfig } from "../src/config/server_config.ts";
import { setupLogging } from "../src/ops/log.ts";
import { shutdownSignal } from "../src/ops/signals.ts";
import { BrokerServer } from "../src/server/server.ts";
import { sleep } from "../src/session/backoff.ts";
import type { Session } from "../src/session/session.ts";
import { ChaosLink } from "./chaos_link.ts";
import { ByteStream, Digest, seededRandom } from "./streams.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "20" },
    sessions: { type: "string", default: "4" },
    verbose: { type: "boolean", default: false },
  },
});
const SECONDS = Number(values.seconds);
const SESSIONS = Number(values.sessions);
const CHUNK = 16 * 1024;
const stop = shutdownSignal();

await setupLogging({ console: values.verbose === true, level: "info", format: "text" });

/** Hashes of what one end sent and received. */
interface Side {
  sent: Digest;
  received: Digest;
}

/** Writes a seeded stream into `conn` at an interactive pace until `until` aborts, then half-closes. */
async function pump(conn: Deno.Conn, seed: number, until: AbortSignal, sent: Digest): Promise<void> {
  const stream = new ByteStream(seed);
  const buf = new Uint8Array(CHUNK);
  while (!until.aborted) {
    stream.fill(buf);
    for (let done = 0; done < buf.length;) done += await conn.write(buf.subarray(done));
    sent.update(buf);
    await new Promise((r) => setTimeout(r, 8)); // about 2 MiB/s per direction and session
  }
  await conn.closeWrite();
}

/** Reads `conn` to its end, hashing. */
async function drain(conn: Deno.Conn, received: Digest): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) received.update(buf.subarray(0, n));
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

// Stand-in ERP servers, one per REMOTE_SERVER of the example: each sends its
// own stream until the app's FIN, hashing both ways.
const erpSides: Side[] = [];
const erpJobs: Promise<void>[] = [];
const serverConfig = await loadServerConfig("examples/loopback/appserver.ini");
serverConfig.listen.port = 0;
const erps = serverConfig.remoteServers.map((remote) => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: remote.hostname, port: 0 });
  } catch {
    listener = Deno.listen({ hostname: "127.0.0.1", port: 0 }); // no IPv6 loopback here
  }
  const addr = listener.addr as Deno.NetAddr;
  remote.hostname = addr.hostname;
  remote.port = addr.port;
  let sessions = 0;
  const loop = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      const side: Side = { sent: new Digest(), received: new Digest() };
      const appDone = new AbortController();
      erpJobs.push(
        (async () => {
          // Health probes connect and close at once: only count real sessions.
          const first = new Uint8Array(64 * 1024);
          const n = await conn.read(first);
          if (n === null) return conn.close();
          sessions++;
          erpSides.push(side);
          side.received.update(first.subarray(0, n));
          await Promise.all([
            drain(conn, side.received).then(() => appDone.abort()),
            pump(conn, 1000 + erpSides.length, appDone.signal, side.sent),
          ]);
          conn.close();
        })().catch((err) => console.error(`ERP stand-in: ${err}`)),
      );
    }
  })();
  return { remote, listener, loop, sessions: () => sessions };
});
const server = new BrokerServer(serverConfig);
server.listen();
const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
const clientConfig = await loadClientConfig("examples/loopback/smartclient.ini");
clientConfig.listen.port = 0;
clientConfig.brokerServers = [{ hostname: "127.0.0.1", port: chaos.port }];
const client = new BrokerClient(clientConfig);
client.listen();

const t = serverConfig.tuning;
console.log(
  `Demo: ${SESSIONS} sessions for ${SECONDS} s: apps -> broker-client 127.0.0.1:${client.address.port} -> link (cut every few seconds) -> broker-server 127.0.0.1:${server.address.port} -> ${erps.length} stand-in ERP servers`,
);
console.log(
  `Settings from examples/loopback/appserver.ini: heartbeat ${t.heartbeatIntervalMs} ms, silent link dead after ${t.linkTimeoutMs} ms, resume window ${
    t.resumeTimeoutMs / 1000
  } s. Ctrl-C ends early.\n`,
);

// Session stats outlive the sessions: keep every session object seen.
const clientSeen = new Set<Session>();
const serverSeen = new Set<Session>();
const track = () => {
  for (const s of client.sessions) clientSeen.add(s);
  for (const s of server.sessions) serverSeen.add(s.session);
};
const sum = (sessions: Set<Session>, pick: (s: Session) => number) => [...sessions].reduce((n, s) => n + pick(s), 0);
const resumes = () => sum(clientSeen, (s) => s.stats.resumes);
const replayed = () => sum(clientSeen, (s) => s.stats.bytesReplayed) + sum(serverSeen, (s) => s.stats.bytesReplayed);

const appsDone = AbortSignal.any([stop, AbortSignal.timeout(SECONDS * 1000)]);
const appSides: Side[] = Array.from({ length: SESSIONS }, () => ({ sent: new Digest(), received: new Digest() }));
const apps = appSides.map(async (side, index) => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await Promise.all([pump(conn, 1 + index, appsDone, side.sent), drain(conn, side.received)]);
  conn.close();
});

const started = Date.now();
const clock = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`;
const random = seededRandom(Date.now() >>> 0);
let cuts = 0;
const faults = (async () => {
  while (!appsDone.aborted) {
    if (!await sleep(2_000 + random() * 2_000, appsDone)) break;
    const pick = random();
    const what = pick < 0.45 ? "reset (RST)" : pick < 0.9 ? "clean close (FIN)" : "freeze (silence)";
    if (pick < 0.45) chaos.resetAll();
    else if (pick < 0.9) chaos.closeAll();
    else chaos.freezeAll();
    cuts++;
    console.log(`${clock()}  link cut: ${what}`);
  }
})();

const progress = setInterval(() => {
  track();
  const up = appSides.reduce((n, s) => n + s.sent.bytes, 0);
  const down = appSides.reduce((n, s) => n + s.received.bytes, 0);
  console.log(
    `${clock()}  apps sent ${mib(up)}, received ${mib(down)}; link cuts ${cuts}, resumes ${resumes()}, replayed ${
      mib(replayed())
    }`,
  );
}, 1_000);

await Promise.all(apps);
await faults;
chaos.dropFrozen();
// The brokers finish their goodbye (all bytes acknowledged) a moment after the apps.
for (const deadline = Date.now() + 2 * t.linkTimeoutMs; client.sessionCount > 0 && Date.now() < deadline;) {
  track();
  await sleep(20);
}
clearInterval(progress);
track();

// Match each app to the ERP connection that received exactly its bytes.
let intact = true;
console.log("\nVerdict:");
const erpByReceived = new Map(erpSides.filter((s) => s.received.bytes > 0).map((s) => [s.received.hex(), s]));
for (const [i, app] of appSides.entries()) {
  const erp = erpByReceived.get(app.sent.hex());
  const upOk = erp !== undefined;
  const downOk = erp !== undefined && erp.sent.bytes === app.received.bytes && erp.sent.hex() === app.received.hex();
  intact &&= upOk && downOk;
  console.log(
    `  session ${i + 1}: Smart Client -> ERP ${mib(app.sent.bytes)} ${
      upOk ? "intact" : "DIFFERENT"
    }; ERP -> Smart Client ${mib(app.received.bytes)} ${downOk ? "intact" : "DIFFERENT"}`,
  );
}
console.log(`  ${cuts} link cuts, ${resumes()} resumes, ${mib(replayed())} replayed (both directions)`);
console.log(
  `  balancing (${serverConfig.sortMethod}): ${
    erps.map((e) => `${e.remote.name} ${e.sessions()} sessions`).join(", ")
  }`,
);
console.log(
  intact
    ? "All bytes intact: the SHA-256 of everything sent equals what arrived, in both directions."
    : "DATA DIFFERS: see above.",
);

await client.close();
await server.close();
await chaos.close();
for (const erp of erps) {
  erp.listener.close();
  await erp.loop;
}
await Promise.all(erpJobs);
Deno.exit(intact ? 0 : 1);
