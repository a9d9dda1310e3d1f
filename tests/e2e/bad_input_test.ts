/**
 * What arrives on the link that should not: garbage, truncated, oversized
 * and unknown frames, strangers and other protocol versions, resumes that
 * must fail, and an ERP that refuses or resets. Each bad link is dropped
 * with a log line naming the peer; the process and real sessions go on.
 */
import net from "node:net";
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  concatBytes,
  decodeReject,
  encodeData,
  encodeOffsetFrame,
  encodePreface,
  encodeWelcome,
  FrameType,
  PROTOCOL_VERSION,
  RejectCode,
} from "../../src/protocol/frames.ts";
import { createEphemeralKey, randomId } from "../../src/protocol/resume_auth.ts";
import { Link } from "../../src/session/link.ts";
import { within } from "../../src/session/transport.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { openRawSession, RawPeer, resumeRaw } from "../helpers/raw_peer.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo, freePort, roundTrip } from "../helpers/apps.ts";

/** A real session through broker-client that must stay healthy meanwhile. */
async function realSession(serverPort: number) {
  const client = startClient(clientConfig([serverPort]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(app, "ping"), "ping");
  return {
    app,
    async [Symbol.asyncDispose]() {
      app.close();
      await client.close();
    },
  };
}

function bytesOf(...parts: (Uint8Array | number[])[]): Uint8Array {
  return concatBytes(...parts.map((p) => p instanceof Uint8Array ? p : new Uint8Array(p)));
}

Deno.test("garbage, truncated, oversized and unknown frames drop only their link", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { HANDSHAKE_TIMEOUT: "2s" }));
  await using real = await realSession(server.address.port);

  const attacks: [string, Uint8Array, RegExp][] = [
    ["http", new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"), /Not a broker peer: expected the preface "PBRK"/],
    ["unknown type", bytesOf(encodePreface(), [0x7e, 0, 0, 0, 0]), /Unknown frame type 126/],
    ["oversized", bytesOf(encodePreface(), [FrameType.HelloNew, 0x7f, 0xff, 0xff, 0xff]), /Frame too large/],
    ["malformed hello", bytesOf(encodePreface(), [FrameType.HelloNew, 0, 0, 0, 3, 1, 2, 3]), /Malformed frame: type 1/],
    [
      "data before hello",
      bytesOf(encodePreface(), encodeData(0, new Uint8Array([1]))),
      /Unexpected frame type 16: only types 1, 2, 5 are accepted now/,
    ],
  ];
  for (const [name, bytes, expected] of attacks) {
    const peer = await RawPeer.connect(server.address.port);
    await peer.writeRaw(bytes);
    await peer.closedByPeer();
    peer.close();
    const line = await logs.waitFor(expected);
    match(line, /from 127\.0\.0\.1:\d+/, `${name}: the log names the peer`);
  }
  // Truncated: a frame cut off by the end of the stream.
  const truncated = await RawPeer.connect(server.address.port);
  await truncated.writeRaw(bytesOf(encodePreface(), [FrameType.HelloNew, 0, 0, 0, 52, 1, 2, 3]));
  truncated.link.close();
  await logs.waitFor(/Dropped link from 127\.0\.0\.1:\d+ during handshake: .*(inside a frame|reset|closed)/);

  equal(await roundTrip(real.app, "still fine"), "still fine");
  equal(server.sessions.length, 1);
});

/** Links that announce a large DATA frame before their handshake; fewer under Wine (slow past ~100 sockets). */
const LARGE_HEADER_LINKS = Deno.build.os === "windows" ? 20 : 100;

