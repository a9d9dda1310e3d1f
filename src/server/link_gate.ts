/**
 * The door of broker-server for links in handshake: admits them under the
 * caps of HandshakeAdmission (closing the links that make room), and
 * refuses or drops the ones that do not become a session's, counting each
 * once and logging within a budget (peers can fail handshakes at will).
 * It owns every link until the link is adopted by a session (see adopt):
 * a link whose handshake ends unadopted is closed here, whatever path the
 * handshake took.
 * @module
 */

import type { ServerLimits } from "../config/security.ts";
import { logger } from "../ops/log.ts";
import { LogBudget } from "../ops/log_budget.ts";
import { peerText } from "../ops/peer_text.ts";
import { encodeReject, type RejectCodeValue } from "../protocol/frames.ts";
import type { Link } from "../session/link.ts";
import { describeError } from "../session/transport.ts";
import { HandshakeAdmission } from "./admission.ts";
import { tlsHint } from "./handshake.ts";
import type { ServerStats } from "./stats.ts";

const log = logger("server");

/** Options of a LinkGate. */
export interface LinkGateOptions {
  /** Clock in ms. */
  now: () => number;
  /** The server's counters (linksRefused). */
  stats: ServerStats;
  /** The limits in force (change on reload). */
  limits: () => ServerLimits;
  /** Whether the link uses TLS (for the hint when a handshake fails). */
  linkTls: () => boolean;
}

/** Links in handshake: admitted, refused, dropped. */
export class LinkGate {
  #options: LinkGateOptions;
  #handshaking = new HandshakeAdmission<Link>();
  #evicted = new WeakSet<Link>();
  #adopted = new WeakSet<Link>();
  #crowdLogged = { at: -Infinity, dropped: 0 };
  /** Peers can make handshakes fail, or be refused, at will: 20 lines of each per 10 s at most. */
  #dropLog: LogBudget;
  #refusalLog: LogBudget;

  /** A gate for the server that `options` describe. */
  constructor(options: LinkGateOptions) {
    this.#options = options;
    this.#dropLog = new LogBudget(20, 10_000, options.now);
    this.#refusalLog = new LogBudget(20, 10_000, options.now);
  }

  /** Links in handshake now. */
  get size(): number {
    return this.#handshaking.size;
  }

  /** Every link in handshake. */
  [Symbol.iterator](): IterableIterator<Link> {
    return this.#handshaking[Symbol.iterator]();
  }

  /** Counts a new link in handshake; the links it displaces are closed (see HandshakeAdmission). */
  admit(link: Link, source: string): void {
    const limits = this.#options.limits();
    const { evicted, cap } = this.#handshaking.admit(link, source, {
      total: limits.maxHandshakes,
      perSource: limits.maxHandshakesPerAddress,
    });
    for (const old of evicted) this.#evict(old);
    if (!cap) return;
    // One line per 10 s at most: a flood must not flood the log too.
    const now = this.#options.now();
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

  /** The link's hello arrived (see HandshakeAdmission.spoke). */
  spoke(link: Link): void {
    this.#handshaking.spoke(link);
  }

  /** The link resumes session `id`, which the server holds: older links that compete with it are closed. */
  resuming(link: Link, id: string): void {
    for (const older of this.#handshaking.resuming(link, id)) this.#evict(older);
  }

  /**
   * `link` belongs to a session from now on: its handshake's end leaves it
   * open, and it takes every frame a session uses (up to `maxPayload`).
   */
  adopt(link: Link, maxPayload: number): void {
    this.#adopted.add(link);
    link.setFrameLimits({ maxPayload });
  }

  /** The handshake of `link` is over: forgets it, and closes it unless a session adopted it. */
  finish(link: Link): void {
    this.#handshaking.remove(link);
    if (!this.#adopted.has(link)) link.close();
  }

  /** Refuses `link` with REJECT `code`: counted, logged within budget, closed once the REJECT is sent. */
  async reject(link: Link, code: RejectCodeValue, reason: string): Promise<void> {
    if (this.#evicted.has(link)) return; // closed already, and counted when it made room
    this.#options.stats.linksRefused++;
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

  /** A link whose handshake failed with `err`: closed, counted and (within budget) logged. */
  dropped(link: Link, err: unknown): void {
    link.close();
    // An evicted link was counted, and its crowd logged, when it made room.
    if (this.#evicted.has(link)) return;
    this.#options.stats.linksRefused++;
    const heldBack = this.#dropLog.spend();
    if (heldBack === null) return;
    log.warn("Dropped link from {peer} during handshake: {reason}{hint}{heldBack}", {
      peer: link.peer,
      reason: peerText(describeError(err)), // may quote what the peer sent
      hint: tlsHint(err, this.#options.linkTls()),
      heldBack: heldBack > 0 ? ` (${heldBack} more links were dropped during their handshake before this one)` : "",
    });
  }

  /** Closes a link in handshake to make room for another. */
  #evict(link: Link): void {
    this.#evicted.add(link);
    this.#options.stats.linksRefused++;
    this.#crowdLogged.dropped++;
    link.close();
  }
}
