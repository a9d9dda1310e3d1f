/**
 * `deno task bench`: the broker chain measured side by side with direct TCP
 * in the same run, on the loopback. The brokers run as separate processes
 * (the real entry points), so the load generator does not share their
 * event loop.
 *
 * Workloads: bulk (one way, MB/s) and interactive (1 KiB request/response
 * round trips, p50/p99). Each figure is the median of --runs repetitions
 * (default 3), with min-max shown. Results also go to bench/results/.
 * Options: --bulk-mib N (default 256), --round-trips N (default 5000).
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    "bulk-mib": { type: "string", default: "256" },
    "round-trips": { type: "string", default: "5000" },
  },
});
const RUNS = Number(values.runs);
const BULK = Number(values["bulk-mib"]) * 1024 * 1024;
const ROUND_TRIPS = Number(values["round-trips"]);

/** A stand-in ERP: discards bulk uploads, echoes everything else. */
function startSink(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(256 * 1024);
        const first = await conn.read(buf);
        if (first === null) return conn.close();
        const echo = buf[0] === 0x45; // "E": echo mode; anything else: discard
        if (echo) await writeAll(conn, buf.subarray(1, first));
        for (let n; (n = await conn.read(buf)) !== null;) if (echo) await writeAll(conn, buf.subarray(0, n));
        conn.close();
      })().catch(() => conn.close());
    }
  })();
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

async function bulk(port: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const chunk = new Uint8Array(256 * 1024).fill(0x42);
  const started = performance.now();
  for (let sent = 0; sent < BULK; sent += chunk.length) await writeAll(conn, chunk);
  await conn.closeWrite();
  await conn.read(new Uint8Array(1)); // the sink closes after reading everything
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  return BULK / seconds / 1e6;
}

async function interactive(port: number): Promise<{ p50: number; p99: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  await writeAll(conn, new Uint8Array([0x45])); // "E": echo mode
  const request = new Uint8Array(1024).fill(7);
  const reply = new Uint8Array(1024);
  const times: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++) {
    const t0 = performance.now();
    await writeAll(conn, request);
    for (let got = 0; got < reply.length;) {
      const n = await conn.read(reply.subarray(got));
      if (n === null) throw new Error("Echo closed early");
      got += n;
    }
    times.push(performance.now() - t0);
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
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`Nothing listens on 127.0.0.1:${port}`);
}

/** Starts broker-server and broker-client as processes in front of `erpPort`; returns the client's port. */
async function startBrokers(erpPort: number, dir: string): Promise<{ port: number; stop(): Promise<void> }> {
  const serverPort = freePort();
  const clientPort = freePort();
  await Deno.writeTextFile(
    `${dir}/appserver.ini`,
    `[GENERAL]\nCONSOLELOG=0\n[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_ADDRESS=127.0.0.1\nLOCAL_SERVER_PORT=${serverPort}\nREMOTE_SERVER_01=127.0.0.1 ${erpPort}\n`,
  );
  await Deno.writeTextFile(
    `${dir}/smartclient.ini`,
    `[drivers]\nactive=b\n[b]\nserver=127.0.0.1\nport=${clientPort}\nBrokerProxy=1\nBrokerServer=127.0.0.1:${serverPort}\n`,
  );
  const spawn = (entry: string, config: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", entry, "--config", config, "--log-level", "warning"],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
  const server = spawn("server.ts", `${dir}/appserver.ini`);
  const client = spawn("client.ts", `${dir}/smartclient.ini`);
  await waitForPort(serverPort);
  await waitForPort(clientPort);
  return {
    port: clientPort,
    async stop() {
      for (const p of [client, server]) {
        p.kill("SIGTERM");
        await p.status;
      }
    },
  };
}

interface Figures {
  bulkMBps: number[];
  p50Ms: number[];
  p99Ms: number[];
}

async function measure(port: number): Promise<Figures> {
  const figures: Figures = { bulkMBps: [], p50Ms: [], p99Ms: [] };
  for (let i = 0; i < RUNS; i++) {
    figures.bulkMBps.push(await bulk(port));
    const rt = await interactive(port);
    figures.p50Ms.push(rt.p50);
    figures.p99Ms.push(rt.p99);
  }
  return figures;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const range = (xs: number[], digits: number) => `${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)}`;

const sink = startSink();
const dir = await Deno.makeTempDir();
const direct = await measure(sink.port);
const brokers = await startBrokers(sink.port, dir);
let chain: Figures;
try {
  chain = await measure(brokers.port);
} finally {
  await brokers.stop();
  sink.close();
  await Deno.remove(dir, { recursive: true });
}

const rows = [
  ["workload", "direct TCP", "broker chain", "broker / direct"],
  [
    `bulk ${BULK >> 20} MiB one way (MB/s)`,
    `${median(direct.bulkMBps).toFixed(0)} (${range(direct.bulkMBps, 0)})`,
    `${median(chain.bulkMBps).toFixed(0)} (${range(chain.bulkMBps, 0)})`,
    `${(median(chain.bulkMBps) / median(direct.bulkMBps)).toFixed(2)}x`,
  ],
  [
    `${ROUND_TRIPS} x 1 KiB round trips, p50 (ms)`,
    `${median(direct.p50Ms).toFixed(3)} (${range(direct.p50Ms, 3)})`,
    `${median(chain.p50Ms).toFixed(3)} (${range(chain.p50Ms, 3)})`,
    `${(median(chain.p50Ms) / median(direct.p50Ms)).toFixed(2)}x`,
  ],
  [
    `${ROUND_TRIPS} x 1 KiB round trips, p99 (ms)`,
    `${median(direct.p99Ms).toFixed(3)} (${range(direct.p99Ms, 3)})`,
    `${median(chain.p99Ms).toFixed(3)} (${range(chain.p99Ms, 3)})`,
    `${(median(chain.p99Ms) / median(direct.p99Ms)).toFixed(2)}x`,
  ],
];
const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
console.log(`Median of ${RUNS} runs (min-max in brackets), loopback, same machine, same run:\n`);
for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join("  "));

await Deno.mkdir("bench/results", { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
await Deno.writeTextFile(
  `bench/results/bench-${stamp}.json`,
  JSON.stringify({ runs: RUNS, bulkBytes: BULK, roundTrips: ROUND_TRIPS, direct, chain }, null, 2),
);
console.log(`\nResults written to bench/results/bench-${stamp}.json`);