Deno.test(`before the handshake, ${LARGE_HEADER_LINKS} links announcing 1 MiB DATA frames are dropped at once and cost no buffers`, async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  await using real = await realSession(server.address.port);
  const header = bytesOf(encodePreface(), [FrameType.Data, 0, 0x10, 0, 8], new Uint8Array(100));
  const before = Deno.memoryUsage().external;
  const started = Date.now();
  const peers = await Promise.all(Array.from({ length: LARGE_HEADER_LINKS }, async () => {
    const peer = await RawPeer.connect(server.address.port);
    await peer.writeRaw(header);
    return peer;
  }));
  // Until the server has dropped them all (or for 3 s): the buffers it holds meanwhile.
  let grown = 0;
  const dropped = await waitFor(
    () => {
      grown = Math.max(grown, Deno.memoryUsage().external - before);
      return server.status().totals.linksInHandshake === 0;
    },
    "the links to be dropped",
    3_000,
  ).then(() => true, () => false);
  ok(grown < LARGE_HEADER_LINKS * 256 * 1024, `${grown} bytes of buffers for ${LARGE_HEADER_LINKS} links`);
  ok(dropped, `dropped within ${Date.now() - started} ms, not at HANDSHAKE_TIMEOUT`);
  await Promise.all(peers.map((peer) => peer.closedByPeer()));
  for (const peer of peers) peer.close();
  await logs.waitFor(/Dropped link from 127\.0\.0\.1:\d+ during handshake: Unexpected frame type 16/);
  equal(await roundTrip(real.app, "still fine"), "still fine");
});

Deno.test("a bad frame on an established link drops that link only; the session resumes", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const raw = await openRawSession(server.address.port);
  // An ACK for bytes the server never sent is a protocol error on this link.
  raw.peer.link.send(encodeOffsetFrame(FrameType.Ack, 1_000_000));
  await raw.peer.closedByPeer();
  await logs.waitFor(/Session \w+: link from .* lost \(protocol error: ACK for offset 1000000, but only 0 were sent\)/);
  equal(server.sessions.length, 1, "the session waits for its client, untouched");
  const { peer, answer } = await resumeRaw(server.address.port, raw.sessionId, raw.key, 0);
  equal(answer?.type, FrameType.Resumed);
  peer.close();
  raw.peer.close();
});

