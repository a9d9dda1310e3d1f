/**
 * What broker-server does with a link once its hello has been read: opens a
 * session (limits, admission, keys, an ERP connection), lets a retried
 * opening retake its session, resumes a session or answers from its
 * tombstone, and records a session's end. State lives in the registry; the
 * wire steps live in handshake.ts.
 * @module
 */

import type { ServerConfig } from "../config/server_config.ts";
import { formatHostPort } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import {
  encodeProof,
  encodeWelcomeBack,
  FrameType,
  RejectCode,
  type RejectCodeValue,
  toHex,
} from "../protocol/frames.ts";
import {
  createEphemeralKey,
  deriveResumeSecret,
  importResumeKey,
  randomId,
  signProof,
  signRetake,
} from "../protocol/resume_auth.ts";
import type { Link } from "../session/link.ts";
import { ResumeGapError } from "../session/replay_buffer.ts";
import { Session, type SessionEnd, type SessionTimers } from "../session/session.ts";
import { describeError } from "../session/transport.ts";
import type { Clock } from "../session/clock.ts";
import type { NetConn, Network } from "../session/network.ts";
import type { SourceLogBudgets } from "../ops/log_budget.ts";
import type { Backend, Balancer } from "./balancer.ts";
import {
  answerCleanEnd,
  type OpenRequest,
  proveAdmission,
  type ReadFrame,
  readResumeProof,
  readRetakeProof,
  type ResumeInput,
  type ResumeRequest,
  verifyResumeProof,
  welcomeFrame,
  type WelcomeSignature,
} from "./handshake.ts";
import type { RateLimiter } from "./rate_limit.ts";
import { type OpeningAttempt, type SessionEntry, type SessionRegistry, shortId, type Tombstone } from "./registry.ts";
import { erpTraffic, type ServerStats } from "./stats.ts";
import type { ServerHistory } from "./history.ts";

const log = logger("server");

/** Why a retried opening must wait. */
const OPENING_IN_PROGRESS =
  "an earlier attempt to open this session is still connecting to an ERP server: the broker-client tries again";

/** Whether two byte strings are equal (public values only: not constant time). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** What the session desk uses of the server it works for. */
export interface SessionDeskOptions {
  /** The configuration in force (changes on reload). */
  config: () => ServerConfig;
  /** Time and timers. */
  clock: Clock;
  /** Sockets (the ERP connections). */
  network: Network;
  /** The session registry. */
  registry: SessionRegistry;
  /** The ERP servers. */
  balancer: Balancer;
  /** The server's counters. */
  stats: ServerStats;
  /** The server's last 24 hours. */
  history: ServerHistory;
  /** Aborted when the server shuts down. */
  shutdown: AbortSignal;
  /** Whether the server is stopping (refuses new sessions). */
  stopping: () => boolean;
  /** The admission key in force, if any. */
  admissionKey: () => Promise<CryptoKey | null>;
  /** The new-session rate limiter in force. */
  rates: () => RateLimiter;
  /** Refuses a link (logged and counted). */
  reject: (link: Link, code: RejectCodeValue, reason: string) => Promise<void>;
  /** Makes `link` a session's: the handshake leaves it open. */
  adopt: (link: Link) => void;
  /** A link resumes session `id`: older links in handshake that compete with it go. */
  resuming: (link: Link, id: string) => void;
  /** Budget of abnormal-end log lines per source. */
  abnormalEndLog: SourceLogBudgets;
  /** Called when the last live session has ended. */
  drained: () => void;
  /** This process's holder tag: the last bytes of every session id it makes (src/cluster/). */
  idTag: Uint8Array;
}

/** A new session's ERP connection, or why there is none. */
type BackendConnection = { conn: NetConn; backend: Backend; decision: string } | { errors: string[] };

/** Opens, retakes, resumes and ends sessions for broker-server. */
export class SessionDesk {
  #server: SessionDeskOptions;
  #bufferedSum = { at: -Infinity, bytes: 0 };

  /** A desk working for the server that `options` describe. */
  constructor(options: SessionDeskOptions) {
    this.#server = options;
  }

  /** A new session's timers; its cap is the smaller of ours and the client's `clientCap` (WELCOME states it). */
  #timers(clientCap: number): SessionTimers {
    const t = this.#server.config().tuning;
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

