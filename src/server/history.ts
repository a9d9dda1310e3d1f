/**
 * broker-server's last 24 hours, at one-minute resolution, for the status
 * page's charts and /history.json: is the broker doing its job (outages
 * hidden, sessions lost), and where the bad Wi-Fi is (the flakiest client
 * addresses and networks).
 *
 * Pure bookkeeping, no I/O and no timers: the server feeds it events and
 * samples with its clock's time, and reads a snapshot. Memory is fixed at
 * construction: a ring of 1,440 minute slots in preallocated typed arrays,
 * each slot stamped with the minute it holds (a stale slot reads as empty
 * and is cleared when written again), and two bounded tables of outages by
 * client address and by network (hourly rings per entry). A peer cannot
 * grow them: when a table is full, the entry with the fewest outages in 24 h
 * (the oldest among equals) makes room.
 * @module
 */

import { sourceOf } from "./rate_limit.ts";

/** Minutes kept: 24 hours. */
export const HISTORY_MINUTES = 1440;
/** One slot of the ring (ms). */
export const MINUTE_MS = 60_000;
/**
 * Upper bounds (s) of the outage histogram's bins, inclusive as Prometheus'
 * `le` (so the page and broker_resume_duration_seconds agree on an outage of
 * exactly 5 s); the last bin takes everything longer.
 */
export const OUTAGE_BOUNDS = [1, 5, 30, 180] as const;
/** The outage bins as the page names them. */
export const OUTAGE_LABELS = ["≤ 1 s", "1–5 s", "5–30 s", "30–180 s", "> 180 s"] as const;
/** Client addresses tracked for the flakiest-clients table. */
export const MAX_TRACKED_CLIENTS = 256;
/** Networks (IPv4 /24, IPv6 /64) tracked for the flakiest-networks table. */
export const MAX_TRACKED_NETWORKS = 256;

const BINS = OUTAGE_LABELS.length;
const HOURS = 24;
const HOUR_MS = 3_600_000;
/** Fields of one hour of one flaky-table entry: outages, sessions lost, total seconds, longest seconds. */
const FIELDS = 4;

/** `n` modulo `m`, never negative (a virtual clock may start at 0, so hours and minutes before it are negative). */
function modulo(n: number, m: number): number {
  return ((n % m) + m) % m;
}

/** Adds `n` to `a[i]`. */
function add(a: Uint32Array | Float64Array, i: number, n = 1): void {
  a[i] = (a[i] as number) + n;
}

/** The outage bin of `seconds`. */
export function outageBin(seconds: number): number {
  const i = OUTAGE_BOUNDS.findIndex((upper) => seconds <= upper);
  return i < 0 ? BINS - 1 : i;
}

/** The address of a peer written `host:port` or `[v6]:port` (already an address: unchanged). */
export function peerAddress(peer: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d+)?$/.exec(peer);
  if (bracketed) return bracketed[1] as string;
  return /^[^:]*:\d+$/.test(peer) ? peer.slice(0, peer.lastIndexOf(":")) : peer;
}

/** The network of an address: IPv4 a.b.c.0/24, IPv6 its /64. */
export function networkOf(address: string): string {
  const source = sourceOf(address);
  const v4 = /^(\d+\.\d+\.\d+)\.\d+$/.exec(source);
  return v4 ? `${v4[1]}.0/24` : source;
}

/** Live figures sampled now and then (the ring keeps each minute's extremes). */
export interface HistorySample {
  /** Sessions with a link. */
  attached: number;
  /** Sessions waiting for their client to come back. */
  detached: number;
  /** ERP servers up. */
  serversUp: number;
  /** Bytes relayed to clients since start (a counter: the ring keeps each minute's increase). */
  bytesToClients: number;
  /** Bytes relayed to the ERP since start (likewise). */
  bytesToErp: number;
}

/** An outage: a session's client away for `seconds`, from `client` (host:port or address). */
export interface Outage {
  client: string;
  seconds: number;
}

