/**
 * Upgrading broker-server installed as a Windows service without ending a
 * session (docs/cluster.md, "Windows"): the new version installed as a
 * second service (`--install --service-name`) and started takes over from
 * the first, whose process keeps its session, passes nothing new, and exits
 * once the session has ended, leaving its service stopped. Runs under the
 * Windows build of Deno (deno task test:windows, which uses Wine here);
 * skipped elsewhere.
 */
import { equal, match, ok } from "node:assert/strict";
import { sc, serverCli } from "../helpers/windows_service.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";
import { echo, freePort, roundTrip } from "../helpers/apps.ts";
import { TEST_CLUSTER_KEY } from "../helpers/cluster.ts";

const onWindows = Deno.build.os === "windows";
if (!onWindows) {
  console.log(
    "Skipping the Windows service upgrade test: it needs the Service Control Manager (deno task test:windows)",
  );
}

function readLog(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

Deno.test({
  name: "Windows service upgrade: a second service takes over; the first keeps its session, then stops by itself",
  ignore: !onWindows,
  async fn() {
    await using erp = startErp(echo);
    const port = freePort();
    const dir = await Deno.makeTempDir();
    const [first, second] = [`BROKER_A_${port}`, `BROKER_B_${port}`];
    const config = `${dir}\\appserver.ini`;
    await Deno.writeTextFile(
      config,
      [
        "[GENERAL]",
        "CONSOLELOG=0",
        "[BALANCE_SMART_CLIENT_DESKTOP]",
        "LOCAL_SERVER_ADDRESS = 127.0.0.1",
        `LOCAL_SERVER_PORT = ${port}`,
        `REMOTE_SERVER_01 = 127.0.0.1 ${erp.port}`,
        `SERVICE_NAME = ${first}`,
        "STATUS_PORT = 0",
        "DRAIN_TIMEOUT = 1s",
        "HEARTBEAT_INTERVAL = 500ms",
        "LINK_TIMEOUT = 4s",
        `CLUSTER_KEY = ${TEST_CLUSTER_KEY}`,
        `CLUSTER_PORT = ${freePort()}`,
        "LOG_FILE = broker.log",
      ].join("\r\n"),
    );
    const installedA = await serverCli("--install", "--config", config);
    equal(installedA.code, 0, installedA.text);
    const chaos = await ChaosLink.start({ host: "127.0.0.1", port });
    try {
      ok((await sc("start", first)).code === 0, "sc start of the first service");
      await waitFor(() => /listening on/.test(readLog(`${dir}\\broker.log`)), "the first service to listen", 60_000);
      await using client = startClient(clientConfig([chaos.port]));
      const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      equal(await roundTrip(app, "before the upgrade"), "before the upgrade");

      // The new version: a second service, on the same appserver.ini.
      const installedB = await serverCli("--install", "--service-name", second, "--config", config);
      equal(installedB.code, 0, installedB.text);
      match(installedB.text, new RegExp(`Installed the service ${second}`));
      ok((await sc("start", second)).code === 0, "sc start of the second service");
      await waitFor(() => /Taking over from broker-server/.test(readLog(`${dir}\\broker.log`)), "the takeover", 60_000);

      // The link breaks: the session comes back through the second service's process to the first's.
      chaos.resetAll();
      equal(await roundTrip(app, "after the upgrade"), "after the upgrade");
      match(readLog(`${dir}\\broker.log`), /takes over; this process \(\S+\) stops accepting and keeps its 1 sessions/);
      const fresh = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      equal(await roundTrip(fresh, "a new session"), "a new session");

      // Both sessions end; the first service's process exits by itself, its service stopped.
      await app.closeWrite();
      equal(await app.read(new Uint8Array(1)), null);
      app.close();
      const until = Date.now() + 60_000;
      while (!/STOPPED/.test((await sc("query", first)).text)) {
        if (Date.now() > until) {
          throw new Error(`the first service did not stop by itself:\n${readLog(`${dir}\\broker.log`)}`);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      match((await sc("query", second)).text, /RUNNING/);
      equal(await roundTrip(fresh, "still there"), "still there");
      fresh.close();
    } finally {
      await chaos.close();
      for (const name of [second, first]) {
        await sc("stop", name);
        const removed = await serverCli("--uninstall", "--service-name", name);
        ok(removed.code === 0, removed.text);
      }
    }
    await Deno.remove(dir, { recursive: true });
  },
});
