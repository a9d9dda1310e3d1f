/**
 * Link faults one at a time, each with its own assertion: a silent link, an
 * outage longer than the window, backpressure, half-closes (with the link
 * breaking at the worst moment), and TLS carried end to end.
 */
import net from "node:net";
import { deepEqual, equal, ok } from "node:assert/strict";
import {
  concatBytes,
  encodeData,
  FRAME_HEADER_SIZE,
  FrameType,
  ID_SIZE,
  PREFACE_SIZE,
  PUBLIC_KEY_SIZE,
  readU64,
  toHex,
} from "../../src/protocol/frames.ts";
import { randomId } from "../../src/protocol/resume_auth.ts";
import { closeQuietly, within, writeAll } from "../../src/session/transport.ts";
import { openRawSession, resumeRaw } from "../helpers/raw_peer.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, deadline, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { Digest, receiveAll, sendStream, streamDigest } from "../../tools/streams.ts";
import { echo, readExactly, roundTrip } from "../helpers/apps.ts";
import { byteCount, compareStreams, Tap, type TapRecording } from "../helpers/tap.ts";
import { canHangConnects, startHangingListener } from "../helpers/hanging_listener.ts";

const FAST = { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "400ms" };

Deno.test("a frozen link (no FIN, no RST) is detected by heartbeats and the session resumes without loss", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], FAST));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(app, "before"), "before");

  chaos.freezeAll();
  const frozenAt = Date.now();
  // Written into the void: these bytes must arrive after the resume, exactly once.
  await app.write(new TextEncoder().encode("during"));
  await logs.waitFor(/broker\.client: Session \w+: link lost \(link silent for/);
  await waitFor(() => server.sessions[0]?.session.stats.resumes === 1, "the session to resume");
  const detectedIn = Date.now() - frozenAt;
  equal(new TextDecoder().decode(await readExactly(app, 6)), "during");
  equal(await roundTrip(app, "after"), "after");
  ok(detectedIn < 2_000, `silent link detected and resumed in ${detectedIn} ms (LINK_TIMEOUT 400 ms)`);

  await app.closeWrite();
  equal(await app.read(new Uint8Array(1)), null);
  app.close();
  await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  chaos.dropFrozen();
  await chaos.close();
});

Deno.test("an outage longer than the resume window closes both local sockets and leaves nothing behind", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { ...FAST, RESUME_TIMEOUT: "1s" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(app, "hi"), "hi");

  chaos.setMode("refuse");
  chaos.resetAll();
  const end = await app.read(new Uint8Array(10)).catch(() => null);
  equal(end, null, "Smart Client's socket is closed once the window has passed");
  await erp.firstEnded;
  await logs.waitFor(/broker\.server: Session \w+ closed: resume window of 1 s expired/);
  await logs.waitFor(/broker\.client: Session \w+ closed: resume window of 1 s expired/);
  equal(server.sessions.length, 0);
  equal(client.sessionCount, 0);
  app.close();
  await chaos.close();
});

Deno.test("Smart Client resetting during an outage: once the network is back the server is told, and frees the ERP connection", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { ...FAST, RESUME_TIMEOUT: "60s" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = net.connect({ host: "127.0.0.1", port: client.address.port });
  app.on("error", () => {});
  const echoed = new Promise((resolve) => app.once("data", resolve));
  app.write("hello");
  equal(String(await echoed), "hello");

  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => client.sessions[0]?.state === "detached", "the client to notice the link is gone");
  app.resetAndDestroy(); // Smart Client is gone while the link is down
  await waitFor(() => client.sessionCount === 0, "broker-client to end the session");
  equal(server.sessions.length, 1, "the server still holds the session: nobody could tell it");
  const outageEnded = Date.now();
  chaos.setMode("pass");
  ok(await within(erp.firstEnded, 10_000), "the ERP connection is closed well before the 60 s window");
  await logs.waitFor(/broker\.server: Session \w+ closed: peer ended the session: Smart Client connection failed/);
  await logs.waitFor(/broker\.client: Session \w+: told broker server .* that the session had ended/);
  equal(server.sessions.length, 0);
  ok(Date.now() - outageEnded < 10_000);
  await chaos.close();
});

