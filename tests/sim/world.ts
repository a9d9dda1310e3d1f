/**
 * One simulated world: the real broker-client and broker-server, on a
 * simulated network and a virtual clock, carrying sessions between
 * simulated Smart Client applications on the PC and simulated ERP
 * applications, while the network between the PC and the broker fails in
 * every way it can. Everything random comes from the seed, so a failing
 * world replays exactly. See docs/development.md ("Simulation").
 *
 * Checked in every world:
 * 1. every byte an application wrote arrives at the other exactly once, in
 *    order, with the end of stream after the last byte, unless the world
 *    cut the network for longer than the resume window (then what arrived
 *    is still a prefix of what was sent);
 * 2. once the network is healed, every session makes progress or ends
 *    within a bounded simulated time (a stuck or endless world is a hang);
 * 3. once both brokers are stopped, nothing is left behind: no timer, no
 *    session, no pooled buffer held, no open connection toward an ERP;
 * 4. no session ends early without a reason in broker-server's log;
 * 5. no world throws out of a broker's event loop.
 * @module
 */

import { configure, type LogRecord } from "@logtape/logtape";
import { BrokerClient } from "../../src/client/client.ts";
import { clientConfigFromIni } from "../../src/config/client_config.ts";
import { parseIni } from "../../src/config/ini.ts";
import { serverConfigFromIni } from "../../src/config/server_config.ts";
import { LOG_ROOT } from "../../src/ops/log.ts";
import { BrokerServer } from "../../src/server/server.ts";
import type { NetConn, Network } from "../../src/session/network.ts";
import { PoolLease } from "../../src/session/buffer_pool.ts";
import { type AppPlan, type AppResult, checkPair, describePlan, planApp, readTag, runApp, sessionTag } from "./apps.ts";
import { VirtualClock } from "./clock.ts";
import type { PathModel, SimEndpoint } from "./connection.ts";
import { SimNetwork } from "./network.ts";
import { Rng } from "./rng.ts";
import type { TimerHandle } from "../../src/session/clock.ts";
import { runUntil, settle } from "./settle.ts";

/** The hosts of a world. */
const PC = "10.0.0.2";
/** Where hostile peers dial from. */
const ATTACKER = "203.0.113.9";
const BROKER = "192.0.2.1";
const BROKER_PORT = 7000;
const LOOPBACK = "127.0.0.1";
const SMART_CLIENT_PORT = 1234;
const ERP_PORT = 5000;

/** What a world may contain. */
export interface WorldOptions {
  /** The seed: the whole world follows from it. */
  seed: number;
  /** Most application pairs (sessions). */
  maxSessions?: number;
  /** Most bytes each application writes. */
  maxBytes?: number;
  /** Most faults the network suffers (default: as many as the chaos brings). */
  maxFaults?: number;
  /** false: no hostile peers (default: in half the worlds). */
  hostile?: boolean;
}

/** What became of a world. */
export interface WorldReport {
  seed: number;
  /** Broken invariants, in words; empty when the world passed. */
  problems: string[];
  /** What happened, in order (faults, sessions, the brokers' log lines). */
  trace: string[];
  /** Virtual time the world took (ms). */
  simulatedMs: number;
  /** Application pairs run. */
  sessions: number;
  /** Faults injected. */
  faults: number;
  /** Hostile links made. */
  hostile: number;
}

/** Where the brokers' log lines go while a world runs. */
let logTarget: ((line: string) => void) | null = null;
let logConfigured = false;

