/**
 * Transparency under unusual traffic: applications that write everything
 * before reading, slow readers on either side, with and without link
 * faults. Over plain TCP each of these completes; through the brokers they
 * must too, with every byte checked and the link's heartbeats alive.
 */
import { equal, match, ok } from "node:assert/strict";
import { decodeReject, encodeHelloNew, encodePreface, FrameType } from "../../src/protocol/frames.ts";
import { createEphemeralKey, randomId } from "../../src/protocol/resume_auth.ts";
import { RawPeer } from "../helpers/raw_peer.ts";
import { echo, readAndWrite, roundTrip, writeAllThenRead } from "../helpers/apps.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import {
  clientConfig,
  deadline,
  serverConfig,
  startClient,
  startErp,
  startServer,
  whenStarted,
} from "../helpers/setup.ts";
import { Digest, receiveAll, sendStream, streamDigest } from "../../tools/streams.ts";

// Under Wine a process with many megabytes in flight on loopback is slow; the
// Windows run uses less (FLOW_TEST_MIB, see tools/test_windows.sh).
const SIZE = Number(Deno.env.get("FLOW_TEST_MIB") ?? 16) * 1024 * 1024;
const FAST = { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "400ms" };

const writeThenRead = (conn: Deno.Conn, seed: number) => writeAllThenRead(conn, seed, SIZE, 256 * 1024);
const readWhileWriting = (conn: Deno.Conn, seed: number) => readAndWrite(conn, seed, SIZE, 256 * 1024);

/** Reads 1 KiB every 10 ms until stopped, then at full speed to the end of the stream. */
class SlowReader {
  /** Bytes read so far. */
  bytes = 0;
  /** True once stop() was called. */
  stopped = false;

