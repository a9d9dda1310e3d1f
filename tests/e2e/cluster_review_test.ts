/**
 * Hostile review of the broker-server cluster (relays, takeover). The tests
 * that fail name a finding; those that pass are attacks that held up.
 */
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";
import { echo, freePort, readExactly, roundTrip } from "../helpers/apps.ts";
import { type ServerProcess, startServerProcess } from "../helpers/server_process.ts";
import { clusterConfigs, startCluster, TEST_CLUSTER_KEY, writeClusterIni } from "../helpers/cluster.ts";
import { resumeRaw } from "../helpers/raw_peer.ts";
import { randomId } from "../../src/protocol/resume_auth.ts";
import { decodeReject, FrameType, RejectCode } from "../../src/protocol/frames.ts";
import { acceptPeer, sendReply } from "../../src/cluster/peer_conn.ts";
import { importClusterKey } from "../../src/cluster/wire.ts";
import { encodeHelloNew, encodePreface } from "../../src/protocol/frames.ts";
import { RawPeer } from "../helpers/raw_peer.ts";
import { startServer } from "../helpers/setup.ts";
import { serverConfig } from "../helpers/setup.ts";
import { closeQuietly } from "../../src/session/transport.ts";
import { takeOver } from "../../src/cluster/cluster.ts";
import { systemNetwork } from "../../src/session/network.ts";
import { fileURLToPath } from "node:url";

const writeConfig = (erpPort: number) => writeClusterIni(erpPort);

async function stop(p: ServerProcess): Promise<void> {
  try {
    p.child.kill("SIGKILL");
  } catch { /* exited */ }
  await p.child.status;
  await p.done;
}

Deno.test("cluster review: after two takeovers in a row, sessions of the first process still resume through the newest", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const { path, port } = await writeConfig(erp.port);
  const p0 = startServerProcess(path);
  const p1Holder: ServerProcess[] = [];
  try {
    await p0.waitFor(/broker-server listening on/);
    const chaos = await ChaosLink.start({ host: "127.0.0.1", port });
    await using client = startClient(clientConfig([chaos.port]));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    equal(await roundTrip(app, "p0"), "p0");

    const p1 = startServerProcess(path);
    p1Holder.push(p1);
    await p1.waitFor(/broker-server listening on/);
    const p2 = startServerProcess(path);
    p1Holder.push(p2);
    await p2.waitFor(/broker-server listening on/);
    await p1.waitFor(/takes over; this process/);

    // Several link cuts, across the newest process's polls (every 5 s): each must resume at p0.
    for (let cut = 0; cut < 4; cut++) {
      const resumedBefore = p0.lines.filter((l) => /resumed from/.test(l)).length;
      chaos.resetAll();
      await app.write(new TextEncoder().encode(`cut${cut}`));
      await waitFor(
        () => p0.lines.filter((l) => /resumed from/.test(l)).length > resumedBefore,
        `resume ${cut + 1} at the first process`,
        8_000,
      ).catch((err) => {
        throw new Error(
          `${err.message}\nclient:\n${
            logs.lines.filter((l) => /Refused|refused|holds tag/.test(l)).slice(-5).join("\n")
          }`,
        );
      });
      equal(new TextDecoder().decode(await readExactly(app, 4)), `cut${cut}`);
      await new Promise((r) => setTimeout(r, 2_000));
    }
    const refusals = logs.lines.filter((l) => /no process here holds tag/.test(l));
    equal(refusals.length, 0, `relays refused on the way to the first process:\n${refusals.slice(0, 3).join("\n")}`);
    app.close();
    await chaos.close();
  } finally {
    for (const p of p1Holder) await stop(p);
    await stop(p0);
  }
});

function idWithTag(tag: string): Uint8Array {
  const id = randomId();
  for (let i = 0; i < 4; i++) id[12 + i] = parseInt(tag.slice(2 * i, 2 * i + 2), 16);
  return id;
}

