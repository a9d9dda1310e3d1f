/**
 * `deno task bench`: the broker chain measured side by side, in the same
 * run on the loopback, with
 *   1. direct TCP (the physical reference),
 *   2. two socat hops (the plain relay most administrators would reach for),
 *   3. two HAProxy hops in mode tcp (the strongest general-purpose peer),
 *   4. two minimal Deno relays (bench/deno_relay.ts): the runtime's floor,
 *      what any two-hop relay on Deno costs before doing anything useful;
 *   5. broker-client -> broker-server (default settings, separate processes);
 *   6. broker-client -> HAProxy (mode tcp, roundrobin, health checks) -> three
 *      broker-servers of one cluster (CLUSTER_KEY, PEER_), as a site with
 *      several broker-servers runs them (examples/haproxy/broker-cluster.cfg).
 * socat and HAProxy are installed with apt when missing (as root), or their
 * column is skipped with a note.
 *
 * Workloads: bulk one way, then both ways at once (MB/s, every byte checked
 * by SHA-256 at the far end, and on the way back at the near end) and
 * interactive 1 KiB request/response round trips (p50, p99). Each figure is
 * the median of --runs repetitions with min-max shown. Results go to
 * bench/results/ as JSON and an SVG bar chart.
 * Many users: --users sessions (2000) held open, 10% of them exchanging a
 * small message every second for --users-seconds (30): resident memory and
 * CPU seconds of the relay processes, p99 round trip (overall, and the
 * worst session's own p99), slowest round trip. Resume storm:
 * --storm-sessions (1000) with traffic, every link cut at once and restored
 * after 2 s: time until every session moved data again, and bytes lost.
 * Churn (bench/churn.ts): --churn-rate (150) sessions a second opening,
 * echoing 5-40 messages and ending (70% clean close, 30% reset) for
 * --churn-seconds (60) while the link is cut every 1-3 s; wrong bytes,
 * sessions whose ending did not reach broker-server, and broker-server's
 * memory during the run and after --churn-idle-seconds (30) idle (SVG chart).
 * Options: --runs N (3), --bulk-mib N (1024), --round-trips N (20000),
 * --only LIST (bulk,duplex,rtt,users,storm,churn: all by default), --peers LIST
 * (direct,socat,haproxy,deno,broker,cluster), --profile DIR (run broker-client and
 * broker-server under `--cpu-prof`, profiles written to DIR),
 * --broker-v8-flags FLAGS (default: the V8 flags the programs ship with,
 * src/runtime_flags.ts; "" for V8's defaults).
 * @module
 */

import { createHash } from "node:crypto";
import { ChaosLink } from "../tools/chaos_link.ts";
import { parseArgs } from "node:util";
import { V8_FLAGS } from "../src/runtime_flags.ts";
import { writeAll } from "../src/session/transport.ts";
import { churnChart, churnClean, type ChurnFigures, describeChurn, runChurn } from "./churn.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    "bulk-mib": { type: "string", default: "1024" },
    "round-trips": { type: "string", default: "20000" },
    only: { type: "string", default: "bulk,duplex,rtt,users,storm,churn" },
    peers: { type: "string", default: "direct,socat,haproxy,deno,broker,cluster" },
    profile: { type: "string" },
    "broker-v8-flags": { type: "string", default: V8_FLAGS },
    users: { type: "string", default: "2000" },
    "users-seconds": { type: "string", default: "30" },
    "storm-sessions": { type: "string", default: "1000" },
    "churn-rate": { type: "string", default: "150" },
    "churn-seconds": { type: "string", default: "60" },
    "churn-idle-seconds": { type: "string", default: "30" },
  },
});
const USERS = Number(values.users);
const USERS_SECONDS = Number(values["users-seconds"]);
const STORM = Number(values["storm-sessions"]);
const RUNS = Number(values.runs);
const BULK = Number(values["bulk-mib"]) * 1024 * 1024;
const ROUND_TRIPS = Number(values["round-trips"]);
const CHUNK = 256 * 1024;
const ONLY = new Set(values.only.split(","));
const BROKER_V8_FLAGS = values["broker-v8-flags"];
const PEERS = new Set(values.peers.split(","));
const PROFILE_DIR = values.profile ? await Deno.realPath(await ensureDir(values.profile)) : null;

async function ensureDir(path: string): Promise<string> {
  await Deno.mkdir(path, { recursive: true });
  return path;
}

/**
 * The stand-in ERP. First byte "E": echo. First byte "D": both ways at once:
 * send the bulk payload back while hashing what arrives, then append the
 * 32-byte SHA-256 of what arrived. Otherwise bulk: hash everything to the
 * end, then answer with the 32-byte SHA-256.
 */
