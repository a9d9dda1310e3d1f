/**
 * `broker-client --status` against hostile or mistaken programs on the
 * status port: a status.json that claims to be broker-client's but lacks
 * fields, and bodies that never end or are huge.
 */
import { equal, match, ok } from "node:assert/strict";
import { freePort } from "../helpers/apps.ts";
import { writeClientIni } from "../helpers/setup.ts";
import { loadClientConfig } from "../../src/config/client_config.ts";
import { statusCommand } from "../../src/client/status_command.ts";

Deno.test("--status exits 2, never throws, when a program on the port answers a broker-client-like JSON missing fields", async () => {
  const file = await writeClientIni(freePort());
  const listen = `127.0.0.1:${file.listenPort}`;
  const answers: unknown[] = [
    { program: "broker-client", sessions: [], listen },
    { program: "broker-client", sessions: [null], listen, brokerServers: [] },
    { program: "broker-client", sessions: [{}], listen, brokerServers: [null] },
  ];
  let answer: unknown = null;
  await using _impostor = Deno.serve(
    { hostname: "127.0.0.1", port: file.statusPort, onListen: () => {} },
    () => Response.json(answer),
  );
  const config = await loadClientConfig(file.path);
  for (const a of answers) {
    answer = a;
    const printed: string[] = [];
    let code: number;
    try {
      code = await statusCommand(config, { print: (t) => printed.push(t) });
    } catch (err) {
      // Uncaught, the program would exit 1: "a session is reconnecting".
      throw new Error(`--status threw on ${JSON.stringify(a)}: ${(err as Error).message}`);
    }
    equal(code, 2, JSON.stringify(a));
    match(printed.join("\n"), /not as broker-client's status page does/);
  }
  await file.remove();
});

Deno.test("--status gives up within its timeout on a body that never ends", async () => {
  const file = await writeClientIni(freePort());
  const listener = Deno.listen({ hostname: "127.0.0.1", port: file.statusPort });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        try {
          await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"));
          for (let i = 0; i < 100; i++) {
            await new Promise((r) => setTimeout(r, 50));
            await conn.write(new TextEncoder().encode(" "));
          }
        } catch { /* closed */ }
      })();
    }
  })();
  const started = Date.now();
  const printed: string[] = [];
  const code = await statusCommand(await loadClientConfig(file.path), {
    print: (t) => printed.push(t),
    timeoutMs: 500,
  });
  const took = Date.now() - started;
  equal(code, 2);
  ok(took < 2_000, `gave up after ${took} ms`);
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed */ }
  }
  listener.close();
  await file.remove();
});

Deno.test("--status does not read a huge body into memory", async () => {
  const file = await writeClientIni(freePort());
  const chunk = new Uint8Array(1 << 20).fill(0x20);
  let sent = 0;
  await using _impostor = Deno.serve(
    { hostname: "127.0.0.1", port: file.statusPort, onListen: () => {} },
    () =>
      new Response(
        new ReadableStream({
          pull(controller) {
            if (sent >= 512 * (1 << 20)) return controller.close();
            sent += chunk.length;
            controller.enqueue(chunk);
          },
        }),
        { headers: { "content-type": "application/json" } },
      ),
  );
  const printed: string[] = [];
  const code = await statusCommand(await loadClientConfig(file.path), {
    print: (t) => printed.push(t),
    timeoutMs: 3_000,
  });
  equal(code, 2);
  ok(sent < 64 * (1 << 20), `--status read ${Math.round(sent / (1 << 20))} MiB of a status body`);
  await file.remove();
});
