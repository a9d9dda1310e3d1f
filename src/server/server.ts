/**
 * broker-server: accepts links from broker-clients, opens a connection to an
 * ERP server for each new session, and keeps sessions (with their ERP
 * connections) alive while their clients are away, until the resume window
 * closes. Ended sessions leave a small tombstone for one window so that a
 * client that missed the ending learns how it ended. This module listens,
 * wires the parts together, reloads and drains; handshake.ts reads what a
 * link says, sessions.ts acts on it, registry.ts holds the sessions.
 * @module
 */

import type { ServerConfig } from "../config/server_config.ts";
import { formatHostPort, type HostPort } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import { CLIENT_HANDSHAKE_LIMITS } from "../protocol/frames.ts";
import { importAdmissionKey } from "../protocol/resume_auth.ts";
import { RateLimiter, sourceOf } from "./rate_limit.ts";
import { LinkGate } from "./link_gate.ts";
import { Link } from "../session/link.ts";
import { type Clock, systemClock, type TimerHandle } from "../session/clock.ts";
import { type NetConn, type NetListener, type Network, systemNetwork } from "../session/network.ts";
import { describeError, within } from "../session/transport.ts";
import { type Backend, Balancer } from "./balancer.ts";
import { HealthChecker } from "./health.ts";
import { buildStatus, type ClusterStatus, erpTraffic, ServerStats, type StatusSnapshot } from "./stats.ts";
import { type HistorySnapshot, ServerHistory } from "./history.ts";
import { Reloader } from "./reloading.ts";
import { StatusPage } from "./status_page.ts";
import { acceptLoop, type AcceptNote, openFileLimit, SERVER_DESCRIPTOR_ADVICE } from "../ops/accept_errors.ts";
import { SourceLogBudgets } from "../ops/log_budget.ts";
import { readHello } from "./handshake.ts";
import { type ServerSessionInfo, SessionRegistry } from "./registry.ts";
import { SessionDesk } from "./sessions.ts";
import { Cluster, type RelayOutcome, takeOver } from "../cluster/cluster.ts";
import { newTag, type Predecessor, tagOf } from "../cluster/wire.ts";
import {
  concatBytes,
  encodeHelloNew,
  encodeHelloResume,
  encodePreface,
  RejectCode,
  toHex,
} from "../protocol/frames.ts";
import type { OpenRequest, ResumeRequest } from "./handshake.ts";
import { VERSION } from "../version.ts";

export { type ServerSessionInfo, shortId } from "./registry.ts";

const log = logger("server");

/**
 * A link must have sent its hello within this (or HANDSHAKE_TIMEOUT when
 * shorter): broker-client sends it right after connecting, so only links
 * that say nothing, or dribble, are cut short by it.
 */
const HELLO_TIMEOUT_MS = 2_000;

/** How often the history samples live sessions, ERP servers up and bytes (ms): a few samples in each minute. */
const HISTORY_SAMPLE_MS = 20_000;

/** How long a reloaded file that weakens security must read the same before it is applied (ms). */
export const DEFAULT_RELOAD_SETTLE_MS = 1_000;

/** Options of a BrokerServer. */
export interface BrokerServerOptions {
  /** Time and timers (the simulation's virtual clock); default systemClock. */
  clock?: Clock;
  /** Clock in ms only, with the system's timers (tests that shift the time); ignored with `clock`. */
  now?: () => number;
  /** Sockets (the simulation's network); default systemNetwork. */
  network?: Network;
  /** Settle time of a reload that weakens security (ms); default DEFAULT_RELOAD_SETTLE_MS. */
  reloadSettleMs?: number;
  /**
   * Applies reloaded log settings (CONSOLELOG, LOG_*); the program that set
   * up logging provides it. Without it, those keys take a restart.
   */
  applyLogging?: (config: ServerConfig) => Promise<void>;
}

/** How long a process taking over waits for the old one to let go of the ports (ms). */
const TAKEOVER_BIND_MS = 10_000;

