/**
 * The accept loops of both programs under what the peers and the system do
 * to them: clients that reset before they are accepted, and running out of
 * file descriptors. The programs run as child processes, so that the test
 * can freeze them (SIGSTOP) while connections pile up, and give them a low
 * descriptor limit; Linux only (signals, ulimit and /proc).
 */
import net from "node:net";
import { equal, match, ok } from "node:assert/strict";
import { encodeHelloNew, encodePreface, FrameType } from "../../src/protocol/frames.ts";
import { freePort } from "../helpers/apps.ts";
import { RawPeer } from "../helpers/raw_peer.ts";
import { waitFor } from "../helpers/setup.ts";
import { PERMISSIONS } from "../../src/runtime_flags.ts";
import { DEFAULT_TUNING } from "../../src/config/tuning.ts";

const onLinux = Deno.build.os === "linux";
const RESETS = 300;

/** A broker program running as a child process, with its console output collected. */
interface Program extends AsyncDisposable {
  process: Deno.ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Lines of the output matching `pattern`. */
  lines(pattern: RegExp): string[];
}

/** Runs `entry` (server.ts or client.ts) with `--config file`, under `ulimit -n` when given. */
async function startProgram(entry: string, ini: string[], fileLimit?: number): Promise<Program> {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/${entry === "server.ts" ? "appserver.ini" : "smartclient.ini"}`;
  await Deno.writeTextFile(file, ini.join("\n"));
  const path = new URL(`../../${entry}`, import.meta.url).pathname;
  const limit = fileLimit ? `ulimit -n ${fileLimit} && ` : "";
  // The permissions the built executable has, so that what needs more (reading /proc/self) shows here.
  const permissions = PERMISSIONS[entry === "server.ts" ? "server" : "client"].join(" ");
  const process = new Deno.Command("sh", {
    args: ["-c", `${limit}exec "$0" run ${permissions} "$1" --config "$2" --console`, Deno.execPath(), path, file],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let text = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const collected = Promise.all([collect(process.stdout), collect(process.stderr)]);
  const program: Program = {
    process,
    output: () => text,
    lines: (pattern) => text.split("\n").filter((l) => pattern.test(l)),
    async [Symbol.asyncDispose]() {
      try {
        process.kill("SIGCONT");
        process.kill("SIGTERM");
      } catch { /* already gone */ }
      await process.status;
      await collected;
      await Deno.remove(dir, { recursive: true });
    },
  };
  await waitFor(() => /listening on/.test(text), `${entry} to listen`, 20_000).catch((err) => {
    throw new Error(`${err.message}; its output: ${text}`);
  });
  return program;
}

/** Seconds of CPU `pid` has used (user and system). */
async function cpuSeconds(pid: number): Promise<number> {
  // Through cat: Deno lets only a process with every permission read /proc/<pid>.
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`], stdout: "piped" }).output();
  const stat = new TextDecoder().decode(out.stdout);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Opens `n` connections to `port` that reset (RST) as soon as they are connected. */
async function resetConnections(port: number, n: number): Promise<void> {
  await Promise.all(Array.from({ length: n }, () =>
    new Promise<void>((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      socket.on("error", () => resolve());
      socket.on("close", () => resolve());
      socket.on("connect", () => socket.resetAndDestroy());
    })));
}

function serverIni(port: number, extra: string[] = []): string[] {
  return [
    "[BALANCE_SMART_CLIENT_DESKTOP]",
    "LOCAL_SERVER_ADDRESS = 127.0.0.1",
    `LOCAL_SERVER_PORT = ${port}`,
    `REMOTE_SERVER_01 = 127.0.0.1 ${freePort()}`,
    "HEALTH_CHECK_INTERVAL = 0",
    "STATUS_PORT = 0",
    "DRAIN_TIMEOUT = 0",
    ...extra,
  ];
}

/** The server answers a new link with its preface: it is accepting again. */
async function serverAnswers(port: number): Promise<void> {
  const peer = await RawPeer.connect(port);
  peer.link.send(encodePreface());
  equal((await peer.next(10_000))?.type, FrameType.Preface);
  peer.close();
}