/** One row of the flakiest tables. */
export interface FlakyRow {
  /** Client address or network. */
  key: string;
  /** Outages (hidden ones and sessions lost to the window) in 24 h. */
  outages: number;
  /** Sessions whose window expired. */
  lost: number;
  /** Seconds away, summed. */
  totalSeconds: number;
  /** Longest outage (s). */
  longestSeconds: number;
}

/** The last 24 hours, oldest minute first: what /history.json serves and the page draws. */
export interface HistorySnapshot {
  /** Length of a minute slot (ms). */
  minuteMs: number;
  /** Start of the first minute (ISO 8601). */
  from: string;
  /** Start of the current (last, still running) minute (ISO 8601). */
  to: string;
  /** One value per minute; null before the history started (and, for sampled figures, for minutes never sampled). */
  series: {
    /** Most live sessions (attached and detached) in the minute. */
    live: (number | null)[];
    /** Most detached sessions seen in the minute's samples. */
    detached: (number | null)[];
    /** Fewest ERP servers up seen in the minute's samples. */
    serversUp: (number | null)[];
    opened: (number | null)[];
    resumes: (number | null)[];
    expired: (number | null)[];
    aborted: (number | null)[];
    longestOutageSeconds: (number | null)[];
    bytesToClients: (number | null)[];
    bytesToErp: (number | null)[];
  };
  /** The 24 hours summed. */
  totals: {
    opened: number;
    /** Outages hidden: resumes. */
    resumes: number;
    longestOutageSeconds: number;
    expired: number;
    aborted: number;
    bytesToClients: number;
    bytesToErp: number;
  };
  /** Hidden outages by duration, and the sessions lost beside them. */
  outages: { bins: { label: string; count: number }[]; expired: number; aborted: number };
  /** The client addresses and networks with the most outages. */
  flakiest: { clients: FlakyRow[]; networks: FlakyRow[] };
}

/** Options of ServerHistory.snapshot. */
export interface HistorySnapshotOptions {
  /** Rows of each flakiest table (default 10). */
  top?: number;
}

/** The last 24 hours of broker-server at one-minute resolution, in fixed memory. */
export class ServerHistory {
  readonly #startMinute: number;
  #lastMinute: number;
  readonly #stamp = new Float64Array(HISTORY_MINUTES).fill(-1);
  readonly #sampled = new Uint8Array(HISTORY_MINUTES);
  readonly #serversUpKnown = new Uint8Array(HISTORY_MINUTES);
  readonly #live = new Uint32Array(HISTORY_MINUTES);
  readonly #detached = new Uint32Array(HISTORY_MINUTES);
  readonly #serversUp = new Uint32Array(HISTORY_MINUTES);
  readonly #opened = new Uint32Array(HISTORY_MINUTES);
  readonly #resumes = new Uint32Array(HISTORY_MINUTES);
  readonly #expired = new Uint32Array(HISTORY_MINUTES);
  readonly #aborted = new Uint32Array(HISTORY_MINUTES);
  readonly #longest = new Float32Array(HISTORY_MINUTES);
  readonly #toClients = new Float64Array(HISTORY_MINUTES);
  readonly #toErp = new Float64Array(HISTORY_MINUTES);
  readonly #bins = new Uint32Array(HISTORY_MINUTES * BINS);
  #lastBytes: { toClients: number; toErp: number } | null = null;
  readonly #clients = new FlakyTable(MAX_TRACKED_CLIENTS);
  readonly #networks = new FlakyTable(MAX_TRACKED_NETWORKS);

  /** An empty history starting at clock ms `now`. */
  constructor(now: number) {
    this.#startMinute = Math.floor(now / MINUTE_MS);
    this.#lastMinute = this.#startMinute;
  }

  /** Bytes of the typed arrays (the bulk of the history's memory; the tables' keys come on top). */
  get byteLength(): number {
    const arrays = [this.#stamp, ...this.#perMinute(), this.#bins];
    return arrays.reduce((n, a) => n + a.byteLength, 0) + this.#clients.byteLength + this.#networks.byteLength;
  }

  /** The series with one value per minute slot (not the stamps, nor the bins' several per slot). */
  #perMinute() {
    return [
      this.#sampled,
      this.#serversUpKnown,
      this.#live,
      this.#detached,
      this.#serversUp,
      this.#opened,
      this.#resumes,
      this.#expired,
      this.#aborted,
      this.#longest,
      this.#toClients,
      this.#toErp,
    ];
  }