function startSink(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        // Echo sessions (thousands of them in the many-users run) keep a small
        // buffer; only bulk transfers get a large one.
        const small = new Uint8Array(16 * 1024);
        const first = await conn.read(small);
        if (first === null) return conn.close();
        if (small[0] === 0x45) {
          await writeAll(conn, small.subarray(1, first));
          for (let n; (n = await conn.read(small)) !== null;) await writeAll(conn, small.subarray(0, n));
          conn.close();
          return;
        }
        // 0x44: both ways at once (send the payload while hashing); otherwise one way.
        const sending = small[0] === 0x44 ? sendPayload(conn) : undefined;
        const hash = createHash("sha256");
        hash.update(small.subarray(sending ? 1 : 0, first));
        const buf = new Uint8Array(CHUNK);
        for (let n; (n = await conn.read(buf)) !== null;) hash.update(buf.subarray(0, n));
        await sending;
        await writeAll(conn, new Uint8Array(hash.digest()));
        conn.close();
      })().catch(() => conn.close());
    }
  })();
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

/**
 * The bulk payload, CHUNK bytes at a time, each chunk with its index in
 * front so that loss or reordering changes the hash. One buffer is reused:
 * a write has copied it to the kernel when it resolves.
 */
function* payloadChunks(): Generator<Uint8Array> {
  const chunk = new Uint8Array(CHUNK).fill(0x42);
  const view = new DataView(chunk.buffer);
  for (let i = 0; i * CHUNK < BULK; i++) {
    view.setUint32(0, i);
    yield chunk.subarray(0, Math.min(CHUNK, BULK - i * CHUNK));
  }
}
const PAYLOAD_DIGEST = (() => {
  const hash = createHash("sha256");
  for (const chunk of payloadChunks()) hash.update(chunk);
  return hash.digest("hex");
})();
const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

async function sendPayload(conn: Deno.Conn): Promise<void> {
  for (const chunk of payloadChunks()) await writeAll(conn, chunk);
}

/** Reads to the end; returns the SHA-256 of everything but the last 32 bytes, and those 32 bytes. */
async function readPayloadAndDigest(conn: Deno.Conn): Promise<{ payload: string; digest: string; bytes: number }> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(CHUNK + 32);
  let held = 0; // bytes at the start of buf not yet hashed (the possible trailing digest)
  let total = 0;
  for (;;) {
    const n = await conn.read(buf.subarray(held));
    if (n === null) break;
    held += n;
    total += n;
    if (held > 32) {
      hash.update(buf.subarray(0, held - 32));
      buf.copyWithin(0, held - 32, held);
      held = 32;
    }
  }
  if (held < 32) throw new Error("The sink closed without a digest");
  return { payload: hash.digest("hex"), digest: hex(buf.subarray(0, 32)), bytes: total - 32 };
}

/** BULK bytes one way; the sink answers with the SHA-256 of what it got. */
async function bulk(port: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const started = performance.now();
  await sendPayload(conn);
  await conn.closeWrite();
  const back = await readPayloadAndDigest(conn);
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  if (back.digest !== PAYLOAD_DIGEST || back.bytes !== 0) {
    throw new Error(`Bulk data differs at the far end (SHA-256 ${back.digest}, ${back.bytes} unexpected bytes back)`);
  }
  return BULK / seconds / 1e6;
}

/** BULK bytes each way at once; MB/s counts both directions. Both streams are checked. */
async function duplex(port: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const started = performance.now();
  const receiving = readPayloadAndDigest(conn);
  await writeAll(conn, new Uint8Array([0x44]));
  await sendPayload(conn);
  await conn.closeWrite();
  const back = await receiving;
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  if (back.digest !== PAYLOAD_DIGEST) throw new Error(`Bulk data differs at the far end (SHA-256 ${back.digest})`);
  if (back.payload !== PAYLOAD_DIGEST || back.bytes !== BULK) {
    throw new Error(`Bulk data from the far end differs (${back.bytes} bytes, SHA-256 ${back.payload})`);
  }
  return (2 * BULK) / seconds / 1e6;
}

async function interactive(port: number): Promise<{ p50: number; p99: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  await writeAll(conn, new Uint8Array([0x45]));
  const request = new Uint8Array(1024);
  const reply = new Uint8Array(1024);
  const times: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++) {
    new DataView(request.buffer).setUint32(0, i);
    const t0 = performance.now();
    await writeAll(conn, request);
    for (let got = 0; got < reply.length;) {
      const n = await conn.read(reply.subarray(got));
      if (n === null) throw new Error("The echo closed early");
      got += n;
    }
    times.push(performance.now() - t0);
    if (new DataView(reply.buffer).getUint32(0) !== i) throw new Error(`Round trip ${i} came back wrong`);
  }
  conn.close();
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(times.length * 0.5)] ?? 0, p99: times[Math.floor(times.length * 0.99)] ?? 0 };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`Nothing listens on 127.0.0.1:${port}`);
}

