/**
 * The wall clock steps back (NTP corrects a clock that ran ahead) while a
 * session is detached: the resume's outage is not negative in the log, in
 * broker_resume_duration_seconds (whose _sum would go down, which rate()
 * takes for a counter reset) nor in the history's flakiest table.
 */
import { ok } from "node:assert/strict";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { BrokerClient } from "../../src/client/client.ts";
import { statusText } from "../../src/client/status.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { echo } from "../helpers/apps.ts";
import { BrokerServer } from "../../src/server/server.ts";

async function exchange(app: Deno.Conn, bytes: number): Promise<void> {
  await app.write(new Uint8Array(bytes));
  const buf = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) got += (await app.read(buf.subarray(got))) ?? bytes;
}

Deno.test("a wall clock stepped back an hour during an outage gives no negative outage", async () => {
  await using erp = startErp(echo);
  let shift = 0;
  const server = new BrokerServer(serverConfig([erp.port], { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "400ms" }), {
    now: () => Date.now() + shift,
  });
  server.listen();
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await exchange(app, 1000);
  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => server.sessions.every((s) => s.session.state === "detached"), "the session to detach");
  shift = -3_600_000;
  chaos.setMode("pass");
  await waitFor(() => server.sessions.every((s) => s.session.stats.resumes === 1), "the resume");
  await exchange(app, 100);
  const status = server.status();
  ok(status.resumeDuration.sum >= 0, `broker_resume_duration_seconds_sum: ${status.resumeDuration.sum}`);
  const rows = server.history().flakiest.clients;
  ok(rows.every((r) => r.totalSeconds >= 0), `flakiest: ${JSON.stringify(rows)}`);
  app.close();
  await waitFor(() => server.sessions.length === 0, "the session to end");
  await client.close();
  await server.close();
  await chaos.close();
});

Deno.test("broker-client: a wall clock stepped back during an outage shows no negative outage, nor logs one", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "400ms" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  let shift = 0;
  const client = new BrokerClient(clientConfig([chaos.port]), { now: () => Date.now() + shift });
  client.listen();
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await exchange(app, 1000);
  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => client.status().sessions[0]?.state === "reconnecting", "the session to reconnect");
  shift = -3_600_000;
  const during = client.status().sessions[0];
  ok((during?.outage?.seconds ?? 0) >= 0, `reconnecting for ${during?.outage?.seconds} s`);
  ok(!statusText(client.status()).includes("for -"), statusText(client.status()));
  chaos.setMode("pass");
  await waitFor(() => logs.lines.some((l) => / resumed after /.test(l)), "the resume line");
  const line = logs.lines.find((l) => / resumed after /.test(l)) ?? "";
  ok(!/after -/.test(line), line);
  app.close();
  await waitFor(() => server.sessions.length === 0, "the session to end");
  await client.close();
  await chaos.close();
});