Deno.test("backpressure: 1 GiB toward an ERP that does not read stays within the replay caps, then completes", async () => {
  const CAP = 1024 * 1024;
  const TOTAL = 1024 * 1024 * 1024;
  let startReading: (() => void) | undefined;
  const reading = new Promise<void>((resolve) => startReading = resolve);
  let erpDigest: Digest | undefined;
  await using erp = startErp(async (conn) => {
    await reading;
    erpDigest = await receiveAll(conn);
    conn.close();
  });
  await using server = startServer(serverConfig([erp.port], { REPLAY_BUFFER_SIZE: "1M" }));
  await using client = startClient(clientConfig([server.address.port], { REPLAY_BUFFER_SIZE: "1M" }));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  let sent = 0;
  const sending = (async () => {
    await sendStream(app, 7, TOTAL, 256 * 1024);
    sent = TOTAL;
    await app.closeWrite();
  })();

  // Let the pipeline fill up, then look at what each broker holds.
  await waitFor(() => (client.sessions[0]?.bufferedBytes ?? 0) >= CAP / 2, "the client's replay buffer to fill");
  let peak = 0;
  for (let i = 0; i < 50; i++) {
    const held = [...client.sessions, ...server.sessions.map((s) => s.session)]
      .map((s) => s.bufferedBytes + s.pendingLocalBytes)
      .reduce((a, b) => a + b, 0);
    peak = Math.max(peak, held);
    await new Promise((r) => setTimeout(r, 10));
  }
  equal(sent, 0, "the application is held back (it sees a slow network)");
  ok(
    peak <= 2 * CAP,
    `brokers hold ${peak} bytes: the client's replay buffer and the bytes waiting for the ERP, each within the 1 MiB cap`,
  );
  for (const s of client.sessions) ok(s.bufferedBytes <= CAP, `client replay buffer ${s.bufferedBytes} <= cap`);
  for (const s of server.sessions) ok(s.session.bufferedBytes <= CAP, `server replay buffer <= cap`);

  startReading?.();
  await sending;
  await receiveAll(app);
  app.close();
  await waitFor(() => erpDigest !== undefined, "the ERP to read everything", 60_000);
  equal(erpDigest?.bytes, TOTAL);
  equal(erpDigest?.hex(), streamDigest(7, TOTAL, 256 * 1024));
});

