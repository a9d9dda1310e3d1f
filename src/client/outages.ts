/**
 * One session's outages as broker-client saw them: how many it hid from
 * Smart Client, the longest, the bytes replayed each way; and the resume
 * log line, which waits for the server's replay so that one line tells how
 * long the outage was and what was sent again both ways.
 * @module
 */

import { logger } from "../ops/log.ts";

const log = logger("client");

/** What is known of a resume when its link is attached. */
export interface ResumeFacts {
  /** The session's short id. */
  session: string;
  /** How long the session was detached (ms). */
  awayMs: number;
  /** What ended the link before ("link error", "silence", "suspicion race won"). */
  trigger: string;
  /** The resume's handshake (ms). */
  handshakeMs: number;
}

/** A resume whose line waits for one or both replay counts. */
interface PendingResume extends ResumeFacts {
  toServer: number | null;
  byServer: { bytes: number; complete: boolean } | null;
}

/** The outages of one session, and the log line of each resume. */
export class OutageHistory {
  /** Outages hidden from Smart Client (successful resumes). */
  hidden = 0;
  /** The longest of them (ms). */
  longestMs = 0;
  /** Bytes broker-client sent again to the server on resumes. */
  replayedToServer = 0;
  /** Bytes the server sent again to broker-client on resumes. */
  replayedByServer = 0;
  /** Why the last attempt to resume failed, during an outage; null before any failed. */
  lastAttemptError: string | null = null;
  #pending: PendingResume | null = null;

  /** A resume is being committed (before its link is attached); its line is logged once both replays are counted. */
  begin(facts: ResumeFacts): void {
    this.#flush();
    this.#pending = { ...facts, toServer: null, byServer: null };
  }

  /** The resume begun is done: broker-client replayed `bytes` to the server. */
  replayedTo(bytes: number): void {
    this.hidden++;
    this.lastAttemptError = null;
    this.replayedToServer += bytes;
    if (this.#pending) {
      this.longestMs = Math.max(this.longestMs, this.#pending.awayMs);
      this.#pending.toServer = bytes;
    }
    this.#logIfComplete();
  }

  /**
   * The server's replay on the link just resumed: `bytes`, all of it when
   * `complete` (its ACK came), else what came before the link or session
   * ended. It may come while the link is being attached, before replayedTo.
   */
  replayedBy(bytes: number, complete: boolean): void {
    this.replayedByServer += bytes;
    if (this.#pending) this.#pending.byServer = { bytes, complete };
    this.#logIfComplete();
  }

  /** The resume begun failed after all (its link could not be attached): nothing to log. */
  abandon(): void {
    this.#pending = null;
  }

  #logIfComplete(): void {
    const p = this.#pending;
    if (p && p.toServer !== null && p.byServer !== null) this.#flush();
  }

  #flush(): void {
    const p = this.#pending;
    this.#pending = null;
    if (!p || p.toServer === null) return;
    const by = p.byServer;
    log.info(
      "Session {session} resumed after {seconds} s (trigger: {trigger}; handshake {handshake} ms): {toServer} bytes replayed to the server, {byServer} bytes replayed by the server{cut}",
      {
        session: p.session,
        seconds: (p.awayMs / 1000).toFixed(1),
        trigger: p.trigger,
        handshake: p.handshakeMs,
        toServer: p.toServer,
        byServer: by?.bytes ?? 0,
        cut: by?.complete === false ? " (cut short: the link or the session ended first)" : "",
      },
    );
  }
}
