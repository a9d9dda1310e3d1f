/**
 * Replacing broker-server by a new process without ending a session: the
 * new one takes over the ports, the old one keeps its sessions (their links
 * reach it through the new one) and exits once they have ended.
 */
import { equal, match, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, deadline, startClient, startErp, waitFor } from "../helpers/setup.ts";
import { readExactly } from "../helpers/apps.ts";
import { ByteStream, Digest, receiveAll, seededRandom, sendStream, streamDigest } from "../../tools/streams.ts";
import { writeAll } from "../../src/session/transport.ts";
import { startServerProcess } from "../helpers/server_process.ts";
import { writeClusterIni } from "../helpers/cluster.ts";

const SESSIONS = Number(Deno.env.get("TAKEOVER_SESSIONS") ?? 50);
const WINDOWS = Deno.build.os === "windows";
const HALF = 256 * 1024;

/** Wine's sockets stall for seconds at times: links there get more slack. */
const writeConfig = (erpPort: number) =>
  writeClusterIni(erpPort, WINDOWS ? { HEARTBEAT_INTERVAL: "500ms", LINK_TIMEOUT: "4s" } : {});

Deno.test(`takeover: ${SESSIONS} sessions stream through link faults while a new broker-server process replaces the old one`, async () => {
  await using logs = await captureLogs();
  // Each session: the ERP sends a half, waits for the client's whole stream, then sends the other half.
  const erpReceived = new Map<number, string>();
  await using erp = startErp(async (conn) => {
    const header = await readExactly(conn, 4);
    const index = new DataView(header.buffer).getUint32(0);
    const [digest] = await Promise.all([
      receiveAll(conn),
      sendStream(conn, index * 2 + 2, 2 * HALF).then(() => conn.closeWrite()),
    ]);
    erpReceived.set(index, digest.hex());
    conn.close();
  });
  const { path, port } = await writeConfig(erp.port);
  const old = startServerProcess(path);
  const oldTag = (await old.waitFor(/holder tag [0-9a-f]{8}/)).match(/holder tag ([0-9a-f]{8})/)?.[1];
  await old.waitFor(/broker-server listening on/);
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port });
  await using client = startClient(clientConfig([chaos.port], { NEW_SESSION_TIMEOUT: "30s" }));

  const takenOver = Promise.withResolvers<void>();
  const opened = Array.from({ length: SESSIONS }, () => Promise.withResolvers<void>());
  const received = Array.from({ length: SESSIONS }, () => new Digest());
  const sessions = Promise.all(Array.from({ length: SESSIONS }, async (_, index) => {
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, index);
    await app.write(header);
    const receiving = receiveAll(app, received[index]);
    // Half before the takeover, half after: no session can end before the takeover.
    const stream = new ByteStream(index * 2 + 1);
    await writeAll(app, stream.fill(new Uint8Array(HALF)));
    opened[index]?.resolve();
    await takenOver.promise;
    await writeAll(app, stream.fill(new Uint8Array(HALF)));
    await app.closeWrite();
    const digest = await receiving;
    app.close();
    return { index, bytes: digest.bytes, hex: digest.hex() };
  }));
  await deadline(Promise.all(opened.map((o) => o.promise)), 60_000, () => "the sessions to send their streams");
  await waitFor(
    () => client.sessionCount === SESSIONS && client.sessions.every((s) => s.state !== "connecting"),
    "every session to be open",
    60_000,
  ).catch((err) => {
    const states = client.sessions.map((x) => x.state).join(",");
    throw new Error(`${err.message}: ${client.sessionCount} sessions (${states})`);
  });

  // Link faults from here on, through the takeover and to the end.
  const roll = seededRandom(20261130);
  let faulting = true;
  const faults = (async () => {
    while (faulting) {
      await new Promise((r) => setTimeout(r, 100 + roll() * 400));
      const pick = roll();
      if (pick < 0.4) chaos.resetAll();
      else if (pick < 0.7) chaos.closeAll();
      else chaos.freezeAll();
      if (roll() < 0.5) chaos.dropFrozen();
    }
  })();

  const next = startServerProcess(path);
  await next.waitFor(/Taking over from broker-server \S+ \(pid \d+\)/);
  await next.waitFor(/broker-server listening on/);
  const newTag = (await next.waitFor(/holder tag [0-9a-f]{8}/)).match(/holder tag ([0-9a-f]{8})/)?.[1];
  ok(oldTag && newTag && oldTag !== newTag, `two holder tags: ${oldTag}, ${newTag}`);
  await old.waitFor(/takes over; this process \(\S+\) stops accepting and keeps its \d+ sessions/);
  // Every link is cut once more: each session must come back to the old process through the new one.
  const handedAt = old.lines.findIndex((l) => /takes over; this process/.test(l));
  const resumedSessions = () =>
    new Set(old.lines.slice(handedAt).flatMap((l) => l.match(/Session (\w+) resumed from/)?.[1] ?? [])).size;
  chaos.resetAll();
  await waitFor(() => resumedSessions() === SESSIONS, "every session to resume through the new process", 60_000)
    .catch((err) => {
      throw new Error(
        `${err.message}: ${resumedSessions()} did\nold:\n${
          old.lines.slice(handedAt - 3, handedAt + 15).join("\n")
        }\nnew:\n${next.lines.slice(0, 30).join("\n")}\nclient:\n${logs.lines.slice(-15).join("\n")}`,
      );
    });
  takenOver.resolve();

  // A new session after the takeover is the new process's.
  const fresh = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await fresh.write(new Uint8Array([0, 0, 0, 200]));
  const results = await deadline(
    sessions,
    90_000,
    () =>
      `sessions still receiving: ${
        received.flatMap((d, i) => d.bytes < 2 * HALF ? [`${i}: ${d.bytes}`] : []).join(", ")
      }`,
  );
  faulting = false;
  await faults;
  chaos.dropFrozen();
  for (const r of results) {
    equal(r.bytes, 2 * HALF, `session ${r.index}: bytes to the client`);
    equal(r.hex, streamDigest(r.index * 2 + 2, 2 * HALF), `session ${r.index}: the client's SHA-256`);
  }
  await waitFor(() => erpReceived.size >= SESSIONS, "the ERP to receive every stream", 30_000);
  for (let i = 0; i < SESSIONS; i++) {
    equal(erpReceived.get(i), streamDigest(i * 2 + 1, 2 * HALF), `session ${i}: the ERP's SHA-256`);
  }

  // The old process exits by itself once its sessions have ended.
  const status = await deadline(
    old.child.status,
    30_000,
    () => `the old process to exit:\n${old.lines.slice(-20).join("\n")}`,
  );
  equal(status.code, 0, "the old process exits 0");
  await old.done;
  ok(
    old.lines.some((l) => /broker-server stopped; 0 sessions were still open/.test(l)),
    old.lines.slice(-5).join("\n"),
  );
  // The new session went to the new process.
  const freshEcho = receiveAll(fresh);
  await fresh.closeWrite();
  const freshDigest = await freshEcho;
  equal(freshDigest.hex(), streamDigest(200 * 2 + 2, 2 * HALF));
  fresh.close();
  const openedBy = (p: { lines: string[] }) => p.lines.filter((l) => /Session \w+ opened/.test(l)).length;
  equal(openedBy(next), 1, "the session opened after the takeover is the new process's");
  equal(openedBy(old), SESSIONS, "the old process opened the sessions before it");

  await waitFor(() => client.sessionCount === 0, "every session to end");
  ok(
    !logs.lines.some((l) =>
      /broker\.client: Session \w+ closed: (?!.*ended cleanly)/.test(l) && /cannot resume|expired|aborted/.test(l)
    ),
    logs.lines.filter((l) => /closed:/.test(l)).slice(0, 5).join("\n"),
  );
  // Windows has no SIGTERM: there kill() ends the process at once.
  next.child.kill(WINDOWS ? "SIGKILL" : "SIGTERM");
  await next.child.status;
  await next.done;
  await chaos.close();
  if (!WINDOWS) match(next.lines.join("\n"), /broker-server stopped/);
});
