/**
 * The one owner of broker-server's session lifecycle: live sessions by id,
 * openings by the client's open token (until the client confirms the
 * session), and the tombstones that ended sessions leave for one resume
 * window. The handshake asks it, never keeps state of its own.
 * @module
 */

import type { Backend } from "./balancer.ts";
import type { Session } from "../session/session.ts";
import { type Clock, systemClock, type TimerHandle } from "../session/clock.ts";

/**
 * Most tombstones kept; the oldest go first. A tombstone costs about 0.4 KiB
 * of heap, 1.5 KiB of resident memory in all: 50,000 (some 70 MiB) cover
 * the default 3-minute window at 270 endings a second.
 */
export const MAX_TOMBSTONES = 50_000;

/** The first 8 hex digits of a session id: enough to tell sessions apart in logs. */
export function shortId(id: string): string {
  return id.slice(0, 8);
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

/** A live session with what the server needs to resume it. */
export interface SessionEntry extends ServerSessionInfo {
  /** The session id's bytes (the hex of `id`). */
  sessionId: Uint8Array;
  /** The address (IPv6: /64) that opened it, for the budget of its log lines. */
  source: string;
  /** The resume key. */
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
export interface Tombstone {
  /** The session's resume key (32 bytes). */
  secret: Uint8Array;
  /** Why it ended. */
  reason: string;
  /** Whether it ended cleanly. */
  clean: boolean;
  /** The session's received offset at the end. */
  received: number;
  /** Clock ms after which it is forgotten. */
  expiresAt: number;
}

/** An attempt to open a session, known by its open token until the client confirms the session. */
export interface Opening {
  /** The attempt's number (a later attempt with the same token replaces the record). */
  attempt: number;
  /** The client's public key from HELLO_NEW: a retry must come with the same. */
  clientPublicKey: Uint8Array;
  /** Once the session is open: the server's public key in its WELCOME. */
  serverPublicKey?: Uint8Array;
  /** Once the session is open: the session. */
  entry?: SessionEntry;
}

/** One attempt to open a session, as its opener holds it. */
export interface OpeningAttempt {
  /** Whether no later attempt with the same token has replaced this one. */
  isLatest(): boolean;
  /** Forgets the token, unless a later attempt replaced this one. */
  giveUp(): void;
  /** Records the session this attempt opened (and registers it as live). */
  opened(serverPublicKey: Uint8Array, entry: SessionEntry): void;
}

/** Options of a SessionRegistry. */
export interface SessionRegistryOptions {
  /** Time and timers; default systemClock. */
  clock?: Clock;
  /** Most tombstones kept; default MAX_TOMBSTONES. */
  maxTombstones?: number;
}

/** Live sessions, openings by token, and tombstones of ended sessions. */
export class SessionRegistry {
  #clock: Clock;
  #maxTombstones: number;
  #sessions = new Map<string, SessionEntry>();
  #opening = new Map<string, Opening>();
  #attempts = 0;
  /** In the order they were made, which is (nearly) the order they expire in. */
  #tombstones = new Map<string, Tombstone>();
  /** One timer for all tombstones: set for the oldest. */
  #tombstoneTimer: TimerHandle | undefined;

  /** An empty registry. */
  constructor(options: SessionRegistryOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#maxTombstones = options.maxTombstones ?? MAX_TOMBSTONES;
  }

  /** Number of live sessions. */
  get size(): number {
    return this.#sessions.size;
  }

  /** The live session `id`. */
  get(id: string): SessionEntry | undefined {
    return this.#sessions.get(id);
  }

  /** The live sessions, in the order they were opened. */
  values(): IterableIterator<SessionEntry> {
    return this.#sessions.values();
  }

  /** Forgets the live session `id` (it ended). */
  delete(id: string): void {
    this.#sessions.delete(id);
  }

  /**
   * An earlier attempt with `openToken` is still connecting to an ERP
   * server. A retry waits (the client backs off and asks again): letting it
   * supersede that attempt would let anyone who copied the token do so.
   */
  connecting(openToken: string): boolean {
    const opening = this.#opening.get(openToken);
    return opening !== undefined && opening.entry === undefined;
  }

  /** The unconfirmed session an earlier attempt with `openToken` opened, if it is still there. */
  orphan(openToken: string): SessionEntry | undefined {
    const entry = this.#opening.get(openToken)?.entry;
    return entry && !entry.session.confirmed && entry.session.state !== "closed" ? entry : undefined;
  }

  /** The opening known by `openToken`. */
  opening(openToken: string): Opening | undefined {
    return this.#opening.get(openToken);
  }

  /** Starts an attempt to open a session with `openToken`: from here until it settles, the only one for its token. */
  beginOpening(openToken: string, clientPublicKey: Uint8Array): OpeningAttempt {
    const attempt = ++this.#attempts;
    this.#opening.set(openToken, { attempt, clientPublicKey });
    const openings = this.#opening;
    const sessions = this.#sessions;
    const isLatest = () => openings.get(openToken)?.attempt === attempt;
    return {
      isLatest,
      giveUp: () => {
        if (isLatest()) openings.delete(openToken);
      },
      opened: (serverPublicKey, entry) => {
        sessions.set(entry.id, entry);
        openings.set(openToken, { attempt, clientPublicKey, serverPublicKey, entry });
      },
    };
  }

  /** Number of tombstones held (expired ones included until the sweep). */
  get tombstoneCount(): number {
    return this.#tombstones.size;
  }

  /** Keeps a tombstone for session `id` for `windowMs`; the oldest goes when there are too many. */
  bury(id: string, ended: Omit<Tombstone, "expiresAt">, windowMs: number): void {
    if (this.#tombstones.size >= this.#maxTombstones) {
      const [oldest] = this.#tombstones.keys();
      if (oldest !== undefined) this.#tombstones.delete(oldest);
    }
    this.#tombstones.set(id, { ...ended, expiresAt: this.#clock.now() + windowMs });
    if (this.#tombstoneTimer === undefined) this.#sweepTombstones();
  }

  /** The tombstone of session `id`, unless it has expired. */
  tombstone(id: string): Tombstone | undefined {
    const t = this.#tombstones.get(id);
    return t && t.expiresAt > this.#clock.now() ? t : undefined;
  }

  /** Forgets every tombstone and stops the sweep timer. */
  clearTombstones(): void {
    if (this.#tombstoneTimer !== undefined) this.#clock.clear(this.#tombstoneTimer);
    this.#tombstoneTimer = undefined;
    this.#tombstones.clear();
  }

  /** Forgets expired tombstones and sets the timer for the next. */
  #sweepTombstones(): void {
    this.#tombstoneTimer = undefined;
    const now = this.#clock.now();
    for (const [id, t] of this.#tombstones) {
      if (t.expiresAt > now) {
        this.#tombstoneTimer = this.#clock.setTimeout(() => this.#sweepTombstones(), t.expiresAt - now);
        return;
      }
      this.#tombstones.delete(id);
    }
  }
}