Deno.test({
  name: `broker-server: ${RESETS} clients that reset before they are accepted log no error`,
  ignore: !onLinux,
  async fn() {
    const port = freePort();
    await using server = await startProgram("server.ts", serverIni(port));
    // Frozen, it accepts nothing: the connections wait in the kernel's queue and are reset there.
    server.process.kill("SIGSTOP");
    await resetConnections(port, RESETS);
    server.process.kill("SIGCONT");
    await serverAnswers(port);
    const errors = server.lines(/\bERR\b|Cannot accept/);
    equal(errors.length, 0, `error lines:\n${errors.slice(0, 5).join("\n")}\n(${errors.length} in all)`);
  },
});

Deno.test({
  name: `broker-client: ${RESETS} Smart Client connections that reset before they are accepted log no error`,
  ignore: !onLinux,
  async fn() {
    const port = freePort();
    await using client = await startProgram("client.ts", [
      "[drivers]",
      "active=test",
      "[test]",
      "server=127.0.0.1",
      `port=${port}`,
      "BrokerProxy=1",
      `BrokerServer=127.0.0.1:${freePort()}`,
    ]);
    client.process.kill("SIGSTOP");
    await resetConnections(port, RESETS);
    client.process.kill("SIGCONT");
    // It accepts again: a new connection is taken (and told that no broker server answers yet).
    const app = await Deno.connect({ hostname: "127.0.0.1", port });
    const seen = `Smart Client 127.0.0.1:${(app.localAddr as Deno.NetAddr).port}`;
    await waitFor(() => client.output().includes(seen), "the new connection to be taken");
    app.close();
    const errors = client.lines(/\bERR\b|Cannot accept/);
    equal(errors.length, 0, `error lines:\n${errors.slice(0, 5).join("\n")}\n(${errors.length} in all)`);
  },
});

Deno.test({
  name:
    "broker-server out of file descriptors: said once with the limit, retried with backoff (little CPU), its end said too; a low limit is warned of at start",
  ignore: !onLinux,
  async fn() {
    const port = freePort();
    await using server = await startProgram(
      "server.ts",
      serverIni(port, [
        // Links that hold a descriptor: hello sent, admission proof never (HANDSHAKE_TIMEOUT is long).
        "ADMISSION_KEY = a long enough admission key",
        "HANDSHAKE_TIMEOUT = 60s",
        "MAX_HANDSHAKES = 5000",
        "MAX_HANDSHAKES_PER_ADDRESS = 5000",
      ]),
      200,
    );
    const hello = new Uint8Array([
      ...encodePreface(),
      ...encodeHelloNew(new Uint8Array(32), new Uint8Array(16), DEFAULT_TUNING.replayBufferBytes),
    ]);
    const links = await Promise.all(Array.from({ length: 300 }, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(hello);
      return conn;
    }));
    await waitFor(
      () => /out of file descriptors|Too many open files/.test(server.output()),
      "the server to run out of descriptors",
    );
    const cpuBefore = await cpuSeconds(server.process.pid);
    await new Promise((r) => setTimeout(r, 2_000));
    const cpu = await cpuSeconds(server.process.pid) - cpuBefore;
    const errors = server.lines(/\bERR\b|Cannot accept/);
    equal(errors.length, 1, `error lines:\n${errors.slice(0, 5).join("\n")}\n(${errors.length} in all)`);
    match(errors[0] as string, /Cannot accept links: out of file descriptors \(the limit is 200 open files\)/);
    match(errors[0] as string, /LimitNOFILE=/);
    ok(cpu < 0.5, `${cpu.toFixed(2)} s of CPU in 2 s out of descriptors`);
    for (const conn of links) conn.close();
    await waitFor(() => /Accepting links again after/.test(server.output()), "the server to accept again");
    await serverAnswers(port);
    match(
      server.output(),
      /The open-file limit is 200, below the 20064 descriptors that MAX_SESSIONS \(5000\) and MAX_HANDSHAKES \(5000\) can take/,
    );
  },
});
