/**
 * Stand-in applications for end-to-end tests: an echoing ERP, and a Smart
 * Client that writes and reads back.
 * @module
 */

import { ByteStream, Digest, receiveAll, sendStream } from "../../tools/streams.ts";

/** An ERP stand-in that echoes everything, then half-closes after the client's FIN. */
export async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) {
    for (let done = 0; done < n;) done += await conn.write(buf.subarray(done, n));
  }
  await conn.closeWrite();
}

/** Reads exactly `n` bytes; EOF before that is an error. */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/** Writes `text` and reads the echo back. */
export async function roundTrip(app: Deno.Conn, text: string): Promise<string> {
  await app.write(new TextEncoder().encode(text));
  return new TextDecoder().decode(await readExactly(app, new TextEncoder().encode(text).length));
}

/** Where freePort looks: below the ephemeral ranges (Linux 32768-60999, Windows 49152-65535). */
const FREE_PORT_LOW = 20_000;
const FREE_PORT_HIGH = 32_000;

/**
 * A loopback port with nothing listening (checked by listening on it for a
 * moment), for a server that is down or starts later. Not one that the
 * system hands out for port 0: the next listener asking for any port could be
 * given it again. Under Wine the test's own broker-client got it, so it dialed
 * itself as its broker server and waited the whole handshake timeout (10 s)
 * for a WELCOME instead of being refused.
 */
export function freePort(): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = FREE_PORT_LOW + Math.floor(Math.random() * (FREE_PORT_HIGH - FREE_PORT_LOW));
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch (err) {
      // In use, or (Windows) in a range the system reserved.
      if (!(err instanceof Deno.errors.AddrInUse || err instanceof Deno.errors.PermissionDenied)) throw err;
    }
  }
  throw new Error(`No free loopback port found between ${FREE_PORT_LOW} and ${FREE_PORT_HIGH}`);
}

/** Writes `size` bytes of stream `seed` in `chunk` pieces, half-closes, then reads everything: a careless application. */
export async function writeAllThenRead(conn: Deno.Conn, seed: number, size: number, chunk: number): Promise<Digest> {
  await sendStream(conn, seed, size, chunk);
  await conn.closeWrite();
  return await receiveAll(conn);
}

/** Reads everything while writing `size` bytes of stream `seed` (then half-closes), as a well-behaved server does. */
export async function readAndWrite(conn: Deno.Conn, seed: number, size: number, chunk: number): Promise<Digest> {
  const [digest] = await Promise.all([
    receiveAll(conn),
    sendStream(conn, seed, size, chunk).then(() => conn.closeWrite()),
  ]);
  return digest;
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
