/**
 * broker-client: accepts Smart Client connections on the loopback and
 * carries each one as a resilient session to a broker-server. New sessions
 * try the configured broker servers in turn; after a link loss the session
 * redials the broker server that holds it, with backoff, until the resume
 * window closes. The handshakes are in handshake.ts; every retry (opening,
 * resuming, saying goodbye) is paced by retryUntil (retry.ts).
 * @module
 */

import type { ClientConfig } from "../config/client_config.ts";
import { formatDuration, formatHostPort, type HostPort } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import { acceptLoop, type AcceptNote, openFileLimit } from "../ops/accept_errors.ts";
import {
  encodeAbort,
  encodePreface,
  FrameType,
  type Proof,
  RejectCode,
  toHex,
  type Welcome,
} from "../protocol/frames.ts";
import { createEphemeralKey, type EphemeralKey, importAdmissionKey, randomId } from "../protocol/resume_auth.ts";
import { dialTls, TlsTrustError } from "../session/tls_dial.ts";
import { DEFAULT_BACKOFF_CAP_MS, sleep } from "../session/backoff.ts";
import { type Clock, systemClock, type TimerHandle } from "../session/clock.ts";
import { type NetConn, type NetListener, type Network, systemNetwork } from "../session/network.ts";
import { Link } from "../session/link.ts";
import { ResumeGapError } from "../session/replay_buffer.ts";
import { Session, type SessionEnd, type SessionState } from "../session/session.ts";
import { checkAdoptedTimers, DEFAULT_TUNING, MIN_REPLAY_BUFFER_BYTES } from "../config/tuning.ts";
import { describeError } from "../session/transport.ts";
import {
  challengeResume,
  closeOnAbort,
  completeResume,
  type OpenedSession,
  openHandshake,
  RejectedError,
  type ResumeChallenge,
} from "./handshake.ts";
import { type RetryOutcome, retryUntil, type Verdict } from "./retry.ts";
import { ADDRESS_CHECK_MS, LocalAddresses, plainAddress } from "./addresses.ts";
import { HandshakeSlots } from "./handshake_slots.ts";
import { OutageHistory } from "./outages.ts";
import { type ClientStatus, clientStatus, type LinkError, renderClientHtml, type SessionView } from "./status.ts";
import { startStatusServer, type StatusServer } from "../ops/status_server.ts";
import { VERSION } from "../version.ts";

export { RejectedError } from "./handshake.ts";

const log = logger("client");

/**
 * Deadline of the TCP connect of a resume (CONNECT_TIMEOUT when shorter). A
 * SYN that the network drops is sent again only after 1 s (Linux) or 3 s
 * (Windows), and each further wait doubles: a fresh dial at the pace of the
 * backoff (its cap is 1 s too) finds the network soon after it returns.
 */
const RESUME_CONNECT_TIMEOUT_MS = DEFAULT_BACKOFF_CAP_MS;

/**
 * Once broker-client is stopping, sessions that ended while their server
 * may not know it get this long to tell it (ms): their ERP connections are
 * freed now rather than at the end of the resume window.
 */
export const FAREWELL_GRACE_MS = 3_000;

/** How long a server gets to answer an ABORT with CLOSE on a link just resumed for it (ms). */
const FAREWELL_ANSWER_MS = 3_000;

/**
 * Links broker-client sets up at once to each broker server, across its
 * sessions (see handshake_slots.ts): a PC's few sessions never wait; a
 * hundred that lost their links together come back a batch at a time instead
 * of all timing out. Per server: handshakes hung on one that does not answer
 * (each holding its slot for HANDSHAKE_TIMEOUT) must not hold up the
 * sessions of another.
 */
export const MAX_LINK_HANDSHAKES = 16;