/** A relay chain under test: the port to use, its processes, and how to stop it. */
interface Chain {
  port: number;
  pids?: number[];
  stop(): Promise<void>;
}

function spawn(cmd: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command(cmd, { args, stdout: "null", stderr: "null", stdin: "null" }).spawn();
}

async function stopAll(...children: Deno.ChildProcess[]): Promise<void> {
  for (const child of children) {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  }
}

async function haveOrInstall(binary: string, pkg: string): Promise<string | null> {
  const which = async () => (await new Deno.Command("sh", { args: ["-c", `command -v ${binary}`] }).output()).success;
  if (await which()) return null;
  if (Deno.uid() === 0) {
    console.log(`Installing ${pkg} with apt-get for the comparison...`);
    await new Deno.Command("sh", {
      args: [
        "-c",
        `apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkg} >/dev/null 2>&1`,
      ],
    }).output();
    if (await which()) return null;
  }
  return `${binary} is not installed and could not be installed here`;
}

async function socatChain(sinkPort: number): Promise<Chain> {
  const [p1, p2] = [freePort(), freePort()];
  const hop = (from: number, to: number) =>
    spawn("socat", [`TCP-LISTEN:${from},bind=127.0.0.1,fork,reuseaddr,nodelay`, `TCP:127.0.0.1:${to},nodelay`]);
  const children = [hop(p2, sinkPort), hop(p1, p2)];
  await waitForPort(p1);
  await waitForPort(p2);
  return { port: p1, stop: () => stopAll(...children) };
}

async function denoRelayChain(sinkPort: number): Promise<Chain> {
  const [p1, p2] = [freePort(), freePort()];
  const hop = (from: number, to: number) =>
    spawn(Deno.execPath(), ["run", "--allow-net", "bench/deno_relay.ts", String(from), String(to)]);
  const children = [hop(p2, sinkPort), hop(p1, p2)];
  await waitForPort(p1);
  await waitForPort(p2);
  return { port: p1, pids: children.map((c) => c.pid), stop: () => stopAll(...children) };
}

async function haproxyChain(sinkPort: number, dir: string): Promise<Chain> {
  const [p1, p2] = [freePort(), freePort()];
  await Deno.writeTextFile(
    `${dir}/haproxy.cfg`,
    `global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n` +
      `frontend hop1\n  bind 127.0.0.1:${p1}\n  default_backend to_hop2\nbackend to_hop2\n  server s 127.0.0.1:${p2}\n` +
      `frontend hop2\n  bind 127.0.0.1:${p2}\n  default_backend to_sink\nbackend to_sink\n  server s 127.0.0.1:${sinkPort}\n`,
  );
  const child = spawn("haproxy", ["-db", "-f", `${dir}/haproxy.cfg`]);
  await waitForPort(p1);
  return { port: p1, pids: [child.pid], stop: () => stopAll(child) };
}

/** Options of a broker chain. */
interface BrokerChainOptions {
  /** A relay between the brokers: given broker-server's port, returns the port broker-client dials. */
  relay?: (serverPort: number) => Promise<number>;
  /** broker-server's status page port (0: off). */
  statusPort?: number;
  /** broker-client's log file, unrotated, at level info ("": none, warnings only on the console). */
  clientLog?: string;
  /** broker-server's log file, unrotated, at level warning ("": none). */
  serverLog?: string;
}

