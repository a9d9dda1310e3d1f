import { equal as assertEquals } from "node:assert/strict";
import { ChaosLink } from "../helpers/chaos_link.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer } from "../helpers/setup.ts";

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

Deno.test("echo through the broker, surviving a link reset", async () => {
  await using erp = startErp(async (conn) => {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      await conn.write(buf.subarray(0, n));
    }
    await conn.closeWrite();
    conn.close();
  });
  await using server = startServer(serverConfig([erp.port], { HEARTBEAT_INTERVAL: "200ms", LINK_TIMEOUT: "1s" }));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await app.write(new TextEncoder().encode("hello"));
  assertEquals(new TextDecoder().decode(await readExactly(app, 5)), "hello");
  chaos.resetAll();
  await app.write(new TextEncoder().encode("again"));
  assertEquals(new TextDecoder().decode(await readExactly(app, 5)), "again");
  await app.closeWrite();
  assertEquals(await app.read(new Uint8Array(10)), null);
  app.close();
  await chaos.close();
});
