/**
 * A hostile broker-client against the goodbye of issue 19: huge ABORT
 * reasons, repeated ABORTs, frames after ABORT. broker-server answers an
 * ABORT with CLOSE, ends the session at once, and keeps nothing of the
 * peer's making beyond a small, bounded reason.
 */
import { equal, ok } from "node:assert/strict";
import { captureLogs } from "../helpers/log_capture.ts";
import { openRawSession, resumeRaw } from "../helpers/raw_peer.ts";
import { serverConfig, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { decodeReject, encodeAbort, encodeData, FRAME_HEADER_SIZE, FrameType } from "../../src/protocol/frames.ts";

const TIMERS = { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "1s", RESUME_TIMEOUT: "60s" };

/** An ABORT frame whose reason is `size` bytes (encodeAbort itself cuts reasons to 1,000 characters). */
function hugeAbort(size: number): Uint8Array {
  const frame = new Uint8Array(FRAME_HEADER_SIZE + size);
  frame[0] = FrameType.Abort;
  new DataView(frame.buffer).setUint32(1, size);
  frame.fill(0x78, FRAME_HEADER_SIZE); // "xxxx…"
  return frame;
}

Deno.test("a client's ABORT with a 1 MiB reason: broker-server answers CLOSE and keeps and logs a bounded reason", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], TIMERS));
  const raw = await openRawSession(server.address.port);
  raw.peer.link.send(hugeAbort(1024 * 1024 - 64));
  const seen: number[] = [];
  for (let f; (f = await raw.peer.next()) !== null;) seen.push(f.type);
  equal(seen.at(-1), FrameType.Close, `the ABORT is answered with CLOSE (frames: ${seen.join(",")})`);
  await waitFor(() => server.sessions.length === 0, "the session to end");
  raw.peer.close();
  equal(server.status().totals.sessionsAborted, 1);

  // What broker-server keeps of the ending (its tombstone) is what a resume is told.
  const { peer, answer } = await resumeRaw(server.address.port, raw.sessionId, raw.key, 0);
  equal(answer?.type, FrameType.Reject);
  const { reason } = decodeReject((answer as { payload: Uint8Array }).payload);
  peer.close();
  ok(
    reason.length < 8_192,
    `broker-server keeps a ${reason.length}-character reason from the peer for its resume window`,
  );
  const longest = Math.max(...logs.lines.map((l) => l.length));
  ok(longest < 8_192, `broker-server logged a ${longest}-character line from the peer's ABORT`);
});

Deno.test("repeated ABORTs and DATA after ABORT change nothing: one CLOSE, one aborted session, the ERP connection closed", async () => {
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], TIMERS));
  const raw = await openRawSession(server.address.port);
  raw.peer.link.send(encodeAbort("first"));
  raw.peer.link.send(encodeAbort("second"));
  raw.peer.link.send(encodeData(0, new TextEncoder().encode("after the end")));
  raw.peer.link.send(encodeAbort("third"));
  const seen: number[] = [];
  try {
    for (let f; (f = await raw.peer.next()) !== null;) seen.push(f.type);
  } catch (err) {
    // The server closes the link with our later frames unread: a reset. Windows
    // drops what it had received but not yet handed over (the CLOSE) when the reset comes.
    if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
  }
  const closes = seen.filter((t) => t === FrameType.Close).length;
  equal(closes, Deno.build.os === "windows" ? Math.min(closes, 1) : 1, `one CLOSE (frames: ${seen.join(",")})`);
  await waitFor(() => server.sessions.length === 0, "the session to end");
  await erp.firstEnded;
  raw.peer.close();
  const totals = server.status().totals;
  equal(totals.sessionsAborted, 1);
  equal(totals.sessionsOpened, 1);
  equal(totals.bytesToErp, 0, "nothing after the ABORT reached the ERP");
});

Deno.test("ABORTs with 1 MiB reasons do not make broker-server hold megabytes per ended session", async () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --v8-flags=--expose-gc");
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], TIMERS));
  const ENDINGS = 24;
  const abort = hugeAbort(1024 * 1024 - 64);
  // One session first, so that what every session costs anyway is counted in the baseline.
  const warmup = await openRawSession(server.address.port);
  warmup.peer.link.send(encodeAbort("warm-up"));
  await warmup.peer.closedByPeer();
  warmup.peer.close();
  gc();
  const before = Deno.memoryUsage().heapUsed;
  for (let i = 0; i < ENDINGS; i++) {
    const raw = await openRawSession(server.address.port);
    raw.peer.link.send(abort);
    await raw.peer.closedByPeer();
    raw.peer.close();
  }
  await waitFor(() => server.sessions.length === 0, "every session to end");
  equal(server.status().totals.sessionsAborted, ENDINGS + 1);
  gc();
  const grown = Deno.memoryUsage().heapUsed - before;
  ok(
    grown < 8 * 1024 * 1024,
    `broker-server's heap grew by ${
      (grown / 1024 / 1024).toFixed(1)
    } MiB for ${ENDINGS} ended sessions (their tombstones keep the peers' reasons for the resume window)`,
  );
});