Deno.test("another protocol version gets a clear reject on both sides", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const peer = await RawPeer.connect(server.address.port);
  await peer.writeRaw(encodePreface(9));
  const preface = await peer.next();
  equal(preface?.type, FrameType.Preface);
  equal(preface?.payload[0], PROTOCOL_VERSION);
  const reject = await peer.next();
  equal(reject?.type, FrameType.Reject);
  const { code, reason } = decodeReject(reject?.payload ?? new Uint8Array());
  equal(code, RejectCode.Version);
  equal(
    reason,
    `broker-client speaks protocol version 9, this broker-server speaks version ${PROTOCOL_VERSION}: install matching versions of both programs`,
  );
  await logs.waitFor(
    /WARNING broker\.server: Refused link from 127\.0\.0\.1:\d+: broker-client speaks protocol version 9/,
  );
  peer.close();

  // The other side: a broker-client facing a server of another version explains and closes Smart Client.
  const fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fakeServer = (async () => {
    const conn = await fake.accept();
    await conn.write(
      bytesOf(encodePreface(99), [FrameType.Reject, 0, 0, 0, 5, RejectCode.Version], new TextEncoder().encode("v99!")),
    );
    await conn.read(new Uint8Array(1024)).catch(() => null);
    conn.close();
  })();
  await using client = startClient(clientConfig([(fake.addr as Deno.NetAddr).port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await app.read(new Uint8Array(1)).catch(() => null), null, "Smart Client's socket is closed");
  await logs.waitFor(
    /broker\.client: Session .* closed: no broker server accepted the session \(127\.0\.0\.1:\d+: broker server 127\.0\.0\.1:\d+ refused: it speaks protocol version 99, this broker-client speaks 2 \(v99!\)\)/,
  );
  app.close();
  await fakeServer;
  fake.close();
});

Deno.test("resume of an unknown session, or with a wrong proof, is refused; the real session is untouched", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  await using real = await realSession(server.address.port);

  const unknown = await resumeRaw(server.address.port, randomId(), null, 0);
  equal(unknown.answer?.type, FrameType.Reject);
  equal(decodeReject(unknown.answer?.payload ?? new Uint8Array()).code, RejectCode.UnknownSession);
  match(
    decodeReject(unknown.answer?.payload ?? new Uint8Array()).reason,
    /is not known to this broker-server: it expired, or the server was restarted/,
  );
  unknown.peer.close();

  // A burst of wrong proofs for the live session.
  const id = server.sessions[0]?.id ?? "";
  const sessionId = new Uint8Array(id.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
  for (let i = 0; i < 20; i++) {
    const attempt = await resumeRaw(server.address.port, sessionId, null, 0);
    equal(attempt.answer?.type, FrameType.Reject);
    equal(decodeReject(attempt.answer?.payload ?? new Uint8Array()).code, RejectCode.BadProof);
    attempt.peer.close();
  }
  await logs.waitFor(/Refused link from .*: Resume proof for session \w+ does not verify/);
  equal(server.sessions[0]?.session.state, "attached", "the real link was never detached");
  equal(server.sessions[0]?.session.stats.resumes, 0);
  equal(await roundTrip(real.app, "unharmed"), "unharmed");
});

Deno.test("a resume from an offset no longer buffered gets an explicit 'cannot resume' and the session ends", async () => {
  await using logs = await captureLogs();
  let erpEnded: (() => void) | undefined;
  const ended = new Promise<void>((resolve) => erpEnded = resolve);
  await using erp = startErp(async (conn) => {
    await conn.write(new TextEncoder().encode("hello"));
    await conn.read(new Uint8Array(10)).catch(() => null);
    erpEnded?.();
  });
  await using server = startServer(serverConfig([erp.port]));
  const raw = await openRawSession(server.address.port);
  let data = await raw.peer.next();
  while (data && data.type !== FrameType.Data) data = await raw.peer.next(); // skip ACKs and heartbeats
  equal(data?.payload.length, 8 + 5, "the ERP's 5 bytes at offset 0");
  raw.peer.link.send(encodeOffsetFrame(FrameType.Ack, 5)); // the server may now forget those 5 bytes
  await waitFor(() => server.sessions[0]?.session.bufferedBytes === 0, "the ACK to trim the buffer");
  raw.peer.close();
  await waitFor(() => server.sessions[0]?.session.state === "detached", "the server to notice");

  const { peer, answer } = await resumeRaw(server.address.port, raw.sessionId, raw.key, 0);
  equal(answer?.type, FrameType.Reject);
  const { code, reason } = decodeReject(answer?.payload ?? new Uint8Array());
  equal(code, RejectCode.CannotResume);
  equal(reason, "cannot resume: Cannot resume from offset 0: the oldest byte still buffered is at offset 5");
  await ended; // the ERP connection is closed: the session is over on the server too
  await logs.waitFor(/broker\.server: Session \w+ closed: cannot resume/);
  equal(server.sessions.length, 0);
  peer.close();
});

Deno.test("an ERP that refuses: Smart Client's socket is closed promptly with the reason logged", async () => {
  await using logs = await captureLogs();
  const deadPort = freePort();
  await using server = startServer(serverConfig([deadPort]));
  await using client = startClient(clientConfig([server.address.port]));
  const started = Date.now();
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await app.read(new Uint8Array(1)).catch(() => null), null);
  ok(Date.now() - started < 3_000, "promptly");
  await logs.waitFor(
    /broker\.server: Refused link .*No ERP server accepted the connection \(REMOTE_SERVER_01: Cannot connect to 127\.0\.0\.1:\d+: connection refused\)/,
  );
  await logs.waitFor(/broker\.client: Session .* closed: no broker server accepted the session/);
  app.close();
});

Deno.test("an ERP that resets mid-session ends the session on both sides with the reason", async () => {
  await using logs = await captureLogs();
  const erp = net.createServer((socket) => {
    socket.once("data", () => socket.resetAndDestroy());
  });
  await new Promise<void>((resolve) => erp.listen(0, "127.0.0.1", resolve));
  const erpPort = (erp.address() as net.AddressInfo).port;
  await using server = startServer(serverConfig([erpPort]));
  await using client = startClient(clientConfig([server.address.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await app.write(new TextEncoder().encode("trigger"));
  equal(await app.read(new Uint8Array(1)).catch(() => null), null, "Smart Client's socket is closed");
  await logs.waitFor(/broker\.server: Session \w+ closed: ERP server connection failed: connection reset by peer/);
  await logs.waitFor(
    /broker\.client: Session \w+ closed: peer ended the session: ERP server connection failed: connection reset by peer/,
  );
  app.close();
  await new Promise<void>((resolve) => erp.close(() => resolve()));
});

Deno.test("a link that connects and says nothing is dropped after the handshake timeout", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { HANDSHAKE_TIMEOUT: "300ms" }));
  const started = Date.now();
  const silent = await RawPeer.connect(server.address.port);
  await silent.closedByPeer();
  const took = Date.now() - started;
  ok(took >= 250 && took < 2_000, `dropped after ${took} ms`);
  // Any drop line first, so that a failure shows what was logged instead
  // (under Wine this once found no such line in 10 s: 1 of 3 CI runs, never again in 7).
  const line = await logs.waitFor(/Dropped link from 127\.0\.0\.1:\d+ during handshake/, 5_000).catch(() =>
    `no drop line; the log had: ${logs.lines.join(" | ") || "nothing"}`
  );
  match(line, /Dropped link from 127\.0\.0\.1:\d+ during handshake: No preface from 127\.0\.0\.1:\d+ within 300 ms/);
  silent.close();
});