/** The error of a port that cannot be bound, with Deno's as its cause. */
function listenError(at: HostPort, err: unknown, key = "LOCAL_SERVER_PORT"): Error {
  const hint = err instanceof Deno.errors.AddrInUse
    ? `another program (or another broker-server) already uses this port (${key})`
    : describeError(err);
  return new Error(`Cannot listen on ${formatHostPort(at)}: ${hint}`, { cause: err });
}

/** An address to dial for one that is listened on: the wildcard addresses are reached on the loopback. */
function dialable(hostname: string): string {
  if (hostname === "0.0.0.0") return "127.0.0.1";
  if (hostname === "::" || hostname === "[::]") return "::1";
  return hostname;
}

/** A process that took over from this one, and what this one waits for before it exits. */
interface HandoverState {
  /** The new process. */
  by: { version: string; pid: number };
  /** When it took over (clock ms). */
  since: number;
  /** Resolved when it says that it listens. */
  settled: PromiseWithResolvers<void>;
  /** Resolves once this process may exit. */
  done: Promise<void>;
}

/** The broker-server: listener, handshakes and the session registry. */
export class BrokerServer {
  #config: ServerConfig;
  #clock: Clock;
  #now: () => number;
  #network: Network;
  #listener: NetListener | null = null;
  #registry: SessionRegistry;
  #desk: SessionDesk;
  #gate: LinkGate;
  #shutdown = new AbortController();
  #acceptLoop: Promise<void> | null = null;
  #balancer: Balancer;
  #healthChecker: HealthChecker;
  #stats: ServerStats;
  #history: ServerHistory;
  #historyTimer: TimerHandle | undefined;
  #statusPage = new StatusPage(() => this.status(), () => this.history());
  #stopping = false;
  /** Called when the last live session has ended (a drain, a handover); each waiter removes itself. */
  #drainWaiters = new Set<() => void>();
  #rates: RateLimiter;
  #admissionKey: Promise<CryptoKey | null>;
  #reloader: Reloader;
  #tag = newTag();
  #cluster: Cluster | null = null;
  #handover: HandoverState | null = null;
  #handedOver = Promise.withResolvers<void>();
  #tookOver = false;
  #openingQuestions: RateLimiter;

