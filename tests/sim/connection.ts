/**
 * A simulated TCP connection on a virtual clock: two endpoints that are
 * Transports (what the broker's session code reads and writes), joined by
 * two one-way paths with latency, odd-sized deliveries and a bounded socket
 * buffer (a writer blocks when the reader does not read), and faults that
 * can strike at any byte position: freeze (silent stall; what was sent
 * arrives on thaw, possibly after a newer link), FIN, reset, and close.
 * @module
 */

import type { Transport } from "../../src/session/transport.ts";
import type { VirtualClock } from "./clock.ts";
import type { Rng } from "./rng.ts";

/** How one connection's paths behave. */
export interface PathModel {
  /** One-way latency range (ms). */
  latencyMs: [number, number];
  /** Largest piece a write is delivered in (smaller pieces are random). */
  maxPiece: number;
  /** Bytes a direction holds (sent, not yet read) before writes block. */
  capacity: number;
}

/** Bytes of each connection's start kept for replay attacks. */
const RECORDED_BYTES = 4_096;

/** A quick, roomy path: the default. */
export const FAST_PATH: PathModel = { latencyMs: [1, 5], maxPiece: 64 * 1024, capacity: 256 * 1024 };

/** A callback list waiting for a direction to change. */
type Waiter = () => void;

/** One direction of a connection. */
class Direction {
  /** Delivered, not yet read. */
  readable: Uint8Array[] = [];
  /** Bytes sent and not yet read (in flight or readable): bounded by capacity. */
  unread = 0;
  /** Pieces that reached the frozen path: delivered on thaw. */
  held: Uint8Array[] = [];
  /** The writer half-closed: end of stream after the data. */
  finSent = false;
  /** The end of stream reached the reader. */
  finDelivered = false;
  frozen = false;
  /** Delivery time of the last piece scheduled (keeps pieces in order). */
  lastAt = 0;
  /** Pieces in flight (timers set, not yet delivered). */
  inFlight = 0;
  readers: Waiter[] = [];
  writers: Waiter[] = [];

  wakeReaders(): void {
    const readers = this.readers;
    this.readers = [];
    for (const r of readers) r();
  }

  wakeWriters(): void {
    const writers = this.writers;
    this.writers = [];
    for (const w of writers) w();
  }
}

/** What each side of the connection is called in traces. */
export interface ConnectionNames {
  /** The dialing side (for example "client"). */
  a: string;
  /** The accepting side. */
  b: string;
}

/** One endpoint: a Transport, plus the addresses a Deno.Conn would have. */
export class SimEndpoint implements Transport {
  readonly localAddr: Deno.NetAddr;
  readonly remoteAddr: Deno.NetAddr;
  #conn: SimConnection;
  #in: Direction;
  #out: Direction;
  #closed = false;

  constructor(
    conn: SimConnection,
    incoming: Direction,
    outgoing: Direction,
    local: Deno.NetAddr,
    remote: Deno.NetAddr,
  ) {
    this.#conn = conn;
    this.#in = incoming;
    this.#out = outgoing;
    this.localAddr = local;
    this.remoteAddr = remote;
  }

  /** True once this endpoint was closed by its owner. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The connection this endpoint belongs to. */
  get connection(): SimConnection {
    return this.#conn;
  }

  setNoDelay(_on?: boolean): void {}

  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("Bad resource ID");
      if (this.#conn.wasReset) throw new Deno.errors.ConnectionReset("Connection reset by peer (simulated)");
      const dir = this.#in;
      const chunk = dir.readable[0];
      if (chunk) {
        const n = Math.min(p.length, chunk.length);
        p.set(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (n === chunk.length) dir.readable.shift();
        else dir.readable[0] = chunk.subarray(n);
        dir.unread -= n;
        dir.wakeWriters();
        return n;
      }
      if (dir.finDelivered) return null;
      await new Promise<void>((resolve) => dir.readers.push(resolve));
    }
  }

