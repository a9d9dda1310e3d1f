/**
 * Recycled byte buffers for the hot path. Allocating a buffer in V8 zeroes
 * it (a 256 KiB buffer costs about 50 µs here, a 4 KiB one about 4 µs), so
 * reads go into buffers that earlier reads used and that nobody holds any
 * more. Buffers are kept by exact length, up to a byte budget. Pooled
 * buffers are not zeroed: only the bytes a read filled are ever used.
 *
 * The one rule of ownership: a pooled buffer travels with a `PoolLease`,
 * and everything that may still touch its bytes holds one count of it.
 * - The link reading into the buffer holds one until it moves on to
 *   another buffer (see `Link`). (The session's local read owns its buffer
 *   outright until the bytes are framed; the frame then gets a lease.)
 * - Every write-queue entry holds one until its bytes are written
 *   (`WriteQueue.push` with the lease as owner), every replay-buffer chunk
 *   until its bytes are acknowledged (`ReplayBuffer.append`); a holder that
 *   shares the buffer further calls `retain()` first.
 * - The buffer goes back to the pool when the last holder calls
 *   `release()`, never earlier and never by anyone else.
 * - A holder that cannot know whether its bytes are still in use (a write
 *   queue closed while a write may be in flight, a link closed while a read
 *   may still fill the buffer) `abandon`s the lease: its count ends, and the
 *   buffer is left to the garbage collector, the safe outcome.
 * - Every count ends, by `release` or `abandon`, when its holder is done or
 *   dropped (a queue closed, a replay buffer cleared): `PoolLease.live`
 *   counts the leases still held, and is back where it was once every
 *   session is over (the simulation checks it in every world).
 * @module
 */

/** Free buffers by exact length, bounded by a byte budget. */
export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #pooledBytes = 0;
  #maxBytes: number;
  /** Buffers handed out from the pool (reuse) and freshly allocated, for tests and tuning. */
  readonly counts = { reused: 0, allocated: 0 };

  /** A pool keeping at most `maxBytes` of free buffers. */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Bytes of free buffers kept. */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  /** A buffer of exactly `length` bytes: a recycled one (old contents) or a new one. */
  take(length: number): Uint8Array {
    const buffer = this.#free.get(length)?.pop();
    if (buffer) {
      this.#pooledBytes -= length;
      this.counts.reused++;
      return buffer;
    }
    this.counts.allocated++;
    return new Uint8Array(length);
  }

  /**
   * Hands back a whole buffer from `take` that nothing references any more.
   * Views and buffers beyond the budget are left to the garbage collector.
   */
  give(buffer: Uint8Array): void {
    const length = buffer.length;
    if (buffer.byteOffset !== 0 || length !== buffer.buffer.byteLength || length === 0) return;
    if (this.#pooledBytes + length > this.#maxBytes) return;
    let list = this.#free.get(length);
    if (!list) this.#free.set(length, list = []);
    list.push(buffer);
    this.#pooledBytes += length;
  }
}

/** The process-wide pool of the brokers' read buffers (at most 16 MiB kept free). */
export const readBufferPool = new BufferPool(16 * 1024 * 1024);

/** Something that holds a buffer for a while and says when it is done with it. */
export interface Releasable {
  /** This holder no longer needs the buffer. */
  release(): void;
  /** This holder is done, but something it cannot stop may still touch the buffer: never reuse it. */
  abandon(): void;
}

/** A Releasable that more holders can join (a resume queues kept bytes on a new link). */
export interface Shared extends Releasable {
  /** One more owner holds the buffer; it calls release() too. */
  retain(): void;
}

/** A running count of bytes of buffers kept alive, e.g. a session's lent read buffers. */
export interface HeldBytes {
  /** Bytes of buffers charged and not yet handed back. */
  bytes: number;
}

/**
 * A pooled buffer shared by `holders` owners (see the rule above): it
 * returns to the pool once all of them released it.
 */
export class PoolLease implements Shared {
  /** Leases some holder still holds, process-wide (a leak check for tests: one count each). */
  static live = 0;
  #buffer: Uint8Array;
  #pool: BufferPool | null;
  #holders: number;
  #charged: HeldBytes | null = null;

  /** Lends `buffer` (from `pool`) to `holders` owners. */
  constructor(buffer: Uint8Array, pool: BufferPool, holders: number) {
    this.#buffer = buffer;
    this.#pool = pool;
    this.#holders = holders;
    if (holders > 0) PoolLease.live++;
  }

  /** The whole buffer. */
  get buffer(): Uint8Array {
    return this.#buffer;
  }

  /** True while more than one owner holds the buffer. */
  get shared(): boolean {
    return this.#holders > 1;
  }

  /** One more owner holds the buffer. */
  retain(): void {
    this.#holders++;
  }

  /** One owner is done; the last one hands the buffer back (and takes it off the count it was charged to). */
  release(): void {
    // A release beyond the count (a bug elsewhere) must not give the buffer twice.
    if (this.#holders <= 0 || --this.#holders > 0) return;
    PoolLease.live--;
    if (this.#charged) this.#charged.bytes -= this.#buffer.length;
    this.#charged = null;
    this.#pool?.give(this.#buffer);
  }

  /** Counts the whole buffer in `held` until the last holder releases it (once: later calls do nothing). */
  chargeTo(held: HeldBytes): void {
    if (this.#charged || this.#holders === 0) return;
    this.#charged = held;
    held.bytes += this.#buffer.length;
  }

  /**
   * Releases this holder's count, but the buffer never goes back to the
   * pool: something this holder cannot stop may still write into it.
   */
  abandon(): void {
    this.#pool = null;
    this.release();
  }
}

/** The smallest power of two that is at least `n`. */
export function powerOfTwoAtLeast(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}
