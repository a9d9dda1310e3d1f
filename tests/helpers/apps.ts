/**
 * Stand-in applications for end-to-end tests: an echoing ERP, and a Smart
 * Client that writes and reads back.
 * @module
 */

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

/** A loopback port with nothing listening (taken and released at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