/** Resolves when `signal` aborts or `done` settles, whichever comes first (no listener is left behind). */
async function untilAborted(signal: AbortSignal, done: Promise<unknown>): Promise<void> {
  if (signal.aborted) return;
  let onAbort = () => {};
  const aborted = new Promise<void>((resolve) => {
    onAbort = () => resolve();
    signal.addEventListener("abort", onAbort);
  });
  try {
    await Promise.race([done, aborted]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** What the client knows of a session once the server welcomed it. */
interface Identity {
  sessionId: Uint8Array;
  key: CryptoKey;
  server: HostPort;
}

/** How the opening of a session is going (see BrokerClient.openings). */
export interface OpeningProgress {
  /** The session; its state is "connecting" until a broker server welcomes it. */
  session: Session;
  /** Rounds over all the broker servers that failed so far (the client waits, then tries again). */
  failedRounds: number;
  /** Why each broker server failed in the last failed round ("host:port: reason; ..."); "" before any. */
  lastFailure: string;
}

/** Options of a BrokerClient. */
export interface BrokerClientOptions {
  /** Time and timers (the simulation's virtual clock); default systemClock. */
  clock?: Clock;
  /** Clock in ms only, with the system's timers (tests that shift the time); ignored with `clock`. */
  now?: () => number;
  /** Sockets (the simulation's network); default systemNetwork. TLS links always use the system's. */
  network?: Network;
}

/** The broker-client: loopback listener and one runner per Smart Client connection. */
export class BrokerClient {
  #config: ClientConfig;
  #clock: Clock;
  #network: Network;
  #listener: NetListener | null = null;
  #runners = new Set<SessionRunner>();
  /** Sessions that ended here while their link was down, still trying to tell their server. */
  #farewells = new Set<Promise<void>>();
  #shutdown = new AbortController();
  /** Aborted FAREWELL_GRACE_MS after the shutdown began: sessions stop telling their servers. */
  #farewellsEnd = new AbortController();
  #acceptLoop: Promise<void> | null = null;
  #admissionKey: Promise<CryptoKey | null>;
  #addresses = new LocalAddresses();
  #addressTimer: TimerHandle | undefined;
  /** The handshake slots of each broker server ("host:port"). */
  #handshakes = new Map<string, HandshakeSlots>();
  #startedAt: number;
  /** The last error talking to each broker server ("host:port"), for the status page. */
  #linkErrors = new Map<string, LinkError>();
  #statusServer: StatusServer | null = null;

  /** Creates a client for `config`; call listen() to start. */
  constructor(config: ClientConfig, options: BrokerClientOptions = {}) {
    this.#config = config;
    this.#clock = options.clock ?? (options.now ? { ...systemClock, now: options.now } : systemClock);
    this.#startedAt = this.#clock.now();
    this.#network = options.network ?? systemNetwork;
    this.#admissionKey = config.admissionKey ? importAdmissionKey(config.admissionKey) : Promise.resolve(null);
  }

  /** Where Smart Client connects (the real port when configured with 0). */
  get address(): HostPort {
    if (!this.#listener) throw new Error("Cannot tell the address of a client that is not listening");
    const addr = this.#listener.addr as Deno.NetAddr;
    return { hostname: addr.hostname, port: addr.port };
  }

  /** Number of sessions in progress. */
  get sessionCount(): number {
    return this.#runners.size;
  }

  /** The sessions in progress (for status and tests). */
  get sessions(): Session[] {
    return [...this.#runners].map((r) => r.session);
  }

  /** Where the status page listens, when it does. */
  get statusAddress(): HostPort | null {
    return this.#statusServer?.address ?? null;
  }

  /** What the status page and `--status` show: broker servers, sessions, the outage going on. */
  status(): ClientStatus {
    return clientStatus({
      version: VERSION,
      pid: Deno.pid,
      startedAt: this.#startedAt,
      configPath: this.#config.path,
      listen: this.address,
      brokerServers: this.#config.brokerServers,
      sessions: [...this.#runners].map((r) => r.view),
      linkErrors: this.#linkErrors,
      now: this.#clock.now(),
    });
  }

  /** How opening each session in progress went: failed rounds and their reasons (for status and tests). */
  get openings(): OpeningProgress[] {
    return [...this.#runners].map((r) => ({ session: r.session, ...r.opening }));
  }

  /** Binds the loopback listener and starts accepting Smart Client connections. */
  listen(): void {
    const { hostname, port } = this.#config.listen;
    try {
      this.#listener = this.#network.listen({ hostname, port });
    } catch (err) {
      const hint = err instanceof Deno.errors.AddrInUse
        ? "another program (or another broker-client) already uses this port"
        : describeError(err);
      throw new Error(`Cannot listen on ${formatHostPort({ hostname, port })}: ${hint}`);
    }
    for (const note of this.#config.notes) log.info("{note}", { note });
    log.info("broker-client listening on {address} for Smart Client; broker servers: {servers}", {
      address: formatHostPort(this.address),
      servers: this.#config.brokerServers.map(formatHostPort).join(", "),
    });
    this.#acceptLoop = this.#accept(this.#listener);
    this.#watchAddresses();
    this.#startStatusPage();
  }

  /**
   * Serves the status page on 127.0.0.1:STATUS_PORT, never another address.
   * A port already taken (another broker-client on this machine, another
   * user's on a terminal server) costs the page, never the sessions.
   */
  #startStatusPage(): void {
    if (this.#config.statusPort === 0) return;
    try {
      this.#statusServer = startStatusServer({
        listen: { hostname: "127.0.0.1", port: this.#config.statusPort },
        accessKey: null,
        pages: { html: () => renderClientHtml(this.status()), json: () => this.status() },
      });
    } catch (err) {
      log.warn("{error}; broker-client runs without it (broker-client --status cannot reach this one)", {
        error: (err as Error).message,
      });
    }
  }

  /** The handshake slots for links to `server`. */
  #slotsOf(server: HostPort): HandshakeSlots {
    const key = formatHostPort(server);
    let slots = this.#handshakes.get(key);
    if (!slots) this.#handshakes.set(key, slots = new HandshakeSlots(MAX_LINK_HANDSHAKES));
    return slots;
  }

  /** Notes the last error talking to `server`, for the status page. */
  #linkFailed(server: HostPort, message: string): void {
    this.#linkErrors.set(formatHostPort(server), { message, at: new Date(this.#clock.now()).toISOString() });
  }

  /**
   * Lists the machine's addresses every ADDRESS_CHECK_MS: sessions whose
   * link was made from an address that went away race a new link at once
   * (see addresses.ts). Without the permission to list them, it does not.
   */
  #watchAddresses(): void {
    const look = () => {
      let listed: string[];
      try {
        listed = this.#network.addresses();
      } catch {
        this.#clock.clear(this.#addressTimer);
        return;
      }
      const gone = this.#addresses.update(listed);
      if (gone.size > 0) { for (const runner of this.#runners) runner.addressesGone(gone); }
    };
    this.#addressTimer = this.#clock.setInterval(look, ADDRESS_CHECK_MS);
    look();
  }

  #accept(listener: NetListener): Promise<void> {
    const options = {
      what: "Smart Client connections",
      advice:
        "raise the limit (ulimit -n in the shell that starts broker-client), or close programs that hold many files",
      openFileLimit,
      clock: this.#clock,
      signal: this.#shutdown.signal,
      log: (note: AcceptNote) => log[note.level](note.message, note.fields),
    };
    return acceptLoop(listener, options, (conn) => {
      const runner = new SessionRunner(conn, {
        config: this.#config,
        shutdown: this.#shutdown.signal,
        farewellsEnd: this.#farewellsEnd.signal,
        clock: this.#clock,
        network: this.#network,
        handshakes: (server) => this.#slotsOf(server),
        admissionKey: this.#admissionKey,
        linkFailed: (server, message) => this.#linkFailed(server, message),
        done: () => this.#runners.delete(runner),
        farewell: (farewell) => {
          this.#farewells.add(farewell);
          farewell.finally(() => this.#farewells.delete(farewell));
        },
      });
      this.#runners.add(runner);
      runner.run();
    });
  }

  /** Stops listening and ends every session. */
  async close(reason = "broker-client is shutting down"): Promise<void> {
    if (this.#shutdown.signal.aborted) return;
    this.#shutdown.abort();
    this.#clock.clear(this.#addressTimer);
    const grace = this.#clock.setTimeout(() => this.#farewellsEnd.abort(), FAREWELL_GRACE_MS);
    this.#listener?.close();
    await this.#statusServer?.shutdown();
    this.#statusServer = null;
    await this.#acceptLoop;
    await Promise.all([...this.#runners].map((r) => r.stop(reason)));
    // Farewells started by the stops above join the set while they run.
    while (this.#farewells.size > 0) await Promise.all([...this.#farewells]);
    this.#clock.clear(grace);
    log.info("broker-client stopped");
  }
}

/** What a SessionRunner works with. */
interface SessionRunnerOptions {
  config: ClientConfig;
  /** Aborted when broker-client starts stopping. */
  shutdown: AbortSignal;
  /** Aborted when sessions that ended must stop telling their servers (after the shutdown's grace). */
  farewellsEnd: AbortSignal;
  /** Time and timers. */
  clock: Clock;
  /** Sockets for the links (plain TCP; TLS dials the system's). */
  network: Network;
  /** The slots of a broker server, shared by every session of this broker-client: taken for each link being set up to it. */
  handshakes: (server: HostPort) => HandshakeSlots;
  admissionKey: Promise<CryptoKey | null>;
  /** Talking to `server` failed with `message` (an opening or a resume attempt). */
  linkFailed(server: HostPort, message: string): void;
  /** The session has ended (called once). */
  done(): void;
  /** The session ended while its server may not know: broker-client awaits `farewell` before exiting. */
  farewell(farewell: Promise<void>): void;
}

/** Carries one Smart Client connection: opens its session and keeps redialing it. */
class SessionRunner {
  #config: ClientConfig;
  #signal: AbortSignal;
  #shutdownSignal: AbortSignal;
  /** Aborted when the session ends or the shutdown's grace does. */
  #finishing: AbortSignal;
  #farewellsEnd: AbortSignal;
  #farewell: (farewell: Promise<void>) => void;
  #clock: Clock;
  #network: Network;
  #handshakes: (server: HostPort) => HandshakeSlots;
  #now: () => number;
  #session: Session;
  /** When the current link was lost (clock ms). */
  #detachedAt = 0;
  /** The server already knows the session is over (it refused a resume, or was sent ABORT). */
  #serverKnows = false;
  #identity: Identity | null = null;
  #smartClient: string;
  #openedAt: number;
  #reconnecting: Promise<void> | null = null;
  #done: () => void;
  #linkFailed: (server: HostPort, message: string) => void;
  #ended: Promise<void>;
  #endedResolve!: () => void;
  #stopped = new AbortController();
  /** Repeated on every attempt to open this session (see encodeHelloNew). */
  #openToken = randomId();
  /** The ephemeral key pair of every attempt to open this session. */
  #openKey: Promise<EphemeralKey> | null = null;
  #admissionKey: Promise<CryptoKey | null>;
  #opening = { failedRounds: 0, lastFailure: "" };
  /**
   * Broker servers that an opening attempt sent HELLO_NEW to without an
   * answer coming back (the link died): each may hold the session, and an
   * ERP connection, until its unconfirmed window passes.
   */
  #inDoubt = new Set<HostPort>();
  /** The opening, then the goodbyes it owes to servers in doubt; set by run(). */
  #openDone: Promise<void> = Promise.resolve();
  #openFinished = false;
  /** A broker server welcomed the session and it was attached. */
  #opened = false;
  /** The race of a new link against a suspected one, while it runs (one at a time); aborted when the old one answers. */
  #race: AbortController | null = null;
  /** The last race (stop() waits for it). */
  #raced: Promise<void> = Promise.resolve();
  /** The local address each link was dialed from, when the transport tells it. */
  #localAddresses = new WeakMap<Link, string>();
  /** Links dialed and not yet attached (opening, resume or race handshakes; closed ones pruned at each dial). */
  #settingUp = new Set<Link>();
  /** The local address of the link attached now, if known. */
  #attachedFrom: string | null = null;
  /** Outages hidden so far, and the log line of each resume. */
  #outages = new OutageHistory();

  constructor(conn: NetConn, options: SessionRunnerOptions) {
    const { config, clock } = options;
    const now = () => clock.now();
    this.#config = config;
    this.#shutdownSignal = options.shutdown;
    this.#farewellsEnd = options.farewellsEnd;
    this.#signal = AbortSignal.any([options.shutdown, this.#stopped.signal]);
    this.#finishing = AbortSignal.any([options.farewellsEnd, this.#stopped.signal]);
    this.#clock = clock;
    this.#network = options.network;
    this.#handshakes = options.handshakes;
    this.#now = now;
    this.#done = options.done;
    this.#linkFailed = options.linkFailed;
    this.#farewell = options.farewell;
    this.#smartClient = formatHostPort(conn.remoteAddr as Deno.NetAddr);
    this.#openedAt = now();
    this.#admissionKey = options.admissionKey;
    this.#ended = new Promise((resolve) => this.#endedResolve = resolve);
    this.#session = new Session({
      role: "client",
      local: conn,
      timers: {
        resumeTimeoutMs: DEFAULT_TUNING.resumeTimeoutMs,
        heartbeatIntervalMs: DEFAULT_TUNING.heartbeatIntervalMs,
        linkTimeoutMs: DEFAULT_TUNING.linkTimeoutMs,
        // Until the server states its cap in WELCOME, keep no more than the
        // smallest cap any server may have, and expect no DATA.
        replayBufferBytes: Math.min(config.replayBufferBytes, MIN_REPLAY_BUFFER_BYTES),
        receiveWindowBytes: 0,
      },
      clock,
      events: {
        goingAway: (drainMs, reason) => this.#goingAway(drainMs, reason),
        detached: (reason, loss) => {
          this.#detachedAt = this.#now();
          log.info("Session {session}: link lost ({reason}); {next}", {
            session: this.#label,
            reason,
            next: loss === "suspicion race won" ? "resuming on the new link" : "reconnecting",
          });
          // A race in progress goes on, and starts the resume loop if it fails.
          if (!this.#race) this.#reconnecting = this.#resumeLoop();
        },
        suspected: (waitedMs) => {
          if (!this.#race) this.#raced = this.#raceSpare(`a probe unanswered for ${Math.round(waitedMs)} ms`);
        },
        reassured: () => this.#race?.abort(),
        peerReplayed: (bytes, complete) => this.#outages.replayedBy(bytes, complete),
        ended: (end) => this.#onEnded(end),
      },
    });
  }

  /** Backoff waits on the session's clock. */
  #sleep = (ms: number, signal?: AbortSignal): Promise<boolean> => sleep(ms, signal, this.#clock);

  /** The server announced that it is stopping: the session may end soon. */
  #goingAway(drainMs: number, reason: string): void {
    log.warn(
      "Session {session}: broker server {server} is going away ({reason}); the session may end within {seconds} s",
      {
        session: this.#label,
        server: this.#identity ? formatHostPort(this.#identity.server) : "?",
        reason,
        seconds: drainMs / 1000,
      },
    );
  }

  /** Logs the end of the session, makes sure its server hears of it, and lets the runner go. */
  #onEnded(end: SessionEnd): void {
    const stats = this.#session.stats;
    const message =
      "Session {session} closed: {reason}; {sent} bytes from Smart Client, {received} bytes to it, {seconds} s, {resumes} resumes";
    const fields = {
      session: this.#label,
      reason: end.reason,
      sent: stats.bytesSent,
      received: stats.bytesReceived,
      seconds: ((this.#now() - this.#openedAt) / 1000).toFixed(1),
      resumes: stats.resumes,
    };
    if (end.clean) log.info(message, fields);
    else log.warn(message, fields);
    const identity = this.#identity;
    if (end.cause === "aborted" && identity && !this.#serverKnows) {
      // Until the server has the end, it holds the ERP connection: make sure it hears.
      this.#farewell(end.told.then((told) => told ? undefined : this.#tellServer(identity, end.reason)));
    }
    // Still opening: a server may welcome the session yet (or have done so on a
    // link that died); the opening tells it, and a stopping broker-client waits for that.
    if (!this.#openFinished) this.#farewell(this.#openDone);
    this.#stopped.abort();
    this.#done();
    this.#endedResolve();
  }

  /** The session this runner carries. */
  get session(): Session {
    return this.#session;
  }

  /** Rounds of opening attempts that failed so far, and why the last one did. */
  get opening(): { failedRounds: number; lastFailure: string } {
    return { ...this.#opening };
  }

  /** What the status page shows of this session. */
  get view(): SessionView {
    return {
      id: this.#identity ? toHex(this.#identity.sessionId).slice(0, 8) : null,
      smartClient: this.#smartClient,
      server: this.#identity?.server ?? null,
      openedAt: this.#openedAt,
      session: this.#session,
      outages: this.#outages,
      opening: this.opening,
    };
  }

  get #label(): string {
    return this.#identity ? toHex(this.#identity.sessionId).slice(0, 8) : `(new, Smart Client ${this.#smartClient})`;
  }

  /** Starts reading Smart Client and opening the session. */
  run(): void {
    this.#session.start();
    this.#openDone = this.#openLoop().then(() => this.#leaveOpening()).finally(() => this.#openFinished = true);
  }

  /**
   * What cancels resuming: the session's end or the shutdown; for a session
   * that only waits for the server's CLOSE, the end of the shutdown's grace.
   */
  #resumeSignal(): AbortSignal {
    return this.#session.finishing ? this.#finishing : this.#signal;
  }

  /** Ends the session (shutdown) and waits until it is gone. */
  async stop(reason: string): Promise<void> {
    if (this.#session.finishing) {
      // Both streams are finished and delivered here: only the server's
      // CLOSE is missing (on its way, or lost with the link and got by a
      // resume). Aborting now would end as aborted a session that the server
      // completes: give it the grace.
      await untilAborted(this.#finishing, this.#ended);
      // The grace is over: an ABORT on a link that brought no CLOSE would only wait in vain.
      this.#session.detach("broker-client is shutting down");
    }
    this.#session.abort(reason);
    await this.#ended;
    await this.#raced;
    await this.#reconnecting;
    await this.#session.settled;
  }

  /** Tries the broker servers in turn, with backoff between rounds, until one welcomes us. */
  async #openLoop(): Promise<void> {
    const errors = new Map<string, string>();
    const outcome = await retryUntil(
      this.#now() + this.#config.newSessionTimeoutMs,
      (err) => err instanceof RoundFailed && err.final ? "final" : "retry",
      {
        now: this.#now,
        sleep: this.#sleep,
        attempt: (round) => this.#openRound(round, errors),
        interrupt: () => this.#signal,
        retrying: (_err, round) => {
          if (round > 0) return;
          log.warn("Session {session}: cannot reach a broker server yet ({summary}); retrying", {
            session: this.#label,
            summary: this.#opening.lastFailure,
          });
        },
      },
    );
    const summary = this.#opening.lastFailure;
    if (outcome.kind === "final") this.#session.abort(`no broker server accepted the session (${summary})`);
    if (outcome.kind === "expired") {
      this.#session.abort(
        `no broker server reachable within ${formatDuration(this.#config.newSessionTimeoutMs)} (${summary})`,
      );
    }
  }

  /**
   * One round over the broker servers: returns once one welcomed the
   * session (or the session or broker-client stopped); throws RoundFailed
   * when none did, final when every server refused for good.
   */
  async #openRound(round: number, errors: Map<string, string>): Promise<void> {
    let rejections = 0;
    for (const server of this.#config.brokerServers) {
      if (this.#session.state === "closed" || this.#signal.aborted) return;
      try {
        await this.#openOn(server);
        return;
      } catch (err) {
        // A server at a limit or stopping may take us a moment later: only other refusals are final.
        const transient = err instanceof RejectedError && err.code === RejectCode.Unavailable;
        if ((err instanceof RejectedError && !transient) || err instanceof TlsTrustError) rejections++;
        errors.set(formatHostPort(server), describeError(err));
        this.#linkFailed(server, describeError(err));
      }
    }
    const summary = [...errors].map(([server, error]) => `${server}: ${error}`).join("; ");
    this.#opening = { failedRounds: round + 1, lastFailure: summary };
    throw new RoundFailed(summary, rejections === this.#config.brokerServers.length);
  }

  /**
   * Connects to `server` (the TCP connect within `connectTimeoutMs`, TLS
   * within CONNECT_TIMEOUT) and sends the preface and `hello`; `signal`
   * cancels the dial.
   */
  async #dial(server: HostPort, hello: Uint8Array, signal: AbortSignal, connectTimeoutMs: number): Promise<Link> {
    const conn = this.#config.tls
      ? await dialTls(server.hostname, server.port, this.#config.tls, {
        timeoutMs: this.#config.connectTimeoutMs,
        connectTimeoutMs,
        signal,
      })
      : await this.#network.dial(server.hostname, server.port, { timeoutMs: connectTimeoutMs, signal });
    const link = new Link(conn, formatHostPort(server), { clock: this.#clock });
    const local = "localAddr" in conn ? (conn.localAddr as Deno.NetAddr).hostname : undefined;
    if (local) this.#localAddresses.set(link, plainAddress(local));
    for (const old of this.#settingUp) if (old.closed) this.#settingUp.delete(old);
    this.#settingUp.add(link);
    link.send(encodePreface());
    link.send(hello);
    return link;
  }

  /** One attempt to open the session on `server`; `signal` cancels the dial. */
  async #openOn(server: HostPort, signal: AbortSignal = this.#signal): Promise<void> {
    // One key pair for every attempt of this opening: if an earlier attempt's
    // WELCOME was lost, proving the key derived from it is what gets us the
    // session it opened (WELCOME_BACK), where the token alone would not.
    const own = await (this.#openKey ??= createEphemeralKey());
    let opened: OpenedSession;
    const release = await this.#handshakes(server).take(signal);
    const started = this.#now();
    try {
      opened = await openHandshake({
        dial: (hello) => this.#dial(server, hello, signal, this.#config.connectTimeoutMs),
        own,
        openToken: this.#openToken,
        replayBufferBytes: this.#config.replayBufferBytes,
        admissionKey: await this.#admissionKey,
        handshakeTimeoutMs: this.#config.handshakeTimeoutMs,
        now: this.#now,
        // From here the server may open the session whatever becomes of this link.
        connected: () => this.#inDoubt.add(server),
        // Not cancelled once connected: if Smart Client leaves meanwhile, the
        // server is told (ABORT after its WELCOME) instead of holding the session;
        // only the end of a stopping broker-client's grace cuts it short.
        signal: this.#farewellsEnd,
        acceptWelcome: (welcome) => this.#acceptWelcome(welcome),
      });
    } catch (err) {
      // A definite refusal: it holds no session for this opening.
      if (err instanceof RejectedError && err.code !== RejectCode.Unavailable) this.#inDoubt.delete(server);
      throw err;
    } finally {
      release();
    }
    await this.#adopt(opened, server, this.#now() - started);
  }

  /** Refuses a WELCOME whose timers are out of bounds or whose cap exceeds the one offered. */
  #acceptWelcome(welcome: Welcome): void {
    checkAdoptedTimers(welcome);
    if (welcome.replayBufferBytes > this.#config.replayBufferBytes) {
      throw new RangeError(
        `its session cap of ${welcome.replayBufferBytes} bytes exceeds the ${this.#config.replayBufferBytes} this broker-client offered`,
      );
    }
  }

  /**
   * Takes the session `server` welcomed (in `handshakeMs`): attaches its
   * link, or says goodbye if Smart Client left meanwhile.
   */
  async #adopt({ link, welcome, key }: OpenedSession, server: HostPort, handshakeMs: number): Promise<void> {
    const cancellable = closeOnAbort(link, this.#farewellsEnd);
    try {
      const identity = { sessionId: welcome.sessionId, key, server };
      this.#identity = identity;
      // The session is ours: its ending is told as any session's is.
      this.#inDoubt.delete(server);
      if (this.#session.state === "closed") {
        // Smart Client left while we were opening: tell the server, so it
        // closes the ERP connection now rather than after the resume window.
        const reason = "Smart Client closed the connection before the session opened";
        link.send(encodeAbort(reason));
        if (!await this.#answered(link, this.#farewellsEnd)) this.#farewell(this.#tellServer(identity, reason));
        link.close();
        return;
      }
      this.#session.setTimers({
        resumeTimeoutMs: welcome.resumeTimeoutMs,
        heartbeatIntervalMs: welcome.heartbeatIntervalMs,
        linkTimeoutMs: welcome.linkTimeoutMs,
        // Flow control: the session's cap (at most ours, see #acceptWelcome) bounds what either side has in flight.
        replayBufferBytes: welcome.replayBufferBytes,
        receiveWindowBytes: welcome.replayBufferBytes,
      });
      this.#session.attach(link, 0);
      this.#attachedFrom = this.#localAddresses.get(link) ?? null;
      this.#settingUp.delete(link);
      // An upper bound of the round trip (the connect, the hello, the ERP connect): until probes measure it.
      this.#session.measuredHandshake(handshakeMs);
      this.#opened = true;
      log.info("Session {session} opened for Smart Client {client} on broker server {server}", {
        session: this.#label,
        client: this.#smartClient,
        server: link.peer,
      });
    } catch (err) {
      link.close();
      throw err;
    } finally {
      cancellable.release();
    }
  }

  /**
   * The session ended while opening, and a broker server may hold it
   * without our knowing its id (its WELCOME was lost with the link): it
   * would keep the ERP connection until its unconfirmed window passes.
   * Open it again there with the same token and key (the server hands
   * back the same session, see #retake) and say goodbye, until the server
   * answers, refuses, or the window or broker-client's shutdown grace ends.
   */
  async #leaveOpening(): Promise<void> {
    // Opened: servers still in doubt hold an orphan that their unconfirmed
    // window ends (reopening it there would take the session over).
    if (this.#opened || this.#inDoubt.size === 0) return;
    const outcome = await this.#farewellRetry(() => "retry", async () => {
      for (const server of [...this.#inDoubt]) {
        try {
          await this.#openOn(server, this.#farewellsEnd);
        } catch { /* still in doubt unless it refused: again after the next wait */ }
      }
      if (this.#inDoubt.size > 0) throw new Error("Cannot tell every broker server in doubt yet");
    });
    if (outcome.kind === "done") return;
    log.warn(
      "Session {session}: could not tell broker server(s) {servers} that Smart Client left during the opening; they may keep an ERP connection until their unconfirmed window passes",
      { session: this.#label, servers: [...this.#inDoubt].map(formatHostPort).join(", ") },
    );
  }

  /** Redials the broker server that holds the session until it resumes, ends or the window closes. */
  async #resumeLoop(): Promise<void> {
    const identity = this.#identity;
    if (!identity) return;
    let lastError = "";
    const classify = (err: unknown): Verdict => {
      const error = describeError(err);
      this.#outages.lastAttemptError = error;
      this.#linkFailed(identity.server, error);
      // Unavailable: the broker server cannot reach the one that holds the session right now (a cluster), try again.
      if (err instanceof RejectedError && err.code !== RejectCode.Unavailable) return "final";
      if (error !== lastError) {
        log.info("Session {session}: resume attempt failed ({error}); retrying", { session: this.#label, error });
        lastError = error;
      }
      return "retry";
    };
    const outcome = await retryUntil(this.#session.stateSince + this.#session.timers.resumeTimeoutMs, classify, {
      now: this.#now,
      sleep: this.#sleep,
      waitFirst: true,
      // A shutdown cuts the wait short; a session that only waits for the
      // server's CLOSE still resumes to get it, within the shutdown's grace.
      interrupt: () => this.#resumeSignal(),
      stop: () => this.#resumeSignal().aborted || this.#session.state !== "detached",
      attempt: () => this.#resumeOn(identity, this.#resumeSignal()),
    });
    if (outcome.kind === "final") {
      this.#serverKnows = true;
      this.#session.abort(`cannot resume: ${(outcome.error as Error).message}`);
    }
  }

  /** Dials the session's server and reads its CHALLENGE (the connect within RESUME_CONNECT_TIMEOUT_MS). */
  async #challenge(
    identity: Identity,
    signal: AbortSignal,
    handshakeTimeoutMs: number,
  ): Promise<ResumeChallenge & { challengedIn: number }> {
    const connectTimeoutMs = Math.min(this.#config.connectTimeoutMs, RESUME_CONNECT_TIMEOUT_MS);
    // The timeouts start once the slot is ours: the wait is not the link's fault.
    const release = await this.#handshakes(identity.server).take(signal);
    const started = this.#now();
    try {
      const challenge = await challengeResume({
        dial: (hello) => this.#dial(identity.server, hello, signal, connectTimeoutMs),
        sessionId: identity.sessionId,
        handshakeTimeoutMs,
        now: this.#now,
        signal,
      });
      return { ...challenge, challengedIn: this.#now() - started };
    } finally {
      release();
    }
  }

  /**
   * Dials the session's server and proves both ways that each holds it;
   * throws RejectedError on REJECT. `signal` cancels it, dial and handshake.
   */
  async #resume(identity: Identity, received: number, signal: AbortSignal): Promise<{ link: Link; resumed: Proof }> {
    const challenge = await this.#challenge(identity, signal, this.#config.handshakeTimeoutMs);
    return await completeResume(challenge, { key: identity.key, received, now: this.#now, signal });
  }

  async #resumeOn(identity: Identity, signal: AbortSignal): Promise<void> {
    const started = this.#now();
    const challenge = await this.#challenge(identity, signal, this.#config.handshakeTimeoutMs);
    await this.#commit(identity, challenge, { started, challengedIn: challenge.challengedIn, signal });
  }

  /**
   * Sends the proof on a challenged link and, once the server answered,
   * attaches the session to it. The old link must be gone by now: the proof
   * states what we have received, and nothing may arrive after that.
   */
  async #commit(
    identity: Identity,
    challenge: ResumeChallenge,
    timing: { started: number; challengedIn: number; signal: AbortSignal },
  ): Promise<void> {
    const received = this.#session.received;
    const proven = { key: identity.key, received, now: this.#now, signal: timing.signal };
    const { link, resumed } = await completeResume(challenge, proven);
    try {
      if (this.#session.state !== "detached" || this.#session.received !== received) {
        link.close();
        return;
      }
      this.#outages.begin({
        session: this.#label,
        // Never negative, even when the wall clock stepped back meanwhile.
        awayMs: Math.max(0, this.#now() - this.#session.stateSince),
        trigger: this.#session.linkLoss ?? "link error",
        handshakeMs: Math.max(0, this.#now() - timing.started),
      });
      let replayed: number;
      try {
        replayed = this.#session.attach(link, resumed.receivedOffset);
      } catch (err) {
        this.#outages.abandon();
        const reason = `cannot resume: ${(err as Error).message}`;
        if (err instanceof ResumeGapError || err instanceof RangeError) {
          // Told like any ending: if the answer does not come, the goodbye is said again on a new link.
          link.send(encodeAbort(reason));
          this.#serverKnows = await this.#answered(link, this.#farewellsEnd);
          link.close();
          this.#session.abort(reason);
          return;
        }
        throw err;
      }
      this.#attachedFrom = this.#localAddresses.get(link) ?? null;
      this.#settingUp.delete(link);
      // The CHALLENGE came after a connect and a hello: at most two round trips.
      this.#session.measuredHandshake(timing.challengedIn);
      this.#outages.replayedTo(replayed);
    } catch (err) {
      link.close();
      throw err;
    }
  }

  /**
   * Some of this machine's addresses went away: a link made from one of them
   * can never work again. One being set up is dropped (its attempt fails at
   * once and the next one dials from an address that works, instead of
   * waiting out HANDSHAKE_TIMEOUT); for the attached one, race a new link now.
   */
  addressesGone(gone: ReadonlySet<string>): void {
    for (const link of this.#settingUp) {
      const address = this.#localAddresses.get(link);
      if (link.closed || address === undefined || !gone.has(address)) continue;
      log.info("Session {session}: a link being set up from {address}, which is gone, is dropped", {
        session: this.#label,
        address,
      });
      link.close();
    }
    const from = this.#attachedFrom;
    if (from === null || !gone.has(from) || this.#race || this.#stateNow() !== "attached") return;
    this.#raced = this.#raceSpare(`its local address ${from} is gone`);
  }

  /**
   * The attached link is suspect (`why`: a probe went unanswered, or its
   * local address went away): dial a spare and take it as far as the
   * server's CHALLENGE, which commits nothing. If the old link delivers
   * anything meanwhile, the spare is closed and the session stays where it
   * is; if the spare answers first, the old link goes and the session
   * resumes on the spare. One race at a time, bounded by the link timeout;
   * a failed race leaves the old link to its timeout (or to the resume
   * loop, if it died meanwhile).
   */
  async #raceSpare(why: string): Promise<void> {
    const identity = this.#identity;
    if (this.#race || !identity || this.#stateNow() !== "attached") return;
    const race = new AbortController();
    this.#race = race;
    const suspectedAt = this.#now();
    log.info("Session {session}: link suspected ({why}); racing a new link to broker server {server}", {
      session: this.#label,
      why,
      server: formatHostPort(identity.server),
    });
    const signal = AbortSignal.any([race.signal, this.#resumeSignal()]);
    let challenge: (ResumeChallenge & { challengedIn: number }) | null = null;
    try {
      // Bounded so that a spare never outlives the old link's own deadline by much.
      const bound = Math.min(this.#config.handshakeTimeoutMs, this.#session.timers.linkTimeoutMs);
      challenge = await this.#challenge(identity, signal, bound);
      const challengedIn = this.#now() - suspectedAt;
      if (race.signal.aborted || this.#session.heardSince(suspectedAt) || this.#stateNow() === "closed") {
        challenge.link.close();
        challenge = null;
        log.info("Session {session}: the suspected link answered after all; spare link closed", {
          session: this.#label,
        });
        return;
      }
      if (this.#stateNow() === "attached") {
        this.#session.detach(`${why}, and a new link answered in ${challengedIn} ms`, "suspicion race won");
      }
      const spare = challenge;
      challenge = null;
      const timing = { started: suspectedAt, challengedIn: spare.challengedIn, signal: this.#resumeSignal() };
      await this.#commit(identity, spare, timing);
    } catch (err) {
      challenge?.link.close();
      if (race.signal.aborted) {
        log.info("Session {session}: the suspected link answered after all; spare link closed", {
          session: this.#label,
        });
      } else {
        log.info("Session {session}: the race of a new link failed ({error})", {
          session: this.#label,
          error: describeError(err),
        });
      }
    } finally {
      if (this.#race === race) this.#race = null;
      // The old link went while we raced (or we dropped it and the proof failed): resume as usual.
      if (this.#stateNow() === "detached") this.#reconnecting = this.#resumeLoop();
    }
  }

  // A method, so the compiler does not narrow the state across awaits.
  #stateNow(): SessionState {
    return this.#session.state;
  }

  /**
   * Reads `link` until the server answers the ABORT just sent on it: true
   * on its CLOSE or ABORT (or a REJECT: it no longer holds the session),
   * false when the link ends or fails, or no answer came within
   * FAREWELL_ANSWER_MS (whatever else the server sent meanwhile).
   */
  async #answered(link: Link, signal: AbortSignal): Promise<boolean> {
    const cancellable = closeOnAbort(link, signal);
    // One deadline for the answer, not one per frame: a server that keeps
    // sending (heartbeats, a replay) without answering must not hold us.
    const answerBy = this.#now() + FAREWELL_ANSWER_MS;
    try {
      for (;;) {
        const left = answerBy - this.#now();
        if (left <= 0) return false;
        const frame = await link.readFrameWithin(left, "answer to ABORT");
        if (frame === null) return false;
        if (frame.type === FrameType.Close || frame.type === FrameType.Abort || frame.type === FrameType.Reject) {
          return true;
        }
        // What it replayed before reading the ABORT is dropped.
      }
    } catch {
      return false; // closed, reset or silent: tell it again on another link
    } finally {
      cancellable.release();
    }
  }

  /**
   * Paces the attempts of a goodbye: one per round, with backoff, until the
   * resume window passes; a shutdown cuts the wait short (the next try
   * comes at once), and the end of its grace ends the rounds.
   */
  #farewellRetry<T>(classify: (err: unknown) => Verdict, attempt: () => Promise<T>): Promise<RetryOutcome<T>> {
    return retryUntil(this.#now() + this.#session.timers.resumeTimeoutMs, classify, {
      now: this.#now,
      sleep: this.#sleep,
      waitFirst: true,
      interrupt: () =>
        this.#shutdownSignal.aborted ? this.#farewellsEnd : AbortSignal.any([this.#shutdownSignal, this.#farewellsEnd]),
      stop: () => this.#farewellsEnd.aborted,
      attempt,
    });
  }

  /**
   * The session ended here, and the server may not know (the ABORT went out
   * on no link, or on one that died before the answer): it would hold the
   * ERP connection for the rest of its resume window. Until then, or until
   * broker-client's shutdown grace ends, resume the session on a new link
   * and say it again, until the server answers.
   */
  async #tellServer(identity: Identity, reason: string): Promise<void> {
    const server = formatHostPort(identity.server);
    // A refusal other than Unavailable: it no longer holds the session (it has the end already, or it expired).
    const classify = (err: unknown): Verdict =>
      err instanceof RejectedError && err.code !== RejectCode.Unavailable ? "final" : "retry";
    const outcome = await this.#farewellRetry(classify, () => this.#sayGoodbye(identity, reason));
    if (outcome.kind === "final") {
      log.info("Session {session}: broker server {server} no longer holds the session ({reason})", {
        session: this.#label,
        server,
        reason: (outcome.error as Error).message,
      });
    } else if (outcome.kind === "done") {
      log.info("Session {session}: told broker server {server} that the session had ended ({reason})", {
        session: this.#label,
        server,
        reason,
      });
    } else {
      log.warn(
        "Session {session}: could not tell broker server {server} that the session had ended; it keeps the ERP connection until its resume window passes",
        { session: this.#label, server },
      );
    }
  }

  /** One goodbye: resumes the session on a new link and sends ABORT; throws unless the server answered. */
  async #sayGoodbye(identity: Identity, reason: string): Promise<void> {
    const { link } = await this.#resume(identity, this.#session.received, this.#farewellsEnd);
    link.send(encodeAbort(reason));
    const told = await this.#answered(link, this.#farewellsEnd);
    link.close();
    if (!told) throw new Error("The broker server did not answer the ABORT");
  }
}

/** A round over every broker server failed; `final` when each refused for good. */
class RoundFailed extends Error {
  override name = "RoundFailed";
  /** Every server refused: another round would not help. */
  readonly final: boolean;

  constructor(summary: string, final: boolean) {
    super(summary);
    this.final = final;
  }
}
