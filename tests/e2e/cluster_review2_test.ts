/**
 * Second hostile review of the broker-server cluster (relays, takeover).
 * Each failing test names a finding; see the report for the fixes.
 */
import { equal, ok } from "node:assert/strict";
import { deadline, serverConfig, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo, freePort } from "../helpers/apps.ts";
import { clusterConfigs, startCluster, TEST_CLUSTER_KEY } from "../helpers/cluster.ts";
import { openRawSession, type RawPeer, resumeRaw } from "../helpers/raw_peer.ts";
import { BrokerServer } from "../../src/server/server.ts";
import { createEphemeralKey, randomId } from "../../src/protocol/resume_auth.ts";
import { decodeReject, FrameType, RejectCode, toHex } from "../../src/protocol/frames.ts";
import { takeOver } from "../../src/cluster/cluster.ts";
import { systemNetwork } from "../../src/session/network.ts";

/** A session id that names the holder `tag` (its last four bytes) and is otherwise random. */
function idWithTag(tag: string): Uint8Array {
  const id = randomId();
  for (let i = 0; i < 4; i++) id[12 + i] = parseInt(tag.slice(2 * i, 2 * i + 2), 16);
  return id;
}

Deno.test("cluster review 2: a relay whose holder has closed the link does not stay open while the client stays silent (no per-source bound otherwise)", async () => {
  await using erp = startErp(echo);
  // One source may have at most 10 links in handshake at A.
  await using servers = startCluster(clusterConfigs(2, [erp.port], { MAX_HANDSHAKES_PER_ADDRESS: "10" }));
  const [a, b] = servers;
  await waitFor(() => a!.status().cluster!.peers.every((p) => p.reachable), "A to see B");
  const bTag = b!.status().cluster!.tag;
  const peers: RawPeer[] = [];
  try {
    // A client (hostile, or one whose network died) that never closes its side: 30 resumes through A
    // naming B's tag. B refuses each at once (unknown session) and closes its end of the relay.
    for (let i = 0; i < 30; i++) {
      const { peer, answer } = await resumeRaw(a!.address.port, idWithTag(bTag), null, 0);
      peers.push(peer);
      equal(answer?.type, FrameType.Reject);
      equal(decodeReject(answer!.payload).code, RejectCode.UnknownSession);
      // The REJECT came through A, then A half-closed toward the client: B is done with this link.
      await peer.closedByPeer();
    }
    await waitFor(() => b!.status().totals.linksInHandshake === 0, "B to be done with every one of them");
    // A direct link to B would be closed now (B closed it); through A, each relay should end as well.
    await waitFor(() => a!.status().cluster!.relaying === 0, "A's relays to end", 3_000).catch(() => {
      throw new Error(
        `A still relays ${
          a!.status().cluster!.relaying
        } links (2 sockets each, outside its handshake caps) whose holder closed them, ` +
          `from one source allowed 10 links in handshake: they end only when the client closes (a dead client: when TCP gives up on the FIN, ~15 min)`,
      );
    });
  } finally {
    for (const p of peers) p.close();
  }
});

