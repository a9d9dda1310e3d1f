/**
 * The replay buffer: the bytes one side has sent and the other has not yet
 * acknowledged, addressed by 64-bit stream offsets. It keeps views of the
 * buffers the bytes were read into (no copies), trims on cumulative
 * acknowledgement, and hands back what a resuming peer missed, or raises
 * ResumeGapError when those bytes are gone.
 * @module
 */

/** The peer asked for bytes that are no longer buffered: the session cannot resume. */
export class ResumeGapError extends Error {
  override name = "ResumeGapError";
  /** Offset the peer asked for. */
  readonly requested: number;
  /** Oldest offset still buffered. */
  readonly oldest: number;

  /** Creates the error for a request at `requested` when `oldest` is the first byte kept. */
  constructor(requested: number, oldest: number) {
    super(
      `Cannot resume from offset ${requested}: the oldest byte still buffered is at offset ${oldest}`,
    );
    this.requested = requested;
    this.oldest = oldest;
  }
}

import type { Shared } from "./buffer_pool.ts";

interface Chunk {
  start: number;
  bytes: Uint8Array;
  owner: Shared | undefined;
  /** Memory the chunk keeps alive (its whole buffer when owned), until it is dropped. */
  held: number;
}

const DROPPED: Chunk = { start: 0, bytes: new Uint8Array(0), owner: undefined, held: 0 };

/** Unacknowledged outbound bytes of one session direction. */
export class ReplayBuffer {
  #chunks: Chunk[] = [];
  #head = 0;
  #start: number;
  #end: number;
  #held = 0;

  /** Creates an empty buffer whose next byte has offset `startOffset`. */
  constructor(startOffset = 0) {
    if (!Number.isSafeInteger(startOffset) || startOffset < 0) {
      throw new RangeError(`Cannot start a replay buffer at offset ${startOffset}`);
    }
    this.#start = startOffset;
    this.#end = startOffset;
  }

  /** Offset of the oldest byte kept (everything below is acknowledged). */
  get start(): number {
    return this.#start;
  }

  /** Offset the next appended byte gets. */
  get end(): number {
    return this.#end;
  }

  /** Bytes kept, i.e. sent but not acknowledged. */
  get size(): number {
    return this.#end - this.#start;
  }

  /** Memory the kept bytes hold: at least `size`, more when they are views into larger buffers. */
  get held(): number {
    return this.#held;
  }

  /**
   * Keeps `bytes` (by reference: the caller must not reuse them); returns
   * their offset. `owner` is released once all of them are acknowledged,
   * or when the buffer is cleared (a write queue still sending them holds a
   * count of its own).
   * `held`: the memory they keep alive (the owner's whole buffer), counted
   * in `held` until they are all acknowledged.
   */
  append(bytes: Uint8Array, owner?: Shared, held = bytes.length): number {
    const offset = this.#end;
    if (bytes.length === 0) return offset;
    this.#chunks.push({ start: offset, bytes, owner, held });
    this.#end += bytes.length;
    this.#held += held;
    return offset;
  }

  /**
   * Drops every byte below `offset` (a cumulative acknowledgement). Returns
   * the number of bytes freed. Acknowledging bytes never sent is a RangeError.
   */
  ackUpTo(offset: number): number {
    if (offset > this.#end) {
      throw new RangeError(`Cannot acknowledge up to offset ${offset}: only ${this.#end} bytes were sent`);
    }
    if (offset <= this.#start) return 0;
    const freed = offset - this.#start;
    while (this.#head < this.#chunks.length) {
      const chunk = this.#chunks[this.#head] as Chunk;
      const chunkEnd = chunk.start + chunk.bytes.length;
      if (chunkEnd <= offset) {
        this.#chunks[this.#head++] = DROPPED;
        this.#held -= chunk.held;
        chunk.owner?.release();
        continue;
      }
      if (chunk.start < offset) {
        const cut = offset - chunk.start;
        chunk.bytes = chunk.bytes.subarray(cut);
        chunk.start = offset;
      }
      break;
    }
    this.#start = offset;
    this.#compact();
    return freed;
  }

  /**
   * The kept bytes from `offset` on, as views in order (the first may be a
   * tail of a chunk), each with the owner of its buffer: a caller that keeps
   * a view beyond the next acknowledgement retains the owner and releases
   * it when done. Throws ResumeGapError when `offset` was already
   * acknowledged and dropped, RangeError when it lies beyond what was sent.
   */
  *bytesFrom(offset: number): Generator<{ offset: number; bytes: Uint8Array; owner: Shared | undefined }> {
    if (offset < this.#start) throw new ResumeGapError(offset, this.#start);
    if (offset > this.#end) {
      throw new RangeError(`Cannot replay from offset ${offset}: only ${this.#end} bytes were sent`);
    }
    for (let i = this.#head; i < this.#chunks.length; i++) {
      const chunk = this.#chunks[i] as Chunk;
      const chunkEnd = chunk.start + chunk.bytes.length;
      if (chunkEnd <= offset) continue;
      const skip = Math.max(0, offset - chunk.start);
      yield {
        offset: chunk.start + skip,
        bytes: skip > 0 ? chunk.bytes.subarray(skip) : chunk.bytes,
        owner: chunk.owner,
      };
    }
  }

  /**
   * Drops everything (session end). Each chunk's count ends: a write queue
   * still sending its bytes holds a count of its own.
   */
  clear(): void {
    for (let i = this.#head; i < this.#chunks.length; i++) this.#chunks[i]?.owner?.release();
    this.#chunks = [];
    this.#head = 0;
    this.#held = 0;
    this.#start = this.#end;
  }

  #compact(): void {
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
    } else if (this.#head > 64 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}
