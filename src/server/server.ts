/**
 * broker-server: accepts links from broker-clients, opens a connection to an
 * ERP server for each new session, and keeps sessions (with their ERP
 * connections) alive while their clients are away, until the resume window
 * closes. Ended sessions leave a small tombstone for one window so that a
 * client that missed the ending learns how it ended.
 * @module
 */

import type { ServerConfig, StatusConfig } from "../config/server_config.ts";
import { describeLogSettings } from "../config/logging.ts";
import { formatDuration, formatHostPort, type HostPort } from "../config/values.ts";
import { MAX_REPLAY_BUFFER_BYTES, MIN_REPLAY_BUFFER_BYTES } from "../config/tuning.ts";
import { logger } from "../ops/log.ts";
import {
  CLIENT_HANDSHAKE_LIMITS,
  decodeHelloNew,
  decodeProof,
  encodeChallenge,
  encodeClose,
  encodeOffsetFrame,
  encodePreface,
  encodeProof,
  encodeReject,
  encodeWelcome,
  encodeWelcomeBack,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameType,
  ID_SIZE,
  PROTOCOL_VERSION,
  RejectCode,
  type RejectCodeValue,
  toHex,
} from "../protocol/frames.ts";
import {
  createEphemeralKey,
  deriveResumeSecret,
  importAdmissionKey,
  importResumeKey,
  randomId,
  signAdmission,
  signProof,
  signRetake,
  verifyAdmission,
  verifyProof,
  verifyRetake,
} from "../protocol/resume_auth.ts";
import { RateLimiter, sourceOf } from "./rate_limit.ts";
import { HandshakeAdmission } from "./admission.ts";
import { Link } from "../session/link.ts";
import { sleep } from "../session/backoff.ts";
import { ResumeGapError } from "../session/replay_buffer.ts";
import { Session, type SessionEnd, type SessionTimers } from "../session/session.ts";
import { describeError, dialTcp, within } from "../session/transport.ts";
import { type Backend, Balancer } from "./balancer.ts";
import { HealthChecker } from "./health.ts";
import { RESUME_BUCKETS, ServerStats, type StatusSnapshot } from "./stats.ts";
import { startStatusServer, type StatusServer } from "../ops/status_server.ts";
import { appliedMessage, keepRunningValue, keyChanges, readSettledConfig, restartMessage } from "./reload.ts";
import { VERSION } from "../version.ts";
import { AcceptErrors, openFileLimit, SERVER_DESCRIPTOR_ADVICE } from "../ops/accept_errors.ts";
import { LogBudget, SourceLogBudgets } from "../ops/log_budget.ts";
import { peerText } from "../ops/peer_text.ts";

const log = logger("server");

/**
 * A link must have sent its hello within this (or HANDSHAKE_TIMEOUT when
 * shorter): broker-client sends it right after connecting, so only links
 * that say nothing, or dribble, are cut short by it.
 */
const HELLO_TIMEOUT_MS = 2_000;

/**
 * Most tombstones kept; the oldest go first. A tombstone costs about 0.4 KiB
 * of heap, 1.5 KiB of resident memory in all: 50,000 (some 70 MiB) cover
 * the default 3-minute window at 270 endings a second.
 */
const MAX_TOMBSTONES = 50_000;

/** The process's memory figures; zeros where the platform cannot tell. */
function processMemory(): StatusSnapshot["memory"] {
  try {
    const { rss, heapUsed, heapTotal, external } = Deno.memoryUsage();
    return { rss, heapUsed, heapTotal, external };
  } catch {
    return { rss: 0, heapUsed: 0, heapTotal: 0, external: 0 };
  }
}

/** A live session as the registry holds it. */
export interface ServerSessionInfo {
  /** Hex session id. */
  id: string;
  /** Broker-client address of the latest link. */
  client: string;
  /** The ERP server it is connected to. */
  backend: Backend;
  /** Clock ms when it was opened. */
  openedAt: number;
  /** The session itself. */
  session: Session;
}

interface Entry extends ServerSessionInfo {
  /** The session id's bytes (the hex of `id`). */
  sessionId: Uint8Array;
  /** The address (IPv6: /64) that opened it, for the budget of its log lines. */
  source: string;
  key: CryptoKey;
  /** The key's 32 bytes, which its tombstone keeps instead of the CryptoKey. */
  secret: Uint8Array;
  /** Links attached so far: a resume proven for an older count was overtaken by a newer link. */
  attaches: number;
}

/**
 * What is kept of an ended session for one resume window, so that a client
 * that missed the end learns how it ended (and, after a clean end, gets the
 * final acknowledgement). Small on purpose: thousands pile up under churn.
 */
interface Tombstone {
  secret: Uint8Array;
  reason: string;
  clean: boolean;
  received: number;
  /** Clock ms after which it is forgotten. */
  expiresAt: number;
}

/** An attempt to open a session, known by its open token until the client confirms the session. */
interface Opening {
  /** The attempt's number (a later attempt with the same token replaces the record). */
  attempt: number;
  /** The client's public key from HELLO_NEW: a retry must come with the same. */
  clientPublicKey: Uint8Array;
  /** Once the session is open: the server's public key in its WELCOME. */
  serverPublicKey?: Uint8Array;
  /** Once the session is open: the session. */
  entry?: Entry;
}

/** What an admission-signed WELCOME covers besides itself. */
interface WelcomeSignature {
  admission: CryptoKey;
  clientPublicKey: Uint8Array;
  openToken: Uint8Array;
  serverNonce: Uint8Array;
}

/** Why a retried opening must wait. */
const OPENING_IN_PROGRESS =
  "an earlier attempt to open this session is still connecting to an ERP server: the broker-client tries again";

