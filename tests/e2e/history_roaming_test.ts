/**
 * The flakiest-clients table after a roaming resume: a laptop whose link
 * drops on one network (its Wi-Fi) and comes back from another (a phone's
 * hotspot, a VPN) is charged to the network it was lost on, as an expired
 * session is.
 */
import { deepEqual } from "node:assert/strict";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { ChaosLink, type ChaosTarget } from "../../tools/chaos_link.ts";
import { echo } from "../helpers/apps.ts";

async function exchange(app: Deno.Conn, bytes: number): Promise<void> {
  await app.write(new Uint8Array(bytes));
  const buf = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) got += (await app.read(buf.subarray(got))) ?? bytes;
}

Deno.test({
  name: "history: an outage hidden by a resume from another address is charged to the address the link was lost on",
  ignore: Deno.build.os !== "linux", // other 127.x addresses to connect from
  fn: async () => {
    await using erp = startErp(echo);
    await using server = startServer(serverConfig([erp.port], { HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "400ms" }));
    const wifi: ChaosTarget = { host: "127.0.0.1", port: server.address.port, localAddress: "127.0.1.2" };
    const chaos = await ChaosLink.start(wifi);
    await using client = startClient(clientConfig([chaos.port]));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    await exchange(app, 1000);
    // The Wi-Fi drops; the laptop comes back over the hotspot.
    const hotspot: ChaosTarget = { ...wifi, localAddress: "127.0.2.7" };
    chaos.retarget(hotspot);
    chaos.resetAll();
    await waitFor(() => server.sessions.every((s) => s.session.stats.resumes === 1), "the resume");
    await exchange(app, 100);
    const history = server.history();
    deepEqual(history.flakiest.clients.map((r) => [r.key, r.outages]), [["127.0.1.2", 1]], "the Wi-Fi address");
    deepEqual(history.flakiest.networks.map((r) => r.key), ["127.0.1.0/24"], "the Wi-Fi network");
    app.close();
    await waitFor(() => server.sessions.length === 0, "the session to end");
    await chaos.close();
  },
});
