/**
 * The churn soak's peers, each in a process of its own so that neither the
 * applications' process nor the brokers compete with them for an event loop:
 *   deno run -A bench/churn_peers.ts echo          the stand-in ERP (first byte "E", then echo)
 *   deno run -A bench/churn_peers.ts relay PORT    a chaos relay to 127.0.0.1:PORT
 * Each prints its port on a line. The relay reads commands on stdin, one per
 * line: "reset" (every connection RST) or "close" (every connection FIN);
 * both exit when stdin closes.
 * @module
 */

import { ChaosLink } from "../tools/chaos_link.ts";
import { writeAll } from "../src/session/transport.ts";

async function echo(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log((listener.addr as Deno.NetAddr).port);
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(16 * 1024);
        let first = true;
        for (let n; (n = await conn.read(buf)) !== null;) {
          // The first byte says which service; the rest is echoed.
          await writeAll(conn, buf.subarray(first ? 1 : 0, n));
          first = false;
        }
      })().catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  })();
  for await (const _ of Deno.stdin.readable) { /* until stdin closes */ }
  Deno.exit(0);
}

async function relay(port: number): Promise<void> {
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port });
  console.log(chaos.port);
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of Deno.stdin.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const command = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (command === "reset") chaos.resetAll();
      else if (command === "close") chaos.closeAll();
    }
  }
  Deno.exit(0);
}

const [mode, port] = Deno.args;
if (mode === "echo") await echo();
else if (mode === "relay" && port) await relay(Number(port));
else {
  console.error("Usage: churn_peers.ts echo | relay PORT");
  Deno.exit(2);
}
