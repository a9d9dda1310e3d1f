/**
 * The runtime's floor for the benchmark: the smallest TCP relay Deno can
 * run (read into one buffer, write it out, both directions), with nothing
 * of the broker in it (no framing, no replay buffer, no acknowledgements).
 * Two of these in a chain show what any two-hop relay written for Deno
 * costs before it does anything useful; the broker is measured against it.
 * Usage: deno run --allow-net bench/deno_relay.ts LISTEN_PORT TARGET_PORT
 * @module
 */

const [listenPort, targetPort] = Deno.args.map(Number);
const listener = Deno.listen({ hostname: "127.0.0.1", port: listenPort ?? 0 });

async function pipe(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(256 * 1024);
  try {
    for (let n; (n = await from.read(buffer)) !== null;) {
      for (let done = 0; done < n;) done += await to.write(buffer.subarray(done, n));
    }
    await to.closeWrite();
  } catch {
    for (const conn of [from, to]) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
  }
}

for await (const conn of listener) {
  conn.setNoDelay(true);
  Deno.connect({ hostname: "127.0.0.1", port: targetPort ?? 0 }).then((target) => {
    target.setNoDelay(true);
    Promise.all([pipe(conn, target), pipe(target, conn)]).finally(() => {
      for (const c of [conn, target]) {
        try {
          c.close();
        } catch { /* closed already */ }
      }
    });
  }, () => conn.close());
}
