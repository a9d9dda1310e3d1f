/**
 * Roaming on a real network stack: two network namespaces joined by a veth
 * pair (192.0.2.0/24, inside the namespaces only), broker-server and an
 * echoing ERP in one, broker-client and Smart Client stand-ins streaming
 * 100 KiB/s each way in the other. Then, again and again, a fault:
 *
 * - `address`: the client's address is replaced by a new one (Wi-Fi to 4G,
 *   a new VPN lease: the old link can never work again, and nothing says
 *   so); measured: how long each session stood still;
 * - `cable`: the client's interface goes down for `--outage` s, then up;
 * - `blackhole`: every packet both ways is dropped for `--outage` s;
 *   measured for these two: how long after the network came back each
 *   session moved again.
 *
 * Every byte is checked at the end (SHA-256 of what each application sent
 * against what came back). `--idle N` instead measures what N idle sessions
 * cost on the wire: packets per second on the veth, both directions, over
 * `--seconds` s. `--code DIR` runs the brokers of another
 * checkout (e.g. a worktree of main, for a before/after in the same run);
 * `--server-code DIR` runs broker-server from another checkout than
 * broker-client (an older server with a newer client, or the other way).
 * Needs root and `ip netns` (Linux). `ROAM_LOG=<folder>` keeps both brokers' logs there.
 *
 *   deno task bench:roam --runs 20 --fault address --code ../wt-main --code .
 *   deno task bench:roam --idle 500 --code ../wt-main --code .
 * @module
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Trickle } from "../tools/streams.ts";

/** The faults this bench can inject. */
export type RoamFault = "address" | "cable" | "blackhole";

/** Settings of a roam run. */
export interface RoamOptions {
  /** The fault. */
  fault: RoamFault;
  /** Faults in a row (each measured). */
  runs: number;
  /** Sessions streaming during the run. */
  sessions: number;
  /** How long a cable pull or a black hole lasts (s). */
  outageSeconds: number;
  /** The checkout whose brokers run (its src/ is imported). */
  code: string;
  /** The checkout whose broker-server runs, when not `code`'s (mixed versions). */
  serverCode?: string;
}

/** What a roam run measured. */
export interface RoamResult {
  /** Per fault, per session (ms): the standstill (address) or the time to move again once the network is back. */
  runs: number[][];
  /** Bytes each way, over all sessions, all checked. */
  bytes: number;
}

const SERVER_ADDRESS = "192.0.2.1";
const BROKER_PORT = 4000;
/** The client's addresses: .2, then one more per roam. */
const CLIENT_FIRST_HOST = 2;

/** Why this machine cannot run the bench, or null. */
export async function roamUnavailable(): Promise<string | null> {
  if (Deno.build.os !== "linux") return `network namespaces need Linux (this is ${Deno.build.os})`;
  if (Deno.uid() !== 0) return "network namespaces need root";
  try {
    const { success } = await new Deno.Command("ip", { args: ["netns", "list"], stdout: "null", stderr: "null" })
      .output();
    return success ? null : "`ip netns list` failed";
  } catch {
    return "the `ip` command (iproute2) is not installed";
  }
}

async function run(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
}

/** Both namespaces with both sides running, for a scenario to drive. */
interface Scenario {
  ns: { server: string; client: string };
  dev: { server: string; client: string };
  /** Sends a command line to the client side. */
  say(line: string): Promise<void>;
  /** The client side's next output line. */
  next(): Promise<string>;
}