async function answerOf(port: number, id: Uint8Array): Promise<string> {
  try {
    const { peer, answer } = await resumeRaw(port, id, null, 0);
    peer.close();
    if (answer?.type === FrameType.Reject) return `reject ${decodeReject(answer.payload).code}`;
    return answer === null ? "closed" : `frame ${answer.type}`;
  } catch (err) {
    return `error ${(err as Error).name}`;
  }
}

Deno.test("cluster review: resumes of unknown ids carrying a peer's tag, or a tag nobody holds, are refused as unknown sessions quickly and leave no relay behind", async () => {
  await using erp = startErp(echo);
  await using servers = startCluster(clusterConfigs(2, [erp.port]));
  const [a, b] = servers;
  await waitFor(() => a!.status().cluster!.peers.every((p) => p.reachable), "A to see B");
  const bTag = b!.status().cluster!.tag;
  const started = performance.now();
  const answers = await Promise.all(Array.from({ length: 40 }, () => answerOf(a!.address.port, idWithTag(bTag))));
  const nobody = await answerOf(a!.address.port, idWithTag("deadbeef"));
  const ms = performance.now() - started;
  const counts = new Map<string, number>();
  for (const x of answers) counts.set(x, (counts.get(x) ?? 0) + 1);
  equal(counts.get(`reject ${RejectCode.UnknownSession}`), 40, `answers: ${JSON.stringify([...counts])}`);
  equal(nobody, `reject ${RejectCode.UnknownSession}`, "a tag nobody holds");
  ok(ms < 8_000, `took ${ms} ms`);
  await waitFor(() => a!.status().cluster!.relaying === 0, "A's relays to end");
  equal(b!.sessions.length, 0);
});

/** A peer that proves the key, answers hello, and counts the opening questions it is asked. */
function countingPeer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const counts = { hello: 0, opening: 0 };
  const conns = new Set<Deno.Conn>();
  const key = importClusterKey(TEST_CLUSTER_KEY);
  const serving = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        try {
          const { request, proof } = await acceptPeer(conn, await key, 3_000);
          if (request.op === "hello") {
            counts.hello++;
            await sendReply(conn, proof, {
              tag: "bbbbbbbb",
              version: "fake",
              pid: 1,
              sessions: 0,
              holders: ["bbbbbbbb"],
            });
          } else if (request.op === "opening") {
            counts.opening++;
            await sendReply(conn, proof, { held: false, tag: "bbbbbbbb" });
          }
        } catch { /* ignore */ }
        closeQuietly(conn);
        conns.delete(conn);
      })();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    counts,
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await serving;
      await new Promise((r) => setTimeout(r, 50));
    },
  };
}

