/**
 * broker-client started before broker-server exists, and broker-server (the
 * real program, as a child process) crashing and restarting.
 */
import { equal, match, ok } from "node:assert/strict";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";
import { echo, freePort, roundTrip } from "../helpers/apps.ts";

function startServerProcess(configPath: string): Deno.ChildProcess {
  const serverEntry = new URL("../../server.ts", import.meta.url).pathname.replace(/^\/([A-Za-z]:)/, "$1");
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", serverEntry, "--config", configPath],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
}

Deno.test("client before server; server crash and restart: old sessions end with a reason, new ones work", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const port = freePort();
  const dir = await Deno.makeTempDir();
  const configPath = `${dir}/appserver.ini`;
  await Deno.writeTextFile(
    configPath,
    [
      "[BALANCE_SMART_CLIENT_DESKTOP]",
      "LOCAL_SERVER_ADDRESS = 127.0.0.1",
      `LOCAL_SERVER_PORT = ${port}`,
      `REMOTE_SERVER_01 = 127.0.0.1 ${erp.port}`,
      "HEARTBEAT_INTERVAL = 200ms",
      "LINK_TIMEOUT = 1s",
      "DRAIN_TIMEOUT = 500ms",
      "STATUS_PORT = 0",
    ].join("\r\n"),
  );
  await using client = startClient(clientConfig([port]));

  // Smart Client connects while no broker-server runs: the session waits.
  const first = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await first.write(new TextEncoder().encode("early"));
  await waitFor(
    () => (client.openings[0]?.failedRounds ?? 0) > 0,
    `the first round of opening attempts to fail (broker-server port ${port}, broker-client on ${client.address.port})`,
  );
  const opening = client.openings[0];
  ok(opening);
  equal(opening.session.state, "connecting", "the session waits for a broker server");
  // The connect failed: refused at once on Linux and under Wine, after ~2 s of SYN retries on Windows.
  match(opening.lastFailure, new RegExp(`^127\\.0\\.0\\.1:${port}: Cannot connect to 127\\.0\\.0\\.1:${port}: `));
  ok(
    logs.lines.some((l) => l.includes(`cannot reach a broker server yet (${opening.lastFailure}); retrying`)),
    `the administrator is told: ${logs.lines.join("\n")}`,
  );

  let server = startServerProcess(configPath);
  const echoed = new Uint8Array(5);
  for (let got = 0; got < 5;) got += (await first.read(echoed.subarray(got))) ?? 0;
  equal(new TextDecoder().decode(echoed), "early", "bytes written before the server existed arrive");

  // Crash: no goodbye. The client resumes against the restarted server, which no longer knows the session.
  server.kill("SIGKILL");
  await server.status;
  await waitFor(() => client.sessions[0]?.state === "detached", "the client to notice the link is gone");
  server = startServerProcess(configPath);
  equal(await first.read(new Uint8Array(1)).catch(() => null), null, "the old session's Smart Client socket is closed");
  await waitFor(() => client.sessionCount === 0, "the old session to end");
  const reason = logs.lines.find((l) => /broker\.client: Session \w+ closed: /.test(l)) ?? "(no line)";
  match(reason, /closed: cannot resume: .*is not known to this broker-server: it expired, or the server was restarted/);
  first.close();

  // New sessions work on the restarted server.
  const second = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await roundTrip(second, "after restart"), "after restart");

  if (Deno.build.os !== "windows") {
    // A clean stop tells the clients why.
    server.kill("SIGTERM");
    await logs.waitFor(
      /broker\.client: Session \w+: broker server 127\.0\.0\.1:\d+ is going away \(broker-server is shutting down\); the session may end within 0\.5 s/,
    );
    equal(await second.read(new Uint8Array(1)).catch(() => null), null);
    await logs.waitFor(/broker\.client: Session \w+ closed: peer ended the session: broker-server is shutting down/);
    equal((await server.status).code, 0, "a clean stop exits 0");
  } else {
    server.kill("SIGKILL");
    await server.status;
  }
  second.close();
  await Deno.remove(dir, { recursive: true });
});
