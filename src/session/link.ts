/**
 * A link: one transport connection between broker-client and broker-server,
 * carrying frames. It owns the frame decoder, an adaptive read buffer and a
 * write queue; the session above it decides what the frames mean.
 * @module
 */

import { type Frame, FrameDecoder, type FrameLimits, type FrameTypeValue, ProtocolError } from "../protocol/frames.ts";
import { type HeldBytes, PoolLease, powerOfTwoAtLeast, readBufferPool, type Releasable } from "./buffer_pool.ts";
import { closeQuietly, type Transport, within, WriteQueue } from "./transport.ts";
import { type Clock, systemClock, type TimerHandle } from "./clock.ts";

/** Smallest read buffer (an idle socket keeps one). */
export const MIN_READ_SIZE = 2 * 1024;
/** Largest read buffer of a local socket: bulk transfers grow to it (and DATA frames are at most this big). */
export const MAX_READ_SIZE = 256 * 1024;
/** Largest read buffer of a link: room for several of the largest DATA frames per read. */
export const MAX_LINK_READ_SIZE = 1024 * 1024;

/**
 * Picks read sizes: doubles after a read that filled the buffer, halves
 * after reads that used little of it, between MIN_READ_SIZE and `max`.
 * Sizes are powers of two, so pooled buffers fit many readers.
 */
export class ReadSizer {
  #size = MIN_READ_SIZE;
  #max: number;

  /** A sizer growing up to `max` bytes. */
  constructor(max = MAX_READ_SIZE) {
    this.#max = max;
  }

  /** The current read size. */
  get size(): number {
    return this.#size;
  }