  /**
   * The slot of the minute of `now`, cleared if it held an older minute. A
   * clock that steps back counts in the latest minute seen, so nothing is
   * written over a newer minute.
   */
  #slot(now: number): number {
    const minute = Math.max(Math.floor(now / MINUTE_MS), this.#lastMinute);
    this.#lastMinute = minute;
    const slot = modulo(minute, HISTORY_MINUTES);
    if (this.#stamp[slot] !== minute) {
      this.#stamp[slot] = minute;
      for (const series of this.#perMinute()) series[slot] = 0;
      this.#bins.fill(0, slot * BINS, slot * BINS + BINS);
    }
    return slot;
  }

  /**
   * `count` sessions are live now (called as sessions open and end, so
   * each minute's peak is exact; samples add the detached ones).
   */
  sessionsLive(now: number, count: number): void {
    const slot = this.#slot(now);
    this.#sampled[slot] = 1;
    this.#live[slot] = Math.max(this.#live[slot] as number, count);
  }

  /** A session opened. */
  opened(now: number): void {
    add(this.#opened, this.#slot(now));
  }

  /** A session resumed: an outage of `outage.seconds` hidden from its client. */
  outageHidden(now: number, outage: Outage): void {
    const slot = this.#slot(now);
    add(this.#resumes, slot);
    add(this.#bins, slot * BINS + outageBin(outage.seconds));
    this.#longest[slot] = Math.max(this.#longest[slot] as number, outage.seconds);
    this.#recordClient(now, outage, false);
  }

  /**
   * A session ended without finishing: its window expired (an outage not
   * hidden, charged to its client) or it was aborted (an error, or a peer).
   */
  sessionLost(now: number, cause: "expired" | "aborted", outage: Outage): void {
    const slot = this.#slot(now);
    if (cause === "aborted") {
      add(this.#aborted, slot);
      return;
    }
    add(this.#expired, slot);
    this.#recordClient(now, outage, true);
  }

  #recordClient(now: number, outage: Outage, lost: boolean): void {
    const address = peerAddress(outage.client);
    this.#clients.record(now, address, { seconds: outage.seconds, lost });
    this.#networks.record(now, networkOf(address), { seconds: outage.seconds, lost });
  }

  /** Live figures now: each minute keeps its most sessions, its fewest ERP servers up, and its bytes. */
  sample(now: number, figures: HistorySample): void {
    const slot = this.#slot(now);
    const first = this.#sampled[slot] === 0 || this.#serversUpKnown[slot] === 0;
    this.#sampled[slot] = 1;
    this.#serversUpKnown[slot] = 1;
    this.#live[slot] = Math.max(this.#live[slot] as number, figures.attached + figures.detached);
    this.#detached[slot] = Math.max(this.#detached[slot] as number, figures.detached);
    this.#serversUp[slot] = first ? figures.serversUp : Math.min(this.#serversUp[slot] as number, figures.serversUp);
    const last = this.#lastBytes;
    this.#lastBytes = { toClients: figures.bytesToClients, toErp: figures.bytesToErp };
    if (last === null) return;
    // Counters only grow; a smaller one (a reset) starts a new baseline rather than a negative minute.
    add(this.#toClients, slot, Math.max(0, figures.bytesToClients - last.toClients));
    add(this.#toErp, slot, Math.max(0, figures.bytesToErp - last.toErp));
  }

  /** The last 24 hours up to the minute of `now`. */
  snapshot(now: number, options: HistorySnapshotOptions = {}): HistorySnapshot {
    const end = Math.max(Math.floor(now / MINUTE_MS), this.#lastMinute);
    const first = end - HISTORY_MINUTES + 1;
    const slots = Array.from({ length: HISTORY_MINUTES }, (_, i) => {
      const minute = first + i;
      const slot = modulo(minute, HISTORY_MINUTES);
      return minute < this.#startMinute ? -2 : this.#stamp[slot] === minute ? slot : -1;
    });
    // -2: before the start (null); -1: a minute nothing happened in (0, or null for sampled figures).
    const counter = (a: ArrayLike<number>) => slots.map((s) => s === -2 ? null : s === -1 ? 0 : a[s] as number);
    const gauge = (a: ArrayLike<number>) => slots.map((s) => s < 0 || this.#sampled[s] === 0 ? null : a[s] as number);
    const series = {
      live: gauge(this.#live),
      detached: gauge(this.#detached),
      serversUp: slots.map((s) => s < 0 || this.#serversUpKnown[s] === 0 ? null : this.#serversUp[s] as number),
      opened: counter(this.#opened),
      resumes: counter(this.#resumes),
      expired: counter(this.#expired),
      aborted: counter(this.#aborted),
      longestOutageSeconds: counter(this.#longest).map((x) => x === null ? null : Math.round(x * 10) / 10),
      bytesToClients: counter(this.#toClients),
      bytesToErp: counter(this.#toErp),
    };
    const top = options.top ?? 10;
    return {
      minuteMs: MINUTE_MS,
      from: new Date(first * MINUTE_MS).toISOString(),
      to: new Date(end * MINUTE_MS).toISOString(),
      series,
      totals: summed(series),
      outages: {
        bins: OUTAGE_LABELS.map((label, b) => ({ label, count: sumBins(this.#bins, slots, b) })),
        expired: sum(series.expired),
        aborted: sum(series.aborted),
      },
      flakiest: { clients: this.#clients.top(now, top), networks: this.#networks.top(now, top) },
    };
  }
}

function sum(values: (number | null)[]): number {
  let n = 0;
  for (const v of values) n += v ?? 0;
  return n;
}

function sumBins(bins: Uint32Array, slots: number[], bin: number): number {
  let n = 0;
  for (const s of slots) if (s >= 0) n += bins[s * BINS + bin] as number;
  return n;
}

function summed(series: HistorySnapshot["series"]): HistorySnapshot["totals"] {
  return {
    opened: sum(series.opened),
    resumes: sum(series.resumes),
    longestOutageSeconds: series.longestOutageSeconds.reduce<number>((m, x) => Math.max(m, x ?? 0), 0),
    expired: sum(series.expired),
    aborted: sum(series.aborted),
    bytesToClients: sum(series.bytesToClients),
    bytesToErp: sum(series.bytesToErp),
  };
}

/**
 * Outages by key (a client address or a network) over 24 hours, to the hour,
 * for at most `capacity` keys: each entry is a ring of 24 hourly slots in
 * one shared Float32Array. When full, a new key takes the place of the entry
 * with the fewest outages in the last 24 h (the least recently hit among
 * equals): the flakiest stay, whatever a peer with many addresses does.
 */
export class FlakyTable {
  readonly #capacity: number;
  readonly #hours: Float32Array;
  /** Per entry: the latest hour written (hours since the epoch); its ring holds that hour and the 23 before. */
  readonly #latest: Float64Array;
  /** Per entry: outages in its ring, kept up to date so that finding the least useful entry is one pass. */
  readonly #ringOutages: Float64Array;
  readonly #keys: string[] = [];
  readonly #index = new Map<string, number>();

  /** A table for at most `capacity` keys. */
  constructor(capacity: number) {
    if (!(capacity >= 1)) {
      throw new RangeError(`Cannot track flaky clients: capacity must be at least 1, got ${capacity}`);
    }
    this.#capacity = capacity;
    this.#hours = new Float32Array(capacity * HOURS * FIELDS);
    this.#latest = new Float64Array(capacity);
    this.#ringOutages = new Float64Array(capacity);
  }

  /** Keys tracked now. */
  get size(): number {
    return this.#keys.length;
  }

  /** Bytes of its typed arrays. */
  get byteLength(): number {
    return this.#hours.byteLength + this.#latest.byteLength + this.#ringOutages.byteLength;
  }

  /** An outage of `key` at `now`: `seconds` long; `lost` when the session's window expired. */
  record(now: number, key: string, outage: { seconds: number; lost: boolean }): void {
    const hour = Math.floor(now / HOUR_MS);
    let entry = this.#index.get(key);
    if (entry === undefined) entry = this.#admit(now, key, hour);
    const latest = this.#latest[entry] as number;
    if (hour > latest) {
      // Clear the hours skipped since the last write (at most the whole ring).
      for (let h = Math.max(latest + 1, hour - HOURS + 1); h <= hour; h++) {
        const cleared = this.#hourFields(entry, h);
        this.#ringOutages[entry] = (this.#ringOutages[entry] as number) - (cleared[0] as number);
        cleared.fill(0);
      }
      this.#latest[entry] = hour;
    }
    this.#ringOutages[entry] = (this.#ringOutages[entry] as number) + 1;
    // A clock that stepped back counts in the latest hour.
    const fields = this.#hourFields(entry, Math.max(hour, latest));
    fields[0] = (fields[0] as number) + 1;
    fields[1] = (fields[1] as number) + (outage.lost ? 1 : 0);
    fields[2] = (fields[2] as number) + outage.seconds;
    fields[3] = Math.max(fields[3] as number, outage.seconds);
  }

  #hourFields(entry: number, hour: number): Float32Array {
    const at = (entry * HOURS + modulo(hour, HOURS)) * FIELDS;
    return this.#hours.subarray(at, at + FIELDS);
  }

  /** A slot for a new `key`: a free one, or the least useful entry's. */
  #admit(now: number, key: string, hour: number): number {
    let entry = this.#keys.length;
    if (entry < this.#capacity) {
      this.#keys.push(key);
    } else {
      entry = this.#leastUseful(now);
      this.#index.delete(this.#keys[entry] as string);
      this.#keys[entry] = key;
    }
    this.#index.set(key, entry);
    this.#hours.fill(0, entry * HOURS * FIELDS, (entry + 1) * HOURS * FIELDS);
    this.#latest[entry] = hour;
    this.#ringOutages[entry] = 0;
    return entry;
  }

  /**
   * The entry with the fewest outages (an entry not written for 24 hours
   * has none; hours of a ring partly out of the window still count: close
   * enough to choose whom to forget), the least recently written among equals.
   */
  #leastUseful(now: number): number {
    const hour = Math.floor(now / HOUR_MS);
    let best = 0;
    let bestCount = Infinity;
    for (let e = 0; e < this.#keys.length; e++) {
      const latest = this.#latest[e] as number;
      const count = latest <= hour - HOURS ? 0 : this.#ringOutages[e] as number;
      if (count < bestCount || (count === bestCount && latest < (this.#latest[best] as number))) {
        best = e;
        bestCount = count;
      }
    }
    return best;
  }

  /** Entry `e`'s last 24 hours at `now`. */
  #row(now: number, e: number): FlakyRow {
    const row = { key: this.#keys[e] as string, outages: 0, lost: 0, totalSeconds: 0, longestSeconds: 0 };
    const latest = this.#latest[e] as number;
    const from = Math.max(Math.floor(now / HOUR_MS), latest) - HOURS + 1;
    for (let h = Math.max(from, latest - HOURS + 1); h <= latest; h++) {
      const f = this.#hourFields(e, h);
      row.outages += f[0] as number;
      row.lost += f[1] as number;
      row.totalSeconds += f[2] as number;
      row.longestSeconds = Math.max(row.longestSeconds, f[3] as number);
    }
    return row;
  }

  /** The `n` keys with the most outages in the 24 hours before `now` (then the longest outage first). */
  top(now: number, n: number): FlakyRow[] {
    const rows: FlakyRow[] = [];
    for (let e = 0; e < this.#keys.length; e++) {
      const row = this.#row(now, e);
      if (row.outages > 0) rows.push(row);
    }
    rows.sort((a, b) => b.outages - a.outages || b.longestSeconds - a.longestSeconds || (a.key < b.key ? -1 : 1));
    return rows.slice(0, Math.max(0, n)).map((r) => ({
      ...r,
      totalSeconds: Math.round(r.totalSeconds * 10) / 10,
      longestSeconds: Math.round(r.longestSeconds * 10) / 10,
    }));
  }
}