async function helloNew(port: number): Promise<string> {
  const peer = await RawPeer.connect(port);
  try {
    await peer.writeRaw(concat(encodePreface(), encodeHelloNew(new Uint8Array(32).fill(7), randomId(), 1 << 20)));
    for (;;) {
      const frame = await peer.next(5_000);
      if (frame === null) return "closed";
      if (frame.type === FrameType.Preface) continue;
      if (frame.type === FrameType.Reject) return `reject ${decodeReject(frame.payload).code}`;
      return `frame ${frame.type}`;
    }
  } catch (err) {
    return `error ${(err as Error).name}`;
  } finally {
    peer.close();
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("cluster review: new-session hellos that never prove the admission key cost no question to the peers", async () => {
  await using erp = startErp(echo);
  const peer = countingPeer();
  try {
    await using server = startServer(serverConfig([erp.port], {
      CLUSTER_KEY: TEST_CLUSTER_KEY,
      CLUSTER_PORT: String(freePort()),
      PEER_B: `127.0.0.1 ${peer.port}`,
      ADMISSION_KEY: "admission-key-0123456789abcdef",
      NEW_SESSIONS_PER_MINUTE: "2",
    }));
    await waitFor(() => server.status().cluster!.peers.every((p) => p.reachable), "the peer to answer a poll");
    const answers: string[] = [];
    for (let i = 0; i < 30; i++) answers.push(await helloNew(server.address.port));
    ok(answers.every((a) => !a.startsWith("frame 3")), `no session opened: ${answers.slice(0, 3)}`);
    ok(
      peer.counts.opening <= 2,
      `${peer.counts.opening} opening questions reached the peer for 30 hellos from one address that never proved the admission key (answers: ${[
        ...new Set(answers),
      ]})`,
    );
  } finally {
    await peer.close();
  }
});

Deno.test("cluster review: a successor that dies right after the handover does not leave the port unserved for good", async () => {
  await using erp = startErp(echo);
  const clusterPort = freePort();
  const config = serverConfig([erp.port], { CLUSTER_KEY: TEST_CLUSTER_KEY, CLUSTER_PORT: String(clusterPort) });
  config.listen.port = freePort();
  await using old = startServer(config);
  const port = old.address.port;
  // The successor: asks for the handover, then crashes before it binds anything.
  const predecessors = await takeOver({ hostname: "127.0.0.1", port: clusterPort }, TEST_CLUSTER_KEY, {
    network: systemNetwork,
    version: "crashing successor",
  });
  equal(predecessors.length, 1);
  // The successor would have had 10 s (TAKEOVER_BIND_MS) to bind; give the old process 15 s to notice and take back.
  const serving = async () => {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return true;
    } catch {
      return false;
    }
  };
  let back = false;
  for (let i = 0; i < 30 && !back; i++) {
    await new Promise((r) => setTimeout(r, 500));
    back = await serving();
  }
  ok(back, `nobody listens on LOCAL_SERVER_PORT ${port} 15 s after a handover to a successor that never bound it`);
});

const CERT = fileURLToPath(new URL("../fixtures/test_cert.pem", import.meta.url));
const KEY = fileURLToPath(new URL("../fixtures/test_key.pem", import.meta.url));

Deno.test("cluster review: a TLS link is relayed to its holder through every cut", async () => {
  await using erp = startErp(echo);
  await using servers = startCluster(
    clusterConfigs(2, [erp.port], {
      HEARTBEAT_INTERVAL: "100ms",
      LINK_TIMEOUT: "500ms",
      LINK_TLS_CERT: CERT,
      LINK_TLS_KEY: KEY,
    }),
  );
  const front = await ChaosLink.start(servers.map((s) => ({ host: "127.0.0.1", port: s.address.port })));
  await using client = startClient(clientConfig([front.port], { LINK_TLS_CA: CERT }));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(app, "tls"), "tls");
  const holder = servers.findIndex((s) => s.sessions.length === 1);
  for (let cut = 0; cut < 4; cut++) {
    const resumes = servers[holder]?.sessions[0]?.session.stats.resumes ?? 0;
    front.resetAll();
    await app.write(new TextEncoder().encode(`cut${cut}`));
    await waitFor(() => (servers[holder]?.sessions[0]?.session.stats.resumes ?? 0) > resumes, `resume ${cut + 1}`);
    equal(new TextDecoder().decode(await readExactly(app, 4)), `cut${cut}`);
  }
  ok(servers.reduce((n, s) => n + s.status().cluster!.relayedOut, 0) >= 1, "at least one TLS link was relayed");
  await app.closeWrite();
  equal(await app.read(new Uint8Array(1)), null);
  app.close();
  await waitFor(() => servers.every((s) => s.sessions.length === 0) && client.sessionCount === 0, "the session to end");
  await waitFor(() => servers.every((s) => s.status().cluster!.relaying === 0), "relays to end");
  await front.close();
});

Deno.test("cluster review: a peer with another CLUSTER_KEY shows as unreachable with the reason, and says why in the log", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const [ca, cb] = clusterConfigs(2, [erp.port]);
  cb!.cluster!.key = "another-cluster-key-9876543210";
  await using servers = startCluster([ca!, cb!]);
  await waitFor(() => servers[0]!.status().cluster!.peers[0]!.error !== "not asked yet", "A's first poll");
  const peer = servers[0]!.status().cluster!.peers[0]!;
  equal(peer.reachable, false);
  ok(/CLUSTER_KEY/.test(peer.error ?? ""), `status error: ${peer.error}`);
  await logs.waitFor(/cannot be reached: .*CLUSTER_KEY/);
});