Deno.test("half-close: Smart Client closes first, the ERP answers after the FIN and its last bytes arrive", async () => {
  await using erp = startErp(async (conn) => {
    const got = await receiveAll(conn);
    await conn.write(new TextEncoder().encode(`got ${got.bytes} bytes`));
    await conn.closeWrite();
    conn.close();
  });
  await using server = startServer(serverConfig([erp.port], FAST));
  await using client = startClient(clientConfig([server.address.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await app.write(new Uint8Array(1000));
  await app.closeWrite();
  const reply = new Uint8Array(64);
  let n = 0;
  for (let r; (r = await app.read(reply.subarray(n))) !== null;) n += r;
  equal(new TextDecoder().decode(reply.subarray(0, n)), "got 1000 bytes");
  app.close();
  await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
});

Deno.test("half-close: the ERP closes first and its last bytes reach Smart Client although the link breaks right then", async () => {
  const relay: { chaos?: ChaosLink } = {};
  let erpGot: Digest | undefined;
  await using erp = startErp(async (conn) => {
    await readExactly(conn, 2); // "go": the session is up
    await sendStream(conn, 11, 2 * 1024 * 1024);
    await conn.closeWrite();
    relay.chaos?.resetAll(); // the worst moment: right after the ERP's last bytes and FIN
    erpGot = await receiveAll(conn);
    conn.close();
  });
  await using server = startServer(serverConfig([erp.port], FAST));
  const chaos = relay.chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await app.write(new TextEncoder().encode("go"));
  const received = await receiveAll(app); // to the ERP's FIN
  equal(received.bytes, 2 * 1024 * 1024);
  equal(received.hex(), streamDigest(11, 2 * 1024 * 1024));
  // Smart Client still talks after the ERP half-closed; then closes too.
  await app.write(new TextEncoder().encode("still here"));
  await app.closeWrite();
  app.close();
  await waitFor(() => erpGot !== undefined, "the ERP to see the end");
  equal(erpGot?.bytes, 10);
  await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  await chaos.close();
});

Deno.test("a lost WELCOME: the retried opening takes over the same ERP connection, first bytes included", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(async (conn) => {
    await conn.write(new TextEncoder().encode("greeting")); // an ERP that speaks first
    await echo(conn);
  });
  await using server = startServer(serverConfig([erp.port], FAST));
  const token = randomId();
  // The WELCOME reaches the link, but the client never sees it: the link dies.
  const first = await openRawSession(server.address.port, { openToken: token });
  await waitFor(() => erp.connections === 1, "the ERP connection");
  first.peer.close();
  // The retry comes with the same token and key pair, and proves the key the first attempt derived.
  const retry = await openRawSession(server.address.port, { openToken: token, own: first.own });
  equal(toHex(retry.sessionId), toHex(first.sessionId), "the client never learnt the id: the session keeps it");
  const nextData = async () => {
    let frame = await retry.peer.next();
    while (frame && frame.type !== FrameType.Data) frame = await retry.peer.next(); // skip ACKs and heartbeats
    ok(frame, "a DATA frame");
    return { offset: readU64(frame.payload, 0), text: new TextDecoder().decode(frame.payload.subarray(8)) };
  };
  deepEqual(await nextData(), { offset: 0, text: "greeting" }, "what the ERP sent before the retry arrives, once");
  retry.peer.link.send(encodeData(0, new TextEncoder().encode("ping")));
  deepEqual(await nextData(), { offset: 8, text: "ping" });
  equal(erp.connections, 1, "the ERP saw one connection");
  equal(server.sessions.length, 1);
  await logs.waitFor(/Session \w+: the client retried opening it \(the welcome was lost\) and proved it/);
  // Nothing changed keys: the one both attempts derived resumes the session.
  const resumed = await resumeRaw(server.address.port, retry.sessionId, retry.key, 12);
  equal(resumed.answer?.type, FrameType.Resumed);
  resumed.peer.close();
  retry.peer.close();
});

/** Options of relay(). */
interface RelayOptions {
  /** Port to listen on (default: a free one). */
  port?: number;
  /**
   * Swallow what the server sends on the first connection, and cut it once
   * the server has sent its preface and WELCOME: a WELCOME lost with its link.
   */
  loseFirstWelcome?: boolean;
}

/** A TCP relay on 127.0.0.1 to `target`; close() cuts every connection, as a network going down. */
function relay(target: number, options: RelayOptions = {}): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: options.port ?? 0 });
  const conns: Deno.Conn[] = [];
  const pipes: Promise<void>[] = [];
  const pipe = async (from: Deno.Conn, to: Deno.Conn, swallowUpTo: number) => {
    const buf = new Uint8Array(64 * 1024);
    let swallowed = 0;
    try {
      for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
        if (swallowUpTo > 0) {
          swallowed += n;
          if (swallowed >= swallowUpTo) break;
          continue;
        }
        await writeAll(to, buf.subarray(0, n));
      }
    } catch { /* the other side closed */ }
    closeQuietly(from);
    closeQuietly(to);
  };
  const accepting = (async () => {
    for (let first = true;; first = false) {
      const front = await listener.accept().catch(() => null);
      if (!front) return;
      const back = await Deno.connect({ hostname: "127.0.0.1", port: target });
      conns.push(front, back);
      const welcome = PREFACE_SIZE + FRAME_HEADER_SIZE + ID_SIZE + PUBLIC_KEY_SIZE + 12;
      pipes.push(pipe(front, back, 0), pipe(back, front, first && options.loseFirstWelcome ? welcome : 0));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await accepting;
      conns.forEach((c) => closeQuietly(c));
      await Promise.all(pipes);
    },
  };
}

