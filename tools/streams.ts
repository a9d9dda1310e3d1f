/**
 * Deterministic byte streams and their SHA-256, for end-to-end integrity
 * checks: each side generates what it sends from a seed and hashes what it
 * receives, so every byte is compared without keeping it.
 * @module
 */

import { createHash, type Hash } from "node:crypto";

/** A seeded xorshift32 generator that fills buffers with bytes. */
export class ByteStream {
  #state: number;

  /** Creates a stream for `seed` (any non-zero integer). */
  constructor(seed: number) {
    this.#state = (seed * 2654435761) >>> 0 || 1;
  }

  /** Fills `out` with the next bytes of the stream. */
  fill(out: Uint8Array): Uint8Array {
    let x = this.#state;
    const words = Math.floor(out.length / 4);
    const view = new DataView(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < words; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      view.setUint32(i * 4, x >>> 0);
    }
    for (let i = words * 4; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    this.#state = x >>> 0;
    return out;
  }
}

/** SHA-256 hex of the first `length` bytes of stream `seed`, read in `chunk`-byte pieces. */
export function streamDigest(seed: number, length: number, chunk = 64 * 1024): string {
  const hash = createHash("sha256");
  const stream = new ByteStream(seed);
  const buf = new Uint8Array(chunk);
  for (let done = 0; done < length; done += chunk) {
    const n = Math.min(chunk, length - done);
    hash.update(stream.fill(buf.subarray(0, n)));
  }
  return hash.digest("hex");
}

/** A running SHA-256 with a byte count. */
export class Digest {
  #hash: Hash = createHash("sha256");
  /** Bytes hashed so far. */
  bytes = 0;

  /** Adds bytes. */
  update(bytes: Uint8Array): void {
    this.#hash.update(bytes);
    this.bytes += bytes.length;
  }

  /** The hex digest (ends the hash). */
  hex(): string {
    return this.#hash.digest("hex");
  }
}

/**
 * Writes `length` bytes of stream `seed` to `conn` in `chunk` pieces.
 * fill() emits whole 4-byte words, so the bytes match streamDigest only when
 * `length` and `chunk` are multiples of 4.
 */
export async function sendStream(conn: Deno.Conn, seed: number, length: number, chunk = 64 * 1024): Promise<void> {
  if (length % 4 !== 0 || chunk % 4 !== 0) throw new RangeError("Stream lengths must be multiples of 4");
  const stream = new ByteStream(seed);
  for (let done = 0; done < length;) {
    const n = Math.min(chunk, length - done);
    const buf = stream.fill(new Uint8Array(n));
    let written = 0;
    while (written < n) written += await conn.write(buf.subarray(written));
    done += n;
  }
}

/** Reads `conn` to EOF, hashing everything. */
export async function receiveAll(conn: Deno.Conn, digest = new Digest()): Promise<Digest> {
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return digest;
    digest.update(buf.subarray(0, n));
  }
}

/** A seeded uniform generator in [0, 1) (mulberry32), for reproducible fault schedules. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Options of a Trickle. */
export interface TrickleOptions {
  /** Bytes per write (a multiple of 4). */
  chunk?: number;
  /** Pause between writes (ms). */
  everyMs?: number;
}

/**
 * A Smart Client that streams to an echoing ERP at a steady pace (1 KiB
 * every 10 ms by default: 100 KiB/s each way) and hashes what it sends and
 * what comes back. `longestGap` is the longest time without an echo: how
 * long the session stood still.
 */
export class Trickle {
  /** What was sent and what came back. */
  readonly sent: Digest = new Digest();
  readonly received: Digest = new Digest();
  #conn: Deno.Conn;
  #stopped = false;
  #writing: Promise<void>;
  #reading: Promise<void>;
  #lastEchoAt = Date.now();
  #gaps: { at: number; ms: number }[] = [];

  /** Starts streaming on `conn` with stream `seed`. */
  constructor(conn: Deno.Conn, seed: number, options: TrickleOptions = {}) {
    this.#conn = conn;
    const chunk = options.chunk ?? 1024;
    const everyMs = options.everyMs ?? 10;
    const stream = new ByteStream(seed);
    this.#writing = (async () => {
      const buf = new Uint8Array(chunk);
      while (!this.#stopped) {
        stream.fill(buf);
        this.sent.update(buf);
        for (let done = 0; done < buf.length;) done += await conn.write(buf.subarray(done));
        await new Promise((r) => setTimeout(r, everyMs));
      }
      await conn.closeWrite();
    })();
    // Failures surface in finish(); until then they must not escape as unhandled.
    this.#writing.catch(() => {});
    this.#reading = (async () => {
      const buf = new Uint8Array(64 * 1024);
      for (let n; (n = await conn.read(buf)) !== null;) {
        const now = Date.now();
        this.#gaps.push({ at: this.#lastEchoAt, ms: now - this.#lastEchoAt });
        this.#lastEchoAt = now;
        this.received.update(buf.subarray(0, n));
      }
    })();
    this.#reading.catch(() => {});
  }

  /** The longest time without an echo that ended at or after `since` (clock ms; the current one counts), or 0. */
  longestGapSince(since: number): number {
    const gaps = [...this.#gaps, { at: this.#lastEchoAt, ms: Date.now() - this.#lastEchoAt }];
    return gaps.filter((g) => g.at + g.ms >= since).reduce((max, g) => Math.max(max, g.ms), 0);
  }

  /** The first time bytes came back after `at` (clock ms), or null. */
  firstEchoAfter(at: number): number | null {
    const arrival = this.#gaps.map((g) => g.at + g.ms).find((t) => t > at);
    return arrival ?? null;
  }

  /** When bytes last came back (clock ms). */
  get lastEchoAt(): number {
    return this.#lastEchoAt;
  }

  /** Stops writing, half-closes, reads the echo to its end and closes; throws unless every byte came back intact. */
  async finish(): Promise<{ bytes: number }> {
    this.#stopped = true;
    await this.#writing;
    await this.#reading;
    this.#conn.close();
    const bytes = this.sent.bytes;
    if (this.received.bytes !== bytes) throw new Error(`Sent ${bytes} bytes, ${this.received.bytes} came back`);
    if (this.received.hex() !== this.sent.hex()) throw new Error(`The ${bytes} bytes that came back differ`);
    return { bytes };
  }
}
