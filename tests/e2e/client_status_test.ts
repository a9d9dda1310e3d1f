/**
 * broker-client's status for the helpdesk: status.json, the page and
 * `broker-client --status` (the real program, as a child process) during
 * and after an outage of the link; the resume log line with the outage and
 * the bytes replayed each way; a second broker-client whose status port is
 * taken; hostile HTTP clients on the status port.
 */
import { equal, match, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { echo, freePort, getWithHost, readExactly, roundTrip } from "../helpers/apps.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { serverConfig, startErp, startServer, waitFor, writeClientIni } from "../helpers/setup.ts";
import { BrokerClient } from "../../src/client/client.ts";
import { loadClientConfig } from "../../src/config/client_config.ts";
import type { ClientStatus } from "../../src/client/status.ts";
import { statusCommand } from "../../src/client/status_command.ts";

/** Starts broker-client in this process with the file at `path`. */
async function startClientFrom(path: string): Promise<BrokerClient & AsyncDisposable> {
  const client = new BrokerClient(await loadClientConfig(path)) as BrokerClient & AsyncDisposable;
  client.listen();
  client[Symbol.asyncDispose] = () => client.close();
  return client;
}

/** Runs `broker-client --status --config <path>` as a child process. */
async function statusCli(path: string): Promise<{ code: number; out: string }> {
  const entry = fileURLToPath(new URL("../../client.ts", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, "--status", "--config", path],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, out: text };
}

async function statusJson(port: number): Promise<ClientStatus> {
  return await (await fetch(`http://127.0.0.1:${port}/status.json`)).json() as ClientStatus;
}

/** An ERP stand-in that counts what it reads; the test writes to its connections. */
function countingErp() {
  const conns: { conn: Deno.TcpConn; received: number }[] = [];
  const erp = startErp(async (conn) => {
    const entry = { conn, received: 0 };
    conns.push(entry);
    const buf = new Uint8Array(16 * 1024);
    for (let n; (n = await conn.read(buf)) !== null;) entry.received += n;
  });
  return { erp, conns };
}

Deno.test("--status and status.json tell a helpdesk about an outage while it lasts and after the resume", async () => {
  await using logs = await captureLogs();
  const { erp, conns } = countingErp();
  await using _erp = erp;
  await using server = startServer(serverConfig([erp.port], { RESUME_TIMEOUT: "60s" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const file = await writeClientIni(chaos.port);
  const client = await startClientFrom(file.path);
  const apps = [
    await Deno.connect({ hostname: "127.0.0.1", port: file.listenPort }),
    await Deno.connect({ hostname: "127.0.0.1", port: file.listenPort }),
  ];
  for (const app of apps) await app.write(new Uint8Array(100));
  await waitFor(() => conns.length === 2 && conns.every((c) => c.received === 100), "the ERP to get 100 bytes each");

  let cli = await statusCli(file.path);
  equal(cli.code, 0, cli.out);
  match(cli.out, /Every session is attached\./);
  match(cli.out, new RegExp(`127\\.0\\.0\\.1:${chaos.port}  connected \\(2 of 2 sessions attached\\)`));

  // The link freezes with bytes on their way both ways, then breaks; redials are refused.
  chaos.freezeAll();
  for (const { conn } of conns) await conn.write(new Uint8Array(500));
  for (const app of apps) await app.write(new Uint8Array(1000));
  await waitFor(
    () =>
      server.sessions.every((s) => s.session.bufferedBytes === 500) &&
      client.sessions.every((s) => s.bufferedBytes === 1000),
    "the bytes to be sent into the frozen link",
  );
  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => client.sessions.every((s) => s.state === "detached"), "both sessions to lose their link");
  await logs.waitFor(/broker\.client: Session \w+: resume attempt failed/);

  cli = await statusCli(file.path);
  equal(cli.code, 1, cli.out);
  match(cli.out, /Outage now: 2 sessions reconnecting for \d+ s, window 60 s/);
  match(cli.out, /reconnecting for \d+ s, window 60 s \(link lost: link error; last attempt: /);
  const during = await statusJson(file.statusPort);
  equal(during.outage?.sessions, 2);
  equal(during.outage?.windowSeconds, 60);
  equal(during.brokerServers[0]?.link, "reconnecting");
  ok(during.brokerServers[0]?.lastError !== null, "the last error talking to the broker server");
  for (const s of during.sessions) {
    equal(s.state, "reconnecting");
    equal(s.outage?.trigger, "link error");
    equal(s.outagesHidden, 0);
  }
  const page = await (await fetch(`http://127.0.0.1:${file.statusPort}/`)).text();
  match(page, /Outage now: 2 sessions reconnecting for \d+ s, window 60 s/);
  for (const s of during.sessions) ok(page.includes(s.id as string), `the page shows session ${s.id}`);

  chaos.setMode("pass");
  await waitFor(
    () => client.sessions.every((s) => s.state === "attached" && s.stats.resumes === 1),
    "both sessions to resume",
  );
  for (const app of apps) equal((await readExactly(app, 500)).length, 500);
  await waitFor(() => conns.every((c) => c.received === 1100), "the ERP to get the bytes replayed to it");
  const resumed = logs.lines.filter((l) => /broker\.client: Session \w+ resumed after/.test(l));
  equal(resumed.length, 2, resumed.join("\n"));
  for (const line of resumed) {
    match(
      line,
      /resumed after \d+\.\d s \(trigger: link error; handshake \d+ ms\): 1000 bytes replayed to the server, 500 bytes replayed by the server$/,
    );
  }

  cli = await statusCli(file.path);
  equal(cli.code, 0, cli.out);
  match(cli.out, /1 outage hidden \(longest \d+(\.\d)? s\)/);
  const after = await statusJson(file.statusPort);
  equal(after.outage, null);
  equal(after.brokerServers[0]?.link, "connected");
  for (const s of after.sessions) {
    equal(s.state, "attached");
    equal(s.outagesHidden, 1);
    ok(s.longestOutageSeconds > 0, `the outage lasted: ${s.longestOutageSeconds} s`);
    equal(s.bytesReplayedToServer, 1000);
    equal(s.bytesReplayedByServer, 500);
    equal(s.bytesFromSmartClient, 1100);
    equal(s.bytesToSmartClient, 500);
  }

  for (const app of apps) app.close();
  await waitFor(() => client.sessionCount === 0 && server.sessions.length === 0, "the sessions to end");
  await client.close();
  cli = await statusCli(file.path);
  equal(cli.code, 2, cli.out);
  match(cli.out, new RegExp(`Nothing answers on 127\\.0\\.0\\.1:${file.statusPort}: broker-client is not running`));
  await chaos.close();
  await file.remove();
});

Deno.test("a second broker-client whose status port is taken runs without it, and --status says whose page answers", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port]));
  const first = await writeClientIni(server.address.port);
  const second = await writeClientIni(server.address.port);
  // Both files name the same status port, as two users' copies of one file would.
  const text = await Deno.readTextFile(second.path);
  await Deno.writeTextFile(second.path, text.replace(/STATUS_PORT=\d+/, `STATUS_PORT=${first.statusPort}`));
  await using one = await startClientFrom(first.path);
  await using two = await startClientFrom(second.path);
  await logs.waitFor(
    new RegExp(
      `Cannot listen for the status page on 127\\.0\\.0\\.1:${first.statusPort}: another program already uses this port; broker-client runs without it`,
    ),
  );
  equal(one.statusAddress?.port, first.statusPort);
  equal(two.statusAddress, null);
  const app = await Deno.connect({ hostname: "127.0.0.1", port: second.listenPort });
  equal(await roundTrip(app, "still carried"), "still carried");

  const cli = await statusCli(second.path);
  equal(cli.code, 2, cli.out);
  match(
    cli.out,
    new RegExp(
      `answering on 127\\.0\\.0\\.1:${first.statusPort} is another one \\(process \\d+, Smart Client connects to 127\\.0\\.0\\.1:${first.listenPort}`,
    ),
  );
  app.close();
  await waitFor(() => two.sessionCount === 0, "the session to end");
  await first.remove();
  await second.remove();
});