async function brokerChain(sinkPort: number, dir: string, options: BrokerChainOptions = {}): Promise<Chain> {
  const { relay, statusPort = 0, clientLog = "", serverLog = "" } = options;
  const serverPort = freePort();
  const clientPort = freePort();
  await Deno.writeTextFile(
    `${dir}/appserver.ini`,
    `[GENERAL]\nCONSOLELOG=0\n[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_ADDRESS=127.0.0.1\nLOCAL_SERVER_PORT=${serverPort}\nREMOTE_SERVER_01=127.0.0.1 ${sinkPort}\nSTATUS_PORT=${statusPort}\nHEALTH_CHECK_INTERVAL=0\nDRAIN_TIMEOUT=0\nNEW_SESSIONS_PER_MINUTE=100000\n${
      serverLog ? `LOG_FILE=${serverLog}\nLOG_MAX_SIZE=1G\n` : ""
    }`,
  );
  await Deno.writeTextFile(
    `${dir}/smartclient.ini`,
    `[drivers]\nactive=b\n[b]\nserver=127.0.0.1\nport=${clientPort}\nBrokerProxy=1\nBrokerServer=127.0.0.1:${serverPort}\nLOG_FILE=${clientLog}\n${
      clientLog ? "LOG_MAX_SIZE=1G\n" : ""
    }`,
  );
  const deno = Deno.execPath();
  const profile = PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [];
  if (BROKER_V8_FLAGS) profile.push(`--v8-flags=${BROKER_V8_FLAGS}`);
  const server = spawn(deno, [
    "run",
    ...profile,
    "-A",
    "server.ts",
    "--config",
    `${dir}/appserver.ini`,
    "--log-level",
    "warning",
  ]);
  await waitForPort(serverPort);
  if (relay) {
    const linkPort = await relay(serverPort);
    await Deno.writeTextFile(
      `${dir}/smartclient.ini`,
      (await Deno.readTextFile(`${dir}/smartclient.ini`)).replace(
        `BrokerServer=127.0.0.1:${serverPort}`,
        `BrokerServer=127.0.0.1:${linkPort}`,
      ),
    );
  }
  const client = spawn(deno, [
    "run",
    ...profile,
    "-A",
    "client.ts",
    "--config",
    `${dir}/smartclient.ini`,
    "--log-level",
    clientLog ? "info" : "warning",
  ]);
  await waitForPort(clientPort);
  return { port: clientPort, pids: [server.pid, client.pid], stop: () => stopAll(client, server) };
}

/**
 * broker-client -> HAProxy (roundrobin, no affinity, TCP health checks) ->
 * three broker-servers of one cluster -> the sink: each broker-server is a
 * process with its own appserver.ini (CLUSTER_KEY, CLUSTER_PORT, the other
 * two as PEER_), as on a site (examples/haproxy/broker-cluster.cfg).
 */
async function clusterChain(sinkPort: number, dir: string): Promise<Chain> {
  const serverPorts = [freePort(), freePort(), freePort()];
  const clusterPorts = [freePort(), freePort(), freePort()];
  const haproxyPort = freePort();
  const clientPort = freePort();
  const deno = Deno.execPath();
  const profile = PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [];
  if (BROKER_V8_FLAGS) profile.push(`--v8-flags=${BROKER_V8_FLAGS}`);
  const servers: Deno.ChildProcess[] = [];
  const children: Deno.ChildProcess[] = [];
  try {
    for (const [i, port] of serverPorts.entries()) {
      const peers = clusterPorts.flatMap((p, j) => j === i ? [] : [`PEER_${"ABC"[j]}=127.0.0.1 ${p}`]);
      const ini = `${dir}/cluster-appserver-${i}.ini`;
      await Deno.writeTextFile(
        ini,
        `[GENERAL]\nCONSOLELOG=0\n[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_ADDRESS=127.0.0.1\nLOCAL_SERVER_PORT=${port}\nREMOTE_SERVER_01=127.0.0.1 ${sinkPort}\nSTATUS_PORT=0\nHEALTH_CHECK_INTERVAL=0\nDRAIN_TIMEOUT=0\nNEW_SESSIONS_PER_MINUTE=100000\nCLUSTER_KEY=bench-cluster-key-0123456789\nCLUSTER_ADDRESS=127.0.0.1\nCLUSTER_PORT=${
          clusterPorts[i]
        }\n${peers.join("\n")}\n`,
      );
      const server = spawn(deno, ["run", ...profile, "-A", "server.ts", "--config", ini, "--log-level", "warning"]);
      servers.push(server);
      children.push(server);
    }
    for (const port of serverPorts) await waitForPort(port);
    await Deno.writeTextFile(
      `${dir}/haproxy-cluster.cfg`,
      `global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n` +
        `  retries 2\n  option redispatch\nfrontend links\n  bind 127.0.0.1:${haproxyPort}\n  default_backend brokers\n` +
        `backend brokers\n  balance roundrobin\n` +
        serverPorts.map((p, i) => `  server b${i} 127.0.0.1:${p} check inter 2s fall 2 rise 2\n`).join(""),
    );
    children.push(spawn("haproxy", ["-db", "-f", `${dir}/haproxy-cluster.cfg`]));
    await waitForPort(haproxyPort);
    await Deno.writeTextFile(
      `${dir}/smartclient-cluster.ini`,
      `[drivers]\nactive=b\n[b]\nserver=127.0.0.1\nport=${clientPort}\nBrokerProxy=1\nBrokerServer=127.0.0.1:${haproxyPort}\nLOG_FILE=\n`,
    );
    const client = spawn(deno, [
      "run",
      ...profile,
      "-A",
      "client.ts",
      "--config",
      `${dir}/smartclient-cluster.ini`,
      "--log-level",
      "warning",
    ]);
    children.unshift(client);
    await waitForPort(clientPort);
  } catch (err) {
    await stopAll(...children);
    throw err;
  }
  return { port: clientPort, pids: children.map((c) => c.pid), stop: () => stopAll(...children) };
}