  /** Creates a server for `config`; call listen() to start. */
  constructor(config: ServerConfig, options: BrokerServerOptions = {}) {
    this.#config = config;
    this.#clock = options.clock ?? (options.now ? { ...systemClock, now: options.now } : systemClock);
    const clock = this.#clock;
    this.#now = () => clock.now();
    this.#network = options.network ?? systemNetwork;
    this.#balancer = new Balancer(config.sortMethod, config.remoteServers, config.health, this.#now);
    this.#healthChecker = new HealthChecker(this.#balancer, config.tuning.connectTimeoutMs, {
      clock,
      network: this.#network,
    });
    this.#stats = new ServerStats(this.#now());
    this.#history = new ServerHistory(this.#now());
    this.#rates = new RateLimiter(config.limits.newSessionsPerMinute, this.#now);
    this.#openingQuestions = new RateLimiter(config.limits.newSessionsPerMinute, this.#now);
    this.#gate = new LinkGate({
      now: this.#now,
      stats: this.#stats,
      limits: () => this.#config.limits,
      linkTls: () => this.#config.tls !== null,
    });
    this.#admissionKey = config.admissionKey ? importAdmissionKey(config.admissionKey) : Promise.resolve(null);
    this.#reloader = new Reloader({
      current: () => this.#config,
      running: () => formatHostPort(this.#listener ? this.address : this.#config.listen),
      signal: this.#shutdown.signal,
      settleMs: options.reloadSettleMs ?? DEFAULT_RELOAD_SETTLE_MS,
      applyLogging: options.applyLogging ?? null,
      apply: (next, old, applied) => this.#applyConfig(next, old, applied),
      now: this.#now,
    });
    this.#registry = new SessionRegistry({ clock });
    this.#desk = new SessionDesk({
      config: () => this.#config,
      clock,
      network: this.#network,
      registry: this.#registry,
      balancer: this.#balancer,
      stats: this.#stats,
      history: this.#history,
      shutdown: this.#shutdown.signal,
      stopping: () => this.#stopping,
      admissionKey: () => this.#admissionKey,
      rates: () => this.#rates,
      reject: (link, code, reason) => this.#gate.reject(link, code, reason),
      adopt: (link) => this.#gate.adopt(link, this.#config.limits.maxFrameBytes),
      resuming: (link, id) => this.#gate.resuming(link, id),
      /** A client can open and abort sessions at will: 20 lines of abnormal ends per address per 10 s at most. */
      abnormalEndLog: new SourceLogBudgets(20, 10_000, { now: this.#now }),
      drained: () => {
        for (const waiter of [...this.#drainWaiters]) waiter();
      },
      idTag: this.#tag,
    });
  }

  /** Where the status page listens, when it does. */
  get statusAddress(): HostPort | null {
    return this.#statusPage.address;
  }

  /** The last 24 hours: the status page's charts and /history.json. */
  history(): HistorySnapshot {
    this.#sampleHistory();
    return this.#history.snapshot(this.#now());
  }

  /** Samples the live figures into the history: every HISTORY_SAMPLE_MS, and whenever the page reads it. */
  #sampleHistory(): void {
    let attached = 0;
    let bytesToClients = this.#stats.endedBytesToClient;
    let bytesToErp = this.#stats.endedBytesToErp;
    for (const e of this.#registry.values()) {
      if (e.session.state === "attached") attached++;
      const traffic = erpTraffic(e.session.stats);
      bytesToClients += traffic.toClient;
      bytesToErp += traffic.toErp;
    }
    this.#history.sample(this.#now(), {
      attached,
      detached: this.#registry.size - attached,
      serversUp: this.#balancer.backends.filter((b) => b.health === "up" && !b.draining).length,
      bytesToClients,
      bytesToErp,
    });
  }

  /** The figures of the status page, /status.json and /metrics. */
  status(): StatusSnapshot {
    return buildStatus({
      now: this.#now(),
      stats: this.#stats,
      listen: this.#listener ? formatHostPort(this.address) : formatHostPort(this.#config.listen),
      config: this.#config,
      reloadedAt: this.#reloader.reloadedAt,
      pendingRestart: this.#reloader.pendingRestart,
      sortMethod: this.#balancer.method,
      backends: this.#balancer.backends,
      sessions: this.sessions,
      linksInHandshake: this.#gate.size,
      cluster: this.#clusterStatus(),
    });
  }

  #clusterStatus(): ClusterStatus | null {
    const cluster = this.#cluster;
    if (!cluster) return null;
    const counts = cluster.counts;
    const address = cluster.address;
    const handover = this.#handover;
    return {
      tag: cluster.tag,
      listen: address && !cluster.handedOver ? formatHostPort(address) : null,
      handedOverTo: handover ? { ...handover.by, since: new Date(handover.since).toISOString() } : null,
      peers: cluster.peers.map((p) => ({
        name: p.name,
        address: p.address,
        reachable: p.reachable,
        version: p.info?.version ?? null,
        pid: p.info?.pid ?? null,
        sessions: p.info?.sessions ?? null,
        error: p.error,
      })),
      relayedOut: counts.relayedOut,
      relayedIn: counts.relayedIn,
      relayFailed: counts.relayFailed,
      relaying: counts.relaying,
      relayBytesToHolder: counts.bytes.toHolder,
      relayBytesToClient: counts.bytes.toClient,
    };
  }

  /** The ERP servers with their state and counters. */
  get backends(): readonly Backend[] {
    return this.#balancer.backends;
  }

  /** The configuration in force (changes on reload). */
  get config(): ServerConfig {
    return this.#config;
  }

  /**
   * Re-reads the configuration file and applies it; RELOAD_RULES (reload.ts)
   * says when each key takes effect. Added servers join, removed ones drain;
   * the status page and its key, limits, health checks and (with
   * applyLogging) the log settings change at once; timers and the admission
   * key apply to new sessions. Keys that take a restart or a re-install are
   * logged by name and keep their running value. An invalid file changes
   * nothing; a file that weakens security is applied only once it has read
   * the same for the settle time. Reloads run one at a time. Resolves true
   * when the file was applied.
   */
  reload(): Promise<boolean> {
    return this.#reloader.reload();
  }

  /** Applies a reloaded `next` (see reload()); resolves to every line saying what changed. */
  async #applyConfig(next: ServerConfig, old: ServerConfig, applied: string[]): Promise<string[]> {
    const changes = [...this.#balancer.update(next.sortMethod, next.remoteServers, next.health), ...applied];
    if (next.admissionKey !== old.admissionKey) {
      this.#admissionKey = next.admissionKey ? importAdmissionKey(next.admissionKey) : Promise.resolve(null);
    }
    if (next.limits.newSessionsPerMinute !== old.limits.newSessionsPerMinute) {
      this.#rates = new RateLimiter(next.limits.newSessionsPerMinute, this.#now);
      this.#openingQuestions = new RateLimiter(next.limits.newSessionsPerMinute, this.#now);
    }
    this.#config = next;
    if (this.#listener) this.#healthChecker.start(next.health.intervalMs, next.tuning.connectTimeoutMs);
    if (!await this.#statusPage.apply(old.status, next.status, this.#listener !== null && !this.#stopping)) {
      // The page stayed where it was: the line below must not say it moved.
      for (const key of ["STATUS_PORT ", "STATUS_ADDRESS "]) {
        const at = changes.findIndex((c) => c.startsWith(key));
        if (at >= 0) changes.splice(at, 1);
      }
    }
    return changes;
  }

  /** Where the server listens (the real port when configured with 0). */
  get address(): HostPort {
    if (!this.#listener) throw new Error("Cannot tell the address of a server that is not listening");
    const addr = this.#listener.addr as Deno.NetAddr;
    return { hostname: addr.hostname, port: addr.port };
  }

  /** Live sessions (not tombstones). */
  get sessions(): ServerSessionInfo[] {
    return [...this.#registry.values()];
  }

  /**
   * Binds the listening socket (and, with CLUSTER_KEY, the cluster's) and
   * starts accepting links; `predecessors` are the processes this one took
   * over from (see start()). Throws when a port cannot be bound; the
   * error's cause is Deno's (AddrInUse, ...).
   */
  listen(predecessors: Predecessor[] = []): void {
    const tls = this.#config.tls;
    this.#listener = this.#bindListener();
    try {
      this.#cluster = this.#startCluster(predecessors);
    } catch (err) {
      this.#listener.close();
      this.#listener = null;
      throw err;
    }
    log.info("broker-server listening on {address}{tls} (version {version}); ERP servers: {servers}", {
      version: VERSION,
      address: formatHostPort(this.address),
      tls: tls ? " (TLS)" : "",
      servers: this.#config.remoteServers.map((s) => `${s.name}=${formatHostPort(s)}`).join(", "),
    });
    this.#acceptLoop = this.#accept(this.#listener);
    this.#healthChecker.start(this.#config.health.intervalMs);
    this.#sampleHistory();
    this.#historyTimer = this.#clock.setInterval(() => this.#sampleHistory(), HISTORY_SAMPLE_MS);
    this.#statusPage.start(this.#config.status);
  }

  /** Binds LOCAL_SERVER_ADDRESS:LOCAL_SERVER_PORT (with the link's TLS); throws with Deno's error as the cause. */
  #bindListener(): NetListener {
    const { hostname, port } = this.#config.listen;
    const tls = this.#config.tls;
    let cert = "";
    let key = "";
    if (tls) {
      try {
        cert = Deno.readTextFileSync(tls.certFile);
        key = Deno.readTextFileSync(tls.keyFile);
      } catch (err) {
        throw new Error(`Cannot read the link's TLS certificate or key (${(err as Error).message})`);
      }
    }
    try {
      return this.#network.listen({ hostname, port, ...(tls ? { tls: { cert, key } } : {}) });
    } catch (err) {
      throw listenError({ hostname, port }, err);
    }
  }

  /** The cluster member of this process, listening; null without CLUSTER_KEY. */
  #startCluster(predecessors: Predecessor[]): Cluster | null {
    const config = this.#config.cluster;
    if (!config) return null;
    const cluster = new Cluster({
      config,
      network: this.#network,
      tag: toHex(this.#tag),
      version: VERSION,
      sessions: () => this.#registry.size,
      holdsOpening: (token) => this.#registry.orphan(token) !== undefined || this.#registry.connecting(token),
      adopt: (conn) => this.#handshake(conn),
      takenOver: (by) => this.#takenOver(by),
      settled: () => this.#handover?.settled.resolve(),
      predecessors,
    });
    try {
      cluster.listen();
    } catch (err) {
      throw listenError(config.listen, err, "CLUSTER_PORT");
    }
    return cluster;
  }

  /**
   * Starts: listen(), but when LOCAL_SERVER_PORT is taken and CLUSTER_KEY is
   * set, asks the broker-server there to hand over (docs/cluster.md): it
   * stops accepting and keeps its sessions, this one binds the ports as it
   * lets go and relays the links of its sessions to it.
   */
  async start(): Promise<void> {
    const cluster = this.#config.cluster;
    try {
      return this.listen();
    } catch (err) {
      if (!cluster || !((err as Error).cause instanceof Deno.errors.AddrInUse)) throw err;
    }
    const at = { hostname: dialable(cluster.listen.hostname), port: cluster.listen.port };
    let predecessors: Predecessor[];
    try {
      predecessors = await takeOver(at, cluster.key, { network: this.#network, version: VERSION });
    } catch (err) {
      throw new Error(
        `Cannot listen on ${
          formatHostPort(this.#config.listen)
        }: another program uses this port, and no broker-server handed over to this one (asked on ${
          formatHostPort(at)
        }: ${describeError(err)})`,
      );
    }
    const [first] = predecessors;
    log.info(
      "Taking over from broker-server {version} (pid {pid}): it keeps its sessions, this process relays their links to it",
      {
        version: first?.version ?? "?",
        pid: first?.pid ?? "?",
      },
    );
    const deadline = this.#now() + TAKEOVER_BIND_MS;
    this.#tookOver = true;
    for (;;) {
      try {
        this.listen(predecessors);
        await this.#cluster?.notifySettled();
        return;
      } catch (err) {
        if (!((err as Error).cause instanceof Deno.errors.AddrInUse) || this.#now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /**
   * A new process took over: the status page and the listener go (it binds
   * them next); sessions stay. This process is done once its sessions have
   * ended (or HANDOVER_TIMEOUT passed) and the new one has said that it
   * runs. When it never says so, and the port is still free after
   * TAKEOVER_BIND_MS and a margin, this one takes the ports back.
   */
  async #takenOver(by: { version: string; pid: number }): Promise<void> {
    const since = this.#now();
    await this.#statusPage.shutdown();
    const listener = this.#listener;
    this.#listener = null;
    listener?.close();
    await this.#acceptLoop;
    const settled = Promise.withResolvers<void>();
    const handover = { by, since, settled, done: Promise.resolve() };
    handover.done = this.#waitForSessions(handover).then(() => settled.promise);
    this.#handover = handover;
    const check = this.#clock.setTimeout(() => this.#reclaimIfAbandoned(handover), TAKEOVER_BIND_MS + 5_000);
    handover.settled.promise.then(() => this.#clock.clear(check));
    handover.done.then(() => {
      if (this.#handover === handover) this.#handedOver.resolve();
    });
  }

  /**
   * Resolves once every session has ended and their clients have had time
   * to learn how (a client that missed the last CLOSE resumes to hear it
   * from the tombstone), or HANDOVER_TIMEOUT has passed (logged).
   */
  async #waitForSessions(handover: HandoverState): Promise<void> {
    const limit = this.#config.cluster?.handoverTimeoutMs ?? 0;
    const deadline = this.#now() + limit;
    if (this.#registry.size > 0) {
      const ended = await this.#untilDrained(limit);
      if (!ended) {
        // Taken back meanwhile (the new process never listened): nothing to end.
        if (this.#handover !== handover) return;
        log.warn(
          "HANDOVER_TIMEOUT ({seconds} s) has passed since broker-server {version} took over: ending the {count} sessions left",
          { seconds: limit / 1000, version: handover.by.version, count: this.#registry.size },
        );
        return;
      }
    }
    const tuning = this.#config.tuning;
    const graceEnd = Math.min(
      deadline,
      this.#now() + Math.min(tuning.resumeTimeoutMs, 2 * tuning.linkTimeoutMs + 5_000),
    );
    while (this.#registry.tombstoneCount > 0 && this.#now() < graceEnd && !this.#stopping) {
      await new Promise<void>((resolve) => this.#clock.setTimeout(() => resolve(), 250));
    }
  }

  /** Resolves true once the last live session has ended, false after `ms`. */
  async #untilDrained(ms: number): Promise<boolean> {
    let waiter: () => void = () => {};
    const drained = new Promise<void>((resolve) => waiter = resolve);
    this.#drainWaiters.add(waiter);
    try {
      return await within(drained, ms, this.#clock);
    } finally {
      this.#drainWaiters.delete(waiter);
    }
  }

  /** The new process never said it runs: when nobody listens on LOCAL_SERVER_PORT, this one takes the ports back. */
  #reclaimIfAbandoned(handover: HandoverState): void {
    if (this.#handover !== handover || this.#stopping) return;
    let listener: NetListener;
    try {
      listener = this.#bindListener();
    } catch {
      // Taken: the new process runs, it just could not tell us.
      handover.settled.resolve();
      return;
    }
    log.warn(
      "broker-server {version} (pid {pid}) took over but never started listening: this process takes LOCAL_SERVER_PORT back",
      handover.by,
    );
    this.#handover = null;
    this.#listener = listener;
    try {
      this.#cluster?.reclaim();
    } catch (err) {
      log.error("Cannot listen on CLUSTER_PORT again: {error}", { error: describeError(err) });
    }
    this.#acceptLoop = this.#accept(listener);
    this.#statusPage.start(this.#config.status);
  }

  /** Whether this process took over from another when it started. */
  get tookOver(): boolean {
    return this.#tookOver;
  }

  /**
   * Resolves once a new process has taken over from this one and the last
   * session here has ended (or HANDOVER_TIMEOUT passed): time to close().
   */
  get handedOver(): Promise<void> {
    return this.#handedOver.promise;
  }

  #accept(listener: NetListener): Promise<void> {
    const options = {
      what: "links",
      advice: SERVER_DESCRIPTOR_ADVICE,
      openFileLimit,
      clock: this.#clock,
      signal: this.#shutdown.signal,
      log: (note: AcceptNote) => log[note.level](note.message, note.fields),
    };
    return acceptLoop(listener, options, (conn) => this.#handshake(conn));
  }

  async #handshake(conn: NetConn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    // Until it belongs to a session, a link may send only what the handshake reads (see LinkGate.adopt).
    const link = new Link(conn, formatHostPort(remote), { ...CLIENT_HANDSHAKE_LIMITS, clock: this.#clock });
    const source = sourceOf(remote.hostname);
    this.#gate.admit(link, source);
    const started = this.#now();
    const deadline = started + this.#config.tuning.handshakeTimeoutMs;
    const helloBy = started + Math.min(this.#config.tuning.handshakeTimeoutMs, HELLO_TIMEOUT_MS);
    const readBy = (by: number) => (what: string) => link.readFrameWithin(Math.max(1, by - this.#now()), what);
    try {
      const hello = await readHello(link, { read: readBy(helloBy), spoke: () => this.#gate.spoke(link) });
      if (hello?.kind === "open") {
        if (!await this.#openingRelayed(link, source, hello)) {
          await this.#desk.open(link, source, hello, readBy(deadline));
        }
      } else if (hello?.kind === "resume") {
        if (!await this.#relayed(link, hello)) await this.#desk.resume(link, hello, readBy(deadline));
      } else if (hello?.kind === "refused") await this.#gate.reject(link, hello.code, hello.reason);
    } catch (err) {
      this.#gate.dropped(link, err);
    } finally {
      this.#gate.finish(link);
    }
  }

  /**
   * A resume of a session that another process holds goes to it (see
   * src/cluster/): true when the link was passed on, or refused because its
   * holder cannot be reached; false when the session is ours to answer.
   */
  async #relayed(link: Link, hello: ResumeRequest): Promise<boolean> {
    const cluster = this.#cluster;
    const tag = tagOf(hello.sessionId);
    if (!cluster || tag === cluster.tag) return false;
    const id = toHex(hello.sessionId);
    if (this.#registry.get(id) || this.#registry.tombstone(id)) return false;
    const outcome: RelayOutcome = await cluster.relay(tag, link.peer, async () => {
      const taken = await link.release();
      if (!taken) return null;
      const hi = encodeHelloResume(hello.sessionId, hello.clientNonce);
      return { transport: taken.transport, preamble: concatBytes(encodePreface(), hi, taken.rest) };
    });
    if (outcome.kind === "relayed") return true;
    if (link.closed) return true;
    const code = outcome.kind === "unknown" ? RejectCode.UnknownSession : RejectCode.Unavailable;
    await this.#gate.reject(link, code, `Session ${id.slice(0, 8)}: ${outcome.reason}`);
    return true;
  }

  /**
   * A new session's hello that another process of the cluster holds or is
   * opening (a retry whose WELCOME was lost, the first attempt having
   * reached that one) goes to it, so that one opening never makes two ERP
   * connections: true when the link was passed on or refused here.
   */
  async #openingRelayed(link: Link, source: string, hello: OpenRequest): Promise<boolean> {
    const cluster = this.#cluster;
    const token = toHex(hello.openToken);
    if (!cluster || this.#registry.orphan(token) || this.#registry.connecting(token)) return false;
    // Asked before any proof: a source gets as many questions to the peers as it may open sessions.
    if (this.#stopping || !this.#openingQuestions.take(source)) return false;
    const outcome = await cluster.relayOpening(token, link.peer, async () => {
      const taken = await link.release();
      if (!taken) return null;
      const hi = encodeHelloNew(hello.clientPublicKey, hello.openToken, hello.clientCap);
      return { transport: taken.transport, preamble: concatBytes(encodePreface(), hi, taken.rest) };
    });
    if (outcome === null) return false;
    if (outcome.kind === "relayed" || link.closed) return true;
    await this.#gate.reject(link, RejectCode.Unavailable, `Opening ${token.slice(0, 8)}: ${outcome.reason}`);
    return true;
  }

  /**
   * Stops gracefully: new sessions are refused at once, attached clients are
   * told (GOAWAY), live sessions get `drainMs` (DRAIN_TIMEOUT) to finish and
   * may still resume meanwhile; then the rest are ended with `reason`.
   * Resolves to the number of sessions that were still open at the end.
   */
  async close(reason = "broker-server is shutting down", drainMs = this.#config.drainTimeoutMs): Promise<number> {
    if (this.#stopping) return 0;
    this.#stopping = true;
    if (drainMs > 0 && this.#registry.size > 0) {
      log.info(
        "Stopping: {count} sessions open; new sessions are refused; waiting up to {seconds} s for them to finish",
        {
          count: this.#registry.size,
          seconds: drainMs / 1000,
        },
      );
      for (const entry of this.#registry.values()) entry.session.sendGoAway(drainMs, reason);
      await this.#untilDrained(drainMs);
    }
    this.#shutdown.abort();
    this.#clock.clear(this.#historyTimer);
    await this.#reloader.idle;
    this.#listener?.close();
    await this.#acceptLoop;
    await this.#healthChecker.stop();
    await this.#statusPage.shutdown();
    await this.#cluster?.close();
    for (const link of this.#gate) link.close();
    const sessions = [...this.#registry.values()].map((e) => e.session);
    for (const session of sessions) session.abort(reason);
    await Promise.all(sessions.map((s) => s.settled));
    this.#registry.clearTombstones();
    log.info("broker-server stopped; {count} sessions were still open and were closed", { count: sessions.length });
    return sessions.length;
  }
}
