/**
 * Hostile review of src/cluster/cluster.ts against fake peers speaking the
 * peer protocol (wire.ts) on 127.0.0.1: each test failed when written.
 */
import { equal, ok } from "node:assert/strict";
import { Cluster } from "../../src/cluster/cluster.ts";
import { acceptPeer, sendReply } from "../../src/cluster/peer_conn.ts";
import { importClusterKey } from "../../src/cluster/wire.ts";
import { type Network, systemNetwork } from "../../src/session/network.ts";
import { closeQuietly } from "../../src/session/transport.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { waitFor } from "../helpers/setup.ts";
import { TEST_CLUSTER_KEY } from "../helpers/cluster.ts";

/** A fake broker-server on the peer port: answers hello with `holders` (after `delayMs`), records relays. */
function fakePeer(tag: string, holders: string[], delayMs = 0) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relays: string[] = [];
  let hellos = 0;
  const conns = new Set<Deno.Conn>();
  const key = importClusterKey(TEST_CLUSTER_KEY);
  const serving = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        try {
          const { request, proof } = await acceptPeer(conn, await key, 3_000);
          if (request.op === "hello") {
            await new Promise((r) => setTimeout(r, delayMs));
            await sendReply(conn, proof, { tag, version: "fake", pid: 1, sessions: 1, holders });
            hellos++;
          } else if (request.op === "relay") {
            relays.push(request.tag);
            await sendReply(conn, proof, { ok: false, reason: `fake ${tag} refuses` });
          }
        } catch { /* ignore */ }
        closeQuietly(conn);
        conns.delete(conn);
      })();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    relays,
    get hellos() {
      return hellos;
    },
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await serving;
      await new Promise((r) => setTimeout(r, 50));
    },
  };
}

function cluster(options: { predecessors?: { tag: string; port: number; pid: number }[]; network?: Network } = {}) {
  return new Cluster({
    config: { key: TEST_CLUSTER_KEY, listen: { hostname: "127.0.0.1", port: 0 }, peers: [], handoverTimeoutMs: 60_000 },
    network: options.network ?? systemNetwork,
    tag: "cccccccc",
    version: "test",
    sessions: () => 0,
    holdsOpening: () => false,
    adopt: (conn) => closeQuietly(conn),
    takenOver: () => Promise.resolve(),
    settled: () => {},
    predecessors: (options.predecessors ?? []).map((p) => ({ ...p, version: "old" })),
  });
}

Deno.test("cluster review: after two takeovers, the first process's tag is still routed to its own port, not to the middle process", async () => {
  // The newest process took over from p1, which had taken over from p0: its predecessors are [p1, p0].
  // p1 answers hello with holders [p1, p0] (its own predecessor); relays arriving on p1's handover port
  // are never passed on (#answerRelay: viaHandover), so p0's sessions must be relayed to p0 directly.
  const p0 = fakePeer("00000001", ["00000001"]);
  const p1 = fakePeer("11111111", ["11111111", "00000001"], 300); // answers after p0
  const c = cluster({
    predecessors: [{ tag: "11111111", port: p1.port, pid: 101 }, { tag: "00000001", port: p0.port, pid: 100 }],
  });
  try {
    c.listen();
    await waitFor(() => p0.hellos >= 1 && p1.hellos >= 1, "both predecessors to answer the first poll");
    await new Promise((r) => setTimeout(r, 50));
    const outcome = await c.relay("00000001", "127.0.0.1:1", () => Promise.resolve(null));
    equal(
      p1.relays.length,
      0,
      `a relay for p0's tag went to p1's handover port (which refuses it: outcome ${JSON.stringify(outcome)})`,
    );
    equal(p0.relays.length, 1, "the relay for p0's tag reached p0");
  } finally {
    await c.close();
    await p0.close();
    await p1.close();
  }
});

Deno.test("cluster review: strangers on the peer port do not flood the log (one line per connection)", async () => {
  await using logs = await captureLogs();
  const c = cluster();
  try {
    c.listen();
    const port = c.address!.port;
    for (let i = 0; i < 200; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      const buf = new Uint8Array(64);
      await conn.read(buf).catch(() => null);
      conn.close();
    }
    await new Promise((r) => setTimeout(r, 200));
    const refused = logs.lines.filter((l) => /cluster: refused a connection from/.test(l));
    ok(refused.length <= 25, `${refused.length} warning lines for 200 stranger connections from one address`);
  } finally {
    await c.close();
  }
});