  async write(p: Uint8Array): Promise<number> {
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("Bad resource ID");
      if (this.#conn.wasReset) throw new Deno.errors.ConnectionReset("Connection reset by peer (simulated)");
      const dir = this.#out;
      if (dir.finSent) throw new Deno.errors.BrokenPipe("Broken pipe (simulated: write after closeWrite)");
      if (this.#conn.peerGone(this)) {
        // Writing to a socket the peer closed: the peer answers with a reset.
        this.#conn.resetLater();
        return p.length;
      }
      const room = this.#conn.model.capacity - dir.unread;
      if (room > 0 && p.length > 0) {
        const n = Math.min(room, p.length);
        this.#conn.send(dir, p.slice(0, n));
        return n;
      }
      if (p.length === 0) return 0;
      await new Promise<void>((resolve) => dir.writers.push(resolve));
    }
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Bad resource ID"));
    this.#conn.sendFin(this.#out);
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("Bad resource ID");
    this.#closed = true;
    // Closing with unread data sends a reset instead of a FIN, as TCP does.
    if (this.#in.unread > 0) this.#conn.resetLater();
    else this.#conn.sendFin(this.#out);
    // Our own pending operations fail as a closed resource's would.
    this.#in.wakeReaders();
    this.#out.wakeWriters();
  }
}

/** A simulated TCP connection between endpoint `a` (the dialer) and `b` (the acceptor). */
export class SimConnection {
  readonly a: SimEndpoint;
  readonly b: SimEndpoint;
  readonly model: PathModel;
  #clock: VirtualClock;
  #rng: Rng;
  #ab = new Direction();
  #ba = new Direction();
  #reset = false;
  #resetPending = false;
  #onEvent: (what: string) => void;

