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
