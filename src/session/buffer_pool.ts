/**
 * Recycled byte buffers for the hot path. Allocating a buffer in V8 zeroes
 * it (a 256 KiB buffer costs about 50 µs here, a 4 KiB one about 4 µs), so
 * reads go into buffers that earlier reads used and that nobody holds any
 * more. Buffers are kept by exact length, up to a byte budget; a buffer
 * handed back must no longer be referenced anywhere, or another session
 * could see, or overwrite, its bytes. Two helpers make that rule easy to
 * keep: `PoolLease` hands a buffer back only when every holder released
 * it, and a write queue's `WriteProgress` tells when it has written what
 * was pushed before a given moment.
 * Pooled buffers are not zeroed: only the bytes a read filled are ever used.
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
}

/** A Releasable that more holders can join (a resume queues kept bytes on a new link). */
export interface Shared extends Releasable {
  /** One more owner holds the buffer; it calls release() too. */
  retain(): void;
}

/**
 * A pooled buffer shared by `holders` owners (e.g. the replay buffer and a
 * link's write queue): it returns to the pool once all of them released it.
 * An owner that is dropped without releasing (a closed link) keeps the
 * buffer out of the pool for good, which is the safe outcome.
 */
export class PoolLease implements Shared {
  #buffer: Uint8Array;
  #pool: BufferPool;
  #holders: number;

  /** Lends `buffer` (from `pool`) to `holders` owners. */
  constructor(buffer: Uint8Array, pool: BufferPool, holders: number) {
    this.#buffer = buffer;
    this.#pool = pool;
    this.#holders = holders;
  }

  /** One more owner holds the buffer. */
  retain(): void {
    this.#holders++;
  }

  /** One owner is done; the last one hands the buffer back. */
  release(): void {
    if (--this.#holders === 0) this.#pool.give(this.#buffer);
  }
}

/** Byte counters of a write queue: pushed so far and written so far. */
export interface WriteProgress {
  /** Bytes pushed since the queue was made. */
  readonly pushedTotal: number;
  /** Bytes written since the queue was made (never counts bytes dropped on close). */
  readonly writtenTotal: number;
}

/** The smallest power of two that is at least `n`. */
export function powerOfTwoAtLeast(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}

interface Retired {
  buffer: Uint8Array;
  /** The queue's pushedTotal when the buffer was retired: once that much is written, nothing refers to it. */
  mark: number;
}

/**
 * Read buffers whose views were lent to one write queue (a session's local
 * socket), kept until the queue has written everything pushed while they
 * were in use, then handed back to the pool. One per session, shared by
 * every link it has had: what a replaced link lent still counts, so a peer
 * that resumes on a new link cannot start a fresh budget.
 */
export class LentBuffers {
  /** The write queue the views went to. */
  readonly local: WriteProgress;
  #retired: Retired[] = [];
  #bytes = 0;
  #dropped = false;

  /** Tracks buffers lent to `local`. */
  constructor(local: WriteProgress) {
    this.local = local;
  }

  /** Bytes of buffers still kept for unwritten views (those written past are handed back first). */
  get bytes(): number {
    this.release();
    return this.#bytes;
  }

  /**
   * The queue is closed and writes no more: hands back the buffers it wrote
   * past, forgets the others (left to the garbage collector: a write in
   * progress may still use a view) and keeps nothing retired from now on.
   * An ended session may be kept a while (a farewell): not its buffers.
   */
  drop(): void {
    this.release();
    this.#retired = [];
    this.#bytes = 0;
    this.#dropped = true;
  }

  /** Keeps `buffer` until the queue has written what was pushed so far. */
  retire(buffer: Uint8Array): void {
    if (this.#dropped) return;
    this.#retired.push({ buffer, mark: this.local.pushedTotal });
    this.#bytes += buffer.length;
  }

  /** Hands back to the pool every buffer the queue has written past. */
  release(): void {
    const written = this.local.writtenTotal;
    while (this.#retired.length > 0 && (this.#retired[0] as Retired).mark <= written) {
      const done = this.#retired.shift() as Retired;
      this.#bytes -= done.buffer.length;
      readBufferPool.give(done.buffer);
    }
  }
}
