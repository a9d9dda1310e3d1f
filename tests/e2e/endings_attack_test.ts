/**
 * Attacks on "every ending reaches the other side" (issue 19): endings that
 * race with link cuts during the opening, broker-client stopping while a
 * session is still opening, and a broker server that never answers an
 * ABORT but keeps the link busy.
 */
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, deadline, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import {
  decodeHelloNew,
  decodeProof,
  encodeChallenge,
  encodeOffsetFrame,
  encodePreface,
  encodeProof,
  encodeWelcome,
  FrameType,
  ID_SIZE,
} from "../../src/protocol/frames.ts";
import { createEphemeralKey, deriveResumeKey, randomId, signProof } from "../../src/protocol/resume_auth.ts";
import { Link } from "../../src/session/link.ts";
import { FAREWELL_GRACE_MS } from "../../src/client/client.ts";
import { connectResettable, connectResettableApp, startResettableErp } from "../helpers/node_apps.ts";

/** A resume window (and unconfirmed window) far longer than any wait below: an ending that waits for it fails. */
const LONG_WINDOWS = {
  HEARTBEAT_INTERVAL: "100ms",
  LINK_TIMEOUT: "1s",
  RESUME_TIMEOUT: "60s",
  UNCONFIRMED_TIMEOUT: "60s",
};

Deno.test("Smart Client leaving while the link dies during the opening (after the server's WELCOME) still ends the session on broker-server", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  // The WELCOME lingers in the relay: the server has opened the session, broker-client does not know it yet.
  chaos.setDelay(500);
  const app = await connectResettable(client.address.port);
  await waitFor(() => server.sessions.length === 1, "broker-server to open the session (and send its WELCOME)");
  chaos.freezeAll(); // the WELCOME vanishes with the link
  app.resetAndDestroy();
  await logs.waitFor(/broker\.client: Session .* closed: Smart Client/);
  chaos.setDelay(0);
  chaos.dropFrozen();
  const droppedAt = Date.now();
  await deadline(
    waitFor(() => server.sessions.length === 0, "broker-server to end the session", 10_000).catch(() => {}),
    15_000,
    () => "waiting for the session to end",
  );
  const held = Date.now() - droppedAt;
  const totals = server.status().totals;
  ok(
    server.sessions.length === 0 && held < 8_000,
    `broker-server still holds the session (and its ERP connection) ${held} ms after the link dropped; it would until UNCONFIRMED_TIMEOUT (60 s)`,
  );
  equal(totals.sessionsAborted, 1, "counted as aborted");
  equal(totals.sessionsExpired, 0, "not as expired");
  await chaos.close();
});

Deno.test("broker-client stopping while a session is opening tells broker-server before it has stopped", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  chaos.setDelay(300);
  const app = await connectResettable(client.address.port);
  await waitFor(() => server.sessions.length === 1, "broker-server to open the session (and send its WELCOME)");
  const stoppedAt = Date.now();
  await client.close();
  const stopTook = Date.now() - stoppedAt;
  // broker-client has stopped: as its process exits, every connection it had dies with it.
  await chaos.close();
  app.destroy();
  ok(stopTook < 5_000, `broker-client stopped in ${stopTook} ms`);
  await waitFor(() => server.sessions.length === 0, "broker-server to end the session", 10_000).catch(() => {});
  ok(
    server.sessions.length === 0,
    `broker-server still holds the session ${
      Date.now() - stoppedAt
    } ms after broker-client stopped: its stop did not wait for the opening to say goodbye (session ${
      server.sessions[0]?.session.state
    }, confirmed ${server.sessions[0]?.session.confirmed})`,
  );
  equal(server.status().totals.sessionsExpired, 0);
  ok(logs.lines.length > 0);
});

/**
 * A broker server that welcomes a session and resumes it for anyone with
 * the key, but never answers an ABORT: it sends a HEARTBEAT every 100 ms
 * on every link, forever.
 */
