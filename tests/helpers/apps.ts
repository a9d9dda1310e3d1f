/**
 * Stand-in applications for end-to-end tests: an echoing ERP, and a Smart
 * Client that writes and reads back.
 * @module
 */

import { type Digest, receiveAll, sendStream } from "../../tools/streams.ts";

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

/** The HTTP status of `GET path` on 127.0.0.1:`port` sent with the header `Host: host` (fetch would not send it). */
export async function getWithHost(port: number, path: string, host: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(16 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
  conn.close();
  const head = new TextDecoder().decode(chunks[0] ?? new Uint8Array());
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? NaN);
}