Deno.test("the status port is on 127.0.0.1 only, shows no secret, and shrugs off garbage and stalled HTTP clients", async () => {
  const admission = "admission-key-that-must-not-show";
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { ADMISSION_KEY: admission }));
  const file = await writeClientIni(server.address.port, [`ADMISSION_KEY=${admission}`, "LISTEN_ADDRESS=0.0.0.0"]);
  await using client = await startClientFrom(file.path);
  equal(client.statusAddress?.hostname, "127.0.0.1", "whatever LISTEN_ADDRESS says");
  const app = await Deno.connect({ hostname: "127.0.0.1", port: file.listenPort });
  equal(await roundTrip(app, "payload-bytes-never-shown"), "payload-bytes-never-shown");

  // One client sends garbage, another stalls in the middle of its request headers.
  const garbage = await Deno.connect({ hostname: "127.0.0.1", port: file.statusPort });
  await garbage.write(new TextEncoder().encode("\x00\xff\x16\x03 not http at all\r\n\r\n"));
  const stalled = await Deno.connect({ hostname: "127.0.0.1", port: file.statusPort });
  await stalled.write(new TextEncoder().encode("GET /status.json HTTP/1.1\r\nHost: 127.0.0.1"));

  const base = `http://127.0.0.1:${file.statusPort}`;
  const json = await (await fetch(`${base}/status.json`)).text();
  const page = await (await fetch(`${base}/`)).text();
  for (const text of [json, page]) {
    ok(!text.includes(admission), "no admission key");
    ok(!text.includes("payload-bytes"), "no payload");
  }
  equal(JSON.parse(json).sessions.length, 1);
  equal(await getWithHost(file.statusPort, "/status.json", "evil.example:8405"), 403, "no DNS rebinding");
  const notFound = await fetch(`${base}/metrics`);
  equal(notFound.status, 404);
  await notFound.body?.cancel();
  // The garbage got an error answer (or was dropped), never a status.
  const answer = new Uint8Array(1024);
  const n = await garbage.read(answer).catch(() => null);
  ok(n === null || !new TextDecoder().decode(answer.subarray(0, n)).includes("broker-client"));
  garbage.close();
  stalled.close();
  equal(await roundTrip(app, "still fine"), "still fine");
  app.close();
  await waitFor(() => client.sessionCount === 0, "the session to end");
  await file.remove();
});

