/**
 * broker-client's early warning that a link may be dead: pure bookkeeping on
 * an injectable clock, with no I/O. A roam (a new address, a new VPN lease)
 * leaves the old link silent for ever with no RST or FIN; waiting for
 * LINK_TIMEOUT to pass costs seconds that a probe can save.
 *
 * A probe is a HEARTBEAT, which broker-server answers at once with an ACK
 * of offset 0 (an "echo": it acknowledges nothing, and servers send ACK 0
 * otherwise only when they attach a link). The client probes once
 * on every new link (to learn that the server echoes, and the round trip,
 * even on a link that is never quiet), and then when
 * silence means something: after the peer was active (DATA, or an ACK that
 * moved) or after sending DATA of its own, once the link has been quiet for
 * half the retransmission timeout; and every heartbeat interval on an idle
 * link (the regular heartbeat is the probe). A probe unanswered for the
 * retransmission timeout (srtt + 4 * rttvar as in TCP, with a margin of
 * at least srtt / 2, at least MIN_SUSPICION_MS, at most LINK_TIMEOUT)
 * makes the link suspect. Nothing
 * is declared dead here: the session's owner races a new link against it,
 * and the old one keeps the session unless the new one proves itself first.
 *
 * A server that never echoes (one older than this feature, which ignores
 * the probe as it does any heartbeat) is never suspected: only
 * LINK_TIMEOUT applies to it, as before.
 * @module
 */

/** A probe must stay unanswered at least this long before the link is suspect (ms). */
export const MIN_SUSPICION_MS = 1_000;
/** After activity, probe once the link has been quiet for at least this long (ms). */
export const MIN_PROBE_QUIET_MS = 500;

/**
 * Round-trip time estimate as TCP keeps it (RFC 6298): smoothed RTT and its
 * mean deviation, from samples of one probe and its echo.
 */
export class RttEstimator {
  #srtt: number | null = null;
  #rttvar = 0;

