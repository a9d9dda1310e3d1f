/**
 * The small transport surface the session logic needs, and the two helpers
 * built on it: a serial write queue with backpressure, and TCP dialing with a
 * timeout. Sessions see a Transport, not a socket, so tests can inject faulty
 * transports and TLS can be slotted in without touching session code.
 * @module
 */

import { PoolLease, powerOfTwoAtLeast, readBufferPool, type Releasable } from "./buffer_pool.ts";
import { type Clock, systemClock, type TimerHandle } from "./clock.ts";

/** A byte stream: what the session needs from a socket. Deno.TcpConn and Deno.TlsConn fit. */
export interface Transport {
  /** Reads into `p`; resolves to the count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from `p`; resolves to the count written (maybe fewer). */
  write(p: Uint8Array): Promise<number>;
  /** Half-closes: no more writes; reads go on. */
  closeWrite(): Promise<void>;
  /** Closes both directions and frees the resource. */
  close(): void;
}

/** Writes all of `bytes`, looping over short writes. */
export async function writeAll(transport: Transport, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    done += await transport.write(done === 0 ? bytes : bytes.subarray(done));
  }
}

/** Waits for `promise`, but no longer than `ms` (on `clock`); resolves true if it settled in time. */
export async function within(promise: Promise<unknown>, ms: number, clock: Clock = systemClock): Promise<boolean> {
  let timer: TimerHandle | undefined;
  try {
    return await Promise.race([
      promise.then(() => true, () => true),
      new Promise<boolean>((resolve) => timer = clock.setTimeout(() => resolve(false), ms)),
    ]);
  } finally {
    clock.clear(timer);
  }
}

/** Closes a transport, ignoring "already closed". */
export function closeQuietly(transport: Transport): void {
  try {
    transport.close();
  } catch {
    // Closed already: nothing left to free.
  }
}

/**
 * Serializes writes to one transport: producers push buffers without
 * awaiting; one loop writes them in order. The queue holds references, not
 * copies. Producers that must not outrun the socket await `waitBelow`.
 * A pushed buffer may come with an owner to release once it is written
 * (pooled buffers); one dropped unwritten (pushed after the queue closed
 * or failed, or still queued then) ends its owner's count all the same.
 */
export class WriteQueue {
  #transport: Transport;
  #queue: Uint8Array[] = [];
  #owners: (Releasable | undefined)[] = [];
  #head = 0;
  #queued = 0;
  #pushedTotal = 0;
  #writtenTotal = 0;
  #running = false;
  #closed = false;
  #endAfterFlush = false;
  #waiters: Waiter[] = [];
  #flushWaiters: (() => void)[] = [];
  #onError: (err: Error) => void;
  #onWritten: (() => void) | undefined;
  #tail: { buffer: Uint8Array; used: number; view: Uint8Array } | null = null;

  /**
   * Wraps `transport`; `onError` hears the first write failure, `onWritten`
   * (optional) each completed write (flow control acknowledges on it).
   */
  constructor(transport: Transport, onError: (err: Error) => void, onWritten?: () => void) {
    this.#transport = transport;
    this.#onError = onError;
    this.#onWritten = onWritten;
  }

  /** Bytes pushed and not yet written. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** Bytes pushed since the queue was made. */
  get pushedTotal(): number {
    return this.#pushedTotal;
  }

  /** Bytes written since the queue was made. */
  get writtenTotal(): number {
    return this.#writtenTotal;
  }