  /**
   * Bytes held for all sessions (replay buffers and bytes waiting for the
   * ERP), summed at most every 100 ms: a burst of logins with thousands of
   * sessions open must not walk all of them for each new one.
   */
  #bufferedBytes(): number {
    const now = this.#server.clock.now();
    if (now - this.#bufferedSum.at >= 100 || now < this.#bufferedSum.at) {
      let sum = 0;
      for (const e of this.#server.registry.values()) sum += e.session.bufferedBytes + e.session.pendingLocalBytes;
      this.#bufferedSum = { at: now, bytes: sum };
    }
    return this.#bufferedSum.bytes;
  }

  /**
   * Why a new session from `source` must be refused now, or null. The rate
   * limit is only looked at here: open() takes its token once the client
   * has proved the admission key.
   */
  #refuseNewSession(source: string): string | null {
    const limits = this.#server.config().limits;
    if (this.#server.stopping()) return "broker-server is shutting down and takes no new sessions";
    if (this.#server.registry.size >= limits.maxSessions) {
      return `broker-server is at its limit of ${limits.maxSessions} sessions (MAX_SESSIONS)`;
    }
    if (!this.#server.rates().allows(source)) return this.#tooManyNewSessions(source);
    const buffered = this.#bufferedBytes();
    if (buffered >= limits.maxBufferedBytes) {
      return `broker-server buffers ${buffered} bytes for detached or slow sessions, its limit (MAX_BUFFERED): new sessions wait until that drains`;
    }
    return null;
  }

  #tooManyNewSessions(source: string): string {
    return `too many new sessions from ${source}: the limit is ${this.#server.config().limits.newSessionsPerMinute} per minute (NEW_SESSIONS_PER_MINUTE)`;
  }

