/**
 * Several broker-servers behind one address that balances without
 * affinity: a resume that lands on a broker-server that does not hold its
 * session is relayed to the one that does (src/cluster/).
 */
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";
import { clusterConfigs, startCluster } from "../helpers/cluster.ts";
import { echo, readExactly, roundTrip } from "../helpers/apps.ts";

const FAST = { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "500ms" };

Deno.test("cluster: a resume that reaches another broker-server is relayed to the holder", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using servers = startCluster(clusterConfigs(3, [erp.port], FAST));
  const front = await ChaosLink.start(servers.map((s) => ({ host: "127.0.0.1", port: s.address.port })));
  await using client = startClient(clientConfig([front.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(app, "before"), "before");
  const holder = servers.findIndex((s) => s.sessions.length === 1);
  ok(holder >= 0, "one broker-server holds the session");

  for (let cut = 0; cut < 4; cut++) {
    const resumes = servers[holder]?.sessions[0]?.session.stats.resumes ?? 0;
    front.resetAll();
    await app.write(new TextEncoder().encode(`cut${cut}`));
    await waitFor(() => (servers[holder]?.sessions[0]?.session.stats.resumes ?? 0) > resumes, `resume ${cut + 1}`);
    equal(new TextDecoder().decode(await readExactly(app, 4)), `cut${cut}`);
  }
  const relayed = servers.reduce((sum, s) => sum + s.status().cluster!.relayedOut, 0);
  ok(relayed >= 2, `links relayed to the holder: ${relayed}`);
  equal(servers[holder]?.status().cluster?.relayedIn, relayed, "every relayed link reached the holder");
  equal(servers.reduce((n, s) => n + s.sessions.length, 0), 1, "no other broker-server opened a session");

  await app.closeWrite();
  equal(await app.read(new Uint8Array(1)), null);
  app.close();
  await waitFor(() => servers.every((s) => s.sessions.length === 0) && client.sessionCount === 0, "the session to end");
  ok(!logs.lines.some((l) => /Refused link/.test(l)), logs.lines.filter((l) => /Refused/.test(l)).join("\n"));
  await front.close();
});