  /** True once closed or failed: pushes are dropped. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues `bytes` for writing (by reference); `owner` is released once they
   * are written, or at once when the queue no longer writes (its pusher may
   * not know yet that the transport failed).
   */
  push(bytes: Uint8Array, owner?: Releasable): void {
    if (this.#closed || this.#endAfterFlush) {
      owner?.release();
      return;
    }
    this.#queue.push(bytes);
    this.#owners.push(owner);
    this.#queued += bytes.length;
    this.#pushedTotal += bytes.length;
    if (!this.#running) this.#run();
  }

  /**
   * Queues a copy of `bytes` (a small piece): appended to the last queued
   * copy while that one is not being written and has room, so that many
   * small pieces cost a few pooled buffers and writes, not one object and
   * one write each.
   */
  pushCopy(bytes: Uint8Array): void {
    if (this.#closed || this.#endAfterFlush) return;
    const tail = this.#tail;
    const last = this.#queue.length - 1;
    if (
      tail !== null && last > this.#head && this.#queue[last] === tail.view &&
      tail.buffer.length - tail.used >= bytes.length
    ) {
      tail.buffer.set(bytes, tail.used);
      tail.used += bytes.length;
      tail.view = tail.buffer.subarray(0, tail.used);
      this.#queue[last] = tail.view;
      this.#queued += bytes.length;
      this.#pushedTotal += bytes.length;
      return;
    }
    const buffer = readBufferPool.take(Math.max(COALESCE_SIZE, powerOfTwoAtLeast(bytes.length)));
    buffer.set(bytes);
    const view = buffer.subarray(0, bytes.length);
    this.#tail = { buffer, used: bytes.length, view };
    this.push(view, new PoolLease(buffer, readBufferPool, 1));
  }

  /** Resolves when fewer than `limit` bytes are queued, or the queue is closed. */
  waitBelow(limit: number): Promise<void> {
    if (this.#queued < limit || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ limit, resolve }));
  }

  /** Resolves when everything queued is written (or the queue closed). */
  flushed(): Promise<void> {
    if (this.#queued === 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  /** Half-closes the transport once everything queued is written. */
  endAfterFlush(): void {
    if (this.#closed || this.#endAfterFlush) return;
    this.#endAfterFlush = true;
    if (!this.#running) this.#run();
  }

  /** Drops what is queued and stops; does not close the transport. */
  close(): void {
    this.#closed = true;
    this.#drop();
    this.#wake();
  }

  /** Ends the counts of every entry not written: the one being written (if any) is abandoned. */
  #drop(): void {
    for (let i = this.#head; i < this.#owners.length; i++) {
      const owner = this.#owners[i];
      if (!owner) continue;
      if (i === this.#head && this.#running) owner.abandon();
      else owner.release();
    }
    this.#queue = [];
    this.#owners = [];
    this.#head = 0;
    this.#queued = 0;
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (!this.#closed && this.#head < this.#queue.length) {
        const bytes = this.#queue[this.#head] as Uint8Array;
        // writeAll, inlined: one promise less per write on the hot path.
        for (let done = 0; done < bytes.length;) {
          done += await this.#transport.write(done === 0 ? bytes : bytes.subarray(done));
        }
        if (this.#closed) return;
        const owner = this.#owners[this.#head];
        this.#owners[this.#head] = undefined;
        this.#queue[this.#head++] = EMPTY;
        this.#queued -= bytes.length;
        this.#writtenTotal += bytes.length;
        owner?.release();
        if (this.#head === this.#queue.length) {
          this.#queue.length = 0;
          this.#owners.length = 0;
          this.#head = 0;
        }
        this.#wake();
        this.#onWritten?.();
      }
      if (this.#endAfterFlush && !this.#closed) {
        this.#closed = true;
        await this.#transport.closeWrite();
      }
    } catch (err) {
      if (!this.#closed) {
        this.#closed = true;
        this.#drop();
        this.#wake();
        this.#onError(err as Error);
      }
    } finally {
      this.#running = false;
      this.#wake();
    }
  }

  #wake(): void {
    if (this.#waiters.length > 0) {
      const still: Waiter[] = [];
      for (const w of this.#waiters) {
        if (this.#closed || this.#queued < w.limit) w.resolve();
        else still.push(w);
      }
      this.#waiters = still;
    }
    if (this.#flushWaiters.length > 0 && (this.#queued === 0 || this.#closed) && !this.#running) {
      const waiters = this.#flushWaiters;
      this.#flushWaiters = [];
      for (const w of waiters) w();
    }
  }
}

const EMPTY = new Uint8Array(0);
/** Size of the buffers small pieces are gathered in (see pushCopy). */
const COALESCE_SIZE = 16 * 1024;

interface Waiter {
  limit: number;
  resolve: () => void;
}

/** Options of `dialTcp`. */
export interface DialOptions {
  /** Give up after this long (ms). */
  timeoutMs: number;
  /** Abort early (shutdown). */
  signal?: AbortSignal;
}

/** Connects over TCP with a timeout; the error message says which address and why. */
export async function dialTcp(hostname: string, port: number, options: DialOptions): Promise<Deno.TcpConn> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs);
  const onAbort = () => controller.abort();
  if (options.signal?.aborted) controller.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const conn = await Deno.connect({ hostname, port, signal: controller.signal });
    conn.setNoDelay(true);
    return conn;
  } catch (err) {
    const where = hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
    if (controller.signal.aborted && !options.signal?.aborted) {
      throw new Deno.errors.TimedOut(`Cannot connect to ${where}: no answer within ${options.timeoutMs} ms`);
    }
    throw new Error(`Cannot connect to ${where}: ${describeError(err)}`, { cause: err });
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** A short human description of a socket error: "connection refused", "reset by peer". */
export function describeError(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset by peer";
  if (err instanceof Deno.errors.ConnectionAborted) return "connection aborted";
  if (err instanceof Deno.errors.BrokenPipe) return "broken pipe (peer closed)";
  if (err instanceof Deno.errors.TimedOut) return (err as Error).message;
  if (err instanceof Error) return err.message.replace(/ \(os error \d+\)$/, "");
  return String(err);
}