interface Figures {
  bulkMBps: number[];
  duplexMBps: number[];
  p50Ms: number[];
  p99Ms: number[];
}

async function measure(port: number): Promise<Figures> {
  const figures: Figures = { bulkMBps: [], duplexMBps: [], p50Ms: [], p99Ms: [] };
  for (let i = 0; i < RUNS; i++) {
    if (ONLY.has("bulk")) figures.bulkMBps.push(await bulk(port));
    if (ONLY.has("duplex")) figures.duplexMBps.push(await duplex(port));
    if (ONLY.has("rtt")) {
      const rt = await interactive(port);
      figures.p50Ms.push(rt.p50);
      figures.p99Ms.push(rt.p99);
    }
  }
  return figures;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const range = (xs: number[], digits: number) => `${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)}`;

/** The broker behind HAProxy in front of three broker-servers of one cluster. */
const CLUSTER = "through HAProxy to 3 broker-servers";
const PEER_KEYS: Record<string, string> = {
  "direct TCP": "direct",
  "socat x2": "socat",
  "HAProxy x2": "haproxy",
  "Deno relay x2": "deno",
  "broker": "broker",
  [CLUSTER]: "cluster",
};
const sink = startSink();
const dir = await Deno.makeTempDir();
const results: { name: string; figures: Figures | null; note?: string }[] = [];
const users: { name: string; figures: UsersFigures }[] = [];
/** Resume storm: when the last, the median and the 90th percentile session moved again (ms after the link returned). */
interface StormFigures {
  recoverMs: number;
  medianMs: number;
  p90Ms: number;
  wrong: number;
  sessions: number;
}
let storm: StormFigures | null = null;
let churn: ChurnFigures | null = null;
type Peer = [string, () => Promise<Chain> | null, string | null];
const peers = ([
  ["direct TCP", () => null, null],
  ["socat x2", () => socatChain(sink.port), PEERS.has("socat") ? await haveOrInstall("socat", "socat") : null],
  [
    "HAProxy x2",
    () => haproxyChain(sink.port, dir),
    PEERS.has("haproxy") ? await haveOrInstall("haproxy", "haproxy") : null,
  ],
  ["Deno relay x2", () => denoRelayChain(sink.port), null],
  ["broker", () => brokerChain(sink.port, dir), null],
  [
    CLUSTER,
    () => clusterChain(sink.port, dir),
    PEERS.has("cluster") ? await haveOrInstall("haproxy", "haproxy") : null,
  ],
] as Peer[]).filter(([name]) => PEERS.has(PEER_KEYS[name] ?? ""));
const streamWorkloads = ["bulk", "duplex", "rtt"].some((w) => ONLY.has(w));
try {
  for (const [name, start, missing] of streamWorkloads ? peers : []) {
    if (missing) {
      results.push({ name, figures: null, note: missing });
      continue;
    }
    const chain = await start();
    try {
      console.log(`Measuring ${name}...`);
      results.push({ name, figures: await measure(chain?.port ?? sink.port) });
    } finally {
      await chain?.stop();
    }
  }
  // Many users: the relays that run as a few processes (socat forks one per connection).
  for (
    const [name, start] of [
      ["HAProxy x2", () => haproxyChain(sink.port, dir)],
      ["broker", () => brokerChain(sink.port, dir)],
    ] as const
  ) {
    if (!ONLY.has("users") || !PEERS.has(PEER_KEYS[name] ?? "")) continue;
    if (results.find((r) => r.name === name)?.note) continue;
    console.log(`Many users through ${name}: ${USERS} sessions, 10% active, ${USERS_SECONDS} s...`);
    const chain = await start();
    try {
      users.push({ name, figures: await manyUsers(chain) });
    } finally {
      await chain.stop();
    }
  }
  if (ONLY.has("storm")) {
    console.log(`Resume storm: ${STORM} sessions, every link cut for 2 s...`);
    storm = await resumeStorm(sink.port, dir);
  }
  if (ONLY.has("churn")) {
    console.log(
      `Churn: ${values["churn-rate"]} sessions a second for ${values["churn-seconds"]} s, link cut every 1-3 s...`,
    );
    churn = await churnRun(dir);
  }
} finally {
  sink.close();
}

/** Resident memory (bytes) and CPU seconds of processes, from /proc (Linux). */
function processUsage(pids: number[]): { rss: number; cpu: number } {
  let rss = 0;
  let cpu = 0;
  for (const pid of pids) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      rss += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
      const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]?.split(" ") ?? [];
      cpu += (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks
    } catch { /* not Linux, or gone */ }
  }
  return { rss, cpu };
}

