/**
 * The race of a spare link against a suspected one, attacked: the old link
 * dies while the spare handshakes, the spare dies before it commits, both
 * die, the old link answers late, the session ends during the race, and
 * many sessions suspect at once. Whatever happens, no byte is lost, the
 * session carries on (or ends as its applications asked), and no spare is
 * left open.
 */
import net from "node:net";
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs, type LogCapture } from "../helpers/log_capture.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo } from "../helpers/apps.ts";
import { Trickle } from "../../tools/streams.ts";
import type { BrokerServer } from "../../src/server/server.ts";
import type { BrokerClient } from "../../src/client/client.ts";

/** Short timers: a probe is suspect after 1 s (the floor), the link dead after 4 s. */
const TIMERS = { HEARTBEAT_INTERVAL: "1s", LINK_TIMEOUT: "4s" };
const RACING = /broker\.client: Session \w+: link suspected .*racing a new link/;

interface Rig {
  logs: LogCapture;
  server: BrokerServer;
  client: BrokerClient;
  chaos: ChaosLink;
  apps: Trickle[];
  [Symbol.asyncDispose](): Promise<void>;
}

/** Brokers with `sessions` streaming sessions through a chaos link, each link's first probe answered. */
async function rig(sessions = 1, everyMs = 10): Promise<Rig> {
  const logs = await captureLogs();
  const erp = startErp(echo);
  const server = startServer(serverConfig([erp.port], TIMERS));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const apps: Trickle[] = [];
  for (let i = 0; i < sessions; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    apps.push(new Trickle(conn, 7 + i, { everyMs }));
  }
  await waitFor(
    () => client.sessions.length === sessions && client.sessions.every((s) => s.probesAnswered),
    "the sessions to open and their first probes to be answered",
  );
  return {
    logs,
    server,
    client,
    chaos,
    apps,
    async [Symbol.asyncDispose]() {
      await client.close();
      await server.close();
      chaos.dropFrozen();
      await chaos.close();
      await erp.close();
      await logs[Symbol.asyncDispose]();
    },
  };
}

/** Ends the applications (every byte must have come back) and waits for both brokers to forget the sessions. */
async function finish(r: Rig): Promise<void> {
  for (const app of r.apps) await app.finish();
  await waitFor(() => r.server.sessions.length === 0 && r.client.sessionCount === 0, "sessions to end", 20_000);
  r.chaos.dropFrozen(); // the brokers closed their ends of the frozen links: the relay's are all that is left
  await waitFor(() => r.chaos.openPairs === 0, "every link, spare or not, to be closed");
}

Deno.test("race: the old link resets while the spare is in its handshake; the session resumes, every byte intact", async () => {
  await using r = await rig();
  r.chaos.freezeAll();
  r.chaos.setMode("blackhole"); // the spare connects, and hears nothing
  await r.logs.waitFor(RACING);
  r.chaos.setMode("pass");
  ok(r.chaos.reset(0), "the old link was still open");
  await waitFor(() => r.client.sessions[0]?.stats.resumes === 1, "the session to resume", 15_000);
  await r.logs.waitFor(/broker\.client: Session \w+ resumed .*trigger: link error/);
  await finish(r);
});