function startChattyServer(resumeTimeoutMs: number): {
  port: number;
  resumeLinks: number;
  close(): Promise<void>;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const links = new Set<Link>();
  const jobs = new Set<Promise<void>>();
  let key: CryptoKey | null = null;
  let sessionId: Uint8Array = new Uint8Array(ID_SIZE);
  const fake = {
    port: (listener.addr as Deno.NetAddr).port,
    resumeLinks: 0,
    async close() {
      listener.close();
      await loop;
      for (const l of links) l.close();
      await Promise.allSettled([...jobs]);
    },
  };
  const serve = async (link: Link) => {
    const timer = setInterval(() => link.send(encodeOffsetFrame(FrameType.Heartbeat, 0)), 100);
    try {
      const preface = await link.readFrame();
      if (preface?.type !== FrameType.Preface) return;
      link.send(encodePreface());
      const hello = await link.readFrame();
      if (hello?.type === FrameType.HelloNew) {
        const { publicKey } = decodeHelloNew(hello.payload);
        const own = await createEphemeralKey();
        sessionId = randomId();
        key = await deriveResumeKey(own, publicKey, sessionId, publicKey, own.publicKey);
        link.send(encodeWelcome(sessionId, own.publicKey, {
          resumeTimeoutMs,
          heartbeatIntervalMs: 100,
          linkTimeoutMs: 1_000,
          replayBufferBytes: 64 * 1024,
        }));
      } else if (hello?.type === FrameType.HelloResume && key) {
        fake.resumeLinks++;
        const clientNonce = hello.payload.slice(ID_SIZE);
        const serverNonce = randomId();
        link.send(encodeChallenge(serverNonce));
        const proof = await link.readFrame();
        if (proof?.type !== FrameType.Proof) return;
        const input = {
          sessionId,
          clientNonce,
          serverNonce,
          receivedOffset: decodeProof(proof.payload).receivedOffset,
        };
        link.send(encodeProof(FrameType.Resumed, await signProof(key, "server", { ...input, receivedOffset: 0 }), 0));
      } else {
        return;
      }
      // Whatever comes (ACK, HEARTBEAT, ABORT) is read and ignored; the heartbeats go on.
      while (await link.readFrame() !== null) { /* ignore */ }
    } catch {
      /* the client closed the link */
    } finally {
      clearInterval(timer);
      link.close();
      links.delete(link);
    }
  };
  const loop = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      const link = new Link(conn, "chatty server");
      links.add(link);
      const job = serve(link);
      jobs.add(job);
      job.finally(() => jobs.delete(job));
    }
  })();
  return fake;
}

Deno.test("a broker server that keeps the link busy but never answers an ABORT does not hold a farewell beyond its resume window", async () => {
  await using logs = await captureLogs();
  const fake = startChattyServer(4_000);
  const client = startClient(clientConfig([fake.port]));
  try {
    const app = await connectResettable(client.address.port);
    await logs.waitFor(/broker\.client: Session \w+ opened/);
    const resetAt = Date.now();
    app.resetAndDestroy();
    await logs.waitFor(/broker\.client: Session \w+ closed: Smart Client connection failed/);
    // The ABORT on the live link gets no answer (1 s, the LINK_TIMEOUT it was given); broker-client
    // resumes to say it again, and again gets heartbeats and no answer. Each link gets a bounded
    // wait, and the farewell ends with the resume window (4 s), a few seconds at most later.
    const gaveUp = await logs.waitFor(/broker\.client: Session \w+: could not tell broker server/, 15_000).catch(
      () => null,
    );
    ok(
      gaveUp !== null,
      `the farewell still waits for an answer ${
        Date.now() - resetAt
      } ms after the reset (resume window 4 s), on ${fake.resumeLinks} resumed link(s): heartbeats keep it waiting`,
    );
    ok(fake.resumeLinks >= 2, `it said it again on another link (${fake.resumeLinks} resumed links)`);
  } finally {
    await client.close();
    await fake.close();
  }
});

Deno.test("the CLOSE answering an ABORT is lost with the link: broker-client learns of the end on a resume, both count it aborted", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await connectResettableApp(client.address.port);
  chaos.setDelay(300); // the CLOSE lingers in the relay
  app.resetAndDestroy();
  await logs.waitFor(/broker\.server: Session \w+ closed: peer ended the session/);
  chaos.resetAll(); // and dies there
  chaos.setDelay(0);
  await logs.waitFor(/broker\.client: Session \w+: broker server .* no longer holds the session/);
  equal(server.sessions.length, 0);
  const totals = server.status().totals;
  equal(totals.sessionsAborted, 1);
  equal(totals.sessionsExpired, 0);
  equal(erp.connections, 1, "no other session was opened");
  await chaos.close();
});

Deno.test("the server's ABORT crossing the client's ABORT, both lost with the link: each side ends the session once, as aborted", async () => {
  await using logs = await captureLogs();
  await using erp = await startResettableErp();
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await connectResettableApp(client.address.port);
  chaos.freezeAll();
  erp.sockets[0]?.resetAndDestroy();
  app.resetAndDestroy();
  await logs.waitFor(/broker\.server: Session \w+ closed: ERP server connection failed/);
  await logs.waitFor(/broker\.client: Session \w+ closed: Smart Client connection failed/);
  chaos.dropFrozen();
  await logs.waitFor(/broker\.client: Session \w+: broker server .* no longer holds the session/);
  await waitFor(() => client.sessionCount === 0 && server.sessions.length === 0, "both sides to forget the session");
  const totals = server.status().totals;
  equal(totals.sessionsAborted, 1);
  equal(totals.sessionsExpired, 0);
  equal(
    logs.lines.filter((l) => /broker\.client: Session .* closed:/.test(l)).length,
    1,
    "one ending on broker-client",
  );
  await chaos.close();
});

