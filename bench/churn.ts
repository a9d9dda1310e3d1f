/**
 * The churn soak of `deno task bench --only churn`: sessions open, echo a
 * few messages and end all the time (most with a clean close, the rest with
 * a reset from the application), while the link between the brokers is
 * reset or closed every few seconds. It checks that every byte came back
 * right, that every ending reached broker-server (its counters against the
 * applications' own tally and broker-client's log), and records
 * broker-server's memory over the run and after it as an SVG line chart.
 * @module
 */

import net from "node:net";
import { seededRandom } from "../tools/streams.ts";

/** Settings of a churn run. */
export interface ChurnOptions {
  /** New sessions per second. */
  rate: number;
  /** How long sessions are opened (s). */
  seconds: number;
  /** Link cuts come every `cutMinMs`..`cutMaxMs` (uniform). */
  cutMinMs: number;
  cutMaxMs: number;
  /** Share of sessions that the application ends with a reset (0..1). */
  resetShare: number;
  /** After the run, how long broker-server's memory is watched while idle (s). */
  idleSeconds: number;
  /** Seed of the random choices (message counts and sizes, endings, cut times). */
  seed: number;
}

/** The broker pair under test, with the link between them through `chaos`. */
export interface ChurnChain {
  /** Where the applications connect (broker-client). */
  port: number;
  /** broker-server's process id (memory samples). */
  serverPid: number;
  /** broker-server's status.json address. */
  statusUrl: string;
  /** broker-client's log file. */
  clientLog: string;
  /** Cuts every link between the brokers: with a reset (RST) or a clean close (FIN). */
  cut(how: "reset" | "close"): void;
}

/** What a churn run found. */
export interface ChurnFigures {
  options: ChurnOptions;
  /** Sessions started, and how the applications ended them. */
  sessions: number;
  cleanCloses: number;
  resets: number;
  /** Sessions per second actually opened. */
  achievedRate: number;
  /** Sessions whose bytes all came back right and whose ending went as planned. */
  served: number;
  /** Bytes that came back different from what was sent, or never came back. */
  wrongBytes: number;
  /** Sessions the broker ended before the application did (error or close), with a sample reason. */
  brokenSessions: number;
  brokenSample: string[];
  /** Link cuts injected. */
  cuts: number;
  /** broker-server's counters at the end. */
  server: { completed: number; aborted: number; expired: number; active: number };
  /** broker-client's log: sessions closed cleanly, and otherwise. */
  clientLog: { clean: number; other: number };
  /** Sessions that expired on broker-server although their application had ended them (must be 0). */
  unexpectedExpiries: number;
  /** broker-server RSS samples, MiB, one per second: [seconds since start, MiB]. */
  memory: [number, number][];
  memoryMiB: { start: number; peak: number; endOfLoad: number; afterIdle: number };
  /** When the load stopped (s since start). */
  loadEndedAt: number;
}

/** Resident memory of `pid` in bytes, from /proc (0 where there is none). */
export function residentBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** A message of `size` bytes whose content depends on the session and its number. */
function message(session: number, seq: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = (session * 2654435761 + seq * 40503) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

/** Outcome of one application session. */
interface Outcome {
  wrongBytes: number;
  broken: string | null;
}

/**
 * One application session: connect, ask the stand-in ERP for echo, send
 * `count` messages one at a time and check each echo, then end with a
 * clean close (and wait for the broker's close) or a reset.
 */
function runSession(port: number, id: number, count: number, sizes: number[], reset: boolean): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true });
    let expected: Uint8Array = new Uint8Array(0);
    let got = 0;
    let seq = 0;
    let wrongBytes = 0;
    let ending = false;
    let settled = false;
    const finish = (broken: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (broken) wrongBytes += expected.length - got; // what never came back
      resolve({ wrongBytes, broken });
    };
    // A session that hangs is broken, not waited for forever.
    const timer = setTimeout(() => {
      socket.destroy();
      finish(`no progress within 60 s (message ${seq} of ${count})`);
    }, 60_000);
    const sendNext = () => {
      if (seq === count) {
        ending = true;
        if (reset) {
          socket.resetAndDestroy();
          finish(null);
        } else {
          socket.end();
        }
        return;
      }
      expected = message(id, seq, sizes[seq] ?? 1);
      got = 0;
      seq++;
      socket.write(seq === 1 ? new Uint8Array([0x45, ...expected]) : expected);
    };
    socket.on("connect", sendNext);
    socket.on("data", (chunk: Uint8Array) => {
      for (let i = 0; i < chunk.length; i++) {
        if (got >= expected.length) {
          wrongBytes += chunk.length - i; // bytes nobody sent
          break;
        }
        if (chunk[i] !== expected[got]) wrongBytes++;
        got++;
      }
      if (got === expected.length && !ending) sendNext();
    });
    socket.on("error", (err: Error) => finish(ending ? null : `error: ${err.message}`));
    socket.on("close", () => finish(ending ? null : `closed by the broker at message ${seq} of ${count}`));
  });
}