Deno.test("a lost WELCOME with a real broker-client: its retry proves the first attempt's key and gets the same ERP connection", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(async (conn) => {
    await conn.write(new TextEncoder().encode("greeting"));
    await echo(conn);
  });
  await using server = startServer(serverConfig([erp.port], FAST));
  const path = relay(server.address.port, { loseFirstWelcome: true });
  await using client = startClient(clientConfig([path.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(new TextDecoder().decode(await readExactly(app, 8)), "greeting", "the ERP's first bytes, once");
  equal(await roundTrip(app, "after the retry"), "after the retry");
  await logs.waitFor(/Session \w+: the client retried opening it \(the welcome was lost\) and proved it/);
  equal(erp.connections, 1, "the ERP saw one connection");
  equal(server.sessions.length, 1);
  app.close();
  await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  await path.close();
});

Deno.test({
  name:
    "SYNs that vanish while the network is down: each resume dial gives up within 1 s, and the session resumes soon after the network returns",
  ignore: !canHangConnects,
  async fn() {
    await using logs = await captureLogs();
    await using erp = startErp(echo);
    await using server = startServer(serverConfig([erp.port], { ...FAST, RESUME_TIMEOUT: "60s" }));
    let path = relay(server.address.port);
    const port = path.port;
    await using client = startClient(clientConfig([port], { CONNECT_TIMEOUT: "5s", HANDSHAKE_TIMEOUT: "1s" }));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    equal(await roundTrip(app, "before"), "before");
    await path.close(); // the network goes down...
    await logs.waitFor(/broker\.client: Session \w+: link lost/);
    // ...and SYNs to the broker server now vanish: a listener on its address whose backlog is full.
    {
      await using _hanging = await startHangingListener(port);
      const t0 = Date.now();
      await logs.waitFor(
        /broker\.client: Session \w+: resume attempt failed \(Cannot connect to .*: no answer within/,
        3_000,
      );
      await logs.waitFor(/resume attempt failed \(Cannot connect to 127\.0\.0\.1:\d+: no answer within 1000 ms\)/, 100);
      ok(Date.now() - t0 < 2_500, `a silent dial gave up after ${Date.now() - t0} ms`);
    }
    path = relay(server.address.port, { port }); // the network is back
    const back = Date.now();
    equal(await roundTrip(app, "after"), "after");
    ok(Date.now() - back < 2_500, `resumed ${Date.now() - back} ms after the network returned`);
    app.close();
    await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
    await path.close();
  },
});

Deno.test("TLS between Smart Client and the ERP passes through opaque, across link faults", async () => {
  await using logs = await captureLogs();
  const cert = await Deno.readTextFile(new URL("../fixtures/test_cert.pem", import.meta.url));
  const key = await Deno.readTextFile(new URL("../fixtures/test_key.pem", import.meta.url));
  const tlsListener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  // 4 MiB each way by default: as much as a replay buffer holds. Wine runs
  // use less (TLS_TEST_MIB, see tools/test_windows.sh and docs/development.md).
  const SIZE = Number(Deno.env.get("TLS_TEST_MIB") ?? 4) * 1024 * 1024;
  // The ERP serves every connection: after a link cut while the server is
  // still connecting to the ERP, the server refuses the client's retries
  // until that attempt settles; the attempt, its link gone, closes its ERP
  // connection (it carried no byte, log line "abandoned"), and a later retry
  // opens another. (A cut after the WELCOME was sent is retaken: same ERP
  // connection.)
  const erpConns: Promise<Digest | Error>[] = [];
  const accepting = (async () => {
    for (;;) {
      const conn = await tlsListener.accept().catch(() => null);
      if (!conn) return;
      erpConns.push(
        Promise.all([sendStream(conn, 21, SIZE).then(() => conn.closeWrite()), receiveAll(conn)])
          .then(([, got]) => got, (err: Error) => err)
          .finally(() => conn.close()),
      );
    }
  })();
  // Recording relays on both sides of the brokers: TLS can only say that a
  // record did not decrypt; the recordings say where the bytes went wrong.
  const erpTap = new Tap((tlsListener.addr as Deno.NetAddr).port);
  await using server = startServer(serverConfig([erpTap.port], FAST));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const appTap = new Tap(client.address.port);
  const stopCutting = chaos.cutEvery(40);
  // What the ERP connection that carried the session (the one with bytes
  // from Smart Client) sent and got, against what Smart Client got and sent.
  const streams = () => {
    const app = appTap.connections[0];
    const erp = erpTap.connections.reduce<TapRecording | undefined>(
      (best, c) => (best && byteCount(best.toTarget) >= byteCount(c.toTarget) ? best : c),
      undefined,
    );
    if (!app || !erp) return null;
    return {
      toApp: compareStreams(concatBytes(...erp.fromTarget), concatBytes(...app.fromTarget)),
      toErp: compareStreams(concatBytes(...app.toTarget), concatBytes(...erp.toTarget)),
      ends: JSON.stringify({ smartClient: app.ends, erp: erp.ends }),
    };
  };
  const brokersSaid = () => {
    const s = streams();
    const compared = s ? `\nto Smart Client: ${s.toApp}\nto the ERP: ${s.toErp}\nrelays: ${s.ends}` : "";
    return `; ${chaos.faults.resets} resets, ${chaos.faults.closes} closes${compared}\nthe brokers said:\n${
      logs.lines.join("\n")
    }`;
  };
  const app = await Deno.connectTls({ hostname: "127.0.0.1", port: appTap.port, caCerts: [cert] });
  const [, appGot] = await deadline(
    (async () => {
      await app.handshake(); // the TLS session now lives inside the broker session
      chaos.resetAll(); // at least one fault, whatever the timing of the loop above
      return await Promise.all([sendStream(app, 22, SIZE).then(() => app.closeWrite()), receiveAll(app)]);
    })(),
    60_000,
    () => `Smart Client's TLS exchange${brokersSaid()}`,
  );
  app.close();
  await stopCutting();
  await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  tlsListener.close();
  await accepting;
  const results = await Promise.all(erpConns);
  await appTap.close();
  await erpTap.close();
  // Byte for byte, TLS records and alerts included, each way.
  const carried = streams();
  ok(carried?.toApp.startsWith("identical"), `to Smart Client: ${carried?.toApp}`);
  ok(carried?.toErp.startsWith("identical"), `to the ERP: ${carried?.toErp}`);
  const served = results.filter((r): r is Digest => r instanceof Digest);
  const outcomes = results.map((r) => r instanceof Digest ? `${r.bytes} bytes` : `${r.name}: ${r.message}`).join(", ");
  const retried =
    logs.lines.filter((l) => /Opening from .* abandoned: its link closed before the welcome/.test(l)).length;
  equal(served.length, 1, `one ERP connection carried the session; outcomes: ${outcomes}${brokersSaid()}`);
  equal(results.length, 1 + retried, "every other ERP connection belonged to an opening the client retried");
  equal(appGot.hex(), streamDigest(21, SIZE));
  equal(served[0]?.hex(), streamDigest(22, SIZE));
  ok(chaos.faults.resets + chaos.faults.closes > 0, "faults were injected");
  await chaos.close();
});
