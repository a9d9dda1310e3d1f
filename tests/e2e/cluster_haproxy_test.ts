/**
 * A real HAProxy (mode tcp, roundrobin, no affinity) in front of three
 * broker-servers of one cluster, with a misbehaving link between
 * broker-client and HAProxy: every resume may land on any broker-server and
 * is relayed to the one holding its session (src/cluster/). Skipped, with
 * the reason, where HAProxy is not installed, and under Windows.
 */
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { Digest, receiveAll, seededRandom, sendStream, streamDigest } from "../../tools/streams.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { haproxyUnavailable, startHaproxy } from "../helpers/haproxy.ts";
import { clusterConfigs, startCluster } from "../helpers/cluster.ts";
import { echo, readExactly, roundTrip } from "../helpers/apps.ts";
import { clientConfig, deadline, startClient, startErp, waitFor } from "../helpers/setup.ts";
import type { BrokerServer } from "../../src/server/server.ts";

const unavailable = haproxyUnavailable();
if (unavailable) console.log(`SKIPPED: the HAProxy cluster tests: ${unavailable}`);

async function readHeader(conn: Deno.Conn): Promise<number> {
  return new DataView((await readExactly(conn, 4)).buffer).getUint32(0);
}

const FAST = { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "500ms", RESUME_TIMEOUT: "60s" };
const SESSIONS = 100;
const BYTES = 256 * 1024;

/** Which broker-servers hold each session id, as seen at any moment. */
function watchHolders(servers: BrokerServer[]): { holders: Map<string, Set<number>>; both: string[]; stop(): void } {
  const holders = new Map<string, Set<number>>();
  const both: string[] = [];
  const sample = () => {
    const now = new Map<string, number[]>();
    servers.forEach((s, i) => {
      for (const e of s.sessions) {
        now.set(e.id, [...(now.get(e.id) ?? []), i]);
        const seen = holders.get(e.id) ?? new Set<number>();
        seen.add(i);
        holders.set(e.id, seen);
      }
    });
    for (const [id, at] of now) if (at.length > 1) both.push(`${id.slice(0, 8)} on ${at.join("+")}`);
  };
  const timer = setInterval(sample, 5);
  sample();
  return { holders, both, stop: () => (clearInterval(timer), sample()) };
}