/** Fetches broker-server's counters from status.json. */
async function serverCounters(statusUrl: string): Promise<ChurnFigures["server"]> {
  const status = await (await fetch(statusUrl)).json();
  const t = status.totals;
  return {
    completed: t.sessionsCompleted,
    aborted: t.sessionsAborted,
    expired: t.sessionsExpired,
    active: t.sessionsActive,
  };
}

/** Runs the churn against `chain` and reports. */
export async function runChurn(chain: ChurnChain, options: ChurnOptions): Promise<ChurnFigures> {
  const random = seededRandom(options.seed);
  const started = performance.now();
  const since = () => (performance.now() - started) / 1000;
  const memory: [number, number][] = [];
  const sample = () => memory.push([Math.round(since()), residentBytes(chain.serverPid) / 2 ** 20]);
  sample();
  const sampler = setInterval(sample, 1000);

  // Cuts at random times, alternating resets and clean closes.
  let cutting = true;
  let cuts = 0;
  const cutter = (async () => {
    while (cutting) {
      await new Promise((r) => setTimeout(r, options.cutMinMs + random() * (options.cutMaxMs - options.cutMinMs)));
      if (!cutting) return;
      chain.cut(cuts++ % 2 === 0 ? "reset" : "close");
    }
  })();

  const running = new Set<Promise<void>>();
  let sessions = 0;
  let cleanCloses = 0;
  let resets = 0;
  let served = 0;
  let wrongBytes = 0;
  let brokenSessions = 0;
  const brokenSample: string[] = [];
  const end = performance.now() + options.seconds * 1000;
  const interval = 1000 / options.rate;
  let next = performance.now();
  while (performance.now() < end) {
    const id = sessions++;
    const count = 5 + Math.floor(random() * 36); // 5-40 messages
    const sizes = Array.from({ length: count }, () => 1 + Math.floor(random() * 2048));
    const reset = random() < options.resetShare;
    if (reset) resets++;
    else cleanCloses++;
    const job = runSession(chain.port, id, count, sizes, reset).then((outcome) => {
      wrongBytes += outcome.wrongBytes;
      if (outcome.broken) {
        brokenSessions++;
        if (brokenSample.length < 5) brokenSample.push(`session ${id}: ${outcome.broken}`);
      } else if (outcome.wrongBytes === 0) {
        served++;
      }
      running.delete(job);
    });
    running.add(job);
    next += interval;
    const wait = next - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  const achievedRate = sessions / options.seconds;
  await Promise.all([...running]);
  cutting = false;
  await cutter;
  const loadEndedAt = since();
  const endOfLoad = residentBytes(chain.serverPid) / 2 ** 20;

  // Every ending must reach broker-server: wait for its last sessions to go (not for the resume window).
  let server = await serverCounters(chain.statusUrl);
  for (let i = 0; i < 300 && server.active > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    server = await serverCounters(chain.statusUrl);
  }
  await new Promise((r) => setTimeout(r, options.idleSeconds * 1000));
  clearInterval(sampler);
  const afterIdle = residentBytes(chain.serverPid) / 2 ** 20;
  server = await serverCounters(chain.statusUrl);

  const log = await Deno.readTextFile(chain.clientLog).catch(() => "");
  const closedLines = log.split("\n").filter((line) => / Session \w+ closed: /.test(line));
  const clean = closedLines.filter((line) => line.includes("closed by both ends")).length;
  const mib = memory.map(([, m]) => m);
  return {
    options,
    sessions,
    cleanCloses,
    resets,
    achievedRate,
    served,
    wrongBytes,
    brokenSessions,
    brokenSample,
    cuts,
    server,
    clientLog: { clean, other: closedLines.length - clean },
    unexpectedExpiries: server.expired,
    memory,
    memoryMiB: { start: mib[0] ?? 0, peak: Math.max(0, ...mib), endOfLoad, afterIdle },
    loadEndedAt,
  };
}

/** No wrong byte, no broken session, no unexpected expiry, and both brokers agree on every session. */
export function churnClean(f: ChurnFigures): boolean {
  return f.wrongBytes === 0 && f.brokenSessions === 0 && f.unexpectedExpiries === 0 && f.server.active === 0 &&
    f.server.completed === f.clientLog.clean && f.server.aborted === f.clientLog.other;
}

/** A one-line verdict and the figures, for the console. */
export function describeChurn(f: ChurnFigures): string {
  const m = f.memoryMiB;
  return [
    `Churn, broker: ${f.sessions} sessions in ${f.options.seconds} s (${
      f.achievedRate.toFixed(0)
    }/s; ${f.cleanCloses} clean closes, ${f.resets} resets), ${f.cuts} link cuts`,
    `  served right: ${f.served}; wrong bytes: ${f.wrongBytes}; sessions broken by the broker: ${f.brokenSessions}${
      f.brokenSample.length ? ` (${f.brokenSample.join("; ")})` : ""
    }`,
    `  broker-server: ${f.server.completed} completed, ${f.server.aborted} aborted, ${f.server.expired} expired, ${f.server.active} still held; ` +
    `broker-client log: ${f.clientLog.clean} clean, ${f.clientLog.other} other (the readiness probe is one clean session more than the applications'); ` +
    `unexpected expiries: ${f.unexpectedExpiries}; disagreements between the two brokers: ${
      Math.abs(f.server.completed - f.clientLog.clean) + Math.abs(f.server.aborted - f.clientLog.other)
    }`,
    `  broker-server RSS: start ${m.start.toFixed(0)} MiB, peak ${m.peak.toFixed(0)} MiB, end of load ${
      m.endOfLoad.toFixed(0)
    } MiB, after ${f.options.idleSeconds} s idle ${m.afterIdle.toFixed(0)} MiB`,
  ].join("\n");
}

/** broker-server's memory over the run as an SVG line chart (the load's end marked). */
export function churnChart(f: ChurnFigures): string {
  const width = 760;
  const height = 300;
  const left = 60;
  const bottom = 250;
  const top = 40;
  const lastT = Math.max(1, ...f.memory.map(([t]) => t));
  const maxM = Math.max(1, ...f.memory.map(([, m]) => m)) * 1.1;
  const x = (t: number) => left + (t / lastT) * (width - left - 20);
  const y = (m: number) => bottom - (m / maxM) * (bottom - top);
  const points = f.memory.map(([t, m]) => `${x(t).toFixed(1)},${y(m).toFixed(1)}`).join(" ");
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((k) => {
    const m = maxM * k;
    return `<line x1="${left}" x2="${width - 20}" y1="${y(m)}" y2="${y(m)}" stroke="#ddd"/>` +
      `<text x="${left - 8}" y="${y(m) + 4}" text-anchor="end">${m.toFixed(0)}</text>`;
  }).join("");
  const endX = x(f.loadEndedAt);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">` +
    `<text x="10" y="20" font-weight="bold">broker-server RSS (MiB) during churn: ${f.options.rate} sessions/s for ${f.options.seconds} s, then idle</text>` +
    ticks +
    `<line x1="${endX}" x2="${endX}" y1="${top}" y2="${bottom}" stroke="#c0392b" stroke-dasharray="4 3"/>` +
    `<text x="${endX + 4}" y="${top + 12}" fill="#c0392b">load ends</text>` +
    `<polyline fill="none" stroke="#2980b9" stroke-width="2" points="${points}"/>` +
    `<text x="${(left + width) / 2}" y="${bottom + 30}" text-anchor="middle">seconds</text>` +
    `<text x="${left}" y="${bottom + 16}">0</text><text x="${width - 20}" y="${
      bottom + 16
    }" text-anchor="end">${lastT}</text>` +
    `</svg>\n`;
}
