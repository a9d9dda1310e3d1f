/**
 * `deno task screenshot`: takes docs/status-page.png, the status page of a
 * live broker on the loopback (three ERP stand-ins, one of them down, a few
 * sessions, one of them resumed), rendered by headless Chromium.
 * @module
 */

import { BrokerClient } from "../src/client/client.ts";
import { loadClientConfig } from "../src/config/client_config.ts";
import { loadServerConfig } from "../src/config/server_config.ts";
import { BrokerServer } from "../src/server/server.ts";
import { ChaosLink } from "./chaos_link.ts";
import { findChromium, headlessArgs } from "./chromium.ts";

const OUTPUT = "docs/status-page.png";
const chromium = findChromium();
if (!chromium) {
  console.error("Cannot take the screenshot: install Chromium (Debian: apt-get install chromium)");
  Deno.exit(1);
}

const listeners: Deno.TcpListener[] = [];
const conns: Deno.Conn[] = [];
function echoServer(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  listeners.push(listener);
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        const buf = new Uint8Array(64 * 1024);
        for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
      })().catch(() => {});
    }
  })();
  return (listener.addr as Deno.NetAddr).port;
}

const config = await loadServerConfig("examples/loopback/appserver.ini");
config.listen.port = 0;
config.status = { enabled: true, listen: { hostname: "127.0.0.1", port: 0 }, accessKey: null };
config.drainTimeoutMs = 0;
const down = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const downPort = (down.addr as Deno.NetAddr).port;
down.close();
config.remoteServers = config.remoteServers.map((s, i) => ({
  ...s,
  hostname: "127.0.0.1",
  port: i === 1 ? downPort : echoServer(),
}));
const server = new BrokerServer(config);
server.listen();
const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
const clientConfig = await loadClientConfig("examples/loopback/smartclient.ini");
clientConfig.listen.port = 0;
clientConfig.brokerServers = [{ hostname: "127.0.0.1", port: chaos.port }];
clientConfig.log.file = null;
clientConfig.statusPort = 0;
const client = new BrokerClient(clientConfig);
client.listen();

async function exchange(app: Deno.Conn, bytes: number): Promise<void> {
  await app.write(new Uint8Array(bytes));
  const buf = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) got += (await app.read(buf.subarray(got))) ?? bytes;
}

const apps: Deno.Conn[] = [];
for (let i = 0; i < 5; i++) {
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await exchange(app, 200_000 * (i + 1));
  apps.push(app);
}
chaos.resetAll(); // every session resumes once
for (const app of apps) await exchange(app, 50_000);
await new Promise((r) => setTimeout(r, 1_500));

const profile = await Deno.makeTempDir();
const out = await new Deno.Command(chromium, {
  args: [
    ...headlessArgs(profile),
    "--window-size=1200,900",
    `--screenshot=${Deno.cwd()}/${OUTPUT}`,
    `http://127.0.0.1:${server.statusAddress?.port}/`,
  ],
  stdout: "null",
  stderr: "null",
}).output();
await Deno.remove(profile, { recursive: true });
console.log(out.success ? `Wrote ${OUTPUT}` : `Chromium failed (exit ${out.code})`);

for (const app of apps) app.close();
await client.close();
await server.close();
chaos.dropFrozen();
await chaos.close();
for (const l of listeners) l.close();
for (const c of conns) {
  try {
    c.close();
  } catch { /* closed */ }
}
Deno.exit(out.success ? 0 : 1);