Deno.test("no broker server reachable: the new session gives up after NEW_SESSION_TIMEOUT and says why", async () => {
  await using logs = await captureLogs();
  const deadPort = freePort();
  await using client = startClient(clientConfig([deadPort], { NEW_SESSION_TIMEOUT: "600ms" }));
  const started = Date.now();
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await app.read(new Uint8Array(1)).catch(() => null), null, "Smart Client's socket is closed");
  const took = Date.now() - started;
  ok(took >= 550 && took < 3_000, `gave up after ${took} ms`);
  await logs.waitFor(
    /broker\.client: Session .* closed: no broker server reachable within 600 ms \(127\.0\.0\.1:\d+: Cannot connect to 127\.0\.0\.1:\d+: connection refused\)/,
  );
  equal(client.sessionCount, 0);
  app.close();
});

Deno.test("Smart Client resetting its connection ends the session on both sides at once, even mid-opening", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(async (conn) => {
    await conn.read(new Uint8Array(1));
  });
  await using server = startServer(serverConfig([erp.port]));
  await using client = startClient(clientConfig([server.address.port]));
  const app = net.connect({ host: "127.0.0.1", port: client.address.port });
  app.on("error", () => {});
  await new Promise((resolve) => app.once("connect", resolve));
  app.resetAndDestroy(); // gone before, while or just after the session opens
  // Whatever the timing, neither side keeps it (no waiting for the 180 s resume window).
  await waitFor(() => client.sessionCount === 0, "broker-client to drop the session");
  await waitFor(() => server.sessions.length === 0, "broker-server to drop the session");
  if (erp.connections > 0) {
    // The server had opened it: the client told it why, and the ERP connection is closed.
    ok(await within(erp.firstEnded, 5_000), "the ERP connection was closed");
    await logs.waitFor(
      /broker\.server: Session \w+ closed: peer ended the session: Smart Client (closed the connection before the session opened|connection failed: connection reset by peer)/,
    );
  }
});

Deno.test("a broker server whose WELCOME sets nonsense timers is refused with a clear message, and told", async () => {
  await using logs = await captureLogs();
  const fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fakeServer = (async () => {
    const link = new Link(await fake.accept(), "fake server");
    const frames: number[] = [];
    for (let frame = await link.readFrameWithin(5_000, "frame"); frame; frame = await link.readFrame()) {
      frames.push(frame.type);
      if (frame.type === FrameType.HelloNew) {
        link.send(encodePreface());
        const timers = {
          resumeTimeoutMs: 180_000,
          heartbeatIntervalMs: 2_000,
          linkTimeoutMs: 0,
          replayBufferBytes: 4 << 20,
        };
        link.send(encodeWelcome(randomId(), (await createEphemeralKey()).publicKey, timers));
      }
    }
    link.close();
    return frames;
  })();
  await using client = startClient(clientConfig([(fake.addr as Deno.NetAddr).port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await app.read(new Uint8Array(1)).catch(() => null), null, "Smart Client's socket is closed");
  app.close();
  await logs.waitFor(
    /broker\.client: Session .* closed: no broker server accepted the session \(127\.0\.0\.1:\d+: broker server 127\.0\.0\.1:\d+ refused: unusable timers in its WELCOME \(link timeout \(LINK_TIMEOUT\) of 0 ms is out of range: expected 200ms to 2h\): check its appserver\.ini\)/,
  );
  deepEqual(await fakeServer, [FrameType.Preface, FrameType.HelloNew, FrameType.Abort], "the server is told");
  fake.close();
});
