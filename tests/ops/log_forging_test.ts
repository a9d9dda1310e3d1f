/**
 * What a hostile client can put in broker-server's log through an ABORT
 * reason: a forged line (newlines, terminal escapes), a reason as large as a
 * frame, and a flood of aborted sessions from one address.
 */
import { equal, match, ok } from "node:assert/strict";
import { encodeAbort, FRAME_HEADER_SIZE, FrameType } from "../../src/protocol/frames.ts";
import { BrokerServer } from "../../src/server/server.ts";
import { setupLogging, teardownLogging } from "../../src/ops/log.ts";
import { echo } from "../helpers/apps.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { openRawSession } from "../helpers/raw_peer.ts";
import { serverConfig, startErp, startServer, waitFor } from "../helpers/setup.ts";

const FORGED =
  "bye\n2026-11-30 04:00:00.000 +00 [ERR] broker.server: ERP server REMOTE_SERVER_01 is DOWN: forged\x1b[2J";

/** Opens a session on `port` and ends it from the client side with an ABORT frame of `payload` bytes. */
async function abortWith(port: number, payload: Uint8Array): Promise<void> {
  const { peer } = await openRawSession(port);
  const frame = new Uint8Array(FRAME_HEADER_SIZE + payload.length);
  frame[0] = FrameType.Abort;
  new DataView(frame.buffer).setUint32(1, payload.length);
  frame.set(payload, FRAME_HEADER_SIZE);
  await peer.writeRaw(frame);
  await peer.closedByPeer();
  peer.close();
}

Deno.test("a newline or terminal escape in a client's ABORT reason cannot forge a log line", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  await abortWith(server.address.port, encodeAbort(FORGED).subarray(FRAME_HEADER_SIZE));
  const line = await logs.waitFor(/Session \w+ closed: peer ended the session: bye/);
  ok(!line.includes("\n") && !line.includes("\x1b"), JSON.stringify(line));
  match(line, /peer ended the session: bye\\n2026-11-30 04:00:00\.000 \+00 \[ERR\] .* is DOWN: forged\\x1b\[2J;/);
  ok(logs.lines.every((l) => !l.includes("\n")), "no captured line spans two lines");
});

Deno.test("a 1 MiB ABORT reason makes a short log line, in text and in JSON", async () => {
  const dir = await Deno.makeTempDir();
  await using erp = startErp(echo);
  for (const format of ["text", "json"] as const) {
    const path = `${dir}/broker-server.${format}.log`;
    await setupLogging({ console: false, level: "info", format, file: { path, maxSizeBytes: 1 << 30, maxFiles: 1 } });
    try {
      await using server = startServer(serverConfig([erp.port]));
      await abortWith(server.address.port, new TextEncoder().encode("x".repeat(1 << 20)));
      await waitFor(() => server.sessions.length === 0, "the session to end");
    } finally {
      await teardownLogging();
    }
    const lines = (await Deno.readTextFile(path)).trim().split("\n");
    const closed = lines.find((l) => l.includes("peer ended the session: xxx"));
    ok(closed, lines.join("\n"));
    const bytes = new TextEncoder().encode(closed).length;
    ok(bytes <= (format === "json" ? 900 : 400), `${format}: ${bytes} bytes: ${closed}`);
    match(closed, /xxx… \(1048576 characters\)/, "it says how long the reason was");
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("many sessions aborted from one address log a bounded number of lines, then how many were not logged", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  let offset = 0; // the server's clock: the test moves it past the log budget's window
  const server = new BrokerServer(serverConfig([erp.port]), { now: () => Date.now() + offset });
  server.listen();
  await using _stop = { [Symbol.asyncDispose]: async () => void await server.close() };
  const reason = encodeAbort("again").subarray(FRAME_HEADER_SIZE);
  for (let i = 0; i < 60; i++) await abortWith(server.address.port, reason);
  await waitFor(() => server.sessions.length === 0, "the sessions to end");
  const closed = () => logs.lines.filter((l) => /Session \w+ closed: peer ended the session: again/.test(l));
  equal(closed().length, 20, `20 lines for 60 aborted sessions in 10 s:\n${closed().join("\n")}`);
  equal(server.status().totals.sessionsAborted, 60, "every one is still counted");
  offset += 10_000;
  await abortWith(server.address.port, reason);
  const last = await logs.waitFor(
    /\(40 more sessions from 127\.0\.0\.1 ended abnormally before this one: not logged\)/,
  );
  match(last, /Session \w+ closed: peer ended the session: again;/);
  equal(closed().length, 21);
});