  /** Takes one round-trip sample (ms). */
  sample(ms: number): void {
    const rtt = Math.max(0, ms);
    if (this.#srtt === null) {
      this.#srtt = rtt;
      this.#rttvar = rtt / 2;
      return;
    }
    this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - rtt);
    this.#srtt = 0.875 * this.#srtt + 0.125 * rtt;
  }

  /** The smoothed round-trip time (ms), null before any sample. */
  get srtt(): number | null {
    return this.#srtt;
  }

  /**
   * srtt + 4 * rttvar, within [floor, ceiling]; the ceiling before any
   * sample. The margin over srtt is at least half of it: on a steady slow
   * link rttvar shrinks toward nothing, and a few milliseconds of jitter
   * must not make an answer late.
   */
  timeout(floor: number, ceiling: number): number {
    if (this.#srtt === null) return ceiling;
    return Math.min(ceiling, Math.max(floor, this.#srtt + Math.max(4 * this.#rttvar, this.#srtt / 2)));
  }
}

/** What a frame received tells the watch. */
export type Heard =
  /** DATA, or an ACK or HEARTBEAT that acknowledged new bytes: the peer is busy, silence would mean something. */
  | "activity"
  /** An ACK 0 other than the one of the attach: the answer to a probe. */
  | "echo"
  /** Anything else (the peer's own heartbeat, GOAWAY, ...). */
  | "other";

/** What the watch asks of the session at a tick. */
export type WatchAction = "probe" | "suspect" | null;

/** Options of a LinkWatch. */
export interface LinkWatchOptions {
  /** The peer answered probes on an earlier link of the session. */
  echoes?: boolean;
}

/** The probes and suspicion of one link (see the module header). */
export class LinkWatch {
  #rtt = new RttEstimator();
  /** The only sample so far is the handshake's (an upper bound): the first probe's replaces it. */
  #fromHandshake = false;
  #linkTimeoutMs: number;
  #lastHeard: number;
  /** When the first probe since the last frame heard went out; null when none is outstanding. */
  #probeAt: number | null = null;
  /**
   * Probes sent and echoes heard on this link: the n-th echo answers the
   * n-th probe. (broker-server answers late while much waits to be written
   * to the link; a skipped echo, from a build that skipped them, makes the
   * later samples too long, never too short.)
   */
  #probes = 0;
  #echoesHeard = 0;
  /** The one probe being timed (which, and when it went out), as TCP times one segment at a time. */
  #timed: { probe: number; at: number } | null = null;
  /** Silence would mean something: the peer was active since the last probe. */
  #expecting = false;
  /** The peer answered a probe once: it echoes, so an unanswered probe is news. */
  #echoes = false;
  #suspectedAt: number | null = null;
  /** The end of our stream when last looked at, and when it first grew since the last probe. */
  #seenEnd = 0;
  #dataAt: number | null = null;

  /** Watches a link attached at `now`, whose session declares it dead after `linkTimeoutMs` of silence. */
  constructor(now: number, linkTimeoutMs: number, options: LinkWatchOptions = {}) {
    this.#lastHeard = now;
    this.#linkTimeoutMs = linkTimeoutMs;
    this.#echoes = options.echoes ?? false;
  }

  /**
   * How long the link's handshake took (ms): an upper bound of its round
   * trip (the connect and the hello; for an opening the ERP connect too),
   * taken as the first sample unless a probe was answered already, and
   * replaced by the first probe's sample (it measures the link itself).
   */
  handshakeTook(ms: number): void {
    if (this.#rtt.srtt !== null) return;
    this.#rtt.sample(ms);
    this.#fromHandshake = true;
  }

  /** How long a probe may stay unanswered before the link is suspect (ms). */
  get suspicionMs(): number {
    return this.#rtt.timeout(MIN_SUSPICION_MS, this.#linkTimeoutMs);
  }

  /** The smoothed round trip (ms), null before any sample. */
  get srtt(): number | null {
    return this.#rtt.srtt;
  }

  /** When a frame was last heard (clock ms). */
  get lastHeard(): number {
    return this.#lastHeard;
  }

  /** Whether the peer has answered a probe (and so can be suspected). */
  get echoes(): boolean {
    return this.#echoes;
  }

  /** Whether the link is suspect now. */
  get suspected(): boolean {
    return this.#suspectedAt !== null;
  }

  /** A frame arrived at `now`; returns true when it ends a suspicion (the link answered after all). */
  heard(now: number, what: Heard): boolean {
    if (what === "echo") {
      this.#echoes = true;
      this.#echoesHeard++;
      if (this.#timed && this.#echoesHeard >= this.#timed.probe) {
        if (this.#echoesHeard === this.#timed.probe) {
          // A handshake that included a slow ERP connect (9 s) would
          // otherwise keep the estimate, and the suspicion at LINK_TIMEOUT,
          // for dozens of probes.
          if (this.#fromHandshake) this.#rtt = new RttEstimator();
          this.#fromHandshake = false;
          this.#rtt.sample(now - this.#timed.at);
        }
        this.#timed = null;
      }
    }
    if (what === "activity") this.#expecting = true;
    this.#probeAt = null;
    this.#lastHeard = now;
    const cleared = this.#suspectedAt !== null;
    this.#suspectedAt = null;
    return cleared;
  }

  /** A probe (a HEARTBEAT) went out at `now`. */
  probed(now: number): void {
    this.#probeAt ??= now;
    this.#probes++;
    this.#timed ??= { probe: this.#probes, at: now };
    this.#expecting = false;
    this.#dataAt = null;
  }

  /**
   * What to do at `now`: "suspect" once (per silence) when a probe stayed
   * unanswered for suspicionMs; "probe" when silence after the peer's
   * activity, or after DATA of ours (`sentEnd`: the end of what we sent;
   * `unacked`: some of it is not acknowledged), has lasted half of that.
   */
  due(now: number, sentEnd: number, unacked: boolean): WatchAction {
    if (sentEnd > this.#seenEnd) {
      this.#seenEnd = sentEnd;
      this.#dataAt ??= now;
    }
    if (this.#probeAt !== null) {
      if (this.#echoes && this.#suspectedAt === null && now - this.#probeAt >= this.suspicionMs) {
        this.#suspectedAt = now;
        return "suspect";
      }
      return null;
    }
    let since = Infinity;
    if (this.#expecting) since = this.#lastHeard;
    if (unacked && this.#dataAt !== null) since = Math.min(since, Math.max(this.#dataAt, this.#lastHeard));
    const quiet = Math.max(MIN_PROBE_QUIET_MS, this.suspicionMs / 2);
    return now - since >= quiet ? "probe" : null;
  }
}