/** One echoed message with a sequence number; false if it came back wrong. */
async function ping(conn: Deno.Conn, seq: number, size: number): Promise<boolean> {
  const msg = new Uint8Array(size);
  new DataView(msg.buffer).setUint32(0, seq);
  await writeAll(conn, msg);
  const back = new Uint8Array(size);
  for (let got = 0; got < size;) {
    const n = await conn.read(back.subarray(got));
    if (n === null) throw new Error("The session was closed");
    got += n;
  }
  return new DataView(back.buffer).getUint32(0) === seq;
}

/** Opens an echo session and waits until it carries data (the broker opens its session then). */
async function openEcho(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  await writeAll(conn, new Uint8Array([0x45]));
  if (!await ping(conn, 0xffffffff, 16)) throw new Error("The first echo came back wrong");
  return conn;
}

interface UsersFigures {
  /** Sum of the processes' median RSS over the run. */
  rssMiB: number;
  /** Median RSS of each process over the run, sampled every second (for the broker: server, then client). */
  rssPerProcessMiB: number[];
  /** Highest RSS sample of each process. */
  peakRssPerProcessMiB: number[];
  cpuSeconds: number;
  /** p99 over every round trip of every session. */
  p99Ms: number;
  /** The highest of the sessions' own p99s (the target: no session over 50 ms). */
  worstSessionP99Ms: number;
  /** The slowest single round trip. */
  maxMs: number;
  wrong: number;
}

/** USERS sessions held open, 10% sending 128 bytes a second for USERS_SECONDS. */
async function manyUsers(chain: Chain): Promise<UsersFigures> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < USERS; i++) conns.push(await openEcho(chain.port));
  const before = processUsage(chain.pids ?? []);
  // RSS rises and falls with garbage collection: sample it every second, per process.
  const samples: number[][] = (chain.pids ?? []).map(() => []);
  const sampler = setInterval(
    () => (chain.pids ?? []).forEach((pid, i) => samples[i]?.push(processUsage([pid]).rss)),
    1000,
  );
  const active = conns.filter((_, i) => i % 10 === 0);
  const perSession: number[][] = active.map(() => []);
  let wrong = 0;
  const end = Date.now() + USERS_SECONDS * 1000;
  await Promise.all(active.map(async (conn, i) => {
    await new Promise((r) => setTimeout(r, (i * 1000) / active.length)); // spread over the second
    for (let seq = 0; Date.now() < end; seq++) {
      const t0 = performance.now();
      if (!await ping(conn, seq, 128)) wrong++;
      perSession[i]?.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (performance.now() - t0))));
    }
  }));
  clearInterval(sampler);
  const after = processUsage(chain.pids ?? []);
  const perProcess = samples.map((xs) => median(xs) / 2 ** 20);
  const peakPerProcess = samples.map((xs) => Math.max(...xs) / 2 ** 20);
  for (const conn of conns) conn.close();
  const sorted = (xs: number[]) => xs.sort((a, b) => a - b);
  const p99 = (xs: number[]) => xs[Math.floor(xs.length * 0.99)] ?? 0;
  const worstSessionP99Ms = Math.max(0, ...perSession.map((xs) => p99(sorted(xs))));
  const times = sorted(perSession.flat());
  return {
    rssMiB: perProcess.reduce((a, b) => a + b, 0),
    rssPerProcessMiB: perProcess,
    peakRssPerProcessMiB: peakPerProcess,
    cpuSeconds: after.cpu - before.cpu,
    p99Ms: times[Math.floor(times.length * 0.99)] ?? 0,
    worstSessionP99Ms,
    maxMs: times[times.length - 1] ?? 0,
    wrong,
  };
}

