/**
 * Graceful stop: new sessions are refused, clients are told, live sessions
 * get DRAIN_TIMEOUT to finish, and whatever is left is closed with a reason.
 */
import net from "node:net";
import { equal, ok } from "node:assert/strict";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clientConfig, deadline, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { echo, freePort } from "../helpers/apps.ts";
import { FAREWELL_GRACE_MS } from "../../src/client/client.ts";

async function roundTrip(app: Deno.Conn): Promise<void> {
  await app.write(new Uint8Array([1]));
  await app.read(new Uint8Array(1));
}

Deno.test("a stop lets a session that finishes within the drain period end cleanly", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const server = startServer(serverConfig([erp.port], { DRAIN_TIMEOUT: "5s" }));
  await using client = startClient(clientConfig([server.address.port], { NEW_SESSION_TIMEOUT: "1s" }));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await roundTrip(app);

  const t0 = Date.now();
  const stopping = server.close();
  await logs.waitFor(/Stopping: 1 sessions open; new sessions are refused; waiting up to 5 s/);
  await logs.waitFor(/broker\.client: Session \w+: broker server .* is going away/);

  // A newcomer is refused with the reason.
  const late = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  equal(await late.read(new Uint8Array(1)).catch(() => null), null);
  late.close();
  await logs.waitFor(/broker-server is shutting down and takes no new sessions/);

  // The live session still works and then ends on its own.
  await roundTrip(app);
  await app.closeWrite();
  equal(await app.read(new Uint8Array(1)), null);
  app.close();
  equal(await stopping, 0, "no session had to be cut");
  ok(Date.now() - t0 < 4_000, "the stop did not wait for the whole drain period");
  await logs.waitFor(/broker-server stopped; 0 sessions were still open/);
});

Deno.test("sessions still open when the drain period ends are closed with the reason", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const server = startServer(serverConfig([erp.port], { DRAIN_TIMEOUT: "300ms" }));
  await using client = startClient(clientConfig([server.address.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await roundTrip(app);
  const t0 = Date.now();
  equal(await server.close(), 1);
  ok(Date.now() - t0 >= 250, "it waited for the drain period");
  equal(await app.read(new Uint8Array(1)).catch(() => null), null, "Smart Client's connection is closed");
  await logs.waitFor(/broker\.client: Session \w+ closed: peer ended the session: broker-server is shutting down/);
  await logs.waitFor(/broker-server stopped; 1 sessions were still open and were closed/);
  app.close();
});

Deno.test("broker-client's stop gives up a farewell on a broker server that does not answer when its grace ends", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  await using server = startServer(serverConfig([erp.port], { RESUME_TIMEOUT: "60s" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port], { CONNECT_TIMEOUT: "5s", HANDSHAKE_TIMEOUT: "5s" }));
  const app = net.connect({ host: "127.0.0.1", port: client.address.port });
  app.on("error", () => {});
  const echoed = new Promise((resolve) => app.once("data", resolve));
  app.write("hello");
  equal(String(await echoed), "hello");
  // The network now swallows everything: connects succeed, nothing comes back.
  chaos.setMode("blackhole");
  chaos.resetAll();
  await logs.waitFor(/broker\.client: Session \w+: link lost/);
  app.resetAndDestroy(); // Smart Client is gone while the link is down: broker-client dials to say so
  await waitFor(() => client.sessionCount === 0, "broker-client to end the session");
  const dialed = chaos.connections;
  await waitFor(() => chaos.connections > dialed, "the farewell to dial");
  const t0 = Date.now();
  await client.close();
  const took = Date.now() - t0;
  ok(took < FAREWELL_GRACE_MS + 1_000, `broker-client stopped after ${took} ms (grace ${FAREWELL_GRACE_MS} ms)`);
  await logs.waitFor(/broker\.client: Session \w+: could not tell broker server .* that the session had ended/);
  await chaos.close();
});

const onLinux = Deno.build.os === "linux";

/** broker-server as a child process (`--console`), with its output collected and searchable. */
interface ServerProcess extends AsyncDisposable {
  process: Deno.ChildProcess;
  /** Resolves with the first output line matching `pattern`; rejects if the process ends first, or after `ms`. */
  line(pattern: RegExp, ms?: number): Promise<string>;
  /** Everything it wrote so far. */
  output(): string;
}

function spawnServer(configPath: string): ServerProcess {
  const entry = new URL("../../server.ts", import.meta.url).pathname;
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, "--config", configPath, "--console"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let text = "";
  const changed = new Set<() => void>();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const wake of [...changed]) wake();
    }
  };
  const collected = Promise.all([collect(process.stdout), collect(process.stderr)]);
  const ended = collected.then(() => process.status);
  return {
    process,
    output: () => text,
    async line(pattern, ms = 20_000) {
      const by = Date.now() + ms;
      for (;;) {
        const found = text.split("\n").find((l) => pattern.test(l));
        if (found) return found;
        let wake = () => {};
        const more = new Promise<"more">((resolve) => changed.add(wake = () => resolve("more")));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), by - Date.now()));
        const why = await Promise.race([more, ended, late]);
        clearTimeout(timer);
        changed.delete(wake);
        if (why === "late") {
          throw new Error(`No line matching ${pattern} within ${ms} ms; broker-server wrote:\n${text}`);
        }
        if (why !== "more" && !text.split("\n").some((l) => pattern.test(l))) {
          throw new Error(
            `broker-server ended (code ${why.code}, signal ${why.signal}) before a line matching ${pattern}; it wrote:\n${text}`,
          );
        }
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        process.kill("SIGTERM");
      } catch { /* already gone */ }
      await ended;
    },
  };
}

