/**
 * The session state machine shared by broker-client and broker-server.
 *
 * A session joins one local socket (Smart Client's on the client, the ERP's
 * on the server) to whatever link is currently attached. Each direction is a
 * byte stream counted by offset; outbound bytes stay in the ReplayBuffer
 * until the peer acknowledges them, and on every (re)attach the peer's
 * received offset says exactly where to resume. An application's FIN takes
 * one offset unit after its last byte, so "acknowledged up to end + 1" means
 * the FIN arrived.
 *
 * Flow control is end to end and never pauses the link: a receiver
 * acknowledges bytes once its local socket has taken them (not when they
 * arrive), and a sender keeps at most its cap unacknowledged. So the bytes
 * waiting for a slow local application are bounded by the peer's cap, the
 * link is always read, and ACK, HEARTBEAT, CLOSE and ABORT frames are acted
 * on whatever the local sockets do. A peer that sends beyond the window
 * breaks the protocol and loses its link.
 *
 * States: connecting (before the first link) → attached ⇄ detached
 * → closed. The two sides differ only in who dials (the owner's job) and in
 * how the final goodbye runs: the server closes the link once both streams
 * are finished and acknowledged; the client then sees the link end and
 * finishes too (or resumes to learn that the server finished).
 * @module
 */

import {
  DATA_HEADER_SIZE,
  decodeGoAway,
  decodeText,
  encodeAbort,
  encodeClose,
  encodeDataHeader,
  encodeGoAway,
  encodeOffsetFrame,
  type Frame,
  FrameType,
  ProtocolError,
  readU64,
  sealDataFrame,
} from "../protocol/frames.ts";
import { formatDuration } from "../config/values.ts";
import { type Link, MAX_READ_SIZE, ReadSizer } from "./link.ts";
import { type HeldBytes, PoolLease, readBufferPool } from "./buffer_pool.ts";
import { ReplayBuffer, ResumeGapError } from "./replay_buffer.ts";
import { type Clock, systemClock, type TimerHandle } from "./clock.ts";
import { type Heard, LinkWatch } from "./liveness.ts";
import { closeQuietly, describeError, type Transport, within, WriteQueue } from "./transport.ts";

/** Lifecycle states of a session. */
export type SessionState = "connecting" | "attached" | "detached" | "closed";

/**
 * Why a session lost its last link: an error or end of the link, its
 * silence for LINK_TIMEOUT, a new link that replaced it while it was still
 * attached (on the server: the client raced a new link, or gave up on a
 * half-open one first), or (on the client) a new link that answered while
 * the suspected old one stayed silent.
 */
export type LinkLoss = "link error" | "silence" | "replaced while attached" | "suspicion race won";

/** Timers and limits a session runs with. */
export interface SessionTimers {
  /** Resume window (ms). */
  resumeTimeoutMs: number;
  /** Heartbeat interval (ms). */
  heartbeatIntervalMs: number;
  /** Silent-link limit (ms). */
  linkTimeoutMs: number;
  /** Replay buffer cap (bytes): at most this much sent and not yet acknowledged. */
  replayBufferBytes: number;
  /**
   * Receive window (bytes): at most this much may arrive and wait for the
   * local socket (the peer's cap). 0 while no DATA may arrive yet.
   */
  receiveWindowBytes: number;
  /**
   * Resume window of a session its client never confirmed (it may have gone
   * to another broker server): it does not hold an ERP connection for the
   * whole window (ms; the resume window when absent).
   */
  unconfirmedTimeoutMs?: number;
}

/** How a session ended. */
export interface SessionEnd {
  /** Why, in words for the log. */
  reason: string;
  /** True when both streams finished and were acknowledged. */
  clean: boolean;
  /** complete: both streams finished; expired: the resume window passed; aborted: an error or the peer ended it. */
  cause: "complete" | "expired" | "aborted";
  /** The peer ended it (its ABORT, answered with CLOSE): it knows. */
  byPeer: boolean;
  /**
   * Resolves true once the peer is known to have the end (it answered this
   * side's ABORT with CLOSE, sent its own ABORT or CLOSE, or both streams
   * finished), false when it may not: the ABORT went out on no link, or on
   * one that died before the answer came. Only the client waits for the
   * answer; the server keeps a tombstone that any resume reaches instead.
   */
  told: Promise<boolean>;
}

/** Counters a session keeps for logs and status. */
export interface SessionStats {
  /** Bytes read from the local socket (sent toward the peer). */
  bytesSent: number;
  /** Bytes written to the local socket (received from the peer). */
  bytesReceived: number;
  /** Successful resumes. */
  resumes: number;
  /** Bytes sent again on resumes. */
  bytesReplayed: number;
}