Deno.test({
  name: `HAProxy roundrobin to 3 broker-servers: ${SESSIONS} sessions x ${
    BYTES >> 10
  } KiB each way survive link faults, resumes relayed to the holder`,
  ignore: unavailable !== null,
  fn: async () => {
    await using logs = await captureLogs();
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
    await using servers = startCluster(clusterConfigs(3, [erp.port], FAST));
    await using haproxy = await startHaproxy(servers.map((s) => s.address.port));
    const chaos = await ChaosLink.start({ host: "127.0.0.1", port: haproxy.port });
    await using client = startClient(clientConfig([chaos.port]));
    const watch = watchHolders(servers);

    const roll = seededRandom(Number(Deno.env.get("CLUSTER_HAPROXY_SEED") ?? 20261130));
    let running = true;
    const faults = (async () => {
      while (running) {
        await new Promise((r) => setTimeout(r, 20 + roll() * 100));
        if (!running) break;
        const pick = roll();
        if (pick < 0.45) chaos.resetAll();
        else if (pick < 0.8) chaos.closeAll();
        else chaos.freezeAll();
        if (roll() < 0.4) chaos.dropFrozen();
      }
    })();

    const received = Array.from({ length: SESSIONS }, () => new Digest());
    const stalled = () =>
      `sessions still receiving (index: bytes): ${
        received.flatMap((d, i) => d.bytes < BYTES ? [`${i}: ${d.bytes}`] : []).join(", ") || "none"
      }; sessions per broker-server ${servers.map((s) => s.sessions.length).join("/")}; faults ${
        JSON.stringify(chaos.faults)
      }`;
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
          throw new Error(`Session ${index} failed: ${err}`);
        });
        app.close();
        return { index, bytes: digest.bytes, hex: digest.hex() };
      })),
      25_000,
      stalled,
    ).finally(() => running = false);
    await faults;
    chaos.dropFrozen();
    // A retried opening whose welcome was lost reaches the broker-server that
    // holds it wherever HAProxy sends it (tests/e2e/cluster_open_retry_test.ts):
    // no session is left behind.
    await deadline(
      waitFor(
        () => servers.every((s) => s.sessions.length === 0) && client.sessionCount === 0,
        "sessions to end",
      ),
      15_000,
      () =>
        `left: ${
          servers.map((s, i) =>
            s.sessions.map((e) =>
              `${
                e.id.slice(0, 8)
              } on ${i} ${e.session.state} buffered ${e.session.bufferedBytes} pending ${e.session.pendingLocalBytes} received ${e.session.received}`
            ).join("; ")
          ).join(" | ")
        }; ${client.sessionCount} on the client`,
    );
    watch.stop();
    await chaos.close();

    for (const r of results) {
      equal(r.bytes, BYTES, `session ${r.index}: client received ${r.bytes} bytes`);
      equal(r.hex, streamDigest(r.index * 2 + 2, BYTES), `session ${r.index}: client-side SHA-256 differs`);
      const atErp = erpReceived.get(r.index);
      equal(atErp?.bytes, BYTES, `session ${r.index}: ERP received ${atErp?.bytes} bytes`);
      equal(atErp?.hex, streamDigest(r.index * 2 + 1, BYTES), `session ${r.index}: ERP-side SHA-256 differs`);
    }
    equal(erpReceived.size, SESSIONS, "every session reached the ERP once with its data");
    const opened = logs.lines.filter((l) => / opened: client /.test(l)).length;
    const abandoned = logs.lines.filter((l) => /Opening from .* abandoned/.test(l)).length;
    equal(opened, SESSIONS, "one session opened per Smart Client connection");
    equal(erp.connections, opened + abandoned, `ERP connections: ${opened} sessions, ${abandoned} abandoned openings`);
    equal(watch.holders.size, SESSIONS, "every session was seen on a broker-server");
    equal(watch.both.length, 0, `sessions held by two broker-servers at once: ${watch.both.join(", ")}`);
    const moved = [...watch.holders].filter(([, at]) => at.size !== 1).map(([id]) => id.slice(0, 8));
    equal(moved.length, 0, `sessions held by more than one broker-server: ${moved.join(", ")}`);
    const perServer = servers.map((_, i) => [...watch.holders.values()].filter((at) => at.has(i)).length);
    ok(perServer.every((n) => n > 0), `sessions per broker-server ${perServer.join("/")}`);

    const counts = servers.map((s) => s.status().cluster!);
    const sum = (key: "relayedOut" | "relayedIn" | "relayFailed") => counts.reduce((n, c) => n + c[key], 0);
    console.log(
      `faults ${JSON.stringify(chaos.faults)}; ${chaos.connections} links; sessions per broker-server ${
        perServer.join("/")
      }; relayedOut ${sum("relayedOut")}, relayedIn ${sum("relayedIn")}, relayFailed ${
        sum("relayFailed")
      }; ${abandoned} openings abandoned`,
    );
    ok(sum("relayedOut") > 0, "resumes were relayed to their holder");
    equal(sum("relayFailed"), 0, "no relay failed: every holder was up");
    // The holder counts a relay when it grants it; the relaying side once the
    // client's link is still there to pass on (it may have been cut meanwhile).
    ok(sum("relayedIn") >= sum("relayedOut"), `relayedIn ${sum("relayedIn")} >= relayedOut ${sum("relayedOut")}`);
  },
});