/** Sets up the namespaces and both sides (the brokers of `code`), runs `body`; the namespaces are always deleted. */
async function withScenario<T>(
  code: string,
  body: (scenario: Scenario) => Promise<T>,
  serverCode = code,
): Promise<T> {
  const id = crypto.randomUUID().slice(0, 6);
  const ns = { server: `pbrk-s-${id}`, client: `pbrk-c-${id}` };
  const dev = { server: `pbs${id}`, client: `pbc${id}` };
  const children: Deno.ChildProcess[] = [];
  // Interrupted, the namespaces still go (a finally does not run on a signal).
  const interrupted = () => {
    for (const name of [ns.client, ns.server]) new Deno.Command("ip", { args: ["netns", "del", name] }).outputSync();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", interrupted);
  Deno.addSignalListener("SIGTERM", interrupted);
  try {
    await run("ip", "netns", "add", ns.server);
    await run("ip", "netns", "add", ns.client);
    const veth = ["type", "veth", "peer", "name", dev.client, "netns", ns.client];
    await run("ip", "link", "add", dev.server, "netns", ns.server, ...veth);
    for (const side of ["server", "client"] as const) {
      const host = side === "server" ? SERVER_ADDRESS : `192.0.2.${CLIENT_FIRST_HOST}`;
      await run("ip", "-n", ns[side], "addr", "add", `${host}/24`, "dev", dev[side]);
      await run("ip", "-n", ns[side], "link", "set", dev[side], "up");
      await run("ip", "-n", ns[side], "link", "set", "lo", "up");
    }
    const self = fileURLToPath(import.meta.url);
    const spawn = (namespace: string, role: string) => {
      const from = role === "server" ? serverCode : code;
      const child = new Deno.Command("ip", {
        args: ["netns", "exec", namespace, Deno.execPath(), "run", "-A", self, "--role", role, "--code", from],
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      children.push(child);
      return { child, lines: lines(child.stdout), writer: child.stdin.getWriter() };
    };
    const server = spawn(ns.server, "server");
    await expectLine(server.lines, "ready");
    const client = spawn(ns.client, "client");
    return await body({
      ns,
      dev,
      say: (line) => client.writer.write(new TextEncoder().encode(`${line}\n`)),
      next: () => nextLine(client.lines),
    });
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    }
    await run("ip", "netns", "del", ns.client).catch(() => {});
    await run("ip", "netns", "del", ns.server).catch(() => {});
    Deno.removeSignalListener("SIGINT", interrupted);
    Deno.removeSignalListener("SIGTERM", interrupted);
  }
}

/** Runs `runs` faults of one kind while `sessions` sessions stream, and checks every byte at the end. */
export function runRoam(options: RoamOptions): Promise<RoamResult> {
  return withScenario(options.code, async ({ ns, dev, say, next }) => {
    await say(`start ${options.sessions}`);
    if (await next() !== "flowing") throw new Error("The sessions did not start streaming");
    const runs: number[][] = [];
    for (let i = 0; i < options.runs; i++) {
      // Streaming for a random while: faults must not keep step with any timer of the brokers.
      await new Promise((r) => setTimeout(r, 1_000 + Math.random() * 1_000));
      let at: number;
      if (options.fault === "address") {
        const from = `192.0.2.${CLIENT_FIRST_HOST + i}/24`;
        const to = `192.0.2.${CLIENT_FIRST_HOST + i + 1}/24`;
        at = Date.now();
        await run("ip", "-n", ns.client, "addr", "del", from, "dev", dev.client);
        await run("ip", "-n", ns.client, "addr", "add", to, "dev", dev.client);
      } else {
        if (options.fault === "cable") {
          await run("ip", "-n", ns.client, "link", "set", dev.client, "down");
        } else {
          for (const side of ["server", "client"] as const) {
            // A queue of length 0 drops every packet (netem may not be available).
            const drop = ["qdisc", "add", "dev", dev[side], "root", "pfifo", "limit", "0"];
            await run("ip", "netns", "exec", ns[side], "tc", ...drop);
          }
        }
        await new Promise((r) => setTimeout(r, options.outageSeconds * 1000));
        if (options.fault === "cable") {
          await run("ip", "-n", ns.client, "link", "set", dev.client, "up");
        } else {
          for (const side of ["server", "client"] as const) {
            await run("ip", "netns", "exec", ns[side], "tc", "qdisc", "del", "dev", dev[side], "root");
          }
        }
        at = Date.now();
      }
      await say(`${options.fault === "address" ? "standstill" : "recovery"} ${at}`);
      runs.push(JSON.parse(await next()) as number[]);
    }
    await say("finish");
    const { bytes } = JSON.parse(await next()) as { bytes: number };
    return { runs, bytes };
  }, options.serverCode);
}

/** Packets on the link of the client's namespace (both directions) so far. */
async function packets(ns: string, dev: string): Promise<number> {
  let sum = 0;
  for (const counter of ["rx_packets", "tx_packets"]) {
    const out = await new Deno.Command("ip", {
      args: ["netns", "exec", ns, "cat", `/sys/class/net/${dev}/statistics/${counter}`],
      stdout: "piped",
    }).output();
    sum += Number(new TextDecoder().decode(out.stdout).trim());
  }
  return sum;
}

/** Settings of an idle run. */
export interface IdleOptions {
  /** Idle sessions. */
  sessions: number;
  /** How long packets are counted (s). */
  seconds: number;
}

/**
 * What idle sessions cost on the wire: `sessions` sessions that exchanged a
 * few bytes and then fell idle, packets counted on the veth (both
 * directions, TCP acknowledgements included) over `seconds` s after a 5 s settle.
 */
export function runIdle(code: string, options: IdleOptions): Promise<{ packetsPerSecond: number }> {
  const { sessions, seconds } = options;
  return withScenario(code, async ({ ns, dev, say, next }) => {
    await say(`idle ${sessions}`);
    if (await next() !== "idle") throw new Error("The idle sessions did not open");
    await new Promise((r) => setTimeout(r, 5_000));
    const before = await packets(ns.client, dev.client);
    const started = Date.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const counted = await packets(ns.client, dev.client) - before;
    const packetsPerSecond = counted / ((Date.now() - started) / 1000);
    await say("finish");
    await next();
    return { packetsPerSecond };
  });
}

/** The lines of a child's stdout. */
function lines(stream: ReadableStream<Uint8Array>): AsyncIterator<string> {
  return stream.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())[Symbol.asyncIterator]();
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, controller) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop() ?? "";
      for (const part of parts) controller.enqueue(part);
    },
  });
}