/** What the session's owner hears. */
export interface SessionEvents {
  /** A link was lost; the session waits for another (server) or dials one (client). */
  detached?(reason: string, loss: LinkLoss): void;
  /**
   * The client's link may be dead: a probe went unanswered for `waitedMs`
   * (see liveness.ts). The link stays attached; the owner may race a new one.
   */
  suspected?(waitedMs: number): void;
  /** The suspected link delivered a frame after all. */
  reassured?(): void;
  /** The server is shutting down: the session has `drainMs` to finish. */
  goingAway?(drainMs: number, reason: string): void;
  /** The peer was heard from for the first time: it has the session. */
  confirmed?(): void;
  /**
   * The client's link just resumed brought the server's replay: `bytes` of
   * DATA before the server's first ACK (which follows its replay at once);
   * `complete` false when the link or the session ended before that ACK.
   */
  peerReplayed?(bytes: number, complete: boolean): void;
  /** The session is over; the local socket is closed. */
  ended(end: SessionEnd): void;
}

/** Options of a Session. */
export interface SessionOptions {
  /** Which end this is. */
  role: "client" | "server";
  /** The local socket. */
  local: Transport;
  /** Timers and limits (the client adopts the server's at welcome). */
  timers: SessionTimers;
  /** Callbacks. */
  events: SessionEvents;
  /** Time and timers; default systemClock. */
  clock?: Clock;
}

/** Send an ACK at once after this many delivered, unacknowledged bytes (or a quarter of the window, if less). */
const ACK_EVERY_BYTES = 128 * 1024;
/** Otherwise acknowledge after this delay (ms). */
const ACK_DELAY_MS = 20;
/** Stop reading the local socket while this much is queued on the link. */
const LINK_HIGH_WATER = 1024 * 1024;
/**
 * Lend link read buffers to the local write queue (no copy) only while the
 * buffers it keeps alive stay below this; beyond it payloads are copied.
 */
const LENT_BUFFERS_BUDGET = 2 * 1024 * 1024;
/** DATA payloads smaller than this are copied and gathered, never lent (see WriteQueue.pushCopy). */
const SMALL_DATA_BYTES = 4 * 1024;
/**
 * What a small read kept as its own copy costs beyond its bytes (its DATA
 * header, the buffer and view objects, its replay chunk), counted against the
 * cap so that an application writing tiny pieces cannot make the replay
 * buffer hold many times its cap.
 */
const COPY_OVERHEAD_BYTES = 320;
/** broker-server answers no HEARTBEAT while this much waits to be written to the link (bytes). */
const ECHO_QUEUE_LIMIT = 16 * 1024;
/** At most this many answers to probes owed on a backed-up link (see Session.#echo). */
const MAX_ECHOES_OWED = 64;
/** The client's tick at most (ms): how late a probe's deadline or its heartbeat may be noticed. */
const CLIENT_TICK_MS = 250;
/** At the end, wait at most this long for the local application to take its last bytes (ms). */
const LOCAL_LINGER_MS = 5_000;
/**
 * The client waits at most this long (or LINK_TIMEOUT, if shorter) for the
 * server to answer its ABORT with CLOSE; then it takes the link for dead
 * and tells the server again on a new one (ms).
 */
const ABORT_ANSWER_MS = 3_000;

/** A link kept open after the session ended, only to hear the peer answer our ABORT. */
interface Goodbye {
  link: Link;
  /** Closes the link and resolves `told`. */
  finish(told: boolean): void;
}

/** One resilient session. */
export class Session {
  /** Counters for logs and status. */
  readonly stats: SessionStats = { bytesSent: 0, bytesReceived: 0, resumes: 0, bytesReplayed: 0 };

  #role: "client" | "server";
  #local: Transport;
  #localWriter: WriteQueue;
  #timers: SessionTimers;
  #events: SessionEvents;
  #clock: Clock;