/** STORM sessions with traffic; every link cut at once, restored 2 s later. */
async function resumeStorm(
  sinkPort: number,
  dir: string,
): Promise<StormFigures> {
  let chaos: ChaosLink | null = null;
  const chain = await brokerChain(sinkPort, dir, {
    relay: async (serverPort) => {
      chaos = await ChaosLink.start({ host: "127.0.0.1", port: serverPort });
      return chaos.port;
    },
  });
  const link = chaos as unknown as ChaosLink;
  try {
    const conns: Deno.TcpConn[] = [];
    for (let i = 0; i < STORM; i++) conns.push(await openEcho(chain.port));
    let wrong = 0;
    let restoredAt = Infinity;
    const recovered: number[] = [];
    let stopping = false;
    const traffic = conns.map(async (conn, i) => {
      for (let seq = 0; !stopping; seq++) {
        const t0 = Date.now();
        if (!await ping(conn, seq, 256)) wrong++;
        if (t0 >= restoredAt && recovered[i] === undefined) recovered[i] = Date.now() - restoredAt;
        await new Promise((r) => setTimeout(r, 100));
      }
    });
    await new Promise((r) => setTimeout(r, 1000));
    link.setMode("refuse");
    link.resetAll();
    await new Promise((r) => setTimeout(r, 2000));
    link.setMode("pass");
    restoredAt = Date.now();
    const deadline = Date.now() + 60_000;
    while (recovered.filter((x) => x !== undefined).length < STORM && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    stopping = true;
    await Promise.all(traffic);
    for (const conn of conns) conn.close();
    const done = recovered.filter((x) => x !== undefined).sort((a, b) => a - b);
    return {
      recoverMs: done.length === STORM ? Math.max(...done) : Infinity,
      medianMs: done[Math.floor(done.length / 2)] ?? Infinity,
      p90Ms: done[Math.floor(done.length * 0.9)] ?? Infinity,
      wrong,
      sessions: done.length,
    };
  } finally {
    await chain.stop();
    await link.close();
  }
}

/** A process of bench/churn_peers.ts: its port (first line of its output) and its stdin for commands. */
async function startChurnPeer(
  args: string[],
): Promise<{ port: number; send(line: string): void; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/churn_peers.ts", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  const port = Number(new TextDecoder().decode(value).trim());
  const writer = child.stdin.getWriter();
  return {
    port,
    send: (line) => void writer.write(new TextEncoder().encode(`${line}\n`)).catch(() => {}),
    stop: async () => {
      await writer.close().catch(() => {});
      await child.status;
    },
  };
}

/**
 * The churn soak through a broker chain whose link goes through a chaos
 * relay; the relay and the stand-in ERP run in processes of their own.
 */
async function churnRun(dir: string): Promise<ChurnFigures> {
  const echo = await startChurnPeer(["echo"]);
  let relay: Awaited<ReturnType<typeof startChurnPeer>> | null = null;
  const statusPort = freePort();
  const clientLog = `${dir}/churn-client.log`;
  const serverLog = `${dir}/churn-server.log`;
  const chain = await brokerChain(echo.port, dir, {
    relay: async (serverPort) => {
      relay = await startChurnPeer(["relay", String(serverPort)]);
      return relay.port;
    },
    statusPort,
    clientLog,
    serverLog,
  });
  const link = relay as unknown as Awaited<ReturnType<typeof startChurnPeer>>;
  let figures: ChurnFigures | undefined;
  try {
    figures = await runChurn({
      port: chain.port,
      serverPid: chain.pids?.[0] ?? 0,
      statusUrl: `http://127.0.0.1:${statusPort}/status.json`,
      clientLog,
      cut: (how) => link.send(how),
    }, {
      rate: Number(values["churn-rate"]),
      seconds: Number(values["churn-seconds"]),
      cutMinMs: 1000,
      cutMaxMs: 3000,
      resetShare: 0.3,
      idleSeconds: Number(values["churn-idle-seconds"]),
      seed: 1,
    });
    return figures;
  } finally {
    await chain.stop();
    await link.stop();
    await echo.stop();
    if (!figures || !churnClean(figures)) {
      // Keep the logs of a run that found a problem.
      await Deno.mkdir("bench/results", { recursive: true });
      for (const log of [clientLog, serverLog]) {
        const kept = `bench/results/${log.split("/").pop()}`;
        await Deno.copyFile(log, kept).then(() => console.log(`Kept ${kept}`), () => {});
      }
    }
  }
}

const ours = results.find((r) => r.name === "broker")?.figures;
const measured = results.filter((r) => r.figures) as { name: string; figures: Figures }[];
const workloads = ([
  [`bulk ${BULK >> 20} MiB one way, MB/s`, "bulkMBps", 0, true],
  [`bulk ${BULK >> 20} MiB each way at once, MB/s (both directions)`, "duplexMBps", 0, true],
  [`${ROUND_TRIPS} x 1 KiB round trips, p50 ms`, "p50Ms", 3, false],
  [`${ROUND_TRIPS} x 1 KiB round trips, p99 ms`, "p99Ms", 3, false],
] as [string, keyof Figures, number, boolean][]).filter(([, key]) => measured.some((r) => r.figures[key].length > 0));
/** The peers the broker is compared with (not itself, nor itself behind HAProxy). */
const others = measured.filter((r) => r.name !== "broker" && r.name !== CLUSTER);
/** The cluster's figures against the single broker's: what HAProxy and the cluster add. */
const cluster = results.find((r) => r.name === CLUSTER)?.figures;
const rows: string[][] = [[
  "workload",
  ...measured.map((r) => r.name),
  ...(ours ? others.map((r) => `broker / ${r.name}`) : []),
  ...(ours && cluster ? ["3 broker-servers / broker"] : []),
]];
for (const [label, key, digits] of workloads) {
  const ratio = (a: Figures, b: Figures) => `${(median(a[key]) / median(b[key])).toFixed(2)}x`;
  rows.push([
    label,
    ...measured.map((r) => `${median(r.figures[key]).toFixed(digits)} (${range(r.figures[key], digits)})`),
    ...(ours ? others.map((r) => ratio(ours, r.figures)) : []),
    ...(ours && cluster ? [ratio(cluster, ours)] : []),
  ]);
}
const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
if (workloads.length > 0) {
  console.log(
    `\nMedian of ${RUNS} runs (min-max in brackets), loopback, same machine, same run; bulk data verified by SHA-256:\n`,
  );
  for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join("  "));
}
for (const r of results) if (r.note) console.log(`\n${r.name}: skipped (${r.note})`);
for (const u of users) {
  console.log(
    `\nMany users, ${u.name}: RSS ${u.figures.rssMiB.toFixed(0)} MiB (${
      u.figures.rssPerProcessMiB.map((x) => x.toFixed(0)).join(" + ")
    }; median of 1 s samples, peak ${u.figures.peakRssPerProcessMiB.map((x) => x.toFixed(0)).join(" + ")}), CPU ${
      u.figures.cpuSeconds.toFixed(1)
    } s, p99 ${u.figures.p99Ms.toFixed(2)} ms (worst session's p99 ${
      u.figures.worstSessionP99Ms.toFixed(2)
    } ms, slowest round trip ${u.figures.maxMs.toFixed(2)} ms), ${u.figures.wrong} wrong replies`,
  );
}
if (storm) {
  console.log(
    `\nResume storm, broker: ${storm.sessions} of ${STORM} sessions moving again ${
      Number.isFinite(storm.recoverMs) ? `${(storm.recoverMs / 1000).toFixed(2)} s` : "(not all within 60 s)"
    } after the link returned (half of them within ${(storm.medianMs / 1000).toFixed(2)} s, 90% within ${
      (storm.p90Ms / 1000).toFixed(2)
    } s); ${storm.wrong} wrong replies (lost or reordered bytes)`,
  );
}