async function nextLine(it: AsyncIterator<string>): Promise<string> {
  const { value, done } = await it.next();
  if (done) throw new Error("The scenario's process ended early (see its errors above)");
  return value;
}

async function expectLine(it: AsyncIterator<string>, expected: string): Promise<void> {
  const line = await nextLine(it);
  if (line !== expected) throw new Error(`Expected "${expected}" from the scenario, got "${line}"`);
}

/** The brokers of the checkout at `code`. */
async function brokers(code: string) {
  const from = (path: string) => import(pathToFileURL(resolve(code, path)).href);
  const [{ BrokerServer }, { BrokerClient }, ini, server, client, log] = await Promise.all([
    from("src/server/server.ts"),
    from("src/client/client.ts"),
    from("src/config/ini.ts"),
    from("src/config/server_config.ts"),
    from("src/config/client_config.ts"),
    from("src/ops/log.ts"),
  ]);
  return { BrokerServer, BrokerClient, parseIni: ini.parseIni, server, client, setupLogging: log.setupLogging };
}

/** With ROAM_LOG=<folder>, each side logs to <folder>/<side>.log (stdout carries the scenario's lines). */
async function logTo(side: string, setupLogging: (options: unknown) => Promise<void>): Promise<void> {
  const folder = Deno.env.get("ROAM_LOG");
  if (!folder) return;
  const file = { path: `${folder}/${side}.log`, maxSizeBytes: 64 * 1024 * 1024, maxFiles: 1 };
  await setupLogging({ console: false, level: "info", format: "text", file });
}

/** broker-server and an echoing ERP, in the server's namespace, until killed. */
async function serverSide(code: string): Promise<void> {
  const { BrokerServer, parseIni, server, setupLogging } = await brokers(code);
  await logTo("server", setupLogging);
  const erp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of erp) {
      (async () => {
        const buf = new Uint8Array(16 * 1024);
        try {
          for (let n; (n = await conn.read(buf)) !== null;) {
            for (let done = 0; done < n;) done += await conn.write(buf.subarray(done, n));
          }
          await conn.closeWrite();
        } catch { /* the session was cut */ }
      })();
    }
  })();
  const text = [
    "[BALANCE_SMART_CLIENT_DESKTOP]",
    `LOCAL_SERVER_ADDRESS = ${SERVER_ADDRESS}`,
    `LOCAL_SERVER_PORT = ${BROKER_PORT}`,
    `REMOTE_SERVER_01 = 127.0.0.1 ${(erp.addr as Deno.NetAddr).port}`,
    "HEALTH_CHECK_INTERVAL = 0",
    "STATUS_PORT = 0",
  ].join("\n");
  new BrokerServer(server.serverConfigFromIni(parseIni(text, "roam-appserver.ini"))).listen();
  console.log("ready");
}