  #state: SessionState = "connecting";
  #link: Link | null = null;
  #out = new ReplayBuffer();
  #received = 0;
  #localEof = false;
  #finAcked = false;
  #peerFin = false;
  #localFlushed = false;
  #lastAckSent = 0;
  #ackTimer: TimerHandle | undefined;
  #tickTimer: TimerHandle | undefined;
  #windowTimer: TimerHandle | undefined;
  #spaceWaiter: (() => void) | null = null;
  #stateSince: number;
  #confirmed = false;
  #settled: Promise<void> = Promise.resolve();
  #goodbye: Goodbye | null = null;
  /** Bytes of link read buffers kept only for DATA waiting for the local socket (all links together). */
  #lent: HeldBytes = { bytes: 0 };
  /** The client's probes and suspicion of its current link (null on the server, and while detached). */
  #watch: LinkWatch | null = null;
  /** The highest offset the peer acknowledged (its echoes acknowledge nothing new). */
  #peerAcked = 0;
  /** The peer answered a probe on some link: it is a broker-server that echoes heartbeats. */
  #peerEchoes = false;
  /**
   * The current link brought its first ACK: every server sends one ACK when
   * it attaches a link, which may be ACK 0 without being an echo.
   */
  #attachAckHeard = false;
  #linkLoss: LinkLoss | null = null;
  /** The server's replay counted so far on the client's link just resumed, until the server's first ACK on it. */
  #peerReplay: { bytes: number } | null = null;
  /**
   * Echoes owed on a link (server): probes that came while more than
   * ECHO_QUEUE_LIMIT waited to be written to it, answered once it drains.
   */
  #echoDebt: { link: Link; count: number } | null = null;

