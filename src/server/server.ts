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
import { buildStatus, erpTraffic, ServerStats, type StatusSnapshot } from "./stats.ts";
import { type HistorySnapshot, ServerHistory } from "./history.ts";
import { Reloader } from "./reloading.ts";
import { StatusPage } from "./status_page.ts";
import { acceptLoop, type AcceptNote, openFileLimit, SERVER_DESCRIPTOR_ADVICE } from "../ops/accept_errors.ts";
import { SourceLogBudgets } from "../ops/log_budget.ts";
import { readHello } from "./handshake.ts";
import { type ServerSessionInfo, SessionRegistry } from "./registry.ts";
import { SessionDesk } from "./sessions.ts";

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
  #drained: (() => void) | null = null;
  #rates: RateLimiter;
  #admissionKey: Promise<CryptoKey | null>;
  #reloader: Reloader;

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
      drained: () => this.#drained?.(),
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
    });
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

  /** Binds the listening socket and starts accepting links. */
  listen(): void {
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
      this.#listener = this.#network.listen({ hostname, port, ...(tls ? { tls: { cert, key } } : {}) });
    } catch (err) {
      const hint = err instanceof Deno.errors.AddrInUse
        ? "another program (or another broker-server) already uses this port"
        : describeError(err);
      throw new Error(`Cannot listen on ${formatHostPort({ hostname, port })}: ${hint}`);
    }
    log.info("broker-server listening on {address}{tls}; ERP servers: {servers}", {
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
      if (hello?.kind === "open") await this.#desk.open(link, source, hello, readBy(deadline));
      else if (hello?.kind === "resume") await this.#desk.resume(link, hello, readBy(deadline));
      else if (hello?.kind === "refused") await this.#gate.reject(link, hello.code, hello.reason);
    } catch (err) {
      this.#gate.dropped(link, err);
    } finally {
      this.#gate.finish(link);
    }
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
      await within(new Promise<void>((resolve) => this.#drained = resolve), drainMs, this.#clock);
      this.#drained = null;
    }
    this.#shutdown.abort();
    this.#clock.clear(this.#historyTimer);
    await this.#reloader.idle;
    this.#listener?.close();
    await this.#acceptLoop;
    await this.#healthChecker.stop();
    await this.#statusPage.shutdown();
    for (const link of this.#gate) link.close();
    const sessions = [...this.#registry.values()].map((e) => e.session);
    for (const session of sessions) session.abort(reason);
    await Promise.all(sessions.map((s) => s.settled));
    this.#registry.clearTombstones();
    log.info("broker-server stopped; {count} sessions were still open and were closed", { count: sessions.length });
    return sessions.length;
  }
}