/** Whether two byte strings are equal (public values only: not constant time). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** How long a reloaded file that weakens security must read the same before it is applied (ms). */
export const DEFAULT_RELOAD_SETTLE_MS = 1_000;

/** Options of a BrokerServer. */
export interface BrokerServerOptions {
  /** Clock in ms (injectable). */
  now?: () => number;
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
  #now: () => number;
  #listener: Deno.Listener | null = null;
  #sessions = new Map<string, Entry>();
  /** In the order they were made, which is (nearly) the order they expire in. */
  #tombstones = new Map<string, Tombstone>();
  /** One timer for all tombstones: set for the oldest. */
  #tombstoneTimer: ReturnType<typeof setTimeout> | undefined;
  #handshaking = new HandshakeAdmission<Link>();
  #evicted = new WeakSet<Link>();
  #crowdLogged = { at: -Infinity, dropped: 0 };
  /** Peers can make handshakes fail, or be refused, at will: 20 lines of each per 10 s at most. */
  #dropLog: LogBudget;
  #refusalLog: LogBudget;
  /** A client can open and abort sessions at will: 20 lines of abnormal ends per address per 10 s at most. */
  #abnormalEndLog: SourceLogBudgets;
  /** Open attempts by the client's open token, until the client confirms the session. */
  #opening = new Map<string, Opening>();
  #attempts = 0;
  #shutdown = new AbortController();
  #acceptLoop: Promise<void> | null = null;
  #balancer: Balancer;
  #healthChecker: HealthChecker;
  #stats: ServerStats;
  #status: StatusServer | null = null;
  #stopping = false;
  #drained: (() => void) | null = null;
  #rates: RateLimiter;
  #admissionKey: Promise<CryptoKey | null>;
  #bufferedSum = { at: -Infinity, bytes: 0 };
  #adopted = new WeakSet<Link>();
  #reloadSettleMs: number;
  #applyLogging: ((config: ServerConfig) => Promise<void>) | null;
  #reloading: Promise<unknown> = Promise.resolve();
  #reloadedAt: number | null = null;
  /** Keys changed in the file that take a restart or a re-install. */
  #pendingRestart: string[] = [];

  /** Creates a server for `config`; call listen() to start. */
  constructor(config: ServerConfig, options: BrokerServerOptions = {}) {
    this.#config = config;
    this.#now = options.now ?? Date.now;
    this.#balancer = new Balancer(config.sortMethod, config.remoteServers, config.health, this.#now);
    this.#healthChecker = new HealthChecker(this.#balancer, config.tuning.connectTimeoutMs);
    this.#stats = new ServerStats(this.#now());
    this.#rates = new RateLimiter(config.limits.newSessionsPerMinute, this.#now);
    this.#dropLog = new LogBudget(20, 10_000, this.#now);
    this.#refusalLog = new LogBudget(20, 10_000, this.#now);
    this.#abnormalEndLog = new SourceLogBudgets(20, 10_000, { now: this.#now });
    this.#admissionKey = config.admissionKey ? importAdmissionKey(config.admissionKey) : Promise.resolve(null);
    this.#reloadSettleMs = options.reloadSettleMs ?? DEFAULT_RELOAD_SETTLE_MS;
    this.#applyLogging = options.applyLogging ?? null;
  }

  /** Where the status page listens, when it does. */
  get statusAddress(): HostPort | null {
    return this.#status?.address ?? null;
  }