  /** Creates a session around an open local socket; call start() to begin reading it. */
  constructor(options: SessionOptions) {
    this.#role = options.role;
    this.#local = options.local;
    this.#timers = { ...options.timers };
    this.#events = options.events;
    this.#clock = options.clock ?? systemClock;
    this.#stateSince = this.#clock.now();
    this.#localWriter = new WriteQueue(
      options.local,
      (err) => this.abort(`${this.#localName} connection failed while writing: ${describeError(err)}`),
      () => this.#onDelivered(),
    );
  }

  /**
   * Resolves once an ended session has flushed its last frames and bytes
   * and closed its sockets (a shutdown awaits this before exiting).
   */
  get settled(): Promise<void> {
    return this.#settled;
  }

  /** When the current state began (clock ms). */
  get stateSince(): number {
    return this.#stateSince;
  }

  /** Whether the peer has shown it knows the session (a frame after the welcome, or a resume). */
  get confirmed(): boolean {
    return this.#confirmed;
  }

  /** Current state. */
  get state(): SessionState {
    return this.#state;
  }

  /**
   * Both streams finished and every byte delivered both ways, and the
   * session is not over yet: the client waits only for the server's CLOSE.
   */
  get finishing(): boolean {
    return this.#state !== "closed" && this.#complete();
  }

  /** Offset of the peer's stream received so far (FIN counts one). */
  get received(): number {
    return this.#received;
  }

  /** Bytes kept for replay (sent, not acknowledged). */
  get bufferedBytes(): number {
    return this.#out.size;
  }

  /** Memory those bytes keep alive (whole pooled buffers, copies with their overhead). */
  get bufferedMemory(): number {
    return this.#out.held;
  }

  /** Bytes received from the peer and not yet written to the local socket. */
  get pendingLocalBytes(): number {
    return this.#localWriter.queuedBytes;
  }

  /** Why the last link was lost (null before any loss). */
  get linkLoss(): LinkLoss | null {
    return this.#linkLoss;
  }

  /** Whether the server answered a probe (so the client can suspect a silent link early, see liveness.ts). */
  get probesAnswered(): boolean {
    return this.#peerEchoes;
  }

  /**
   * The client's first round-trip sample of the link just attached: how long
   * its handshake took (an upper bound), until probes measure it.
   */
  measuredHandshake(ms: number): void {
    this.#watch?.handshakeTook(ms);
  }

  /** Whether the current link delivered bytes after `at` (clock ms); false without a link. */
  heardSince(at: number): boolean {
    return this.#link !== null && this.#link.lastReceivedAt > at;
  }

  /** The timers in force. */
  get timers(): Readonly<SessionTimers> {
    return this.#timers;
  }

  /** Adopts new timers (the client takes the server's from WELCOME). */
  setTimers(timers: Partial<SessionTimers>): void {
    Object.assign(this.#timers, timers);
    this.#wakePump(); // a larger cap is room to read into
  }

  get #localName(): string {
    return this.#role === "client" ? "Smart Client" : "ERP server";
  }

  /** Starts reading the local socket (into the replay buffer, even before a link exists). */
  start(): void {
    this.#pump();
  }

  /**
   * Makes `link` the session's link, replacing any current one (even one
   * still believed alive), and retransmits from `peerReceived`, the offset
   * the peer says it has. Throws ResumeGapError when those bytes are gone
   * (the caller answers "cannot resume" and aborts), RangeError when the peer
   * claims bytes never sent. Returns the number of bytes replayed.
   * `options.reopened`: the link belongs to a client that retried opening
   * this (still unconfirmed) session, not to one resuming it: it starts
   * from 0 and is neither a resume nor a confirmation.
   */
  attach(link: Link, peerReceived: number, options: { reopened?: boolean } = {}): number {
    this.checkResumable(peerReceived);
    const resumed = !options.reopened && (this.#state === "detached" || this.#link !== null);
    this.#dropLink();
    this.#clock.clear(this.#windowTimer);
    this.#link = link;
    // Before the read loop starts: the replay may be in the link's buffer already.
    if (resumed && this.#role === "client") this.#peerReplay = { bytes: 0 };
    this.#setState("attached");
    link.lastReceivedAt = this.#clock.now();
    link.recycleBuffers(this.#lent);
    if (this.#role === "client") {
      this.#watch = new LinkWatch(this.#clock.now(), this.#timers.linkTimeoutMs, { echoes: this.#peerEchoes });
    }
    // The peer's received offset says where to resume, not what it has
    // delivered: the replay buffer is trimmed by its ACKs only, so that what
    // waits for its local socket stays counted against the cap.

    let replayed = 0;
    // A peer that has our FIN (end + 1) needs no data again. The kept bytes
    // are queued as they are (a header, then a view), not copied: the link
    // holds their buffer until written.
    for (const { offset, bytes, owner } of this.#out.bytesFrom(Math.min(peerReceived, this.#out.end))) {
      owner?.retain();
      link.send(encodeDataHeader(offset, bytes.length));
      link.send(bytes, owner);
      replayed += bytes.length;
    }
    if (this.#localEof && !this.#finAcked) link.send(encodeOffsetFrame(FrameType.Fin, this.#out.end));
    this.#sendAck(link);
    this.#attachAckHeard = false;
    if (this.#watch) {
      // The first probe: it shows whether the server echoes, and times the
      // link, even if the link never falls quiet.
      link.send(encodeOffsetFrame(FrameType.Heartbeat, this.#lastAckSent));
      this.#watch.probed(this.#clock.now());
    }
    if (resumed) {
      // Only the real client can prove ownership: it knows the session.
      this.#confirm();
      this.stats.resumes++;
      this.stats.bytesReplayed += replayed;
    }
    // The client ticks finer: a probe's deadline, and its own heartbeat,
    // must not be late by up to half a heartbeat interval.
    const tick = this.#role === "client"
      ? Math.min(this.#timers.heartbeatIntervalMs / 4, CLIENT_TICK_MS)
      : this.#timers.heartbeatIntervalMs / 2;
    this.#tickTimer = this.#clock.setInterval(() => this.#tick(), Math.max(10, tick));
    this.#readLoop(link);
    this.#wakePump();
    // Both streams may have finished while no link was attached (ending
    // here clears the timer armed above).
    this.#checkComplete();
    return replayed;
  }

  /**
   * Checks that the session can resume for a peer that has received
   * `peerReceived`: throws ResumeGapError when those bytes were dropped,
   * RangeError when the peer claims bytes never sent or the session is over.
   */
  checkResumable(peerReceived: number): void {
    if (this.#state === "closed") throw new RangeError("Cannot resume a closed session");
    const sentEnd = this.#out.end + (this.#localEof ? 1 : 0);
    if (peerReceived > sentEnd) {
      throw new RangeError(`Peer claims offset ${peerReceived}, but only ${sentEnd} were sent`);
    }
    if (peerReceived < this.#out.start) throw new ResumeGapError(peerReceived, this.#out.start);
  }

  /** Tells the peer (when attached) that this side stops in `drainMs`. */
  sendGoAway(drainMs: number, reason: string): void {
    this.#link?.send(encodeGoAway(drainMs, reason));
  }

  /**
   * Ends the session abnormally: tells the peer (when a link is attached),
   * closes the local socket and frees everything. `options.fromPeer` when
   * the peer sent the abort: bytes already received are still delivered
   * first, and the peer gets CLOSE in answer. The client keeps reading its
   * link until the server answers its ABORT (see SessionEnd.told).
   * `options.cause`: how the end is counted (default "aborted").
   */
  abort(reason: string, options: { fromPeer?: boolean; cause?: SessionEnd["cause"] } = {}): void {
    const fromPeer = options.fromPeer ?? false;
    const cause = options.cause ?? "aborted";
    if (this.#state === "closed") return;
    const link = this.#link;
    this.#link = null;
    let told: Promise<boolean> = Promise.resolve(fromPeer);
    let linkClosed: Promise<void> = Promise.resolve();
    if (link && fromPeer) {
      // The peer may be waiting for this answer before it forgets the session.
      link.send(encodeClose());
      linkClosed = link.closeAfterFlush();
    } else if (link) {
      link.send(encodeAbort(reason));
      if (this.#role === "client") {
        told = this.#awaitAnswer(link);
        linkClosed = told.then(() => {});
      } else {
        linkClosed = link.closeAfterFlush();
      }
    }
    let localClosed: Promise<void> = Promise.resolve();
    if (fromPeer) {
      // Deliver what arrived before the abort, then close.
      localClosed = this.#closeLocalAfterFlush();
    } else {
      this.#localWriter.close();
      closeQuietly(this.#local);
    }
    this.#settled = Promise.all([linkClosed, localClosed]).then(() => {});
    this.#end({ reason, clean: false, cause, told, byPeer: fromPeer });
  }

  /**
   * Keeps reading `link` (the read loop goes on with it) until the peer
   * answers the ABORT just sent: true on its CLOSE or ABORT, false when the
   * link ends or stays silent for ABORT_ANSWER_MS (or LINK_TIMEOUT).
   */
  #awaitAnswer(link: Link): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = this.#clock.setTimeout(
        () => goodbye.finish(false),
        Math.min(this.#timers.linkTimeoutMs, ABORT_ANSWER_MS),
      );
      const goodbye: Goodbye = {
        link,
        finish: (told) => {
          if (this.#goodbye === goodbye) this.#goodbye = null;
          this.#clock.clear(timer);
          link.close();
          resolve(told);
        },
      };
      this.#goodbye = goodbye;
    });
  }

  /** Detaches the current link because of `reason` (e.g. replaced elsewhere, or shutdown). */
  detach(reason: string, loss: LinkLoss = "replaced while attached"): void {
    if (this.#link) this.#linkFailed(this.#link, reason, loss);
  }

  #end(end: SessionEnd): void {
    this.#peerReplayEnded(false);
    this.#setState("closed");
    this.#clock.clear(this.#ackTimer);
    this.#clock.clear(this.#tickTimer);
    this.#clock.clear(this.#windowTimer);
    this.#out.clear();
    this.#wakePump();
    this.#events.ended(end);
  }

  /** The server's replay on the link just resumed is over (`complete`: its ACK came), or cut short. */
  #peerReplayEnded(complete: boolean): void {
    const replay = this.#peerReplay;
    if (!replay) return;
    this.#peerReplay = null;
    this.#events.peerReplayed?.(replay.bytes, complete);
  }

  #dropLink(): void {
    this.#peerReplayEnded(false);
    const old = this.#link;
    if (!old) return;
    this.#link = null;
    this.#watch = null;
    this.#clock.clear(this.#tickTimer);
    this.#clock.clear(this.#ackTimer);
    this.#ackTimer = undefined;
    old.close();
  }

  #linkFailed(link: Link, reason: string, loss: LinkLoss = "link error"): void {
    if (this.#link !== link) return;
    this.#dropLink();
    if (this.#state === "closed") return;
    this.#linkLoss = loss;
    this.#setState("detached");
    const window = this.#confirmed
      ? this.#timers.resumeTimeoutMs
      : Math.min(this.#timers.resumeTimeoutMs, this.#timers.unconfirmedTimeoutMs ?? Infinity);
    this.#windowTimer = this.#clock.setTimeout(() => {
      this.abort(`resume window of ${formatDuration(window)} expired before the link came back`, { cause: "expired" });
    }, window);
    this.#events.detached?.(reason, loss);
  }

  async #readLoop(link: Link): Promise<void> {
    try {
      for (;;) {
        const frame = link.nextFrame();
        if (frame === null) {
          // Between frames: wait for bytes (no async frame per read, see Link.nextFrame).
          const more = !link.closed && link.afterRead(await link.readMore());
          if (this.#goodbye?.link === link) {
            if (more) continue;
            this.#goodbye.finish(false);
            return;
          }
          if (this.#link !== link) return;
          if (!more) {
            this.#linkFailed(link, link.writeError ? describeError(link.writeError) : "link closed by peer");
            return;
          }
          continue;
        }
        const goodbye = this.#goodbye;
        if (goodbye?.link === link) {
          // The session is over: only the peer's answer to our ABORT matters.
          if (frame.type === FrameType.Close || frame.type === FrameType.Abort) {
            goodbye.finish(true);
            return;
          }
          continue;
        }
        if (!this.#confirmed) this.#confirm();
        if (this.#watch) this.#heard(frame);
        this.#onFrame(link, frame);
        if (this.#link !== link && this.#goodbye?.link !== link) return;
      }
    } catch (err) {
      if (this.#goodbye?.link === link) {
        this.#goodbye.finish(false);
        return;
      }
      const why = err instanceof ProtocolError ? `protocol error: ${err.message}` : describeError(err);
      this.#linkFailed(link, link.writeError ? describeError(link.writeError) : why);
    }
  }

  /** Handles one frame (synchronously: the link is never left unread). */
  #onFrame(link: Link, frame: Frame): void {
    const payload = frame.payload;
    switch (frame.type) {
      case FrameType.Data:
        this.#onData(link, payload);
        return;
      case FrameType.Ack:
        this.#peerReplayEnded(true);
        this.#applyAck(readU64(payload, 0));
        return;
      case FrameType.Heartbeat:
        this.#applyAck(readU64(payload, 0));
        // Answered at once with an ACK of offset 0, which acknowledges
        // nothing (so it cannot be mistaken for one that does): the client
        // times its link with it and notices a dead one early (see
        // liveness.ts). An older client takes it as an ACK with no news.
        // Not while much waits to be written to the link: a client that
        // sends heartbeats and reads nothing must not make us queue answers;
        // those are owed, and sent once the link drains (see #echo).
        if (this.#role === "server") this.#echo(link);
        return;
      case FrameType.Fin:
        this.#onFin(readU64(payload, 0));
        return;
      case FrameType.GoAway: {
        const { drainMs, reason } = decodeGoAway(payload);
        this.#events.goingAway?.(drainMs, reason);
        return;
      }
      case FrameType.Close:
        if (this.#role !== "client" || !this.#finAcked || !this.#peerFin) {
          throw new ProtocolError("CLOSE before both streams were finished");
        }
        this.#finishClean();
        return;
      case FrameType.Abort:
        this.abort(`peer ended the session: ${decodeText(payload)}`, { fromPeer: true });
        return;
      default:
        throw new ProtocolError(`Unexpected frame type ${frame.type} on an established link`);
    }
  }

  /** DATA: the next bytes for the local socket, checked against the offset and the window. */
  #onData(link: Link, payload: Uint8Array): void {
    const offset = readU64(payload, 0);
    if (offset !== this.#received || this.#peerFin) {
      throw new ProtocolError(
        `DATA at offset ${offset}, expected ${this.#peerFin ? "none after FIN" : this.#received}`,
      );
    }
    const bytes = payload.subarray(8);
    const waiting = this.#received + bytes.length - this.#localWriter.writtenTotal;
    if (waiting > this.#timers.receiveWindowBytes) {
      throw new ProtocolError(
        `DATA beyond the window: ${waiting} bytes would wait for the ${this.#localName}, the window is ${this.#timers.receiveWindowBytes}`,
      );
    }
    this.#received += bytes.length;
    this.stats.bytesReceived += bytes.length;
    if (this.#peerReplay) this.#peerReplay.bytes += bytes.length;
    if (bytes.length < SMALL_DATA_BYTES) {
      // Small pieces are gathered into shared buffers: a peer sending
      // one byte per DATA frame must not cost an object (and a write) per byte.
      this.#localWriter.pushCopy(bytes);
    } else if (this.#lent.bytes < LENT_BUFFERS_BUDGET) {
      this.#localWriter.push(bytes, link.lendReadBuffer());
    } else {
      // The local socket is far behind: keep a copy, not the link's buffer.
      this.#localWriter.push(bytes.slice());
    }
  }

  /** FIN at `offset`: the peer's stream ends there; the local socket is half-closed once written. */
  #onFin(offset: number): void {
    if (this.#peerFin) return;
    if (offset !== this.#received) {
      throw new ProtocolError(`FIN at offset ${offset}, expected ${this.#received}`);
    }
    this.#peerFin = true;
    this.#received += 1;
    this.#localWriter.endAfterFlush();
    this.#localWriter.flushed().then(() => {
      this.#localFlushed = true;
      // The FIN is delivered: acknowledge it at once, the peer may be waiting to finish.
      if (this.#link) this.#sendAck(this.#link);
      this.#checkComplete();
    });
  }

  /**
   * Answers a probe with ACK 0 (server). While more than ECHO_QUEUE_LIMIT
   * waits to be written to the link, the answer is owed, not queued: a
   * count (at most MAX_ECHOES_OWED, so a client that sends heartbeats and
   * reads nothing costs nothing), paid in order once the link drains. It
   * is never skipped: the client pairs its n-th echo with its n-th probe,
   * and one skipped echo would make every later round trip it measures on
   * the link span a whole probe interval (a roam then suspected after 3 s
   * instead of 1 s, for the rest of the link's life).
   */
  #echo(link: Link): void {
    const debt = this.#echoDebt?.link === link ? this.#echoDebt : null;
    if (debt) {
      debt.count = Math.min(debt.count + 1, MAX_ECHOES_OWED);
      return;
    }
    if (link.writer.queuedBytes < ECHO_QUEUE_LIMIT) {
      link.send(encodeOffsetFrame(FrameType.Ack, 0));
      return;
    }
    const owed = { link, count: 1 };
    this.#echoDebt = owed;
    link.writer.waitBelow(ECHO_QUEUE_LIMIT).then(() => {
      if (this.#echoDebt !== owed) return;
      this.#echoDebt = null;
      if (this.#link !== link) return;
      for (let i = 0; i < owed.count; i++) link.send(encodeOffsetFrame(FrameType.Ack, 0));
    });
  }

  /** Tells the client's watch what a frame says about the link (before the frame is acted on). */
  #heard(frame: Frame): void {
    const watch = this.#watch as LinkWatch;
    let heard: Heard = "other";
    if (frame.type === FrameType.Data || frame.type === FrameType.Fin) heard = "activity";
    else if (frame.type === FrameType.Ack || frame.type === FrameType.Heartbeat) {
      const offset = readU64(frame.payload, 0);
      const attachAck = frame.type === FrameType.Ack && !this.#attachAckHeard;
      if (attachAck) this.#attachAckHeard = true;
      if (offset > this.#peerAcked) {
        this.#peerAcked = offset;
        heard = "activity";
      } else if (frame.type === FrameType.Ack && offset === 0 && !attachAck) {
        // Servers send ACK 0 only on attach and in answer to a HEARTBEAT.
        heard = "echo";
      }
    }
    const reassured = watch.heard(this.#clock.now(), heard);
    this.#peerEchoes ||= watch.echoes;
    if (reassured) this.#events.reassured?.();
  }

  #confirm(): void {
    this.#confirmed = true;
    this.#events.confirmed?.();
  }

  #applyAck(offset: number): void {
    const sentEnd = this.#out.end + (this.#localEof ? 1 : 0);
    if (offset > sentEnd) throw new ProtocolError(`ACK for offset ${offset}, but only ${sentEnd} were sent`);
    this.#out.ackUpTo(Math.min(offset, this.#out.end));
    if (this.#localEof && offset === sentEnd && !this.#finAcked) {
      this.#finAcked = true;
      this.#checkComplete();
    }
    this.#wakePump();
  }

  /**
   * The offset acknowledged to the peer: what the local socket has taken
   * (its FIN counts once the half-close is done), not merely what arrived.
   */
  #delivered(): number {
    return this.#localWriter.writtenTotal + (this.#localFlushed ? 1 : 0);
  }

  /** The local socket took more bytes: acknowledge them soon (at once after a batch). */
  #onDelivered(): void {
    const link = this.#link;
    if (!link) return;
    const pending = this.#localWriter.writtenTotal - this.#lastAckSent;
    // At most a quarter of what the peer may have in flight (the session's
    // cap, which both sides agreed at the welcome): an ACK held for the timer
    // would stall the peer every window.
    if (pending >= Math.min(ACK_EVERY_BYTES, this.#timers.receiveWindowBytes / 4)) {
      this.#sendAck(link);
    } else if (pending > 0 && this.#ackTimer === undefined) {
      this.#ackTimer = this.#clock.setTimeout(() => {
        this.#ackTimer = undefined;
        if (this.#link) this.#sendAck(this.#link);
      }, ACK_DELAY_MS);
    }
  }

  #sendAck(link: Link): void {
    this.#clock.clear(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#lastAckSent = this.#delivered();
    link.send(encodeOffsetFrame(FrameType.Ack, this.#lastAckSent));
  }

  #tick(): void {
    const link = this.#link;
    if (!link) return;
    const now = this.#clock.now();
    if (now - link.lastReceivedAt >= this.#timers.linkTimeoutMs) {
      this.#linkFailed(
        link,
        `link silent for ${((now - link.lastReceivedAt) / 1000).toFixed(1)} s (no data, no heartbeat)`,
        "silence",
      );
      return;
    }
    const watch = this.#watch;
    // Bytes of a frame still arriving (a large DATA on a slow link) are news too.
    if (watch && link.lastReceivedAt > watch.lastHeard && watch.heard(link.lastReceivedAt, "other")) {
      this.#events.reassured?.();
    }
    const due = watch?.due(now, this.#out.end, this.#out.size > 0) ?? null;
    if (due === "suspect") {
      this.#events.suspected?.(watch?.suspicionMs ?? 0);
      if (this.#link !== link) return;
    }
    if (due === "probe" || now - link.lastSentAt >= this.#timers.heartbeatIntervalMs) {
      this.#lastAckSent = this.#delivered();
      link.send(encodeOffsetFrame(FrameType.Heartbeat, this.#lastAckSent));
      watch?.probed(now);
    }
  }

  #complete(): boolean {
    return this.#finAcked && this.#peerFin && this.#localFlushed;
  }

  #checkComplete(): void {
    if (this.#state === "closed" || !this.#complete()) return;
    // The client waits for the server's CLOSE: only then does it know the
    // server saw our last ACK and will not wait for us to come back.
    if (this.#role === "server" && this.#link) {
      const link = this.#link;
      this.#link = null;
      link.send(encodeClose());
      this.#finishClean(link.closeAfterFlush());
    }
  }

  #finishClean(linkClosed: Promise<void> = Promise.resolve()): void {
    if (this.#state === "closed") return;
    this.#dropLink();
    // The peer's last bytes may still be on their way to the local socket.
    this.#settled = Promise.all([linkClosed, this.#closeLocalAfterFlush()]).then(() => {});
    this.#end({
      reason: "closed by both ends, all bytes delivered",
      clean: true,
      cause: "complete",
      told: Promise.resolve(true),
      byPeer: false,
    });
  }

  /** Closes the local socket once what is queued for it is written (or after LOCAL_LINGER_MS). */
  async #closeLocalAfterFlush(): Promise<void> {
    await within(this.#localWriter.flushed(), LOCAL_LINGER_MS, this.#clock);
    this.#localWriter.close();
    closeQuietly(this.#local);
  }

  #setState(state: SessionState): void {
    this.#state = state;
    this.#stateSince = this.#clock.now();
  }

  // A method, so the compiler does not narrow the state across awaits.
  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #wakePump(): void {
    const waiter = this.#spaceWaiter;
    this.#spaceWaiter = null;
    waiter?.();
  }

  /**
   * Reads the local socket into DATA frames: the buffer read into is the one
   * sent and kept. Buffers come from the pool and go back once the peer
   * acknowledged their bytes and the link wrote them (a lease with two
   * holders); a small read is copied out instead, so that the buffer it
   * used is read into again at once.
   */
  async #pump(): Promise<void> {
    const sizer = new ReadSizer(MAX_READ_SIZE);
    let buffer = readBufferPool.take(sizer.size);
    while (!this.#isClosed()) {
      // Read each time: the client adopts the session's cap at WELCOME. At
      // most the cap in bytes in flight (the peer's window), and at most
      // twice the cap in memory kept: a read of a quarter of a pooled buffer
      // keeps the whole buffer until acknowledged, and counting only memory
      // would shrink the window of a bulk transfer whose reads fill half.
      const cap = this.#timers.replayBufferBytes;
      const room = Math.min(cap - this.#out.size, 2 * cap - this.#out.held);
      const link = this.#link;
      if (room <= 0 || (link && link.writer.queuedBytes >= LINK_HIGH_WATER)) {
        // Backpressure: wait for an ACK (room) or for the link to drain.
        await new Promise<void>((resolve) => {
          this.#spaceWaiter = resolve;
          if (room > 0 && link) link.writer.waitBelow(LINK_HIGH_WATER / 2).then(() => this.#wakePump());
        });
        continue;
      }
      const want = Math.min(room, buffer.length - DATA_HEADER_SIZE);
      let n: number | null;
      try {
        n = await this.#local.read(buffer.subarray(DATA_HEADER_SIZE, DATA_HEADER_SIZE + want));
      } catch (err) {
        readBufferPool.give(buffer);
        if (!this.#isClosed()) this.abort(`${this.#localName} connection failed: ${describeError(err)}`);
        return;
      }
      if (this.#isClosed() || n === null) readBufferPool.give(buffer);
      if (this.#isClosed()) return;
      if (n === null) {
        this.#localEof = true;
        this.#link?.send(encodeOffsetFrame(FrameType.Fin, this.#out.end));
        return;
      }
      const size = sizer.update(DATA_HEADER_SIZE + n);
      let frame: Uint8Array;
      let lease: PoolLease | undefined;
      let held = n + COPY_OVERHEAD_BYTES;
      if (n * 4 < buffer.length) {
        // A small read: send and keep an exact copy; the buffer is read into again.
        frame = buffer.slice(0, DATA_HEADER_SIZE + n);
        if (buffer.length !== size) {
          readBufferPool.give(buffer);
          buffer = readBufferPool.take(size);
        }
      } else {
        frame = buffer.subarray(0, DATA_HEADER_SIZE + n);
        lease = new PoolLease(buffer, readBufferPool, this.#link ? 2 : 1);
        held = buffer.length;
        buffer = readBufferPool.take(size);
      }
      const offset = this.#out.append(frame.subarray(DATA_HEADER_SIZE), lease, held);
      this.stats.bytesSent += n;
      this.#link?.send(sealDataFrame(frame, offset), lease);
    }
  }
}