Deno.test({
  name: "HAProxy roundrobin to 3 broker-servers: one stops; its sessions end with the reason, the others carry on",
  ignore: unavailable !== null,
  fn: async () => {
    await using logs = await captureLogs();
    await using erp = startErp(echo);
    await using servers = startCluster(clusterConfigs(3, [erp.port], FAST));
    await using haproxy = await startHaproxy(servers.map((s) => s.address.port));
    const front = await ChaosLink.start({ host: "127.0.0.1", port: haproxy.port });
    await using client = startClient(clientConfig([front.port]));

    // Sessions opened one after another, each on the broker-server that took it.
    const sessions: { app: Deno.TcpConn; server: number; id: string }[] = [];
    const known = new Set<string>();
    const open = async () => {
      const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      equal(await roundTrip(app, `hello${sessions.length}`), `hello${sessions.length}`);
      let found: { server: number; id: string } | undefined;
      await waitFor(() => {
        servers.forEach((s, i) => {
          for (const e of s.sessions) if (!known.has(e.id)) found = { server: i, id: e.id };
        });
        return found !== undefined;
      }, "the new session on a broker-server");
      known.add(found!.id);
      sessions.push({ app, ...found! });
      return sessions.at(-1)!;
    };
    while (sessions.length < 12 && [0, 1, 2].some((i) => sessions.filter((s) => s.server === i).length < 2)) {
      await open();
    }
    const victim = 1;
    const doomed = sessions.filter((s) => s.server === victim);
    const kept = sessions.filter((s) => s.server !== victim);
    ok(doomed.length >= 2 && kept.length >= 4, `sessions per broker-server: ${sessions.map((s) => s.server)}`);

    const reason = "broker-server b1 is stopping for maintenance";
    await servers[victim]!.close(reason, 0);
    await haproxy.waitFor(/b1 is DOWN/);
    for (const s of doomed) {
      const short = s.id.slice(0, 8);
      const escaped = reason.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      await logs.waitFor(new RegExp(`Session ${short} closed: ${escaped}; \\d+ bytes to the client`));
      await logs.waitFor(new RegExp(`Session ${short} closed: .*${escaped}.*bytes from Smart Client`));
      // broker-client ends the Smart Client connection.
      const end = await s.app.read(new Uint8Array(1)).catch(() => null);
      equal(end, null, `session ${short}: Smart Client's connection ends`);
      s.app.close();
    }

    // The sessions of the other two carry on, also across link cuts that
    // make their resumes land on any broker-server left.
    for (const [i, s] of kept.entries()) equal(await roundTrip(s.app, `after${i}`), `after${i}`);
    // At least three cuts, and more (up to ten) until a resume has landed on the
    // other broker-server left: HAProxy's rotation may happen to send every
    // resume of a cut back to its holder.
    const relayedNow = () => servers.reduce((n, s, i) => n + (i === victim ? 0 : s.status().cluster!.relayedOut), 0);
    for (let cut = 0; cut < 10 && (cut < 3 || relayedNow() === 0); cut++) {
      front.resetAll();
      for (const [i, s] of kept.entries()) equal(await roundTrip(s.app, `cut${cut}-${i}`), `cut${cut}-${i}`);
    }
    ok(relayedNow() > 0, "resumes were relayed between the two left");

    // New sessions go to the two left.
    const before = sessions.length;
    for (let i = 0; i < 6; i++) await open();
    const fresh = sessions.slice(before);
    ok(fresh.every((s) => s.server !== victim), `new sessions went to ${fresh.map((s) => s.server)}`);
    ok(fresh.some((s) => s.server === 0) && fresh.some((s) => s.server === 2), "both left took new sessions");
    for (const s of [...kept, ...fresh]) {
      await s.app.closeWrite();
      equal(await s.app.read(new Uint8Array(1)), null);
      s.app.close();
    }
    await waitFor(() => servers.every((s) => s.sessions.length === 0) && client.sessionCount === 0, "sessions to end");
    await front.close();
  },
});