  /** The figures of the status page, /status.json and /metrics. */
  status(): StatusSnapshot {
    const now = this.#now();
    const stats = this.#stats;
    const live = [...this.#sessions.values()];
    const sum = (pick: (e: Entry) => number) => live.reduce((n, e) => n + pick(e), 0);
    let cumulative = 0;
    return {
      version: VERSION,
      startedAt: new Date(stats.startedAt).toISOString(),
      uptimeSeconds: Math.round((now - stats.startedAt) / 1000),
      listen: this.#listener ? formatHostPort(this.address) : formatHostPort(this.#config.listen),
      memory: processMemory(),
      sortMethod: this.#balancer.method,
      replayBufferBytes: this.#config.tuning.replayBufferBytes,
      servers: this.#balancer.backends.map((b) => ({
        name: b.server.name,
        address: formatHostPort(b.server),
        state: b.draining ? "draining" : b.health,
        health: b.health,
        draining: b.draining,
        weight: b.server.weight,
        maxSessions: b.server.maxSessions,
        activeSessions: b.active,
        totalSessions: b.total,
        lastError: b.lastError ? { message: b.lastError.message, at: new Date(b.lastError.at).toISOString() } : null,
      })),
      sessions: live.map((e) => ({
        id: shortId(e.id),
        client: e.client,
        server: e.backend.server.name,
        state: e.session.state === "attached" ? "attached" : "detached",
        stateSeconds: Math.round((now - e.session.stateSince) / 1000),
        ageSeconds: Math.round((now - e.openedAt) / 1000),
        bytesToClient: e.session.stats.bytesFromLocal,
        bytesToErp: e.session.stats.bytesToLocal,
        resumes: e.session.stats.resumes,
        bufferedBytes: e.session.bufferedBytes,
      })),
      totals: {
        sessionsOpened: stats.sessionsOpened,
        sessionsActive: live.length,
        resumes: stats.resumes,
        sessionsCompleted: stats.sessionsCompleted,
        sessionsExpired: stats.sessionsExpired,
        sessionsAborted: stats.sessionsAborted,
        linksRefused: stats.linksRefused,
        linksInHandshake: this.#handshaking.size,
        bytesToClients: stats.endedBytesToClient + sum((e) => e.session.stats.bytesFromLocal),
        bytesToErp: stats.endedBytesToErp + sum((e) => e.session.stats.bytesToLocal),
        bytesReplayed: stats.endedBytesReplayed + sum((e) => e.session.stats.bytesReplayed),
      },
      resumeDuration: {
        buckets: RESUME_BUCKETS.map((le, i) => ({ le, count: cumulative += stats.resumeHistogram.buckets[i] ?? 0 })),
        sum: stats.resumeHistogram.sum,
        count: stats.resumeHistogram.count,
      },
      config: {
        path: this.#config.path,
        reloadedAt: this.#reloadedAt === null ? null : new Date(this.#reloadedAt).toISOString(),
        admissionKey: this.#config.admissionKey !== null,
        linkTls: this.#config.tls !== null,
        statusAccessKey: this.#config.status.accessKey !== null,
        log: describeLogSettings(this.#config.log),
        pendingRestart: [...this.#pendingRestart],
      },
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
    const run = this.#reloading.then(() => this.#reload());
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(): Promise<boolean> {
    const old = this.#config;
    let next: ServerConfig;
    let weakenings: string[];
    try {
      const settled = await readSettledConfig(old.path, old, {
        settleMs: this.#reloadSettleMs,
        signal: this.#shutdown.signal,
      });
      if (!settled) return false;
      ({ config: next, weakenings } = settled);
    } catch (err) {
      log.error("Configuration reload failed; the running configuration stays as it was: {error}", {
        error: (err as Error).message,
      });
      return false;
    }
    for (const w of next.warnings) log.warn("{warning}", { warning: w });
    const running = this.#listener ? formatHostPort(this.address) : formatHostPort(old.listen);
    const pending: string[] = [];
    const applied: string[] = [];
    const logging: string[] = [];
    for (const change of keyChanges(old, next)) {
      if (
        change.effect === "restart" || change.effect === "install" ||
        (change.effect === "logging" && !this.#applyLogging)
      ) {
        log.warn("{warning}", { warning: restartMessage(change, old, next, running) });
        pending.push(change.key);
      } else {
        (change.effect === "logging" ? logging : applied).push(appliedMessage(change));
      }
    }
    for (const key of pending) keepRunningValue(key, old, next);
    if (logging.length > 0 && this.#applyLogging) {
      // First, so that the lines below go where the new settings say.
      try {
        await this.#applyLogging(next);
        applied.unshift(...logging);
      } catch (err) {
        log.error("Cannot apply the new log settings ({error}); the running log settings stay", {
          error: (err as Error).message,
        });
        keepRunningValue("CONSOLELOG", old, next);
        keepRunningValue("LOG_FILE", old, next);
      }
    }
    const changes = [...this.#balancer.update(next.sortMethod, next.remoteServers, next.health), ...applied];
    if (next.admissionKey !== old.admissionKey) {
      this.#admissionKey = next.admissionKey ? importAdmissionKey(next.admissionKey) : Promise.resolve(null);
    }
    if (next.limits.newSessionsPerMinute !== old.limits.newSessionsPerMinute) {
      this.#rates = new RateLimiter(next.limits.newSessionsPerMinute, this.#now);
    }
    this.#config = next;
    if (this.#listener) this.#healthChecker.start(next.health.intervalMs, next.tuning.connectTimeoutMs);
    if (!await this.#applyStatus(old.status, next.status)) {
      // The page stayed where it was: the line below must not say it moved.
      for (const key of ["STATUS_PORT ", "STATUS_ADDRESS "]) {
        const at = changes.findIndex((c) => c.startsWith(key));
        if (at >= 0) changes.splice(at, 1);
      }
    }
    this.#pendingRestart = pending;
    this.#reloadedAt = this.#now();
    log.info("Configuration reloaded from {path}: {changes}{settled}", {
      path: next.path,
      changes: changes.length > 0 ? changes.join("; ") : "no change",
      settled: weakenings.length > 0 ? ` (the file read the same for ${formatDuration(this.#reloadSettleMs)})` : "",
    });
    return true;
  }

  /** Starts the status page for `status`; a failure is logged (unless `quiet`), the broker goes on without it. */
  #startStatus(status: StatusConfig, quiet = false): string | null {
    if (!status.enabled) return null;
    try {
      this.#status = startStatusServer({
        listen: status.listen,
        accessKey: status.accessKey,
        snapshot: () => this.status(),
      });
      return null;
    } catch (err) {
      // The broker's job matters more than its dashboard: log and go on.
      if (!quiet) log.error("{error}; broker-server runs without it", { error: (err as Error).message });
      return (err as Error).message;
    }
  }

  /**
   * A reloaded status configuration: a new key in place, a new address by
   * restarting the listener. When the new address cannot be listened on (a
   * port another program holds), the page goes back to the old address with
   * the new key, and `next` is set back to the address in force (the next
   * reload tries again).
   */
  async #applyStatus(old: StatusConfig, next: StatusConfig): Promise<boolean> {
    const same = old.enabled === next.enabled && old.listen.hostname === next.listen.hostname &&
      old.listen.port === next.listen.port;
    if (same && this.#status) {
      this.#status.setAccessKey(next.accessKey);
      return true;
    }
    if (!this.#listener || this.#stopping) return true;
    const previous = this.#status;
    this.#status = null;
    await previous?.shutdown();
    if (!previous) {
      this.#startStatus(next);
      return true;
    }
    const error = this.#startStatus(next, true);
    if (error === null) return true;
    const kept: StatusConfig = { ...old, accessKey: next.accessKey };
    if (this.#startStatus(kept, true) === null) {
      log.error("{error}; the status page stays on http://{address}/", {
        error,
        address: formatHostPort(this.statusAddress ?? old.listen),
      });
      next.enabled = kept.enabled;
      next.listen = kept.listen;
      return false;
    }
    log.error("{error}; broker-server runs without it", { error });
    return true;
  }

  /** Where the server listens (the real port when configured with 0). */
  get address(): HostPort {
    if (!this.#listener) throw new Error("Cannot tell the address of a server that is not listening");
    const addr = this.#listener.addr as Deno.NetAddr;
    return { hostname: addr.hostname, port: addr.port };
  }

  /** Live sessions (not tombstones). */
  get sessions(): ServerSessionInfo[] {
    return [...this.#sessions.values()];
  }

  /** A new session's timers; its cap is the smaller of ours and the client's `clientCap` (WELCOME states it). */
  #timers(clientCap: number): SessionTimers {
    const t = this.#config.tuning;
    const cap = Math.min(t.replayBufferBytes, clientCap);
    return {
      resumeTimeoutMs: t.resumeTimeoutMs,
      heartbeatIntervalMs: t.heartbeatIntervalMs,
      linkTimeoutMs: t.linkTimeoutMs,
      replayBufferBytes: cap,
      receiveWindowBytes: cap,
      unconfirmedTimeoutMs: t.unconfirmedTimeoutMs,
    };
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
      this.#listener = tls
        ? Deno.listenTls({ hostname, port, transport: "tcp", cert, key })
        : Deno.listen({ hostname, port, transport: "tcp" });
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
    this.#startStatus(this.#config.status);
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    const errors = new AcceptErrors({
      what: "links",
      advice: SERVER_DESCRIPTOR_ADVICE,
      openFileLimit: openFileLimit(),
      now: this.#now,
    });
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (this.#shutdown.signal.aborted || err instanceof Deno.errors.BadResource) return;
        const { delayMs, note } = errors.failed(err);
        if (note) log[note.level](note.message, note.fields);
        if (delayMs > 0) await sleep(delayMs, this.#shutdown.signal);
        continue;
      }
      const recovered = errors.succeeded();
      if (recovered) log[recovered.level](recovered.message, recovered.fields);
      (conn as Deno.TcpConn).setNoDelay?.(true);
      this.#handshake(conn);
    }
  }

  async #handshake(conn: Deno.Conn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    // Until it belongs to a session, a link may send only what the handshake reads (see #adopt).
    const link = new Link(conn, formatHostPort(remote), CLIENT_HANDSHAKE_LIMITS);
    const source = sourceOf(remote.hostname);
    this.#admit(link, source);
    const started = this.#now();
    const deadline = started + this.#config.tuning.handshakeTimeoutMs;
    const helloBy = started + Math.min(this.#config.tuning.handshakeTimeoutMs, HELLO_TIMEOUT_MS);
    const readBy = (by: number, what: string) => link.readFrameWithin(Math.max(1, by - this.#now()), what);
    const read = (what: string) => readBy(deadline, what);
    try {
      const preface = await readBy(helloBy, "preface");
      if (!preface) return;
      const version = preface.payload[0];
      link.send(encodePreface());
      if (version !== PROTOCOL_VERSION) {
        await this.#reject(
          link,
          RejectCode.Version,
          `broker-client speaks protocol version ${version}, this broker-server speaks version ${PROTOCOL_VERSION}: install matching versions of both programs`,
        );
        return;
      }
      const hello = await readBy(helloBy, "hello");
      if (!hello) return;
      this.#handshaking.spoke(link);
      if (hello.type === FrameType.HelloNew) await this.#openSession(link, source, hello, read);
      else if (hello.type === FrameType.HelloResume) await this.#resumeSession(link, hello, read);
      else await this.#reject(link, RejectCode.Protocol, `expected HELLO, got frame type ${hello.type}`);
    } catch (err) {
      link.close();
      // An evicted link was counted, and its crowd logged, when it made room.
      if (this.#evicted.has(link)) return;
      this.#stats.linksRefused++;
      const heldBack = this.#dropLog.spend();
      if (heldBack === null) return;
      log.warn("Dropped link from {peer} during handshake: {reason}{hint}{heldBack}", {
        peer: link.peer,
        reason: peerText(describeError(err)), // may quote what the peer sent
        hint: this.#tlsHint(err),
        heldBack: heldBack > 0 ? ` (${heldBack} more links were dropped during their handshake before this one)` : "",
      });
    } finally {
      this.#handshaking.remove(link);
      // A link that did not become a session's (refused, ended, or the peer
      // went quiet) is closed here, whatever path the handshake took.
      if (!this.#adopted.has(link)) link.close();
    }
  }

  /** Counts a new link in handshake; the links it displaces are closed (see HandshakeAdmission). */
  #admit(link: Link, source: string): void {
    const limits = this.#config.limits;
    const { evicted, cap } = this.#handshaking.admit(link, source, {
      total: limits.maxHandshakes,
      perSource: limits.maxHandshakesPerAddress,
    });
    for (const old of evicted) this.#evict(old);
    if (!cap) return;
    // One line per 10 s at most: a flood must not flood the log too.
    const now = this.#now();
    if (now - this.#crowdLogged.at < 10_000) return;
    const dropped = this.#crowdLogged.dropped;
    this.#crowdLogged = { at: now, dropped: 0 };
    log.warn(
      cap === "perSource"
        ? "MAX_HANDSHAKES_PER_ADDRESS ({limit}) links from {source} are introducing themselves at once: its oldest make room for its newest ({dropped} more dropped since the last such line)"
        : "MAX_HANDSHAKES ({limit}) links that resume no session are introducing themselves at once: the oldest of the busiest source make room ({dropped} more dropped since the last such line)",
      { limit: cap === "perSource" ? limits.maxHandshakesPerAddress : limits.maxHandshakes, source, dropped },
    );
  }

  /** Closes a link in handshake to make room for another. */
  #evict(link: Link): void {
    this.#evicted.add(link);
    this.#stats.linksRefused++;
    this.#crowdLogged.dropped++;
    link.close();
  }

  /** A hint when a link failed because one side uses TLS and the other does not. */
  #tlsHint(err: unknown): string {
    const message = String((err as Error)?.message ?? err);
    if (!this.#config.tls && /0x1603/.test(message)) {
      return " (a TLS client: this broker-server has no LINK_TLS_CERT/LINK_TLS_KEY; set them, or turn LINK_TLS off in smartclient.ini)";
    }
    if (this.#config.tls && /tls|handshake|certificate|corrupt|InvalidData|received/i.test(message)) {
      return " (this broker-server requires TLS on the link: is LINK_TLS set in that smartclient.ini?)";
    }
    return "";
  }

  /**
   * Bytes held for all sessions (replay buffers and bytes waiting for the
   * ERP), summed at most every 100 ms: a burst of logins with thousands of
   * sessions open must not walk all of them for each new one.
   */
  #bufferedBytes(): number {
    const now = this.#now();
    if (now - this.#bufferedSum.at >= 100 || now < this.#bufferedSum.at) {
      let sum = 0;
      for (const e of this.#sessions.values()) sum += e.session.bufferedBytes + e.session.pendingLocalBytes;
      this.#bufferedSum = { at: now, bytes: sum };
    }
    return this.#bufferedSum.bytes;
  }

  /**
   * Why a new session from `source` must be refused now, or null. The rate
   * limit is only looked at here: #openSession takes its token once the
   * client has proved the admission key.
   */
  #refuseNewSession(source: string): string | null {
    const limits = this.#config.limits;
    if (this.#stopping) return "broker-server is shutting down and takes no new sessions";
    if (this.#sessions.size >= limits.maxSessions) {
      return `broker-server is at its limit of ${limits.maxSessions} sessions (MAX_SESSIONS)`;
    }
    if (!this.#rates.allows(source)) return this.#tooManyNewSessions(source);
    const buffered = this.#bufferedBytes();
    if (buffered >= limits.maxBufferedBytes) {
      return `broker-server buffers ${buffered} bytes for detached or slow sessions, its limit (MAX_BUFFERED): new sessions wait until that drains`;
    }
    return null;
  }

  #tooManyNewSessions(source: string): string {
    return `too many new sessions from ${source}: the limit is ${this.#config.limits.newSessionsPerMinute} per minute (NEW_SESSIONS_PER_MINUTE)`;
  }

  async #reject(link: Link, code: RejectCodeValue, reason: string): Promise<void> {
    if (this.#evicted.has(link)) return; // closed already, and counted when it made room
    this.#stats.linksRefused++;
    const heldBack = this.#refusalLog.spend();
    if (heldBack !== null) {
      log.warn("Refused link from {peer}: {reason}{heldBack}", {
        peer: link.peer,
        reason,
        heldBack: heldBack > 0 ? ` (${heldBack} more links were refused before this one)` : "",
      });
    }
    link.send(encodeReject(code, reason));
    await link.closeAfterFlush();
  }

  /**
   * Connects a new session to an ERP server: the balancer's candidates in
   * order, each at most once, each within the connect timeout. A server that
   * fails is marked down at once (passive health check).
   */
  async #connectBackend(): Promise<
    { conn: Deno.TcpConn; backend: Backend; decision: string } | { errors: string[] }
  > {
    const placement = this.#balancer.place();
    const notes = placement.skipped.map((s) => `${s.backend.server.name}: ${s.reason}`);
    for (const backend of placement.order) {
      const server = backend.server;
      // The session counts against this server from now on, while it connects (see Balancer.acquire).
      if (!this.#balancer.acquire(backend)) {
        notes.push(`${server.name}: ${backend.draining ? "draining" : `full (max ${server.maxSessions} sessions)`}`);
        continue;
      }
      try {
        const conn = await dialTcp(server.hostname, server.port, {
          timeoutMs: this.#config.tuning.connectTimeoutMs,
          signal: this.#shutdown.signal,
        });
        if (this.#balancer.connectSucceeded(backend)) {
          log.info("ERP server {server} ({address}) accepts connections again", {
            server: server.name,
            address: formatHostPort(server),
          });
        }
        const why = backend === placement.order[0] ? placement.why : "the servers before it failed";
        const decision = notes.length > 0 ? `${why}; skipped ${notes.join("; ")}` : why;
        return { conn, backend, decision };
      } catch (err) {
        this.#balancer.cancel(backend);
        const error = describeError(err);
        notes.push(`${server.name}: ${error}`);
        if (this.#balancer.connectFailed(backend, error)) {
          log.warn("ERP server {server} ({address}) marked down: {error}", {
            server: server.name,
            address: formatHostPort(server),
            error,
          });
        }
      }
    }
    return { errors: notes.length > 0 ? notes : ["no ERP server is configured"] };
  }

  async #openSession(
    link: Link,
    source: string,
    hello: Frame,
    read: (what: string) => Promise<Frame | null>,
  ): Promise<void> {
    const { publicKey: clientPublicKey, openToken: openTokenBytes, replayBufferBytes: clientCap } = decodeHelloNew(
      hello.payload,
    );
    if (clientCap < MIN_REPLAY_BUFFER_BYTES || clientCap > MAX_REPLAY_BUFFER_BYTES) {
      await this.#reject(
        link,
        RejectCode.Protocol,
        `the client's replay buffer cap of ${clientCap} bytes is out of range (${MIN_REPLAY_BUFFER_BYTES} to ${MAX_REPLAY_BUFFER_BYTES})`,
      );
      return;
    }
    // A repeated token means the client may never have got an earlier
    // WELCOME. The token travels in clear, so a repeat proves nothing: if
    // that attempt's session exists, this link gets it (the same ERP
    // connection: the ERP sees nothing of the retry) only once it proves the
    // key the first attempt derived (#retake).
    const openToken = toHex(openTokenBytes);
    if (this.#connecting(openToken)) {
      await this.#reject(link, RejectCode.Unavailable, OPENING_IN_PROGRESS);
      return;
    }
    // Retaking an orphan costs no new session or ERP connection: the limits do not apply.
    const refusal = this.#orphan(openToken) ? null : this.#refuseNewSession(source);
    if (refusal) {
      await this.#reject(link, RejectCode.Unavailable, refusal);
      return;
    }
    // With an admission key, the client proves it over our fresh nonce and
    // its own key before anything is spent on it (no ERP connection yet).
    const admission = await this.#admissionKey;
    const serverNonce = randomId();
    if (admission) {
      link.send(encodeChallenge(serverNonce));
      const proofFrame = await read("admission proof");
      if (!proofFrame) return;
      const input = { clientPublicKey, openToken: openTokenBytes, serverNonce };
      if (
        proofFrame.type !== FrameType.Proof ||
        !await verifyAdmission(admission, "client", input, decodeProof(proofFrame.payload).mac)
      ) {
        await this.#reject(
          link,
          RejectCode.BadProof,
          "admission refused: the broker-client did not prove the admission key (ADMISSION_KEY)",
        );
        return;
      }
    }
    // Only a client that proved the key spends its source's budget: a wrong key must not use up the right one's.
    if (!this.#orphan(openToken) && !this.#rates.take(source)) {
      await this.#reject(link, RejectCode.Unavailable, this.#tooManyNewSessions(source));
      return;
    }
    // (#welcome and #retake are methods, not closures here: the session's event
    // closures below share this scope, and would keep the key pair and nonces
    // alive for its life.)
    const signed = admission ? { admission, clientPublicKey, openToken: openTokenBytes, serverNonce } : null;
    const orphan = this.#orphan(openToken);
    if (orphan) {
      await this.#retake(link, orphan, { clientPublicKey, openToken: openTokenBytes }, signed, read);
      return;
    }
    if (this.#connecting(openToken)) {
      await this.#reject(link, RejectCode.Unavailable, OPENING_IN_PROGRESS);
      return;
    }
    // From here until it settles, this attempt is the only one for its token.
    const attempt = ++this.#attempts;
    this.#opening.set(openToken, { attempt, clientPublicKey });
    const isLatest = () => this.#opening.get(openToken)?.attempt === attempt;
    const giveUp = () => {
      if (isLatest()) this.#opening.delete(openToken);
    };
    // Keys first: a bad public key must not cost an ERP connection.
    const own = await createEphemeralKey();
    const sessionId = randomId();
    let key: CryptoKey;
    let secret: Uint8Array;
    try {
      secret = await deriveResumeSecret(own, clientPublicKey, sessionId, clientPublicKey, own.publicKey);
      key = await importResumeKey(secret);
    } catch {
      giveUp();
      await this.#reject(link, RejectCode.Protocol, "the client's public key is not a valid X25519 key");
      return;
    }
    const backend = await this.#connectBackend();
    if ("errors" in backend) {
      giveUp();
      await this.#reject(
        link,
        RejectCode.NoBackend,
        `No ERP server accepted the connection (${backend.errors.join("; ")})`,
      );
      return;
    }
    if (link.closed || this.#shutdown.signal.aborted || !isLatest()) {
      giveUp();
      this.#balancer.release(backend.backend);
      backend.conn.close();
      link.close();
      log.info("Opening from {client} abandoned: its link closed before the welcome; ERP connection closed unused", {
        client: link.peer,
      });
      return;
    }
    const timers = this.#timers(clientCap);
    link.send(await this.#welcome(sessionId, own.publicKey, timers, signed));
    const id = toHex(sessionId);
    const entry: Entry = {
      id,
      sessionId,
      source,
      key,
      secret,
      client: link.peer,
      backend: backend.backend,
      openedAt: this.#now(),
      attaches: 1,
      session: new Session({
        role: "server",
        local: backend.conn,
        timers,
        events: {
          detached: (reason) => {
            log.info(
              "Session {session}: link from {client} lost ({reason}); holding the ERP connection for {window} s",
              {
                session: shortId(id),
                client: entry.client,
                reason,
                window: Math.round(timers.resumeTimeoutMs / 1000),
              },
            );
          },
          confirmed: giveUp,
          ended: (end) => {
            giveUp();
            this.#ended(entry, end);
          },
        },
      }),
    };
    this.#sessions.set(id, entry);
    this.#stats.sessionsOpened++;
    this.#opening.set(openToken, { attempt, clientPublicKey, serverPublicKey: own.publicKey, entry });
    entry.session.start();
    this.#adopt(link);
    entry.session.attach(link, 0);
    log.info("Session {session} opened: client {client}, ERP {backend} ({address}): {decision}", {
      session: shortId(id),
      client: link.peer,
      backend: backend.backend.server.name,
      address: formatHostPort(backend.backend.server),
      decision: backend.decision,
    });
  }

  /**
   * A retried opening of `entry`, still unconfirmed. Its WELCOME is sent
   * again (same id and server key, so the real client derives the key the
   * first attempt would have) with a fresh nonce, and the link gets the
   * session only after a proof made with that key. Anyone else (a sniffer
   * that replays the token, with the client's public key or its own) is
   * refused, and the session, its link and its key stay as they were.
   */
  async #retake(
    link: Link,
    entry: Entry,
    hello: { clientPublicKey: Uint8Array; openToken: Uint8Array },
    signed: WelcomeSignature | null,
    read: (what: string) => Promise<Frame | null>,
  ): Promise<void> {
    const opening = this.#opening.get(toHex(hello.openToken));
    const refuse = (why: string) =>
      this.#reject(
        link,
        RejectCode.BadProof,
        `retried opening of session ${shortId(entry.id)} refused: ${why}; the session is untouched`,
      );
    if (!opening?.serverPublicKey || !equalBytes(opening.clientPublicKey, hello.clientPublicKey)) {
      await refuse("it comes with another public key than the first attempt");
      return;
    }
    const serverNonce = randomId();
    const welcome = await this.#welcome(entry.sessionId, opening.serverPublicKey, entry.session.timers, signed);
    link.send(encodeWelcomeBack(serverNonce, welcome));
    const proofFrame = await read("retake proof");
    if (!proofFrame) return;
    const input = { sessionId: entry.sessionId, openToken: hello.openToken, serverNonce };
    if (
      proofFrame.type !== FrameType.Proof ||
      !await verifyRetake(entry.key, "client", input, decodeProof(proofFrame.payload).mac)
    ) {
      await refuse("it does not prove the first attempt's key");
      return;
    }
    const mac = await signRetake(entry.key, "server", input);
    if (this.#orphan(toHex(hello.openToken)) !== entry || link.closed || this.#shutdown.signal.aborted) {
      link.close(); // it changed meanwhile: the client retries, and finds out afresh
      return;
    }
    link.send(encodeProof(FrameType.Resumed, mac, 0));
    entry.client = link.peer;
    this.#adopt(link);
    entry.session.attach(link, 0, true);
    entry.attaches++;
    log.info(
      "Session {session}: the client retried opening it (the welcome was lost) and proved it; {client} carries on with the same ERP connection",
      { session: shortId(entry.id), client: link.peer },
    );
  }

  /** Marks `link` as a session's from now on: the handshake leaves it open, and it takes every frame a session uses. */
  #adopt(link: Link): void {
    this.#adopted.add(link);
    link.setFrameLimits({ maxPayload: this.#config.limits.maxFrameBytes });
  }

  /** The unconfirmed session an earlier attempt with `openToken` opened, if it is still there. */
  #orphan(openToken: string): Entry | undefined {
    const entry = this.#opening.get(openToken)?.entry;
    return entry && !entry.session.confirmed && entry.session.state !== "closed" ? entry : undefined;
  }

  /**
   * An earlier attempt with `openToken` is still connecting to an ERP
   * server. A retry waits (the client backs off and asks again): letting it
   * supersede that attempt would let anyone who copied the token do so.
   */
  #connecting(openToken: string): boolean {
    const opening = this.#opening.get(openToken);
    return opening !== undefined && opening.entry === undefined;
  }

  /** A WELCOME frame; with an admission key, signed over the opening it answers and the welcome itself. */
  async #welcome(
    sessionId: Uint8Array,
    publicKey: Uint8Array,
    timers: SessionTimers,
    signed: WelcomeSignature | null,
  ): Promise<Uint8Array> {
    const plain = encodeWelcome(sessionId, publicKey, timers);
    if (!signed) return plain;
    const { admission, ...opening } = signed;
    const mac = await signAdmission(admission, "server", { ...opening, welcome: plain.subarray(FRAME_HEADER_SIZE) });
    return encodeWelcome(sessionId, publicKey, timers, mac);
  }

  async #resumeSession(
    link: Link,
    hello: Frame,
    read: (what: string) => Promise<Frame | null>,
  ): Promise<void> {
    const sessionId = hello.payload.slice(0, ID_SIZE);
    const clientNonce = hello.payload.slice(ID_SIZE);
    const id = toHex(sessionId);
    const entry = this.#sessions.get(id);
    const tombstone = entry ? undefined : this.#tombstone(id);
    if (!entry && !tombstone) {
      await this.#reject(
        link,
        RejectCode.UnknownSession,
        `Session ${shortId(id)} is not known to this broker-server: it expired, or the server was restarted`,
      );
      return;
    }
    const attachesAtChallenge = entry?.attaches;
    // It names a session we hold: idle and new links no longer compete with it.
    for (const older of this.#handshaking.resuming(link, id)) this.#evict(older);
    const serverNonce = randomId();
    link.send(encodeChallenge(serverNonce));
    const proofFrame = await read("resume proof");
    if (!proofFrame) return;
    if (proofFrame.type !== FrameType.Proof) {
      await this.#reject(link, RejectCode.Protocol, `expected PROOF, got frame type ${proofFrame.type}`);
      return;
    }
    const proof = decodeProof(proofFrame.payload);
    const key = entry ? entry.key : await importResumeKey((tombstone as Tombstone).secret);
    const input = { sessionId, clientNonce, serverNonce, receivedOffset: proof.receivedOffset };
    if (!await verifyProof(key, "client", input, proof.mac)) {
      await this.#reject(link, RejectCode.BadProof, `Resume proof for session ${shortId(id)} does not verify`);
      return;
    }
    if (!entry) {
      const ended = tombstone as Tombstone;
      if (!ended.clean) {
        await this.#reject(link, RejectCode.SessionEnded, `Session ${shortId(id)} has ended: ${ended.reason}`);
        return;
      }
      // It ended cleanly while the client was away: confirm the final offset,
      // acknowledge it (a clean end means the ERP took every byte and the FIN:
      // the ACKs that said so may have been lost with the last link), and close.
      const mac = await signProof(key, "server", { ...input, receivedOffset: ended.received });
      link.send(encodeProof(FrameType.Resumed, mac, ended.received));
      link.send(encodeOffsetFrame(FrameType.Ack, ended.received));
      link.send(encodeClose());
      await link.closeAfterFlush();
      return;
    }
    const session = entry.session;
    try {
      session.checkResumable(proof.receivedOffset);
    } catch (err) {
      if (entry.attaches !== attachesAtChallenge && session.state !== "closed") {
        // A valid proof that a newer link overtook (an attempt the client gave
        // up on, delivered late): what it claims is stale, not a gap. Only
        // this link ends; the session carries on with the newer one.
        await this.#reject(
          link,
          RejectCode.CannotResume,
          `stale resume of session ${shortId(id)}: a newer link took over while it was being proven (${
            (err as Error).message
          }); the session carries on`,
        );
        return;
      }
      const reason = `cannot resume: ${(err as Error).message}`;
      await this.#reject(link, err instanceof ResumeGapError ? RejectCode.CannotResume : RejectCode.Protocol, reason);
      session.abort(reason);
      return;
    }
    // From here the old link (maybe half-open) must not deliver more bytes:
    // our received offset is what the proof below states.
    session.detach(`replaced by a new link from ${link.peer}`);
    const detachedFor = this.#now() - session.stateSince;
    const received = session.received;
    const mac = await signProof(key, "server", { ...input, receivedOffset: received });
    if (session.state === "closed" || link.closed || session.received !== received) {
      link.close();
      return;
    }
    link.send(encodeProof(FrameType.Resumed, mac, received));
    this.#adopt(link);
    const replayed = session.attach(link, proof.receivedOffset);
    entry.attaches++;
    if (this.#stopping) session.sendGoAway(this.#config.drainTimeoutMs, "broker-server is shutting down");
    this.#stats.recordResume(detachedFor / 1000);
    entry.client = link.peer;
    log.info(
      "Session {session} resumed from {client} after {seconds} s: {replayed} bytes replayed to the client, client had {clientReceived} of {sent}",
      {
        session: shortId(id),
        client: link.peer,
        seconds: (detachedFor / 1000).toFixed(1),
        replayed,
        clientReceived: proof.receivedOffset,
        sent: session.stats.bytesFromLocal,
      },
    );
  }

  #ended(entry: Entry, end: SessionEnd): void {
    this.#sessions.delete(entry.id);
    this.#stats.recordEnd(end.cause, {
      toClient: entry.session.stats.bytesFromLocal,
      toErp: entry.session.stats.bytesToLocal,
      replayed: entry.session.stats.bytesReplayed,
    });
    this.#balancer.release(entry.backend);
    const stats = entry.session.stats;
    const heldBack = end.clean ? 0 : this.#abnormalEndLog.spend(entry.source);
    const fields = {
      session: shortId(entry.id),
      reason: end.reason,
      toClient: stats.bytesFromLocal,
      toErp: stats.bytesToLocal,
      seconds: ((this.#now() - entry.openedAt) / 1000).toFixed(1),
      resumes: stats.resumes,
      heldBack: heldBack
        ? ` (${heldBack} more sessions from ${entry.source} ended abnormally before this one: not logged)`
        : "",
    };
    const message =
      "Session {session} closed: {reason}; {toClient} bytes to the client, {toErp} bytes to the ERP, {seconds} s, {resumes} resumes{heldBack}";
    if (end.clean) log.info(message, fields);
    else if (heldBack !== null) log.warn(message, fields);
    if (this.#sessions.size === 0) this.#drained?.();
    // The client sent the ABORT that ended it and was answered: it needs no tombstone.
    if (this.#shutdown.signal.aborted || end.byPeer) return;
    if (this.#tombstones.size >= MAX_TOMBSTONES) {
      const [oldest] = this.#tombstones.keys();
      if (oldest !== undefined) this.#tombstones.delete(oldest);
    }
    this.#tombstones.set(entry.id, {
      secret: entry.secret,
      reason: end.reason,
      clean: end.clean,
      received: entry.session.received,
      expiresAt: this.#now() + this.#config.tuning.resumeTimeoutMs,
    });
    if (this.#tombstoneTimer === undefined) this.#sweepTombstones();
  }

  /** The tombstone of session `id`, unless it has expired. */
  #tombstone(id: string): Tombstone | undefined {
    const t = this.#tombstones.get(id);
    return t && t.expiresAt > this.#now() ? t : undefined;
  }

  /** Forgets expired tombstones and sets the timer for the next. */
  #sweepTombstones(): void {
    this.#tombstoneTimer = undefined;
    const now = this.#now();
    for (const [id, t] of this.#tombstones) {
      if (t.expiresAt > now) {
        this.#tombstoneTimer = setTimeout(() => this.#sweepTombstones(), t.expiresAt - now);
        return;
      }
      this.#tombstones.delete(id);
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
    if (drainMs > 0 && this.#sessions.size > 0) {
      log.info(
        "Stopping: {count} sessions open; new sessions are refused; waiting up to {seconds} s for them to finish",
        {
          count: this.#sessions.size,
          seconds: drainMs / 1000,
        },
      );
      for (const entry of this.#sessions.values()) entry.session.sendGoAway(drainMs, reason);
      await within(new Promise<void>((resolve) => this.#drained = resolve), drainMs);
      this.#drained = null;
    }
    this.#shutdown.abort();
    await this.#reloading;
    this.#listener?.close();
    await this.#acceptLoop;
    await this.#healthChecker.stop();
    await this.#status?.shutdown();
    for (const link of this.#handshaking) link.close();
    const sessions = [...this.#sessions.values()].map((e) => e.session);
    for (const session of sessions) session.abort(reason);
    await Promise.all(sessions.map((s) => s.settled));
    clearTimeout(this.#tombstoneTimer);
    this.#tombstoneTimer = undefined;
    this.#tombstones.clear();
    log.info("broker-server stopped; {count} sessions were still open and were closed", { count: sessions.length });
    return sessions.length;
  }
}

/** The first 8 hex digits of a session id: enough to tell sessions apart in logs. */
export function shortId(id: string): string {
  return id.slice(0, 8);
}