  /** Reads `conn` to its end. */
  async read(conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(this.stopped ? buf : buf.subarray(0, 1024));
      if (n === null) return;
      this.bytes += n;
      if (!this.stopped) await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Ends the slow phase. */
  stop(): void {
    this.stopped = true;
  }
}

/** Writes 64 KiB chunks until `until()` says stop, then half-closes. */
async function flood(conn: Deno.Conn, until: () => boolean): Promise<void> {
  const chunk = new Uint8Array(64 * 1024);
  while (!until()) {
    for (let done = 0; done < chunk.length;) done += await conn.write(chunk.subarray(done));
  }
  await conn.closeWrite();
}

/**
 * Runs one session between `smartClient` and `erpApp` (each given its socket,
 * each returning the digest of what it read), optionally through a relay that
 * cuts the link every `cutEveryMs`, and checks both streams byte for byte.
 */
async function exchange(
  smartClient: (conn: Deno.Conn) => Promise<Digest>,
  erpApp: (conn: Deno.Conn) => Promise<Digest>,
  options: { cutEveryMs?: number; limitMs?: number; extra?: Record<string, string> } = {},
): Promise<{ linksLost: number }> {
  await using logs = await captureLogs();
  let erpDigest: Promise<Digest> | undefined;
  await using erp = startErp((conn) => {
    erpDigest = erpApp(conn);
    return erpDigest.then(() => {});
  });
  await using server = startServer(serverConfig([erp.port], { ...FAST, ...options.extra }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const stopCutting = options.cutEveryMs ? chaos.cutEvery(options.cutEveryMs) : undefined;
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  const context = () =>
    `client sessions ${
      client.sessions.map((s) =>
        `${s.state} buffered ${s.bufferedBytes} pending ${s.pendingLocalBytes} received ${s.received}`
      )
    }; server sessions ${
      server.sessions.map((e) =>
        `${e.session.state} buffered ${e.session.bufferedBytes} pending ${e.session.pendingLocalBytes} received ${e.session.received}`
      )
    }; log: ${logs.lines.slice(-8).join(" | ")}`;
  try {
    const atClient = await deadline(smartClient(app), options.limitMs ?? 60_000, context);
    const atErp = await deadline(
      whenStarted(() => erpDigest),
      10_000,
      context,
    );
    equal(atErp.bytes, SIZE, "the ERP got every byte Smart Client wrote");
    equal(atErp.hex(), streamDigest(1, SIZE, 256 * 1024), "and in order");
    equal(atClient.bytes, SIZE, "Smart Client got every byte the ERP wrote");
    equal(atClient.hex(), streamDigest(2, SIZE, 256 * 1024), "and in order");
    // Counted before the teardown below, which closes the relay under the sessions.
    return { linksLost: logs.lines.filter((l) => /link lost/.test(l)).length };
  } finally {
    await stopCutting?.();
    app.close();
    await chaos.close();
  }
}

Deno.test("Smart Client writes everything before reading while the ERP streams back: completes, every byte checked", async () => {
  const { linksLost } = await exchange((c) => writeThenRead(c, 1), (c) => readWhileWriting(c, 2));
  equal(linksLost, 0, "the link was never declared dead");
});

Deno.test("the ERP writes everything before reading while Smart Client streams: completes, every byte checked", async () => {
  const { linksLost } = await exchange((c) => readWhileWriting(c, 1), (c) => writeThenRead(c, 2));
  equal(linksLost, 0, "the link was never declared dead");
});

Deno.test("write-before-read on both sides' turn, across link resets and closes every 300 ms", async () => {
  await exchange((c) => writeThenRead(c, 1), (c) => readWhileWriting(c, 2), { cutEveryMs: 300, limitMs: 120_000 });
  await exchange((c) => readWhileWriting(c, 1), (c) => writeThenRead(c, 2), { cutEveryMs: 300, limitMs: 120_000 });
});

Deno.test("a slow reader on either side stops neither the other direction nor the heartbeats", async () => {
  // The slow side reads 1 KiB every 10 ms while the other side floods it;
  // meanwhile the slow side sends SIZE at full speed, which the fast side
  // reads. That stream must arrive whole while the slow reader is still
  // crawling, and no link may be declared dead although LINK_TIMEOUT passes
  // many times over.
  for (const slowSide of ["client", "erp"] as const) {
    await using logs = await captureLogs();
    const slow = new SlowReader();
    let flooding: Promise<void> = Promise.resolve();
    const fastSide = (conn: Deno.Conn) => {
      flooding = flood(conn, () => slow.stopped);
      return receiveAll(conn);
    };
    const slowSideApp = async (conn: Deno.Conn) => {
      await Promise.all([slow.read(conn), sendStream(conn, 3, SIZE).then(() => conn.closeWrite())]);
    };
    let fastResult: Promise<Digest> | undefined;
    const fastApp = (conn: Deno.Conn) => fastResult = fastSide(conn);
    await using erp = startErp(async (conn) => {
      if (slowSide === "erp") await slowSideApp(conn);
      else await Promise.all([fastApp(conn), flooding]); // (fastApp starts the flood)
    });
    await using server = startServer(serverConfig([erp.port], FAST));
    await using client = startClient(clientConfig([server.address.port]));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    const started = Date.now();
    const slowDone = slowSide === "client" ? slowSideApp(app) : (fastApp(app), Promise.resolve());
    const fast = await deadline(
      whenStarted(() => fastResult),
      60_000,
      () => `slow ${slowSide}, it read ${slow.bytes} bytes; log: ${logs.lines.slice(-8).join(" | ")}`,
    );
    // Keep crawling for a while with the flood stuck in the brokers: only
    // heartbeats then tell each side that the link is alive.
    await new Promise((r) => setTimeout(r, Math.max(0, started + 1_500 - Date.now())));
    slow.stop();
    const took = Date.now() - started;
    equal(fast.hex(), streamDigest(3, SIZE), `the fast side got the whole stream, in order (slow ${slowSide})`);
    ok(slow.bytes < SIZE / 4, `it arrived while the slow reader had read only ${slow.bytes} bytes`);
    await Promise.all([slowDone, flooding]);
    ok(took > 1_000, `the exchange took ${took} ms, over twice LINK_TIMEOUT: the heartbeats had to work`);
    equal(logs.lines.filter((l) => /link lost/.test(l)).length, 0, `no link declared dead (slow ${slowSide})`);
    app.close();
  }
});

Deno.test("the session's cap is the smaller of the two REPLAY_BUFFER_SIZEs; a hello with a cap out of range is refused", async () => {
  await using erp = startErp(echo);
  for (const [clientCap, serverCap, expected] of [["64K", "4M", 65536], ["8M", "1M", 1048576]] as const) {
    await using server = startServer(serverConfig([erp.port], { REPLAY_BUFFER_SIZE: serverCap }));
    await using client = startClient(clientConfig([server.address.port], { REPLAY_BUFFER_SIZE: clientCap }));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    equal(await roundTrip(app, "cap?"), "cap?");
    equal(server.sessions[0]?.session.timers.replayBufferBytes, expected, `server, ${clientCap}/${serverCap}`);
    equal(server.sessions[0]?.session.timers.receiveWindowBytes, expected);
    equal(client.sessions[0]?.timers.replayBufferBytes, expected, `client, ${clientCap}/${serverCap}`);
    equal(client.sessions[0]?.timers.receiveWindowBytes, expected);
    app.close();
  }
  await using server = startServer(serverConfig([erp.port]));
  for (const cap of [1024, 2 ** 31]) {
    const peer = await RawPeer.connect(server.address.port);
    peer.link.send(encodePreface());
    peer.link.send(encodeHelloNew((await createEphemeralKey()).publicKey, randomId(), cap));
    equal((await peer.next())?.type, FrameType.Preface);
    const reject = await peer.next();
    equal(reject?.type, FrameType.Reject);
    match(decodeReject(reject?.payload as Uint8Array).reason, /replay buffer cap of \d+ bytes is out of range/);
    peer.close();
  }
  equal(server.sessions.length, 0);
});