Deno.test("cluster review: one failed accept on the peer port (EMFILE under load) does not stop the cluster listener for good", async () => {
  let failOnce = true;
  const network: Network = {
    ...systemNetwork,
    listen: (options) => {
      const inner = systemNetwork.listen(options);
      return {
        get addr() {
          return inner.addr;
        },
        accept: () => {
          if (failOnce) {
            failOnce = false;
            return Promise.reject(new Error("Too many open files (os error 24)"));
          }
          return inner.accept();
        },
        close: () => inner.close(),
        [Symbol.asyncIterator]: undefined as never,
      } as unknown as ReturnType<Network["listen"]>;
    },
  };
  const c = cluster({ network });
  try {
    c.listen();
    const port = c.address!.port;
    const asker = cluster();
    // A peer asking for hello: dial through the wire protocol.
    const { dialPeer } = await import("../../src/cluster/peer_conn.ts");
    let answered = false;
    try {
      const { conn } = await dialPeer("127.0.0.1", port, { op: "hello" }, {
        network: systemNetwork,
        key: await importClusterKey(TEST_CLUSTER_KEY),
        timeoutMs: 2_000,
      });
      closeQuietly(conn);
      answered = true;
    } catch (err) {
      answered = false;
      console.error(`hello after one failed accept: ${(err as Error).message}`);
    }
    ok(answered, "the peer port still answers after one failed accept");
    await asker.close();
  } finally {
    await c.close();
  }
});

Deno.test("cluster review: close() while a stranger is mid-opening on the peer port leaves no socket or timer behind", async () => {
  const c = cluster();
  c.listen();
  const stranger = await Deno.connect({ hostname: "127.0.0.1", port: c.address!.port });
  await stranger.write(new Uint8Array([0x50, 0x42])); // the first bytes of an opening, then silence
  await new Promise((r) => setTimeout(r, 100));
  const started = performance.now();
  await c.close();
  // Whatever close() leaves running fails this test by the sanitizers (a 3 s opening deadline, a socket).
  const eof = await stranger.read(new Uint8Array(1)).catch(() => null);
  stranger.close();
  equal(eof, null, "close() cut the stranger's connection");
  ok(performance.now() - started < 1_000, `the stranger was cut ${performance.now() - started} ms after close()`);
});

Deno.test("cluster review: close() while a poll waits on a silent peer leaves no dial or timer behind", async () => {
  // A peer whose host accepts TCP but never answers (a hung process): polls wait PEER_TIMEOUT_MS.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  const c = new Cluster({
    config: {
      key: TEST_CLUSTER_KEY,
      listen: { hostname: "127.0.0.1", port: 0 },
      peers: [{ name: "PEER_B", hostname: "127.0.0.1", port: (silent.addr as Deno.NetAddr).port }],
      handoverTimeoutMs: 60_000,
    },
    network: systemNetwork,
    tag: "cccccccc",
    version: "test",
    sessions: () => 0,
    holdsOpening: () => false,
    adopt: (conn) => closeQuietly(conn),
    takenOver: () => Promise.resolve(),
    settled: () => {},
    predecessors: [],
  });
  c.listen();
  await waitFor(() => held.length >= 1, "the first poll to reach the silent peer");
  await c.close();
  // close() must settle the poll in flight: the silent peer sees its dial closed at once (not after 3 s).
  const untilEof = async (conn: Deno.Conn) => {
    try {
      while (await conn.read(new Uint8Array(64)) !== null) { /* the opening */ }
    } catch { /* reset */ }
    return true;
  };
  const cut = await Promise.race([
    untilEof(held[0]!),
    new Promise<boolean>((r) => setTimeout(() => r(false), 500)),
  ]);
  silent.close();
  await accepting;
  for (const conn of held) conn.close();
  await new Promise((r) => setTimeout(r, 3_100)); // let the orphaned poll's deadline pass before the sanitizers look
  ok(cut, "close() returned while its poll of PEER_B was still dialed and waiting (up to PEER_TIMEOUT_MS)");
});

Deno.test("cluster review: one address cannot hold an unbounded number of unproven connections on the peer port", async () => {
  const c = cluster();
  c.listen();
  const port = c.address!.port;
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 300; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await new Promise((r) => setTimeout(r, 500));
    // Which of them has the broker-server closed? (it would, to stay under a cap like MAX_HANDSHAKES_PER_ADDRESS)
    const closed = await Promise.all(conns.map((conn) =>
      Promise.race([
        conn.read(new Uint8Array(64)).then((n) => n === null, () => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
      ])
    ));
    const held = closed.filter((x) => !x).length;
    ok(held <= 64, `${held} of 300 silent connections from one address are held open on the peer port`);
  } finally {
    for (const conn of conns) conn.close();
    await c.close();
    await new Promise((r) => setTimeout(r, 3_100)); // the openings' deadlines (see the close() finding)
  }
});