  /** Adjusts the size after a read that filled `n` of `size` bytes; returns the new size. */
  update(n: number): number {
    if (n >= this.#size && this.#size < this.#max) this.#size *= 2;
    else if (n < this.#size / 8 && this.#size > MIN_READ_SIZE) this.#size /= 2;
    return this.#size;
  }
}

/** Options of a Link. */
export interface LinkOptions {
  /** Largest frame payload accepted. */
  maxPayload?: number;
  /** The frame types accepted (default: every type). */
  types?: readonly FrameTypeValue[];
  /** Time and timers; default systemClock. */
  clock?: Clock;
}

/** A framed connection between the two brokers. */
export class Link {
  /** Where the peer is, for logs. */
  readonly peer: string;
  /** Frames to send, in order. */
  readonly writer: WriteQueue;
  /** Clock time of the last bytes received (liveness). */
  lastReceivedAt: number;
  /** Clock time of the last frame queued (heartbeat pacing). */
  lastSentAt: number;

  #transport: Transport;
  #decoder: FrameDecoder;
  #sizer = new ReadSizer(MAX_LINK_READ_SIZE);
  #lease: PoolLease | null = null;
  #target: Uint8Array | null = null;
  #carried = 0;
  #reading = false;
  #lent: HeldBytes | null = null;
  #closed = false;
  #clock: Clock;
  #writeError: Error | null = null;

  /** Wraps an open transport to `peer`. */
  constructor(transport: Transport, peer: string, options: LinkOptions = {}) {
    this.peer = peer;
    this.#transport = transport;
    this.#clock = options.clock ?? systemClock;
    this.#decoder = new FrameDecoder({
      carry: true,
      ...(options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload }),
      ...(options.types === undefined ? {} : { types: options.types }),
    });
    this.writer = new WriteQueue(transport, (err) => {
      this.#writeError = err;
      this.close();
    });
    this.lastReceivedAt = this.#clock.now();
    this.lastSentAt = this.lastReceivedAt;
  }

  /** True once closed (by either side or after an error). */
  get closed(): boolean {
    return this.#closed;
  }

  /** The write error that closed the link, if any. */
  get writeError(): Error | null {
    return this.#writeError;
  }

  /**
   * From now on the link reads into pooled buffers, each held through a
   * lease (see buffer_pool.ts): frames are views into them, and a DATA
   * payload kept beyond the next read must be lent (lendReadBuffer). A
   * buffer the link moves on from while lent views remain is counted in
   * `lent` (the session's, shared by all its links) until they are
   * written. Until this is called (the handshake, whose frames may be
   * kept), every read gets a fresh buffer that is never recycled.
   */
  recycleBuffers(lent: HeldBytes): void {
    this.#lent = lent;
    this.#lease = null;
  }

  /**
   * The caller keeps a view into the current read buffer (a DATA payload
   * pushed to the local write queue): the lease it must release when done,
   * or undefined when the buffer is not pooled (frames read with the
   * handshake), which nothing else will ever read into.
   */
  lendReadBuffer(): PoolLease | undefined {
    const lease = this.#lease ?? undefined;
    lease?.retain();
    return lease;
  }

  /** Changes which frames are accepted from the next one on (a handshake accepts fewer than a session). */
  setFrameLimits(limits: FrameLimits): void {
    this.#decoder.setLimits(limits);
  }

  /** Queues a frame; `owner` is released once it is written. */
  send(frame: Uint8Array, owner?: Releasable): void {
    this.lastSentAt = this.#clock.now();
    this.writer.push(frame, owner);
  }

  /**
   * The next frame, or null when the peer closed the link cleanly. Throws
   * ProtocolError for malformed input or a stream cut inside a frame, and
   * the transport's error when the connection fails. The frame's payload is
   * a view into a read buffer: see recycleBuffers.
   */
  async readFrame(): Promise<Frame | null> {
    for (;;) {
      const frame = this.nextFrame();
      if (frame) return frame;
      if (this.#closed || !this.afterRead(await this.readMore())) return null;
    }
  }

  /**
   * The next frame among the bytes already received, or null: then call
   * readMore and afterRead. Throws ProtocolError for malformed input. The
   * session's read loop uses these three instead of readFrame, so that a
   * read pending for a whole heartbeat interval holds no async frame of its
   * own: with thousands of idle sessions those frames outlive V8's young
   * generation and pile up as old garbage between full collections.
   */
  nextFrame(): Frame | null {
    return this.#decoder.next();
  }

  /**
   * Reads more bytes (after nextFrame returned null): the rest of an
   * incomplete frame lands right behind its beginning. Pass the result to
   * afterRead.
   */
  readMore(): Promise<number | null> {
    const frameSize = this.#decoder.pendingFrameSize;
    const carried = this.#decoder.takePending();
    const size = Math.max(this.#sizer.size, powerOfTwoAtLeast(Math.max(frameSize, carried.length + 1)));
    const buffer = this.#readBuffer(size, carried);
    this.#carried = carried.length;
    this.#target = buffer;
    this.#reading = true;
    return this.#transport.read(carried.length === 0 ? buffer : buffer.subarray(carried.length));
  }

  /**
   * Takes the result of readMore: true when bytes arrived, false at a clean
   * end of stream; throws ProtocolError when the stream ended inside a frame.
   */
  afterRead(n: number | null): boolean {
    this.#reading = false;
    const carried = this.#carried;
    if (n === null) {
      if (carried > 0) throw new ProtocolError(`Link closed inside a frame (${carried} bytes pending)`);
      return false;
    }
    this.lastReceivedAt = this.#clock.now();
    this.#sizer.update(carried + n);
    this.#decoder.push((this.#target as Uint8Array).subarray(0, carried + n));
    return true;
  }

  /**
   * A buffer of `size` bytes starting with the `carried` bytes (a view into
   * the current buffer): the current one again when the link is its only
   * holder and it has the right size, else a pooled one.
   */
  #readBuffer(size: number, carried: Uint8Array): Uint8Array {
    if (!this.#lent) {
      // Handshake: its frames may be kept, so every read gets a fresh buffer.
      const fresh = new Uint8Array(size);
      fresh.set(carried);
      return fresh;
    }
    const current = this.#lease;
    if (current && !current.shared && current.buffer.length === size) {
      if (carried.length > 0) current.buffer.copyWithin(0, carried.byteOffset, carried.byteOffset + carried.length);
      return current.buffer;
    }
    const next = readBufferPool.take(size);
    next.set(carried);
    // Copied out of it above: the link lets go of the current buffer now.
    if (current) this.#moveOn(current);
    this.#lease = new PoolLease(next, readBufferPool, 1);
    return next;
  }

  /** Lets go of a read buffer: views lent from it keep it (counted in the session's lent bytes). */
  #moveOn(lease: PoolLease): void {
    if (lease.shared) lease.chargeTo(this.#lent as HeldBytes);
    lease.release();
  }

  /** Like readFrame, but closes the link and throws TimedOut after `ms`. */
  async readFrameWithin(ms: number, what: string): Promise<Frame | null> {
    let timer: TimerHandle | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.#clock.setTimeout(() => {
        this.close();
        reject(new Deno.errors.TimedOut(`No ${what} from ${this.peer} within ${ms} ms`));
      }, ms);
    });
    try {
      return await Promise.race([this.readFrame(), timeout]);
    } finally {
      this.#clock.clear(timer);
    }
  }

  /** Sends what is queued, then closes (bounded by `ms`). */
  async closeAfterFlush(ms = 1_000): Promise<void> {
    await within(this.writer.flushed(), ms, this.#clock);
    this.close();
  }

  /**
   * Hands the connection over (broker-server relaying it to the holder of
   * its session, in handshake): sends what is queued (within `ms`), then
   * resolves to the transport and every byte received past the frames read;
   * the link is closed, its transport is not. Null when the link closed or
   * could not send in time (the transport is closed then).
   */
  async release(ms = 1_000): Promise<{ transport: Transport; rest: Uint8Array } | null> {
    await within(this.writer.flushed(), ms, this.#clock);
    if (this.#closed || this.#reading || this.writer.queuedBytes > 0) {
      this.close();
      return null;
    }
    this.#closed = true;
    this.writer.close();
    return { transport: this.#transport, rest: this.#decoder.takePending().slice() };
  }

  /** Closes the connection at once; queued frames are dropped. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const lease = this.#lease;
    this.#lease = null;
    if (lease && (this.#reading || this.#decoder.bufferedBytes > 0)) {
      // A read may still fill the buffer, or the decoder still holds frames in
      // it that a caller may yet take: it never goes back to the pool.
      if (lease.shared) lease.chargeTo(this.#lent as HeldBytes);
      lease.abandon();
    } else if (lease) this.#moveOn(lease);
    this.writer.close();
    closeQuietly(this.#transport);
  }
}