if (churn) console.log(`\n${describeChurn(churn)}`);

// JSON and an SVG bar chart (one group per workload; bars relative to the group's largest).
await Deno.mkdir("bench/results", { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
await Deno.writeTextFile(
  `bench/results/bench-${stamp}.json`,
  JSON.stringify({ runs: RUNS, bulkBytes: BULK, roundTrips: ROUND_TRIPS, results, users, storm, churn }, null, 2),
);
if (churn) await Deno.writeTextFile(`bench/results/bench-${stamp}-churn.svg`, churnChart(churn));
const colors = ["#7f8c8d", "#2980b9", "#8e44ad", "#d35400", "#27ae60"];
let y = 40;
const bars: string[] = [];
for (const [label, key, digits, higherIsBetter] of workloads) {
  bars.push(
    `<text x="10" y="${y}" font-weight="bold">${label} (${higherIsBetter ? "higher" : "lower"} is better)</text>`,
  );
  y += 10;
  const max = Math.max(...measured.map((r) => median(r.figures[key])));
  measured.forEach((r, i) => {
    const value = median(r.figures[key]);
    const width = Math.max(1, (value / max) * 500);
    bars.push(
      `<rect x="130" y="${y}" width="${width.toFixed(0)}" height="18" fill="${colors[i % colors.length]}"/>` +
        `<text x="10" y="${y + 14}">${r.name}</text><text x="${135 + width}" y="${y + 14}">${
          value.toFixed(digits)
        }</text>`,
    );
    y += 24;
  });
  y += 24;
}
await Deno.writeTextFile(
  `bench/results/bench-${stamp}.svg`,
  `<svg xmlns="http://www.w3.org/2000/svg" width="760" height="${y}" font-family="sans-serif" font-size="13">${
    bars.join("")
  }</svg>\n`,
);
console.log(`\nResults written to bench/results/bench-${stamp}.json and .svg`);
await Deno.remove(dir, { recursive: true });