Deno.test("cluster review 2: a process taken over from exits after HANDOVER_TIMEOUT when its successor listens but its 'settled' message was lost", async () => {
  await using erp = startErp(echo);
  const clusterPort = freePort();
  const config = serverConfig([erp.port], {
    CLUSTER_KEY: TEST_CLUSTER_KEY,
    CLUSTER_PORT: String(clusterPort),
    HANDOVER_TIMEOUT: "1s",
  });
  config.listen.port = freePort();
  await using old = startServer(config);
  const port = old.address.port;
  // The successor asks for the handover...
  const predecessors = await takeOver({ hostname: "127.0.0.1", port: clusterPort }, TEST_CLUSTER_KEY, {
    network: systemNetwork,
    version: "successor",
  });
  equal(predecessors.length, 1);
  // ...and binds LOCAL_SERVER_PORT as soon as the old process lets go of it (it runs and serves), but its
  // 'settled' never reaches the old process (notifySettled failed: the old one busy, or over its cap of
  // unproven peer connections from 127.0.0.1 during a burst of relays; it is sent once and not retried).
  let successor: Deno.Listener | null = null;
  for (let i = 0; i < 200 && !successor; i++) {
    try {
      successor = Deno.listen({ hostname: "127.0.0.1", port });
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  ok(successor, "the old process let go of LOCAL_SERVER_PORT");
  try {
    // No session: HANDOVER_TIMEOUT (1 s) has nothing to wait for; at 15 s the old process checks the port,
    // finds it taken ("the new process runs, it just could not tell us") and should be done.
    await deadline(
      old.handedOver,
      22_000,
      () =>
        "the old process's handedOver to resolve (it has no session, HANDOVER_TIMEOUT is 1 s, its successor listens): " +
        "it waits for a 'settled' that will never come, and runs (and keeps any session) for good",
    );
  } finally {
    successor?.close();
  }
});

Deno.test("cluster review 2: a resume for a peer process born since the relaying side's last poll is not refused as an unknown session (a refresh within 1 s of the last is skipped, and its answer taken as final)", async () => {
  await using erp = startErp(echo);
  const [ca, cb] = clusterConfigs(2, [erp.port]);
  await using a = startServer(ca!);
  const b = startServer(cb!);
  let bNew: (BrokerServer & AsyncDisposable) | null = null;
  const peers: RawPeer[] = [];
  try {
    await waitFor(() => a.status().cluster!.peers.every((p) => p.reachable), "A to see B");
    // A asks its peers again on a tag nobody claims, at most once a second: let that second pass since A's first poll.
    await new Promise((r) => setTimeout(r, 1_100));
    // A resume naming a tag nobody holds makes A ask B now (B answers: reachable, its tag).
    const probe = await resumeRaw(a.address.port, idWithTag("deadbeef"), null, 0);
    peers.push(probe.peer);
    equal(probe.answer?.type, FrameType.Reject);
    // Right after that poll, B's process is replaced (an upgrade's takeover, or a quick restart): a new tag.
    await b.close();
    bNew = startServer(cb!);
    // A session opens on the new process, its link drops, and the resume lands on A (no affinity).
    const session = await openRawSession(bNew.address.port);
    peers.push(session.peer);
    session.peer.close();
    const { peer, answer } = await resumeRaw(a.address.port, session.sessionId, session.key, 0);
    peers.push(peer);
    const what = answer?.type === FrameType.Reject
      ? `REJECT ${decodeReject(answer.payload).code} (${decodeReject(answer.payload).reason})`
      : `frame ${answer?.type}`;
    ok(
      answer?.type === FrameType.Resumed ||
        (answer?.type === FrameType.Reject && decodeReject(answer.payload).code === RejectCode.Unavailable),
      `a live session on the new process, resumed through A: expected RESUMED (or Unavailable, retried), got ${what}: ` +
        `UnknownSession ends the session at broker-client`,
    );
    equal(bNew.sessions.length, 1, "the session is alive at the new process");
  } finally {
    for (const p of peers) p.close();
    await b.close();
    await bNew?.close();
  }
});

Deno.test("cluster review 2: a retried opening that lands on a peer finds its first attempt in a process the peer's host took over from (one opening, one ERP connection)", async () => {
  await using erp = startErp(echo);
  const clusterB = freePort();
  const clusterA = freePort();
  const bConfig = () => {
    const c = serverConfig([erp.port], {
      CLUSTER_KEY: TEST_CLUSTER_KEY,
      CLUSTER_PORT: String(clusterB),
      PEER_A: `127.0.0.1 ${clusterA}`,
    });
    c.listen.port = portB;
    return c;
  };
  const portB = freePort();
  const old = new BrokerServer(bConfig());
  old.listen();
  let successor: BrokerServer | null = null;
  await using a = startServer(serverConfig([erp.port], {
    CLUSTER_KEY: TEST_CLUSTER_KEY,
    CLUSTER_PORT: String(clusterA),
    PEER_B: `127.0.0.1 ${clusterB}`,
  }));
  const peers: RawPeer[] = [];
  try {
    // The first attempt of an opening reaches host B's process, which opens the session; its WELCOME is lost
    // (the client never confirms it: an orphan, kept for UNCONFIRMED_TIMEOUT).
    const openToken = randomId();
    const own = await createEphemeralKey();
    const first = await openRawSession(old.address.port, { openToken, own });
    first.peer.close();
    equal(erp.connections, 1);
    // A's poll (every 5 s) sees it there.
    await waitFor(() => a.status().cluster!.peers.some((p) => p.sessions === 1), "A to see the session on B", 8_000);
    // Host B is upgraded meanwhile: a new process takes over; the old one keeps the orphan.
    successor = new BrokerServer(bConfig());
    await successor.start();
    ok(successor.tookOver, "the new process took over");
    // A has polled the new process on B (it answers with 0 sessions of its own).
    await waitFor(
      () => a.status().cluster!.peers.some((p) => p.reachable && p.sessions === 0),
      "A to poll the new process on B",
      8_000,
    );
    // The client's retry (same token and key) lands on A (no affinity).
    const retry = await openRawSession(a.address.port, { openToken, own });
    peers.push(retry.peer);
    equal(
      toHex(retry.sessionId),
      toHex(first.sessionId),
      `the retry opened another session at A (${a.sessions.length} there; ${erp.connections} ERP connections for one opening): ` +
        `A asked B's new process, which answers for its own registry only, not for the process it took over from`,
    );
    equal(erp.connections, 1, "one ERP connection for one opening");
  } finally {
    for (const p of peers) p.close();
    await successor?.close();
    await old.close();
  }
});
