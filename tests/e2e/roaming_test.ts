/**
 * Roaming on the loopback, at default settings: a link that goes silent for
 * good (the PC's address changed: no RST, no FIN) while a new link would
 * work, and the links that must not be mistaken for one (slow, bursty).
 */
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { Trickle } from "../../tools/streams.ts";

/** Sessions that stream 100 KiB/s each way, as in the measurements. */
const SESSIONS = 3;
/** The roam must cost at most this long a standstill (ms). */
const ROAM_STANDSTILL_MS = 3_000;

/** Starts `count` Trickles through `clientPort`. */
async function trickles(clientPort: number, count: number, everyMs = 10): Promise<Trickle[]> {
  const apps: Trickle[] = [];
  for (let i = 0; i < count; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: clientPort });
    apps.push(new Trickle(conn, 100 + i, { everyMs }));
  }
  return apps;
}

Deno.test("a roam (the old link goes silent for good, a new one works): sessions move within 3 s, every byte intact", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const apps = await trickles(client.address.port, SESSIONS);
  await waitFor(() => server.sessions.length === SESSIONS, "the sessions to open");
  // The first probe of each link is answered: the client knows the server echoes.
  await waitFor(() => client.sessions.every((s) => s.probesAnswered), "the first probes to be answered");
  await new Promise((r) => setTimeout(r, 500)); // let bytes flow

  const roamedAt = Date.now();
  chaos.freezeAll(); // the old links never deliver again; new connections pass
  await waitFor(
    () => client.sessions.every((s) => s.stats.resumes === 1 && s.state === "attached"),
    "every session to move to a new link",
    ROAM_STANDSTILL_MS + 2_000,
  );
  await waitFor(() => apps.every((a) => a.lastEchoAt > Date.now() - 100), "bytes to flow again on every session");
  const standstills = apps.map((a) => a.longestGapSince(roamedAt));
  for (const ms of standstills) ok(ms < ROAM_STANDSTILL_MS, `sessions stood still ${standstills.join(", ")} ms`);
  console.log(`roam standstill per session: ${standstills.join(", ")} ms`);

  const resumed = logs.lines.filter((l) => /broker\.client: Session \w+ resumed .*trigger: suspicion race won/.test(l));
  equal(resumed.length, SESSIONS, "each client resume names the race as its trigger");
  equal(server.status().totals.resumesByTrigger.replacedWhileAttached, SESSIONS);
  ok(server.status().sessions.every((s) => s.lastLinkLoss === "replaced while attached"));
  equal(chaos.connections, 2 * SESSIONS, "one spare per session, no more");

  for (const app of apps) await app.finish();
  await waitFor(() => server.sessions.length === 0 && client.sessionCount === 0, "sessions to end");
  chaos.dropFrozen();
  await chaos.close();
});

/**
 * Streams through `chaos` for a while, then leaves the sessions idle, and
 * checks that nothing was taken for a roam: no resume, no spare link, no
 * suspicion, and every byte intact.
 */
async function staysOnFirstLink(chaos: ChaosLink, serverPort: number): Promise<void> {
  await using logs = await captureLogs();
  await using client = startClient(clientConfig([chaos.port]));
  const apps = await trickles(client.address.port, 2, 50);
  await waitFor(() => client.sessions.length === 2 && client.sessions.every((s) => s.state === "attached"), "open");
  // Streaming (acknowledgements and probes after quiet spells), then idle (heartbeats only).
  await new Promise((r) => setTimeout(r, 8_000));
  const results = Promise.all(apps.map((a) => a.finish()));
  await new Promise((r) => setTimeout(r, 8_000));
  await results;
  const suspicions = logs.lines.filter((l) => /suspected|link lost|resumed/.test(l));
  equal(suspicions.join("\n"), "", "no suspicion, no link lost, no resume");
  equal(chaos.connections, 2, `one link per session (server port ${serverPort})`);
  await waitFor(() => client.sessionCount === 0, "sessions to end", 20_000);
}

Deno.test("a slow but healthy link (every byte delayed 1.5 s each way) keeps its sessions: no race, no resume", async () => {
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  chaos.setDelay(1_500);
  await staysOnFirstLink(chaos, server.address.port);
  equal(server.status().totals.resumes, 0);
  await chaos.close();
});

Deno.test("a bursty link (bytes held, then released every second) keeps its sessions: no race, no resume", async () => {
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  chaos.setBursts(1_000);
  await staysOnFirstLink(chaos, server.address.port);
  equal(server.status().totals.resumes, 0);
  await chaos.close();
});
