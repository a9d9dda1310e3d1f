/**
 * A link: one transport connection between broker-client and broker-server,
 * carrying frames. It owns the frame decoder, an adaptive read buffer and a
 * write queue; the session above it decides what the frames mean.
 * @module
 */

import { type Frame, FrameDecoder, ProtocolError } from "../protocol/frames.ts";
import { closeQuietly, type Transport, within, WriteQueue } from "./transport.ts";

/** Smallest read buffer of a link (an idle link keeps one). */
export const MIN_READ_SIZE = 4 * 1024;
/** Largest read buffer: bulk transfers grow to it. */
export const MAX_READ_SIZE = 256 * 1024;

/**
 * Picks read sizes: doubles after a read that filled the buffer, halves
 * after reads that used little of it, between MIN_READ_SIZE and MAX_READ_SIZE.
 */
export class ReadSizer {
  #size = MIN_READ_SIZE;

  /** The current read size. */
  get size(): number {
    return this.#size;
  }

  /** Adjusts the size after a read of `n` bytes; returns the new size. */
  update(n: number): number {
    if (n >= this.#size && this.#size < MAX_READ_SIZE) this.#size *= 2;
    else if (n < this.#size / 8 && this.#size > MIN_READ_SIZE) this.#size /= 2;
    return this.#size;
  }
}

/** Options of a Link. */
export interface LinkOptions {
  /** Largest frame payload accepted. */
  maxPayload?: number;
  /** Clock in ms (injectable). */
  now?: () => number;
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
  /** Set while the reader deliberately stops reading (local backpressure): silence is then not death. */
  readPaused = false;

  #transport: Transport;
  #decoder: FrameDecoder;
  #sizer = new ReadSizer();
  #buffer: Uint8Array | null = null;
  #closed = false;
  #now: () => number;
  #writeError: Error | null = null;
  #canReuse: () => boolean = () => false;

  /** Wraps an open transport to `peer`. */
  constructor(transport: Transport, peer: string, options: LinkOptions = {}) {
    this.peer = peer;
    this.#transport = transport;
    this.#now = options.now ?? Date.now;
    this.#decoder = new FrameDecoder(options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload });
    this.writer = new WriteQueue(transport, (err) => {
      this.#writeError = err;
      this.close();
    });
    this.lastReceivedAt = this.#now();
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
   * Tells the link when its last read buffer may be reused: frames handed
   * out are views into it, so it may only be overwritten once the consumer
   * holds none of them.
   */
  setBufferReuse(canReuse: () => boolean): void {
    this.#canReuse = canReuse;
  }

  /** Queues a frame. */
  send(frame: Uint8Array): void {
    this.lastSentAt = this.#now();
    this.writer.push(frame);
  }

  /**
   * The next frame, or null when the peer closed the link cleanly. Throws
   * ProtocolError for malformed input or a stream cut inside a frame, and
   * the transport's error when the connection fails.
   */
  async readFrame(): Promise<Frame | null> {
    for (;;) {
      const frame = this.#decoder.next();
      if (frame) return frame;
      if (this.#closed) return null;
      const size = this.#sizer.size;
      if (!this.#buffer || this.#buffer.length !== size || !this.#canReuse()) {
        this.#buffer = new Uint8Array(size);
      }
      const n = await this.#transport.read(this.#buffer);
      if (n === null) {
        if (this.#decoder.bufferedBytes > 0) {
          throw new ProtocolError(`Link closed inside a frame (${this.#decoder.bufferedBytes} bytes pending)`);
        }
        return null;
      }
      this.lastReceivedAt = this.#now();
      this.#sizer.update(n);
      this.#decoder.push(this.#buffer.subarray(0, n));
    }
  }

  /** Like readFrame, but closes the link and throws TimedOut after `ms`. */
  async readFrameWithin(ms: number, what: string): Promise<Frame | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.close();
        reject(new Deno.errors.TimedOut(`No ${what} from ${this.peer} within ${ms} ms`));
      }, ms);
    });
    try {
      return await Promise.race([this.readFrame(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends what is queued, then closes (bounded by `ms`). */
  async closeAfterFlush(ms = 1_000): Promise<void> {
    await within(this.writer.flushed(), ms);
    this.close();
  }

  /** Closes the connection at once; queued frames are dropped. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.writer.close();
    closeQuietly(this.#transport);
  }
}