/** broker-client and the streaming applications, in the client's namespace, driven by lines on stdin. */
async function clientSide(code: string): Promise<void> {
  const { BrokerClient, parseIni, client, setupLogging } = await brokers(code);
  await logTo("client", setupLogging);
  const text = [
    "[drivers]",
    "active=roam",
    "[roam]",
    "server=127.0.0.1",
    "port=1",
    "BrokerProxy=1",
    `BrokerServer=${SERVER_ADDRESS}:${BROKER_PORT}`,
  ].join("\n");
  const config = client.clientConfigFromIni(parseIni(text, "roam-smartclient.ini"));
  config.listen.port = 0;
  const broker = new BrokerClient(config);
  broker.listen();
  const apps: Trickle[] = [];
  const idle: Deno.TcpConn[] = [];
  const waitUntil = async (done: () => boolean) => {
    const deadline = Date.now() + 60_000;
    while (!done()) {
      if (Date.now() > deadline) throw new Error("The sessions did not move again within 60 s");
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  for await (const line of Deno.stdin.readable.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())) {
    const [command, arg] = line.split(" ");
    const at = Number(arg);
    if (command === "start") {
      for (let i = 0; i < at; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: broker.address.port });
        apps.push(new Trickle(conn, 1 + i));
      }
      const since = Date.now();
      await waitUntil(() => apps.every((a) => a.lastEchoAt > since + 1_000));
      console.log("flowing");
    } else if (command === "standstill") {
      // Bytes in flight when the address went arrive within milliseconds: the next ones end the standstill.
      await waitUntil(() => apps.every((a) => a.firstEchoAfter(at + 100) !== null));
      console.log(JSON.stringify(apps.map((a) => a.longestGapSince(at))));
    } else if (command === "recovery") {
      await waitUntil(() => apps.every((a) => a.firstEchoAfter(at) !== null));
      console.log(JSON.stringify(apps.map((a) => (a.firstEchoAfter(at) as number) - at)));
    } else if (command === "idle") {
      const hello = new Uint8Array(4);
      for (let i = 0; i < at; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: broker.address.port });
        await conn.write(hello);
        for (let got = 0; got < 4;) got += (await conn.read(hello.subarray(got))) ?? 4;
        idle.push(conn);
      }
      console.log("idle");
    } else if (command === "finish") {
      for (const conn of idle) conn.close();
      let bytes = 0;
      for (const app of apps) bytes += (await app.finish()).bytes;
      await broker.close();
      console.log(JSON.stringify({ bytes }));
      return;
    }
  }
}

/** Quantiles of `values` as a table row: min, p50, p90, max (s). */
export function distribution(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
  const s = (ms: number) => (ms / 1000).toFixed(2);
  return `min ${s(at(0))} s, median ${s(at(0.5))} s, p90 ${s(at(0.9))} s, max ${s(sorted.at(-1) as number)} s`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      role: { type: "string" },
      code: { type: "string", multiple: true },
      fault: { type: "string", default: "address" },
      runs: { type: "string", default: "20" },
      sessions: { type: "string", default: "3" },
      outage: { type: "string", default: "20" },
      idle: { type: "string" },
      "server-code": { type: "string" },
      seconds: { type: "string", default: "20" },
    },
  });
  const codes = values.code?.length ? values.code : [fileURLToPath(new URL("..", import.meta.url))];
  if (values.role === "server") await serverSide(codes[0] as string);
  else if (values.role === "client") await clientSide(codes[0] as string);
  else {
    const why = await roamUnavailable();
    if (why) {
      console.log(`SKIPPED: ${why}`);
      Deno.exit(0);
    }
    for (const code of codes) {
      if (values.idle) {
        const sessions = Number(values.idle);
        const { packetsPerSecond } = await runIdle(code, { sessions, seconds: Number(values.seconds) });
        const per = packetsPerSecond / sessions;
        console.log(
          `${code}: ${sessions} idle sessions, ${packetsPerSecond.toFixed(0)} packets/s on the link (${
            per.toFixed(2)
          } per session; ${(per * 2000).toFixed(0)} for 2,000)`,
        );
        continue;
      }
      const result = await runRoam({
        fault: values.fault as RoamFault,
        runs: Number(values.runs),
        sessions: Number(values.sessions),
        outageSeconds: Number(values.outage),
        code,
        ...(values["server-code"] ? { serverCode: values["server-code"] } : {}),
      });
      // Per fault, the slowest session: when every session moves again.
      const worst = result.runs.map((r) => Math.max(...r));
      console.log(
        `${code}${
          values["server-code"] ? ` (broker-server: ${values["server-code"]})` : ""
        }: ${values.fault}, ${result.runs.length} faults x ${values.sessions} sessions, ${result.bytes} bytes intact`,
      );
      console.log(`  every session moving again: ${distribution(worst)}`);
      console.log(`  per session: ${distribution(result.runs.flat())}`);
      console.log(`  all (ms): ${worst.map((ms) => Math.round(ms)).join(" ")}`);
    }
  }
}
