/**
 * broker-server as a real Windows service: --install, sc start, sessions
 * relayed, sc stop with a graceful stop in the log, --uninstall leaving
 * nothing behind (even with the configuration broken meanwhile), and a
 * service broker-server did not install left alone. Runs under the Windows
 * build of Deno (deno task test:windows, which uses Wine here); skipped
 * elsewhere.
 */
import { equal, match, ok } from "node:assert/strict";
import { sc, serverCli } from "../helpers/windows_service.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";
import { freePort } from "../helpers/apps.ts";

const onWindows = Deno.build.os === "windows";
if (!onWindows) {
  console.log("Skipping the Windows service test: it needs the Service Control Manager (run deno task test:windows)");
}

Deno.test({
  name: "Windows service: install, start, relay, stop gracefully, uninstall",
  ignore: !onWindows,
  async fn() {
    await using erp = startErp(async (conn) => {
      const buf = new Uint8Array(4096);
      for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
    });
    const port = freePort();
    // A folder with a space in its name, as under "Program Files".
    const dir = `${await Deno.makeTempDir()}\\broker service`;
    await Deno.mkdir(dir);
    const name = `BROKER_TEST_${port}`;
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
        `SERVICE_NAME = ${name}`,
        'SERVICE_DISPLAY_NAME = "Broker test service"',
        "STATUS_PORT = 0",
        "DRAIN_TIMEOUT = 1s",
        "LOG_FILE = broker.log",
      ].join("\r\n"),
    );
    const installed = await serverCli("--install", "--config", config);
    equal(installed.code, 0, installed.text);
    match(installed.text, new RegExp(`Installed the service ${name}`));
    try {
      const started = await sc("start", name);
      ok(started.code === 0, `sc start: ${started.text}`);
      await waitFor(
        () => {
          try {
            return Deno.readTextFileSync(`${dir}\\broker.log`).includes("listening on");
          } catch {
            return false;
          }
        },
        "the service to listen",
        60_000,
      );

      await using client = startClient(clientConfig([port]));
      const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
      await app.write(new TextEncoder().encode("through the service"));
      const reply = new Uint8Array(19);
      for (let got = 0; got < reply.length;) got += (await app.read(reply.subarray(got))) ?? reply.length;
      equal(new TextDecoder().decode(reply), "through the service");

      const stopped = await sc("stop", name);
      ok(stopped.code === 0, `sc stop: ${stopped.text}`);
      await waitFor(
        () => Deno.readTextFileSync(`${dir}\\broker.log`).includes("broker-server stopped"),
        "the graceful stop in the log",
        30_000,
      );
      const log = Deno.readTextFileSync(`${dir}\\broker.log`);
      match(log, /Stopping: 1 sessions open; new sessions are refused/);
      equal(await app.read(new Uint8Array(1)).catch(() => null), null, "the session was closed by the stop");
      app.close();
    } finally {
      // Only SERVICE_NAME is needed to remove the service: a file broken since does not stand in the way.
      await Deno.writeTextFile(config, "\r\nREMOTE_SERVER_09 = nonsense\r\n", { append: true });
      const removed = await serverCli("--uninstall", "--config", config);
      equal(removed.code, 0, removed.text);
      match(removed.text, new RegExp(`Removed the service ${name}`));
    }
    const query = await sc("query", name);
    ok(query.code !== 0 || /1060|does not exist/i.test(query.text), `the service is gone: ${query.text}`);
    await Deno.remove(dir.replace(/\\broker service$/, ""), { recursive: true });
  },
});

Deno.test({
  name: "Windows service: a service of the same name that broker-server did not install is never removed nor taken",
  ignore: !onWindows,
  async fn() {
    const port = freePort();
    const name = `TOTVS_TEST_${port}`;
    // What a TOTVS appserver service looks like: another program, no --service.
    const created = await sc(
      "create",
      name,
      "binPath=",
      '"C:\\TOTVS\\bin\\appserver\\appserver.exe" -balance_smart_client_desktop',
      "start=",
      "demand",
      "DisplayName=",
      `TOTVS appserver ${port}`,
    );
    equal(created.code, 0, created.text);
    const dir = await Deno.makeTempDir();
    try {
      const refused = await serverCli("--uninstall", "--service-name", name);
      equal(refused.code, 1, refused.text);
      match(
        refused.text,
        new RegExp(
          `Refusing to remove the service ${name}: broker-server did not install it \\(it runs .*appserver\\.exe" -balance_smart_client_desktop\\)`,
        ),
      );
      const config = `${dir}\\appserver.ini`;
      await Deno.writeTextFile(
        config,
        `[BALANCE_SMART_CLIENT_DESKTOP]\r\nLOCAL_SERVER_PORT = ${port}\r\nREMOTE_SERVER_01 = 127.0.0.1 1\r\nSERVICE_NAME = ${name}\r\n`,
      );
      const taken = await serverCli("--install", "--config", config);
      equal(taken.code, 1, taken.text);
      match(
        taken.text,
        new RegExp(`The service name ${name} is taken by another service \\(it runs .*appserver\\.exe`),
      );
      const query = await sc("query", name);
      equal(query.code, 0, `the other service is still there: ${query.text}`);
    } finally {
      await sc("delete", name);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