  /** A connection from `aAddr` to `bAddr`, paths as `model`; `onEvent` hears faults for the trace. */
  constructor(
    clock: VirtualClock,
    rng: Rng,
    model: PathModel,
    aAddr: Deno.NetAddr,
    bAddr: Deno.NetAddr,
    onEvent: (what: string) => void = () => {},
  ) {
    this.#clock = clock;
    this.#rng = rng;
    this.model = model;
    this.#onEvent = onEvent;
    this.a = new SimEndpoint(this, this.#ba, this.#ab, aAddr, bAddr);
    this.b = new SimEndpoint(this, this.#ab, this.#ba, bAddr, aAddr);
  }

  /** True once the connection was reset (every operation on either side fails). */
  get wasReset(): boolean {
    return this.#reset;
  }

  /** True when both endpoints are closed or the connection was reset: nothing more can happen on it. */
  get finished(): boolean {
    return this.#reset || (this.a.closed && this.b.closed);
  }

  /** Bytes sent and not yet read, both ways. */
  get unreadBytes(): number {
    return this.#ab.unread + this.#ba.unread;
  }

  /** Stops delivering in both directions: what is sent waits (a silent stall, a cable pull). */
  freeze(): void {
    if (this.#ab.frozen && this.#ba.frozen) return;
    this.#ab.frozen = true;
    this.#ba.frozen = true;
    this.#onEvent("freeze");
  }

  /** Delivers again, first what waited (late bytes may arrive after a newer link took over). */
  thaw(): void {
    if (!this.#ab.frozen && !this.#ba.frozen) return;
    this.#onEvent("thaw");
    for (const dir of [this.#ab, this.#ba]) {
      dir.frozen = false;
      // What waited arrives at once, in order, before anything still in flight.
      const held = dir.held;
      dir.held = [];
      for (const piece of held) dir.readable.push(piece);
      if (held.length > 0) dir.wakeReaders();
      if (dir.finSent && dir.inFlight === 0 && !dir.finDelivered) this.#scheduleFin(dir);
    }
  }

  /**
   * Closes the connection cleanly in both directions, as a middlebox that
   * gives up on it may: each side reads what was already sent, then the end
   * of stream; later writes fail.
   */
  closeCleanly(): void {
    if (this.#reset || (this.#ab.finSent && this.#ba.finSent)) return;
    this.#onEvent("clean close");
    this.sendFin(this.#ab);
    this.sendFin(this.#ba);
  }

  /** Resets the connection at once: both sides' pending and later operations fail. */
  reset(): void {
    if (this.#reset) return;
    this.#reset = true;
    this.#onEvent("reset");
    for (const dir of [this.#ab, this.#ba]) {
      dir.readable = [];
      dir.held = [];
      dir.unread = 0;
      dir.wakeReaders();
      dir.wakeWriters();
    }
  }

  /** Schedules a reset one latency from now (a peer answering a write to a closed socket). */
  resetLater(): void {
    if (this.#resetPending || this.#reset) return;
    this.#resetPending = true;
    this.#clock.setTimeout(() => this.reset(), this.#latency());
  }

  /** Whether the endpoint other than `from` is closed. */
  peerGone(from: SimEndpoint): boolean {
    return (from === this.a ? this.b : this.a).closed;
  }

  /** The first bytes the dialing side wrote (up to RECORDED_BYTES): what a wire-tapping peer could replay. */
  readonly recorded: Uint8Array[] = [];
  #recordedBytes = 0;

  /**
   * Sends `bytes` on `dir` after the path's latency, cut in pieces of random
   * size that the reader gets one read at a time (one delivery per write:
   * a timer per piece made bulk worlds crawl).
   */
  send(dir: Direction, bytes: Uint8Array): void {
    if (dir === this.#ab && this.#recordedBytes < RECORDED_BYTES) {
      this.recorded.push(bytes.slice(0, RECORDED_BYTES - this.#recordedBytes));
      this.#recordedBytes += bytes.length;
    }
    dir.unread += bytes.length;
    if (bytes.length <= this.model.maxPiece && this.#rng.chance(0.5)) {
      this.#schedule(dir, [bytes]);
      return;
    }
    const pieces: Uint8Array[] = [];
    for (let at = 0; at < bytes.length;) {
      const size = Math.min(bytes.length - at, this.#rng.int(1, this.model.maxPiece));
      pieces.push(bytes.subarray(at, at + size));
      at += size;
    }
    this.#schedule(dir, pieces);
  }

  /** Half-closes `dir`: the reader gets end of stream after the data. */
  sendFin(dir: Direction): void {
    if (dir.finSent) return;
    dir.finSent = true;
    this.#scheduleFin(dir);
  }

  #latency(): number {
    const [lo, hi] = this.model.latencyMs;
    return this.#rng.int(lo, hi);
  }

  #schedule(dir: Direction, pieces: Uint8Array[]): void {
    const at = Math.max(this.#clock.now() + this.#latency(), dir.lastAt);
    dir.lastAt = at;
    dir.inFlight++;
    this.#clock.setTimeout(() => {
      dir.inFlight--;
      if (this.#reset) return;
      if (dir.frozen) {
        for (const piece of pieces) dir.held.push(piece);
        return;
      }
      for (const piece of pieces) dir.readable.push(piece);
      dir.wakeReaders();
      if (dir.finSent && dir.inFlight === 0 && dir.held.length === 0 && !dir.finDelivered) this.#scheduleFin(dir);
    }, at - this.#clock.now());
  }

  #scheduleFin(dir: Direction): void {
    if (dir.inFlight > 0) return; // the last piece's delivery schedules it
    const at = Math.max(this.#clock.now() + this.#latency(), dir.lastAt);
    dir.lastAt = at;
    dir.inFlight++;
    this.#clock.setTimeout(() => {
      dir.inFlight--;
      if (this.#reset || dir.finDelivered) return;
      if (dir.frozen) return; // thaw schedules it again
      dir.finDelivered = true;
      dir.wakeReaders();
    }, at - this.#clock.now());
  }
}
