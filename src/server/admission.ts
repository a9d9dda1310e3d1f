/**
 * Who may go on introducing itself: the bookkeeping of links in handshake.
 * A link that has not yet named a session it holds (with HELLO_RESUME) is
 * unproven; unproven links are capped per source (MAX_HANDSHAKES_PER_ADDRESS)
 * and in all (MAX_HANDSHAKES). A newcomer is never turned away: when a cap
 * is reached, the oldest unproven link of its source, or of the busiest
 * source, makes room, and links that have not sent their hello yet go
 * before links that have. So a crowd of idle links only churns itself, and a
 * resume, which names its session in its first frame, leaves the unproven
 * links behind at once. Pure: the server closes what this hands back.
 * @module
 */

/** The caps that apply to unproven links. */
export interface AdmissionLimits {
  /** Most unproven links in all (MAX_HANDSHAKES). */
  total: number;
  /** Most unproven links per source (MAX_HANDSHAKES_PER_ADDRESS). */
  perSource: number;
}

/** Most resume handshakes in progress for one session; a client makes one at a time. */
export const MAX_RESUMES_PER_SESSION = 4;

interface Entry {
  source: string;
  /** False until the link's hello has arrived. */
  spoke: boolean;
  /** The session it resumes, once it named one the server holds. */
  session: string | null;
}

/** The links in handshake, by source and by the session they resume. */
export class HandshakeAdmission<T> {
  #entries = new Map<T, Entry>();
  /** Unproven links by source, oldest first. */
  #bySource = new Map<string, Set<T>>();
  /** Resuming links by session, oldest first. */
  #bySession = new Map<string, Set<T>>();
  #unproven = 0;

  /** Links in handshake, proven or not. */
  get size(): number {
    return this.#entries.size;
  }

  /** Unproven links in handshake. */
  get unproven(): number {
    return this.#unproven;
  }

  /** Unproven links from `source` now. */
  unprovenFrom(source: string): number {
    return this.#bySource.get(source)?.size ?? 0;
  }

  /** Every link in handshake. */
  [Symbol.iterator](): IterableIterator<T> {
    return this.#entries.keys();
  }

  /**
   * Takes a new link from `source`; returns the links that must make room
   * for it (already forgotten here: close them), and which cap said so.
   */
  admit(link: T, source: string, limits: AdmissionLimits): { evicted: T[]; cap: "perSource" | "total" | null } {
    const evicted: T[] = [];
    let cap: "perSource" | "total" | null = null;
    const own = this.#bySource.get(source);
    if (own && own.size >= limits.perSource) {
      cap = "perSource";
      evicted.push(this.#oldest(own));
    } else if (this.#unproven >= limits.total) {
      cap = "total";
      evicted.push(this.#oldest(this.#busiest()));
    }
    for (const e of evicted) this.remove(e);
    this.#entries.set(link, { source, spoke: false, session: null });
    this.#group(this.#bySource, source).add(link);
    this.#unproven++;
    return { evicted, cap };
  }

  /** The link's hello arrived: it goes after the silent ones. */
  spoke(link: T): void {
    const entry = this.#entries.get(link);
    if (entry) entry.spoke = true;
  }

  /**
   * The link named `session`, which the server holds: it is no longer
   * unproven. Returns the older resume handshakes of that session beyond
   * MAX_RESUMES_PER_SESSION (forgotten here: close them).
   */
  resuming(link: T, session: string): T[] {
    const entry = this.#entries.get(link);
    if (!entry || entry.session !== null) return [];
    this.#leaveSource(link, entry);
    entry.session = session;
    const group = this.#group(this.#bySession, session);
    group.add(link);
    const evicted: T[] = [];
    for (const older of group) {
      if (group.size - evicted.length <= MAX_RESUMES_PER_SESSION) break;
      evicted.push(older);
    }
    for (const e of evicted) this.remove(e);
    return evicted;
  }

  /** Forgets a link (its handshake is over, whatever the outcome). */
  remove(link: T): void {
    const entry = this.#entries.get(link);
    if (!entry) return;
    this.#entries.delete(link);
    if (entry.session === null) {
      this.#leaveSource(link, entry);
    } else {
      const group = this.#bySession.get(entry.session);
      group?.delete(link);
      if (group?.size === 0) this.#bySession.delete(entry.session);
    }
  }

  #leaveSource(link: T, entry: Entry): void {
    const group = this.#bySource.get(entry.source);
    if (!group?.delete(link)) return;
    this.#unproven--;
    if (group.size === 0) this.#bySource.delete(entry.source);
  }

  #group(map: Map<string, Set<T>>, key: string): Set<T> {
    let group = map.get(key);
    if (!group) map.set(key, group = new Set());
    return group;
  }

  /** The source with the most unproven links (the first found among equals). */
  #busiest(): Set<T> {
    let busiest: Set<T> | undefined;
    for (const group of this.#bySource.values()) if (!busiest || group.size > busiest.size) busiest = group;
    return busiest as Set<T>;
  }

  /** The oldest link of `group` that has not sent its hello, else its oldest. */
  #oldest(group: Set<T>): T {
    let first: T | undefined;
    for (const link of group) {
      if (!this.#entries.get(link)?.spoke) return link;
      first ??= link;
    }
    return first as T;
  }
}