async function routeLogs(): Promise<void> {
  if (logConfigured) return;
  logConfigured = true;
  await configure({
    reset: true,
    sinks: {
      world: (record: LogRecord) => {
        const message = record.message.map((part) => typeof part === "string" ? part : String(part)).join("");
        logTarget?.(`${record.level.toUpperCase()} ${record.category.slice(1).join(".")}: ${message}`);
      },
    },
    loggers: [
      { category: [LOG_ROOT], lowestLevel: "info", sinks: ["world"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
}

/** Wakes waiters whenever something they may wait for changed. */
class Changes {
  #waiters: { test: () => boolean; resolve: () => void }[] = [];

  /** Resolves once `test()` holds (checked now and at each notify). */
  until(test: () => boolean): Promise<void> {
    if (test()) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }

  notify(): void {
    const still = [];
    for (const w of this.#waiters) {
      if (w.test()) w.resolve();
      else still.push(w);
    }
    this.#waiters = still;
  }
}

/** The timers and limits of a world's brokers, drawn from the seed. */
function drawTuning(rng: Rng) {
  const heartbeatMs = rng.pick([200, 500, 2_000]);
  return {
    heartbeatMs,
    linkTimeoutMs: heartbeatMs * rng.pick([3, 4]),
    resumeTimeoutMs: rng.pick([5_000, 30_000, 30_000, 180_000, 180_000]),
    replayBuffer: rng.pick(["64K", "256K", "4M"]),
  };
}

/** A path between the PC and the broker: latency, pieces and socket buffers of all kinds. */
function drawWan(rng: Rng): PathModel {
  const base = rng.pick([1, 10, 40, 150]);
  return {
    latencyMs: [base, base + rng.pick([0, 5, 50])],
    maxPiece: rng.pick([100, 1_460, 16_384, 65_536]),
    capacity: rng.pick([4_096, 65_536, 262_144, 1_048_576]),
  };
}

/** A path on one host or a LAN: quick, with socket buffers of any size. */
function drawLocal(rng: Rng): PathModel {
  return { latencyMs: [0, 1], maxPiece: 65_536, capacity: rng.pick([4_096, 65_536, 262_144]) };
}

/** Runs one world to its end and reports what was wrong with it. */
export async function runWorld(options: WorldOptions): Promise<WorldReport> {
  await routeLogs();
  const rng = new Rng(options.seed);
  const clock = new VirtualClock(1_000_000);
  const start = clock.now();
  const trace: string[] = [];
  const note = (line: string) => trace.push(`${((clock.now() - start) / 1000).toFixed(3)} ${line}`);
  const problems: string[] = [];
  const uncaught = (event: PromiseRejectionEvent | ErrorEvent) => {
    event.preventDefault();
    const err = "reason" in event ? event.reason : event.error;
    problems.push(`uncaught: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  };
  globalThis.addEventListener("unhandledrejection", uncaught);
  globalThis.addEventListener("error", uncaught);
  logTarget = note;
  // The brokers' other randomness follows the seed too: backoff jitter, and
  // session ids and nonces (keys come from WebCrypto, which the seed cannot
  // reach: they change the proofs' bytes, never their sizes or the events).
  const random = Math.random;
  const jitter = rng.fork();
  Math.random = () => jitter.float();
  const getRandomValues = crypto.getRandomValues;
  const entropy = new Rng(options.seed ^ 0x5eed_1d5);
  crypto.getRandomValues = <T extends ArrayBufferView | null>(array: T): T => {
    if (array) {
      const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
      for (let i = 0; i < bytes.length; i++) bytes[i] = entropy.int(0, 255);
    }
    return array;
  };
  try {
    return await world(options, rng, clock, note, problems, trace);
  } finally {
    Math.random = random;
    crypto.getRandomValues = getRandomValues;
    logTarget = null;
    globalThis.removeEventListener("unhandledrejection", uncaught);
    globalThis.removeEventListener("error", uncaught);
  }
}

async function world(
  options: WorldOptions,
  rng: Rng,
  clock: VirtualClock,
  note: (line: string) => void,
  problems: string[],
  trace: string[],
): Promise<WorldReport> {
  const start = clock.now();
  const leasesBefore = PoolLease.live;
  // broker-client's lines about each Smart Client connection, by its port.
  const clientLines = new Map<number, string[]>();
  /** Session id (short) by Smart Client port, and how each side said each session ended. */
  const idByPort = new Map<number, string>();
  const ends = new Map<string, { server?: string; client?: string; serverAt?: number; clientAt?: number }>();
  /** Sessions hostile peers opened (replaying a real opening), by their ERP connection's broker-side port. */
  const hostileOpened = new Map<number, string>();
  /** Sessions broker-client opened for a Smart Client. */
  const adopted = new Set<string>();
  /** Wakes what waits on the log (set once the world's waiters exist). */
  let logChanged = () => {};
  /** Whether an ERP server stopped accepting at some point (its queued connections were reset). */
  let erpWentDown = false;
  /** broker-server's lines saying a session resumed on a hostile peer's link (a replayed proof that worked). */
  const hostileResumes: string[] = [];
  /** When a link was declared dead for silence or suspected (clock ms), and the line that said so. */
  const stalls: [number, string][] = [];
  const traced = note;
  note = (line: string) => {
    traced(line);
    const port = /Smart Client 127\.0\.0\.1:(\d+)/.exec(line)?.[1];
    if (port) clientLines.set(Number(port), [...clientLines.get(Number(port)) ?? [], line]);
    const opened = /client: Session ([0-9a-f]{8}) opened for Smart Client 127\.0\.0\.1:(\d+)/.exec(line);
    if (opened) {
      idByPort.set(Number(opened[2]), opened[1] as string);
      adopted.add(opened[1] as string);
      logChanged();
    }
    // broker-server names each session's ERP connection by its local port.
    const opening = /server: Session ([0-9a-f]{8}) opened: client ([^,]+):\d+, ERP .*?, from port (\d+)\)/.exec(line);
    if (opening && opening[2] === ATTACKER) {
      hostileOpened.set(Number(opening[3]), opening[1] as string);
    }
    // Only the real client can prove a session: a replayed proof must never resume one.
    if (line.includes(`resumed from ${ATTACKER}`) && /server: Session [0-9a-f]{8} resumed/.test(line)) {
      hostileResumes.push(line);
    }
    // A link given up for silence, or suspected, while the network works is a stall.
    if (/link silent for|link suspected \(a probe unanswered/.test(line)) stalls.push([clock.now(), line]);
    const closed = /(server|client): Session ([0-9a-f]{8}) closed: (.*?); /.exec(line);
    if (closed) {
      const end = ends.get(closed[2] as string) ?? {};
      const side = closed[1] as "server" | "client";
      end[side] = closed[3] as string;
      end[`${side}At`] = clock.now();
      ends.set(closed[2] as string, end);
      logChanged();
    }
  };
  logTarget = note;
  const tuning = drawTuning(rng);
  const wan = drawWan(rng);
  const admissionKey = rng.chance(0.3) ? "simulated-admission-key-0123" : null;
  const net = new SimNetwork(clock, rng.fork(), wan, (line) => note(`net ${line}`));
  net.setModel(LOOPBACK, LOOPBACK, drawLocal(rng));
  const erpHosts = ["10.1.0.1", "10.1.0.2"].slice(0, rng.int(1, 2));
  const lan = drawLocal(rng);
  for (const host of erpHosts) net.setModel(BROKER, host, lan);
  let pcAddress = PC;
  const pcNetwork: Network = {
    listen: ({ hostname, port }) => net.listen(hostname, port),
    dial: (hostname, port, o) => net.dial(pcAddress, hostname, port, o),
    addresses: () => [LOOPBACK, pcAddress],
  };
  const brokerNetwork: Network = {
    listen: ({ hostname, port }) => net.listen(hostname === "0.0.0.0" ? BROKER : hostname, port),
    dial: (hostname, port, o) => net.dial(BROKER, hostname, port, o),
    addresses: () => [LOOPBACK, BROKER],
  };
  note(
    `world: heartbeat ${tuning.heartbeatMs} ms, link timeout ${tuning.linkTimeoutMs} ms, window ${tuning.resumeTimeoutMs} ms, cap ${tuning.replayBuffer}; WAN ${
      wan.latencyMs.join("-")
    } ms, pieces <= ${wan.maxPiece}, buffers ${wan.capacity}; ERP servers ${erpHosts.length}; admission key ${
      admissionKey ? "set" : "not set"
    }`,
  );

  const server = new BrokerServer(
    serverConfigFromIni(parseIni(
      [
        "[BALANCE_SMART_CLIENT_DESKTOP]",
        `LOCAL_SERVER_PORT = ${BROKER_PORT}`,
        ...erpHosts.map((h, i) => `REMOTE_SERVER_0${i + 1} = ${h} ${ERP_PORT}`),
        `RESUME_TIMEOUT = ${tuning.resumeTimeoutMs}ms`,
        `HEARTBEAT_INTERVAL = ${tuning.heartbeatMs}ms`,
        `LINK_TIMEOUT = ${tuning.linkTimeoutMs}ms`,
        `REPLAY_BUFFER_SIZE = ${tuning.replayBuffer}`,
        "HEALTH_CHECK_INTERVAL = 0",
        "STATUS_PORT = 0",
        "DRAIN_TIMEOUT = 0",
        ...(admissionKey ? [`ADMISSION_KEY = ${admissionKey}`] : []),
      ].join("\n"),
      "sim/appserver.ini",
    )),
    { clock, network: brokerNetwork },
  );
  const client = new BrokerClient(
    clientConfigFromIni(parseIni(
      [
        "[drivers]",
        "active = tcp",
        "[tcp]",
        `server = ${LOOPBACK}`,
        `port = ${SMART_CLIENT_PORT}`,
        "BrokerProxy = 1",
        `BrokerServer = ${BROKER}:${BROKER_PORT}`,
        `REPLAY_BUFFER_SIZE = ${tuning.replayBuffer}`,
        "STATUS_PORT = 0",
        ...(admissionKey ? [`ADMISSION_KEY = ${admissionKey}`] : []),
      ].join("\n"),
      "sim/smartclient.ini",
    )),
    { clock, network: pcNetwork },
  );

  // ERP applications: each accepted connection runs the plan of the session its tag names.
  const changes = new Changes();
  logChanged = () => changes.notify();
  const plans: AppPlan[] = [];
  const results: {
    client?: AppResult;
    erp?: AppResult;
    erpConnections: number;
    port?: number;
    /** The ERP closed the connection at once (a session the world cut on purpose). */
    cutByErp?: boolean;
  }[] = [];
  const erpConns: NetConn[] = [];
  // In some worlds an ERP server now and then closes a session's connection at once.
  const erpDropRate = rng.chance(0.15) ? 0.3 : 0;
  const erpListeners = new Map<string, { close(): void }>();
  const listenErp = (host: string) => {
    const listener = net.listen(host, ERP_PORT);
    erpListeners.set(host, listener);
    (async () => {
      for (;;) {
        const conn = await listener.accept();
        erpConns.push(conn);
        readTag(conn).then(async (index) => {
          const replayed = hostileOpened.get((conn.remoteAddr as Deno.NetAddr).port);
          if (replayed !== undefined) {
            if (admissionKey) problems.push(`a session opened by a hostile peer reached the ERP despite ADMISSION_KEY`);
            // Without an admission key, a replayed opening opens a session:
            // the real client's own if its retried opening proves it (the
            // welcome went to the replayer), else one of the replayer's own,
            // whose bytes are not the real session's.
            // (Its end may not be logged: broker-server budgets the lines of one source's sessions.)
            const endpoint = conn as unknown as SimEndpoint;
            while (!adopted.has(replayed) && !endpoint.connection.peerGone(endpoint)) {
              await new Promise<void>((resolve) => clock.setTimeout(resolve, 100));
            }
            if (!adopted.has(replayed)) {
              note(`ERP ${host}: a connection of a session a hostile peer opened (tag ${index}); closed`);
              conn.close();
              return;
            }
          }
          const pair = index === null ? undefined : results[index];
          if (index === null || !pair) {
            // A connection nobody wrote to (its Smart Client left first): the broker must still close it.
            note(`ERP ${host}: a connection that carries no session (tag ${index})`);
            try {
              conn.close();
            } catch { /* closed already */ }
            if (index !== null) problems.push(`an ERP connection carries tag ${index}, which no session has`);
            return;
          }
          pair.erpConnections++;
          if (pair.erpConnections > 1) {
            // Without an admission key, anyone may open sessions, so a replayed
            // opening is a new session like any other; with one, it must fail.
            note(`ERP ${host}: a second connection carries session ${index}'s bytes (a replayed opening); closed`);
            if (admissionKey) {
              problems.push(`session ${index}: a replayed opening reached the ERP despite ADMISSION_KEY`);
            }
            pair.erpConnections--;
            conn.close();
            return;
          }
          changes.notify();
          if (rng.chance(erpDropRate)) {
            note(`ERP ${host}: closes session ${index}'s connection at once`);
            pair.cutByErp = true;
            pair.erp = {
              received: 0,
              mismatchAt: null,
              sent: 0,
              sawEnd: false,
              error: "closed at once",
              resetByMe: true,
            };
            conn.close();
            return;
          }
          runApp(conn, "erp", plans[index] as AppPlan, clock).then((r) => {
            pair.erp = r;
            note(
              `session ${index}: ERP side done (${r.received} B read, ${r.sent} B written${
                r.error ? `, ${r.error}` : ""
              })`,
            );
            changes.notify();
          });
        });
      }
    })().catch(() => {});
  };
  for (const host of erpHosts) listenErp(host);

  server.listen();
  client.listen();
  let faults = 0;
  let chaos = true;
  // What lifts each fault still in force; the heal runs them all.
  const lifts = new Set<() => void>();
  let healed: () => void = () => {};
  const healedNow = new Promise<void>((resolve) => healed = resolve);
  // The chaos's own timers: cleared at the heal, so that any timer left once
  // the brokers stop is theirs (invariant 3 allows none).
  const chaosTimers = new Set<TimerHandle>();
  const later = (fn: () => void, ms: number) => {
    const timer = clock.setTimeout(() => {
      chaosTimers.delete(timer);
      fn();
    }, ms);
    chaosTimers.add(timer);
  };
  const wait = (ms: number) => Promise.race([new Promise<void>((r) => later(r, ms)), healedNow]);
  // When the network was unwell: new links blocked (intervals) and links
  // struck (instants). Only a window without a healthy stretch may pass.
  let blockedSince: number | null = null;
  const blocked: [number, number][] = [];
  const strikes: number[] = [];
  const blockDials = (fault: "drop" | "refuse" | null) => {
    net.setDialFault(BROKER, fault);
    if (fault !== null) blockedSince ??= clock.now();
    else if (blockedSince !== null) {
      blocked.push([blockedSince, clock.now()]);
      blockedSince = null;
    }
  };
  const faultLoop = (async () => {
    const meanGapMs = rng.pick([200, 1_000, 5_000, 30_000]);
    while (chaos && faults < (options.maxFaults ?? Infinity)) {
      await wait(1 + Math.floor(-Math.log(1 - rng.float()) * meanGapMs));
      if (!chaos) break;
      const links = net.between(pcAddress, BROKER).concat(pcAddress === PC ? [] : net.between(PC, BROKER));
      const kind = rng.pick(["reset", "reset", "close", "freeze", "partition", "refuse", "roam", "erpDown"] as const);
      faults++;
      // A strike is a fault that broke a link between the PC and the broker
      // (a blocked dial counts through `blocked`): one that found no link, or
      // an ERP server that stops accepting, leaves sessions free to resume.
      if (links.length > 0 && kind !== "refuse" && kind !== "erpDown") strikes.push(clock.now());
      switch (kind) {
        case "reset": {
          const link = links.length > 0 ? rng.pick(links) : null;
          note(`fault: reset ${link ? "a link" : "(no link)"}`);
          link?.reset();
          break;
        }
        case "close": {
          const link = links.length > 0 ? rng.pick(links) : null;
          note(`fault: close ${link ? "a link" : "(no link)"} cleanly`);
          link?.closeCleanly();
          break;
        }
        case "freeze": {
          const link = links.length > 0 ? rng.pick(links) : null;
          if (!link) break;
          const ms = rng.pick([100, 1_000, tuning.linkTimeoutMs + 500, 30_000]);
          note(`fault: freeze a link for ${ms} ms`);
          link.freeze();
          const lift = () => {
            lifts.delete(lift);
            link.thaw();
          };
          lifts.add(lift);
          later(lift, ms);
          break;
        }
        case "partition": {
          const beyond = rng.chance(0.05);
          const ms = beyond ? tuning.resumeTimeoutMs + 5_000 : rng.pick([500, 3_000, 15_000]);
          note(`fault: partition for ${ms} ms${beyond ? " (longer than the resume window)" : ""}`);
          for (const link of links) link.freeze();
          blockDials("drop");
          const lift = () => {
            lifts.delete(lift);
            blockDials(null);
            for (const link of links) link.thaw();
          };
          lifts.add(lift);
          await wait(ms);
          if (lifts.has(lift)) lift();
          break;
        }
        case "refuse": {
          const ms = rng.pick([500, 5_000]);
          note(`fault: new links refused for ${ms} ms`);
          blockDials("refuse");
          const lift = () => {
            lifts.delete(lift);
            blockDials(null);
          };
          lifts.add(lift);
          await wait(ms);
          if (lifts.has(lift)) lift();
          break;
        }
        case "erpDown": {
          const host = rng.pick(erpHosts);
          const ms = rng.pick([500, 5_000, 60_000]);
          const listener = erpListeners.get(host);
          if (!listener) break;
          note(`fault: ERP server ${host} stops accepting for ${ms} ms`);
          erpWentDown = true;
          listener.close();
          erpListeners.delete(host);
          const lift = () => {
            lifts.delete(lift);
            listenErp(host);
          };
          lifts.add(lift);
          later(() => lifts.has(lift) && lift(), ms);
          break;
        }
        case "roam": {
          const next = pcAddress === PC ? "10.0.0.3" : PC;
          note(`fault: the PC moves from ${pcAddress} to ${next}; its links go silent for good`);
          for (const link of links) link.freeze();
          pcAddress = next;
          break;
        }
      }
    }
  })();

  // Hostile peers, in half the worlds: garbage, handshakes cut short, links
  // that say nothing, and replays of what a real client sent on a link.
  let hostile = 0;
  const hostileLoop = (async () => {
    if (options.hostile === false || !rng.chance(0.5)) return;
    const meanGapMs = rng.pick([300, 3_000]);
    while (chaos) {
      await wait(1 + Math.floor(-Math.log(1 - rng.float()) * meanGapMs));
      if (!chaos) break;
      const kind = rng.pick(["garbage", "cut", "idle", "replay"] as const);
      const past = net.connections.filter((c) => c.from !== ATTACKER && c.to === BROKER);
      // Half the time the newest link: its proof names offsets the session still holds.
      const source = past.length > 0
        ? (rng.chance(0.5) ? past[past.length - 1] ?? rng.pick(past) : rng.pick(past)).connection.recorded
        : [];
      const recorded = new Uint8Array(source.reduce((n, b) => n + b.length, 0));
      source.reduce((at, b) => (recorded.set(b, at), at + b.length), 0);
      let conn: NetConn;
      try {
        conn = await net.dial(ATTACKER, BROKER, BROKER_PORT, { timeoutMs: 5_000 });
      } catch {
        continue;
      }
      hostile++;
      let bytes: Uint8Array;
      if (kind === "garbage") bytes = Uint8Array.from({ length: rng.int(1, 2_000) }, () => rng.int(0, 255));
      else if (kind === "cut") bytes = recorded.subarray(0, rng.int(0, recorded.length));
      else if (kind === "replay") bytes = recorded;
      else bytes = new Uint8Array(0);
      note(`hostile peer: ${kind} (${bytes.length} bytes)`);
      (async () => {
        try {
          for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
          const sink = new Uint8Array(4_096);
          while (await conn.read(sink) !== null) { /* whatever the server says */ }
        } catch { /* reset or refused: fine */ }
        try {
          conn.close();
        } catch { /* closed already */ }
      })();
    }
  })();

  // Smart Client applications, opened one after another (so that the ERP knows which is which).
  const count = rng.int(1, options.maxSessions ?? 6);
  const maxBytes = options.maxBytes ?? rng.pick([20_000, 200_000, 200_000, 1_000_000]);
  const opener = (async () => {
    for (let i = 0; i < count; i++) {
      await new Promise<void>((r) => clock.setTimeout(r, rng.int(0, 2_000)));
      const plan = planApp(rng, maxBytes);
      plans.push(plan);
      results.push({ erpConnections: 0 });
      note(`session ${i}: ${describePlan(plan)}`);
      const pair = results[i] as (typeof results)[number];
      let conn: NetConn;
      try {
        conn = await net.dial(LOOPBACK, LOOPBACK, SMART_CLIENT_PORT, { timeoutMs: 10_000 });
      } catch (err) {
        problems.push(`session ${i}: Smart Client cannot connect to broker-client: ${(err as Error).message}`);
        continue;
      }
      pair.port = (conn.localAddr as Deno.NetAddr).port;
      runApp(conn, "client", plan, clock, sessionTag(i)).then((r) => {
        pair.client = r;
        note(
          `session ${i}: Smart Client side done (${r.received} B read, ${r.sent} B written${
            r.error ? `, ${r.error}` : ""
          })`,
        );
        changes.notify();
      });
      if (rng.chance(0.5)) await changes.until(() => pair.erpConnections > 0 || pair.client !== undefined);
    }
  })();

  const allDone = () => results.length === count && results.every((r) => r.client && (r.erp || r.erpConnections === 0));
  const appsDone = opener.then(() => changes.until(allDone));
  // The chaos lasts a while, then the network heals and stays healed.
  const chaosMs = rng.pick([5_000, 60_000, 300_000]);
  const healAt = clock.now() + chaosMs;
  let isHealed = false;
  const heal = () => {
    if (isHealed) return;
    isHealed = true;
    chaos = false;
    for (const timer of chaosTimers) clock.clear(timer);
    chaosTimers.clear();
    for (const lift of [...lifts]) lift();
    healed();
    note("the network heals for good");
  };
  const healTimer = clock.setTimeout(heal, chaosMs);
  let finished = false;
  appsDone.then(() => finished = true);
  // Bounded: the chaos, a resume window, and generous time for the traffic itself.
  const limit = clock.now() + chaosMs + tuning.resumeTimeoutMs + 600_000;
  const outcome = await runUntil(clock, () => finished, limit);
  if (outcome !== "done") {
    const pending = results.map((r, i) => (!r.client || (!r.erp && r.erpConnections > 0)) ? i : -1).filter((i) =>
      i >= 0
    );
    problems.push(
      `hang: the applications did not finish (${outcome}; sessions still running: ${
        pending.join(", ")
      }; broker-server holds ${server.sessions.length}, broker-client ${client.sessionCount})`,
    );
  }
  chaos = false;
  // Ended sessions settle on both sides: the other broker may learn of an
  // end only when its own timers run out (a window, the unconfirmed hold).
  const drainBy = clock.now() + Math.max(tuning.resumeTimeoutMs, 30_000) + tuning.linkTimeoutMs + 10_000;
  const drained = await runUntil(clock, () => server.sessions.length === 0 && client.sessionCount === 0, drainBy);
  if (drained !== "done" && outcome === "done") {
    problems.push(
      `the brokers kept sessions after their applications were done: broker-server ${server.sessions.length}, broker-client ${client.sessionCount}`,
    );
  }
  if (blockedSince !== null) blocked.push([blockedSince, clock.now()]);
  // How long a healthy network takes to carry a session again: notice a dead
  // link, wait out the backoff, connect and prove the session.
  const healthyMs = tuning.linkTimeoutMs + 3_000 + 8 * wan.latencyMs[1];
  const healthyStretch = (from: number, to: number): number => {
    const marks: [number, number][] = [
      ...blocked.filter(([a, b]) => b > from && a < to),
      ...strikes.filter((t) => t > from && t < to).map((t): [number, number] => [t, t]),
    ].sort((x, y) => x[0] - y[0]);
    let longest = 0;
    let at = from;
    for (const [a, b] of marks) {
      longest = Math.max(longest, a - at);
      at = Math.max(at, b);
    }
    return Math.max(longest, to - at);
  };

  // Invariants 1 and 4: every byte, unless a session ended early for a
  // reason both brokers state (its window expired during an outage the
  // world made, an application reset its end); even then, what arrived is
  // a prefix of what was sent.
  /**
   * Whether a reason is a fair early end. A window may pass only if the
   * network was never healthy long enough; an application's connection may
   * fail only if `localFault` (an application reset it, the ERP hung up at
   * once, or the world's ERP closed it as a hostile peer's); a
   * reason passed on from the other side ("peer ended the session: R",
   * "cannot resume: ... has ended: R") only if R is (a window in R is judged
   * where it was logged); any other "cannot resume" only if broker-server had
   * forgotten the session (its window expired: judged on its own line).
   */
  const fair = (reason: string, at: number, localFault: boolean, passedOn = false): boolean => {
    const inner = /^peer ended the session: (.*)$/.exec(reason) ?? /^cannot resume: .*? has ended: (.*)$/.exec(reason);
    if (inner) return fair(inner[1] as string, at, localFault, true);
    if (/connection failed|closed the connection before the session opened/.test(reason)) return localFault;
    if (!EARLY_END.test(reason)) return false;
    if (/cannot resume/.test(reason)) return /is not known to this broker-server/.test(reason);
    const window = /resume window of (\d+) s expired/.exec(reason);
    if (!window || passedOn) return true;
    const stretch = healthyStretch(at - Number(window[1]) * 1000, at);
    return stretch < healthyMs;
  };
  for (const [i, pair] of results.entries()) {
    const plan = plans[i] as AppPlan;
    if (!pair.client || (pair.erpConnections > 0 && !pair.erp)) continue;
    const id = idByPort.get(pair.port ?? -1);
    const end = id ? ends.get(id) : undefined;
    // A session that never reached the ERP may have been reset in an ERP server's queue as it went down.
    const localFault = pair.client.resetByMe || pair.erp?.resetByMe === true || pair.cutByErp === true ||
      (pair.erpConnections === 0 && erpWentDown);
    // An expired window is a reason only if the world blocked new links for about that long.
    // broker-server's window may run out after broker-client gave up on it: fair if the client's end was.
    // broker-client told by broker-server that the session is closed passes on broker-server's own end.
    const toldClosed = end?.client !== undefined && /Cannot resume a closed session/.test(end.client) &&
      end.server !== undefined && fair(end.server, end.serverAt ?? 0, localFault) &&
      (end.serverAt ?? Infinity) <= (end.clientAt ?? 0);
    const clientFair = end?.client !== undefined && (fair(end.client, end.clientAt ?? 0, localFault) || toldClosed);
    const serverFair = end?.server !== undefined &&
      (fair(end.server, end.serverAt ?? 0, localFault) ||
        (clientFair && fair(end.server, end.serverAt ?? 0, localFault, true) &&
          (end.clientAt ?? Infinity) <= (end.serverAt ?? 0)));
    const stated = clientFair && serverFair;
    if (pair.erpConnections === 0) {
      // Fine when Smart Client left at once, or broker-client said why it gave up.
      const said = (clientLines.get(pair.port ?? -1) ?? []).some((l) => /no broker server|refused|rejected/i.test(l));
      if (!pair.client.resetByMe && !said && !stated) {
        problems.push(
          `session ${i} (${id ?? "no id"}): never reached an ERP server (ends: server "${
            end?.server ?? "none"
          }", client "${end?.client ?? "none"}")`,
        );
      }
      continue;
    }
    const issues = checkPair(plan, pair.client, pair.erp as AppResult);
    if (issues.length === 0) continue;
    if (pair.cutByErp) {
      // The ERP hung up at once: Smart Client gets a prefix (nothing, really) and an end.
      problems.push(...issues.filter((p) => /wrong byte/.test(p) || readMore(p)).map((p) => `session ${i}: ${p}`));
      continue;
    }
    const wrong = issues.filter((p) => /wrong byte/.test(p) || readMore(p));
    const reported = stated ? wrong : issues;
    problems.push(
      ...reported.map((p) =>
        `session ${i} (${plan.kind}, ${id ?? "no id"}): ${p} (ends: server "${end?.server ?? "none"}", client "${
          end?.client ?? "none"
        }")`
      ),
    );
  }

  // Hostile peers: a replayed resume proof (or any proof from the attacker's
  // host) must be refused; one that resumes a session hands the attacker its link.
  if (hostileResumes.length > 0) {
    problems.push(`a hostile peer resumed ${hostileResumes.length} sessions, first: ${hostileResumes[0]}`);
  }

  // Invariant 2, sharper: on the healed network (lossless, prompt), no link
  // may go silent or leave a probe unanswered: a session that stops reading
  // its link (a head-of-line stall) only limps on from resume to resume.
  // Links frozen by the chaos get a link timeout and a heartbeat to recover.
  const settledAt = healAt + 2 * tuning.linkTimeoutMs + tuning.heartbeatMs + 4 * wan.latencyMs[1];
  const lateStalls = stalls.filter(([at]) => at > settledAt);
  if (lateStalls.length > 0) {
    problems.push(
      `stall: ${lateStalls.length} links silent or unanswered on the healed network, first at ${
        ((lateStalls[0]?.[0] ?? 0) - start) / 1000
      } s: ${lateStalls[0]?.[1]}`,
    );
  }

  // Invariant 3: stop both brokers; nothing may be left. The chaos ends
  // first (its timers too) if the applications finished before the heal.
  clock.clear(healTimer);
  heal();
  const stopped = Promise.all([client.close(), server.close("simulation over", 0)]);
  let closed = false;
  stopped.then(() => closed = true);
  const stopOutcome = await runUntil(clock, () => closed, clock.now() + 60_000);
  if (stopOutcome !== "done") problems.push(`the brokers did not stop (${stopOutcome})`);
  let faultsOver = false;
  Promise.all([faultLoop, hostileLoop]).finally(() => faultsOver = true);
  await runUntil(clock, () => faultsOver, clock.now() + 3_600_000);
  await settle();
  if (server.sessions.length > 0) {
    problems.push(`broker-server still holds ${server.sessions.length} sessions after stopping`);
  }
  if (client.sessionCount > 0) {
    problems.push(`broker-client still holds ${client.sessionCount} sessions after stopping`);
  }
  // Let the last timers run (applications' pauses, the network's deliveries), then none may remain.
  // Only the network's deliveries and the applications' pauses may still be
  // due (well under a second): a broker timer still set after both brokers
  // stopped is a timer a session or a registry left behind, however far off.
  await runUntil(clock, () => clock.pending === 0, clock.now() + LAST_TIMERS_MS);
  if (clock.pending > 0) problems.push(`${clock.pending} timers still set after everything stopped`);
  // Every pooled buffer's holders let go of it (see buffer_pool.ts).
  const leased = PoolLease.live - leasesBefore;
  if (leased !== 0) problems.push(`${leased} pooled buffers still held after everything stopped`);
  const hostileOpen = net.connections.filter((c) => c.from === ATTACKER && !c.connection.finished);
  if (hostileOpen.length > 0) problems.push(`${hostileOpen.length} hostile links still open after stopping`);
  // The ERP applications close their side when they see the end; broker-server must have closed the other.
  const openErp = erpConns.filter((c) => !(c as unknown as { connection: { finished: boolean } }).connection.finished);
  if (openErp.length > 0 && outcome === "done") {
    problems.push(`${openErp.length} ERP connections still open after stopping`);
  }
  return {
    seed: options.seed,
    problems,
    trace,
    simulatedMs: clock.now() - start,
    sessions: count,
    faults,
    hostile,
  };
}

/** How long after both brokers stopped the last timers (the network's, the applications') may still run (ms). */
const LAST_TIMERS_MS = 10_000;

/** Reasons for which a session may end before its applications are done. */
const EARLY_END =
  /resume window .* expired|cannot resume|ERP server connection failed|Smart Client connection failed|peer ended the session|no broker server|rejected|refused/;

/** Whether a "read X of Y bytes" problem says more was read than sent (never allowed). */
function readMore(problem: string): boolean {
  const m = /read (\d+) of (\d+) bytes/.exec(problem);
  return m !== null && Number(m[1]) > Number(m[2]);
}