Deno.test("race: the spare is refused before it commits; the old link keeps the session until its timeout, then it resumes", async () => {
  await using r = await rig();
  r.chaos.freezeAll();
  r.chaos.setMode("refuse");
  await r.logs.waitFor(/broker\.client: Session \w+: the race of a new link failed/);
  equal(r.client.sessions[0]?.state, "attached", "a failed race leaves the old link attached");
  await r.logs.waitFor(/broker\.client: Session \w+: link lost \(link silent for/, 10_000);
  r.chaos.setMode("pass");
  await r.logs.waitFor(/broker\.client: Session \w+ resumed .*trigger: silence/, 15_000);
  await finish(r);
});

Deno.test("race: both links reset while racing; the resume loop takes over, every byte intact", async () => {
  await using r = await rig();
  r.chaos.freezeAll();
  r.chaos.setMode("blackhole");
  await r.logs.waitFor(RACING);
  r.chaos.setMode("pass");
  r.chaos.resetAll();
  await r.logs.waitFor(/broker\.client: Session \w+ resumed .*trigger: link error/, 15_000);
  await finish(r);
});

Deno.test("race: the old link answers late (it became slow, not dead); the spare is closed and the session stays", async () => {
  await using r = await rig(1, 200);
  r.chaos.setDelay(2_500); // from now on every byte, old link and spare alike, takes 2.5 s
  await r.logs.waitFor(RACING, 10_000);
  await r.logs.waitFor(/broker\.client: Session \w+: the suspected link answered after all; spare link closed/, 10_000);
  r.chaos.setDelay(0);
  equal(r.client.sessions[0]?.stats.resumes, 0, "no resume");
  equal(r.server.status().totals.resumes, 0);
  await waitFor(() => r.chaos.openPairs === 1, "the spare to be closed");
  await finish(r);
});

Deno.test("race: Smart Client half-closes during the race; its FIN and every byte arrive after the resume, the session ends cleanly", async () => {
  await using r = await rig();
  r.chaos.freezeAll();
  r.chaos.setMode("blackhole");
  await r.logs.waitFor(RACING);
  const app = r.apps[0] as Trickle;
  const finished = app.finish(); // stops writing and half-closes, then reads the echo to its end
  r.chaos.setMode("pass");
  r.chaos.resetAll(); // the stuck spare and the frozen link go: the resume loop finds the relay passing again
  await finished;
  await waitFor(() => r.server.sessions.length === 0 && r.client.sessionCount === 0, "sessions to end", 20_000);
  ok(r.logs.lines.some((l) => /broker\.server: Session \w+ closed: closed by both ends, all bytes delivered/.test(l)));
  r.apps.length = 0;
});

Deno.test("race: Smart Client resets during the race; the spare is dropped and broker-server is told", async () => {
  await using r = await rig(0);
  const app = net.connect({ host: "127.0.0.1", port: r.client.address.port });
  app.on("error", () => {});
  await new Promise((resolve) => app.once("connect", resolve));
  const echoed = new Promise((resolve) => app.once("data", resolve));
  app.write("hello");
  await echoed;
  await waitFor(() => r.client.sessions[0]?.probesAnswered === true, "the first probe to be answered");
  app.write("more"); // DATA that will go unanswered: a probe follows
  r.chaos.freezeAll();
  r.chaos.setMode("blackhole");
  await r.logs.waitFor(RACING);
  app.resetAndDestroy();
  await waitFor(() => r.client.sessionCount === 0, "broker-client to end the session");
  r.chaos.setMode("pass");
  r.chaos.resetAll();
  await waitFor(() => r.server.sessions.length === 0, "broker-server to hear of the end", 15_000);
  await r.logs.waitFor(/broker\.client: Session \w+: told broker server .* that the session had ended/);
});

/** Sessions in the crowd test (ROAMING_RACE_SESSIONS; 10 under Wine, whose socket layer crawls past ~100 sockets). */
const CROWD = Number(Deno.env.get("ROAMING_RACE_SESSIONS") ?? 40);

Deno.test(`race: ${CROWD} sessions suspect at once; each races one spare, all move within 3 s, every byte intact`, async () => {
  const SESSIONS = CROWD;
  await using r = await rig(SESSIONS, 50);
  const frozenAt = Date.now();
  r.chaos.freezeAll();
  await waitFor(() => r.client.sessions.every((s) => s.stats.resumes === 1), "every session to move", 10_000);
  const standstills = r.apps.map((a) => a.longestGapSince(frozenAt));
  ok(Math.max(...standstills) < 3_000, `standstills ${standstills.join(", ")} ms`);
  equal(r.chaos.connections, 2 * SESSIONS, "one spare per session");
  await finish(r);
});