Deno.test("--status with STATUS_PORT=0 says the page is off and exits 2", async () => {
  const file = await writeClientIni(freePort(), ["STATUS_PORT=0"]);
  // The first key wins: write the file without the random port.
  const text = await Deno.readTextFile(file.path);
  await Deno.writeTextFile(file.path, text.replace(/STATUS_PORT=\d+\n/, ""));
  const printed: string[] = [];
  equal(await statusCommand(await loadClientConfig(file.path), { print: (t) => printed.push(t) }), 2);
  match(printed.join("\n"), /status page is off \(STATUS_PORT=0 in .*smartclient\.ini\)/);
  await file.remove();
});

Deno.test("--status tells another program on the port from broker-client, and prints nothing it sends raw", async () => {
  const file = await writeClientIni(freePort());
  let answer = "<html>some other web server</html>";
  await using _impostor = Deno.serve(
    { hostname: "127.0.0.1", port: file.statusPort, onListen: () => {} },
    () => new Response(answer),
  );
  const config = await loadClientConfig(file.path);
  const printed: string[] = [];
  const print = (t: string) => printed.push(t);
  equal(await statusCommand(config, { print }), 2);
  match(printed.pop() ?? "", /answered, but not as broker-client's status page does: another program holds the port/);

  answer = JSON.stringify({
    program: "broker-client",
    sessions: [],
    pid: 1,
    listen: "\x1b[2J127.0.0.1:1",
    config: "x",
  });
  equal(await statusCommand(config, { print }), 2);
  const said = printed.pop() ?? "";
  match(said, /is another one \(process 1, Smart Client connects to \\x1b\[2J127\.0\.0\.1:1/);
  ok(!said.includes("\x1b"), "no escape sequence reaches the console");
  await file.remove();
});

Deno.test("--status gives up on a status port that accepts and never answers", async () => {
  const file = await writeClientIni(freePort());
  const listener = Deno.listen({ hostname: "127.0.0.1", port: file.statusPort });
  const held = listener.accept();
  const printed: string[] = [];
  const code = await statusCommand(await loadClientConfig(file.path), {
    print: (t) => printed.push(t),
    timeoutMs: 300,
  });
  equal(code, 2);
  match(printed.join("\n"), new RegExp(`127\\.0\\.0\\.1:${file.statusPort} did not answer within 0\\.3 s`));
  (await held).close();
  listener.close();
  await file.remove();
});