function serverIni(port: number, erpPort: number, extra: string[] = []): string {
  return [
    "[BALANCE_SMART_CLIENT_DESKTOP]",
    "LOCAL_SERVER_ADDRESS = 127.0.0.1",
    `LOCAL_SERVER_PORT = ${port}`,
    `REMOTE_SERVER_01 = 127.0.0.1 ${erpPort}`,
    "HEALTH_CHECK_INTERVAL = 0",
    "STATUS_PORT = 0",
    ...extra,
  ].join("\n");
}

Deno.test({
  name: "SIGHUP during the drain neither kills broker-server nor cuts its sessions (Linux)",
  ignore: !onLinux,
  fn: async () => {
    await using erp = startErp(echo);
    const dir = await Deno.makeTempDir();
    const configPath = `${dir}/appserver.ini`;
    const port = freePort();
    await Deno.writeTextFile(configPath, serverIni(port, erp.port, ["DRAIN_TIMEOUT = 20s"]));
    await using server = spawnServer(configPath);
    await server.line(/broker-server listening on/);
    await using client = startClient(clientConfig([port]));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    await roundTrip(app);

    server.process.kill("SIGTERM");
    await server.line(/Stopping: 1 sessions open/);
    server.process.kill("SIGHUP");
    await server.line(/SIGHUP ignored: broker-server is stopping/);

    // The session is still carried, and ends on its own within the drain.
    await roundTrip(app);
    await app.closeWrite();
    equal(await app.read(new Uint8Array(1)), null);
    app.close();
    const status = await server.process.status;
    equal(status.signal, null, `broker-server was killed by ${status.signal}; it wrote:\n${server.output()}`);
    equal(status.code, 0, server.output());
    await server.line(/broker-server stopped; 0 sessions were still open/);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "SIGHUP while broker-server is still starting (reading its configuration) does not kill it (Linux)",
  ignore: !onLinux,
  fn: async () => {
    await using erp = startErp(echo);
    const dir = await Deno.makeTempDir();
    const configPath = `${dir}/appserver.ini`;
    // A named pipe holds broker-server in its first steps for as long as the test wants.
    equal((await new Deno.Command("mkfifo", { args: [configPath] }).output()).code, 0);
    await using server = spawnServer(configPath);
    const fifo = await deadline( // returns once broker-server opened it
      Deno.open(configPath, { write: true }),
      20_000,
      () => `broker-server to open its configuration; it wrote:\n${server.output()}`,
    );
    server.process.kill("SIGHUP");
    try {
      await fifo.write(new TextEncoder().encode(serverIni(freePort(), erp.port)));
    } catch { /* broker-server is gone: the checks below say how */ }
    fifo.close();
    await server.line(/broker-server listening on/);
    server.process.kill("SIGTERM");
    const status = await server.process.status;
    equal(status.signal, null, `broker-server was killed by ${status.signal}; it wrote:\n${server.output()}`);
    equal(status.code, 0, server.output());
    await Deno.remove(dir, { recursive: true });
  },
});