Deno.test("a Smart Client reset racing with a link reset at every moment ends every session on broker-server", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const ROUNDS = 24;
  for (let i = 0; i < ROUNDS; i++) {
    const app = await connectResettableApp(client.address.port);
    app.resetAndDestroy();
    // The link is reset from 0 to ~12 ms after the reset: before, while and after the ABORT crosses.
    if (i % 3 === 0) chaos.resetAll();
    else await new Promise((r) => setTimeout(r, i / 2)).then(() => chaos.resetAll());
    await waitFor(() => client.sessionCount === 0, "broker-client to end the session");
  }
  await waitFor(() => server.sessions.length === 0, "broker-server to end every session", 15_000).catch(() => {});
  ok(server.sessions.length === 0, `${server.sessions.length} of ${ROUNDS} sessions still held by broker-server`);
  const totals = server.status().totals;
  equal(totals.sessionsAborted, ROUNDS);
  equal(totals.sessionsExpired, 0);
  ok(!logs.lines.some((l) => /could not tell/.test(l)), "no farewell given up");
  await chaos.close();
});

Deno.test("broker-client stopping while an opening waits on a broker server that never answers stops within its grace", async () => {
  await using _logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  chaos.setMode("blackhole"); // the link connects, nothing ever comes back
  const client = startClient(clientConfig([chaos.port]));
  const app = await connectResettable(client.address.port);
  await waitFor(() => chaos.connections === 1, "broker-client to dial");
  const stoppedAt = Date.now();
  await client.close();
  const took = Date.now() - stoppedAt;
  ok(took < FAREWELL_GRACE_MS + 1_000, `broker-client stopped in ${took} ms (grace ${FAREWELL_GRACE_MS} ms)`);
  app.destroy();
  await chaos.close();
});

Deno.test("a session that completed on broker-server, whose CLOSE died with the link, is not counted aborted by a stopping broker-client", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], LONG_WINDOWS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await app.write(new TextEncoder().encode("bye"));
  const got = new Uint8Array(3);
  for (let n = 0; n < 3;) n += (await app.read(got.subarray(n))) ?? 3;
  chaos.setDelay(300); // the server's CLOSE will linger in the relay
  await app.closeWrite();
  equal(await app.read(new Uint8Array(8)), null, "Smart Client gets the ERP's FIN: every byte is delivered both ways");
  await logs.waitFor(/broker\.server: Session \w+ closed: closed by both ends/);
  chaos.setMode("refuse");
  chaos.resetAll(); // the CLOSE dies in the relay
  chaos.setDelay(0);
  await logs.waitFor(/broker\.client: Session \w+: link lost/);
  chaos.setMode("pass");
  await client.close();
  app.close();
  const totals = server.status().totals;
  equal(totals.sessionsCompleted, 1, "broker-server: completed");
  const ending = logs.lines.find((l) => /broker\.client: Session \w+ closed:/.test(l)) ?? "";
  ok(
    /closed by both ends/.test(ending),
    `broker-client and broker-server disagree on the session's fate: broker-server completed it, broker-client logged "${ending}"`,
  );
  await chaos.close();
});

Deno.test("a stopping broker-client waits no longer than its grace for a CLOSE that a frozen link never brings", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(
    serverConfig([erp.port], { ...LONG_WINDOWS, HEARTBEAT_INTERVAL: "1s", LINK_TIMEOUT: "10s" }),
  );
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  chaos.setDelay(300);
  await app.closeWrite();
  equal(await app.read(new Uint8Array(8)), null);
  await logs.waitFor(/broker\.server: Session \w+ closed: closed by both ends/);
  chaos.freezeAll(); // the CLOSE vanishes, the link stays "up" (for 10 s of LINK_TIMEOUT)
  chaos.setMode("refuse"); // and no other link gets through
  const stoppedAt = Date.now();
  await client.close();
  const took = Date.now() - stoppedAt;
  ok(took < FAREWELL_GRACE_MS + 1_000, `broker-client stopped in ${took} ms (grace ${FAREWELL_GRACE_MS} ms)`);
  app.close();
  equal(server.status().totals.sessionsCompleted, 1);
  await chaos.close();
});