  /**
   * Connects a new session to an ERP server: the balancer's candidates in
   * order, each at most once, each within the connect timeout. A server that
   * fails is marked down at once (passive health check).
   */
  async #connectBackend(): Promise<BackendConnection> {
    const balancer = this.#server.balancer;
    const placement = balancer.place();
    const notes = placement.skipped.map((s) => `${s.backend.server.name}: ${s.reason}`);
    for (const backend of placement.order) {
      const server = backend.server;
      // The session counts against this server from now on, while it connects (see Balancer.acquire).
      if (!balancer.acquire(backend)) {
        notes.push(`${server.name}: ${backend.draining ? "draining" : `full (max ${server.maxSessions} sessions)`}`);
        continue;
      }
      try {
        const conn = await this.#server.network.dial(server.hostname, server.port, {
          timeoutMs: this.#server.config().tuning.connectTimeoutMs,
          signal: this.#server.shutdown,
        });
        if (balancer.connectSucceeded(backend)) {
          log.info("ERP server {server} ({address}) accepts connections again", {
            server: server.name,
            address: formatHostPort(server),
          });
        }
        const why = backend === placement.order[0] ? placement.why : "the servers before it failed";
        const decision = notes.length > 0 ? `${why}; skipped ${notes.join("; ")}` : why;
        return { conn, backend, decision };
      } catch (err) {
        balancer.cancel(backend);
        const error = describeError(err);
        notes.push(`${server.name}: ${error}`);
        if (balancer.connectFailed(backend, error)) {
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

  /**
   * A hello that asks for a new session. A repeated token means the client
   * may never have got an earlier WELCOME. The token travels in clear, so a
   * repeat proves nothing: if that attempt's session exists, this link gets
   * it (the same ERP connection: the ERP sees nothing of the retry) only once
   * it proves the key the first attempt derived (#retake).
   */
  async open(link: Link, source: string, request: OpenRequest, read: ReadFrame): Promise<void> {
    const registry = this.#server.registry;
    const openToken = toHex(request.openToken);
    if (registry.connecting(openToken)) return this.#server.reject(link, RejectCode.Unavailable, OPENING_IN_PROGRESS);
    // Retaking an orphan costs no new session or ERP connection: the limits do not apply.
    const refusal = registry.orphan(openToken) ? null : this.#refuseNewSession(source);
    if (refusal) return this.#server.reject(link, RejectCode.Unavailable, refusal);
    // With an admission key, the client proves it over our fresh nonce and
    // its own key before anything is spent on it (no ERP connection yet).
    const admission = await this.#server.admissionKey();
    const serverNonce = randomId();
    if (admission) {
      const proved = await proveAdmission(link, read, { admission, request, serverNonce });
      if (proved === null) return;
      if (proved !== true) return this.#server.reject(link, proved.code, proved.reason);
    }
    // Only a client that proved the key spends its source's budget: a wrong key must not use up the right one's.
    if (!registry.orphan(openToken) && !this.#server.rates().take(source)) {
      return this.#server.reject(link, RejectCode.Unavailable, this.#tooManyNewSessions(source));
    }
    const { clientPublicKey } = request;
    const signed = admission ? { admission, clientPublicKey, openToken: request.openToken, serverNonce } : null;
    const orphan = registry.orphan(openToken);
    if (orphan) return this.#retake(link, orphan, request, signed, read);
    if (registry.connecting(openToken)) return this.#server.reject(link, RejectCode.Unavailable, OPENING_IN_PROGRESS);
    await this.#create(link, source, request, signed);
  }

  /** Opens a new session for `request`: keys, an ERP connection, the WELCOME, the session. */
  async #create(link: Link, source: string, request: OpenRequest, signed: WelcomeSignature | null): Promise<void> {
    const { clientPublicKey } = request;
    // From here until it settles, this attempt is the only one for its token.
    const attempt = this.#server.registry.beginOpening(toHex(request.openToken), clientPublicKey);
    // Keys first: a bad public key must not cost an ERP connection.
    const own = await createEphemeralKey();
    const sessionId = randomId();
    sessionId.set(this.#server.idTag, sessionId.length - this.#server.idTag.length);
    let key: CryptoKey;
    let secret: Uint8Array;
    try {
      secret = await deriveResumeSecret(own, clientPublicKey, sessionId, clientPublicKey, own.publicKey);
      key = await importResumeKey(secret);
    } catch {
      attempt.giveUp();
      return this.#server.reject(link, RejectCode.Protocol, "the client's public key is not a valid X25519 key");
    }
    const backend = await this.#connectBackend();
    if ("errors" in backend) {
      attempt.giveUp();
      const reason = `No ERP server accepted the connection (${backend.errors.join("; ")})`;
      return this.#server.reject(link, RejectCode.NoBackend, reason);
    }
    // The WELCOME is signed before the last check: nothing may await between that check and the session's creation.
    const timers = this.#timers(request.clientCap);
    const welcome = await welcomeFrame({ sessionId, publicKey: own.publicKey, timers }, signed);
    if (link.closed || this.#server.shutdown.aborted || !attempt.isLatest()) {
      attempt.giveUp();
      this.#server.balancer.release(backend.backend);
      backend.conn.close();
      link.close();
      log.info("Opening from {client} abandoned: its link closed before the welcome; ERP connection closed unused", {
        client: link.peer,
      });
      return;
    }
    link.send(welcome);
    const entry = this.#entry({ sessionId, source, key, secret, client: link.peer }, backend, timers, attempt);
    this.#server.stats.sessionsOpened++;
    this.#server.history.opened(this.#server.clock.now());
    attempt.opened(own.publicKey, entry);
    this.#server.history.sessionsLive(this.#server.clock.now(), this.#server.registry.size);
    entry.session.start();
    this.#server.adopt(link);
    entry.session.attach(link, 0);
    // The local port is what the ERP server's own log shows for this connection.
    log.info("Session {session} opened: client {client}, ERP {backend} ({address}, from port {port}): {decision}", {
      session: shortId(entry.id),
      client: link.peer,
      backend: backend.backend.server.name,
      address: formatHostPort(backend.backend.server),
      port: (backend.conn.localAddr as Deno.NetAddr).port,
      decision: backend.decision,
    });
  }

  /**
   * A new session's registry entry and its Session. (A method of its own:
   * the session's event closures share this scope, and must not keep the key
   * pair and nonces of #create alive for the session's life.)
   */
  #entry(
    fields: Pick<SessionEntry, "sessionId" | "source" | "key" | "secret" | "client">,
    backend: { conn: NetConn; backend: Backend },
    timers: SessionTimers,
    attempt: OpeningAttempt,
  ): SessionEntry {
    const id = toHex(fields.sessionId);
    // When the latest link was lost: an expired session's outage ran from there.
    let detachedAt = this.#server.clock.now();
    const entry: SessionEntry = {
      id,
      ...fields,
      backend: backend.backend,
      openedAt: this.#server.clock.now(),
      attaches: 1,
      session: new Session({
        role: "server",
        local: backend.conn,
        timers,
        clock: this.#server.clock,
        events: {
          detached: (reason) => {
            detachedAt = this.#server.clock.now();
            log.info(
              "Session {session}: link from {client} lost ({reason}); holding the ERP connection for {window} s",
              { session: shortId(id), client: entry.client, reason, window: Math.round(timers.resumeTimeoutMs / 1000) },
            );
          },
          confirmed: attempt.giveUp,
          ended: (end) => {
            attempt.giveUp();
            this.#ended(entry, end, detachedAt);
          },
        },
      }),
    };
    return entry;
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
    entry: SessionEntry,
    hello: OpenRequest,
    signed: WelcomeSignature | null,
    read: ReadFrame,
  ): Promise<void> {
    const openToken = toHex(hello.openToken);
    const opening = this.#server.registry.opening(openToken);
    const refuse = (why: string) =>
      this.#server.reject(
        link,
        RejectCode.BadProof,
        `retried opening of session ${shortId(entry.id)} refused: ${why}; the session is untouched`,
      );
    if (!opening?.serverPublicKey || !equalBytes(opening.clientPublicKey, hello.clientPublicKey)) {
      return refuse("it comes with another public key than the first attempt");
    }
    const serverNonce = randomId();
    const welcome = await welcomeFrame(
      { sessionId: entry.sessionId, publicKey: opening.serverPublicKey, timers: entry.session.timers },
      signed,
    );
    link.send(encodeWelcomeBack(serverNonce, welcome));
    const input = { sessionId: entry.sessionId, openToken: hello.openToken, serverNonce };
    const proved = await readRetakeProof(read, entry.key, input);
    if (proved === null) return;
    if (!proved) return refuse("it does not prove the first attempt's key");
    const mac = await signRetake(entry.key, "server", input);
    if (this.#server.registry.orphan(openToken) !== entry || link.closed || this.#server.shutdown.aborted) {
      link.close(); // it changed meanwhile: the client retries, and finds out afresh
      return;
    }
    link.send(encodeProof(FrameType.Resumed, mac, 0));
    entry.client = link.peer;
    this.#server.adopt(link);
    entry.session.attach(link, 0, { reopened: true });
    entry.attaches++;
    log.info(
      "Session {session}: the client retried opening it (the welcome was lost) and proved it; {client} carries on with the same ERP connection",
      { session: shortId(entry.id), client: link.peer },
    );
  }

  /** A hello that asks to resume a session: a live one is resumed, a tombstone tells how it ended. */
  async resume(link: Link, request: ResumeRequest, read: ReadFrame): Promise<void> {
    const { sessionId, clientNonce } = request;
    const id = toHex(sessionId);
    const entry = this.#server.registry.get(id);
    const tombstone = entry ? undefined : this.#server.registry.tombstone(id);
    if (!entry && !tombstone) {
      const reason = `Session ${
        shortId(id)
      } is not known to this broker-server: it expired, or the server was restarted`;
      return this.#server.reject(link, RejectCode.UnknownSession, reason);
    }
    const attachesAtChallenge = entry?.attaches;
    // It names a session we hold: idle and new links no longer compete with it.
    this.#server.resuming(link, id);
    const serverNonce = randomId();
    const proof = await readResumeProof(link, read, serverNonce);
    if (proof === null) return;
    if (proof.kind === "refused") return this.#server.reject(link, proof.code, proof.reason);
    const ended = tombstone as Tombstone;
    const key = entry ? entry.key : await importResumeKey(ended.secret);
    const input = { sessionId, clientNonce, serverNonce, receivedOffset: proof.receivedOffset };
    if (!await verifyResumeProof(key, input, proof.mac)) {
      return this.#server.reject(link, RejectCode.BadProof, `Resume proof for session ${shortId(id)} does not verify`);
    }
    if (entry) return this.#resumeLive(link, entry, { key, input, attachesAtChallenge });
    if (!ended.clean) {
      return this.#server.reject(link, RejectCode.SessionEnded, `Session ${shortId(id)} has ended: ${ended.reason}`);
    }
    // It ended cleanly while the client was away.
    await answerCleanEnd(link, key, input, ended.received);
  }

  /** Resumes the live session `entry` on `link`, whose proof verified. */
  async #resumeLive(
    link: Link,
    entry: SessionEntry,
    proven: {
      key: CryptoKey;
      input: ResumeInput;
      attachesAtChallenge: number | undefined;
    },
  ): Promise<void> {
    const { key, input } = proven;
    const session = entry.session;
    if (!await this.#checkResumable(link, entry, input.receivedOffset, proven.attachesAtChallenge)) return;
    // From here the old link (maybe half-open) must not deliver more bytes:
    // our received offset is what the proof below states.
    session.detach(`replaced by a new link from ${link.peer}`);
    // The wall clock may have stepped back meanwhile: an outage is never negative.
    const detachedFor = Math.max(0, this.#server.clock.now() - session.stateSince);
    const received = session.received;
    const mac = await signProof(key, "server", { ...input, receivedOffset: received });
    if (session.state === "closed" || link.closed || session.received !== received) {
      link.close();
      return;
    }
    link.send(encodeProof(FrameType.Resumed, mac, received));
    this.#server.adopt(link);
    const replayed = session.attach(link, input.receivedOffset);
    entry.attaches++;
    if (this.#server.stopping()) {
      session.sendGoAway(this.#server.config().drainTimeoutMs, "broker-server is shutting down");
    }
    this.#server.stats.recordResume(detachedFor / 1000, session.linkLoss);
    // Charged to where the link was lost (as an expired window is), not to where the client came back from.
    this.#server.history.outageHidden(this.#server.clock.now(), { client: entry.client, seconds: detachedFor / 1000 });
    entry.client = link.peer;
    log.info(
      "Session {session} resumed from {client} after {seconds} s (link before: {trigger}): {replayed} bytes replayed to the client, client had {clientReceived} of {sent}",
      {
        session: shortId(entry.id),
        client: link.peer,
        seconds: (detachedFor / 1000).toFixed(1),
        trigger: session.linkLoss ?? "link error",
        replayed,
        clientReceived: input.receivedOffset,
        sent: erpTraffic(session.stats).toClient,
      },
    );
  }

  /** Whether `entry` can resume from `receivedOffset`; when not, the link is refused (and the session maybe ended). */
  async #checkResumable(
    link: Link,
    entry: SessionEntry,
    receivedOffset: number,
    attachesAtChallenge: number | undefined,
  ): Promise<boolean> {
    const session = entry.session;
    try {
      session.checkResumable(receivedOffset);
      return true;
    } catch (err) {
      if (entry.attaches !== attachesAtChallenge && session.state !== "closed") {
        // A valid proof that a newer link overtook (an attempt the client gave
        // up on, delivered late): what it claims is stale, not a gap. Only
        // this link ends; the session carries on with the newer one.
        await this.#server.reject(
          link,
          RejectCode.CannotResume,
          `stale resume of session ${shortId(entry.id)}: a newer link took over while it was being proven (${
            (err as Error).message
          }); the session carries on`,
        );
        return false;
      }
      const reason = `cannot resume: ${(err as Error).message}`;
      await this.#server.reject(
        link,
        err instanceof ResumeGapError ? RejectCode.CannotResume : RejectCode.Protocol,
        reason,
      );
      session.abort(reason);
      return false;
    }
  }

  /**
   * Records the end of `entry` (detached since clock ms `detachedAt` if its
   * window expired): counters, history, the ERP server's count, the log line, its tombstone.
   */
  #ended(entry: SessionEntry, end: SessionEnd, detachedAt: number): void {
    const registry = this.#server.registry;
    registry.delete(entry.id);
    const stats = entry.session.stats;
    const traffic = erpTraffic(stats);
    this.#server.stats.recordEnd(end.cause, { ...traffic, replayed: stats.bytesReplayed });
    const now = this.#server.clock.now();
    this.#server.history.sessionsLive(now, registry.size);
    if (end.cause !== "complete") {
      this.#server.history.sessionLost(now, end.cause, {
        client: entry.client,
        seconds: Math.max(0, now - detachedAt) / 1000,
      });
    }
    this.#server.balancer.release(entry.backend);
    const heldBack = end.clean ? 0 : this.#server.abnormalEndLog.spend(entry.source);
    const fields = {
      session: shortId(entry.id),
      reason: end.reason,
      ...traffic,
      seconds: ((this.#server.clock.now() - entry.openedAt) / 1000).toFixed(1),
      resumes: stats.resumes,
      heldBack: heldBack
        ? ` (${heldBack} more sessions from ${entry.source} ended abnormally before this one: not logged)`
        : "",
    };
    const message =
      "Session {session} closed: {reason}; {toClient} bytes to the client, {toErp} bytes to the ERP, {seconds} s, {resumes} resumes{heldBack}";
    if (end.clean) log.info(message, fields);
    else if (heldBack !== null) log.warn(message, fields);
    if (registry.size === 0) this.#server.drained();
    // The client sent the ABORT that ended it and was answered: it needs no tombstone.
    if (this.#server.shutdown.aborted || end.byPeer) return;
    registry.bury(
      entry.id,
      { secret: entry.secret, reason: end.reason, clean: end.clean, received: entry.session.received },
      this.#server.config().tuning.resumeTimeoutMs,
    );
  }
}
