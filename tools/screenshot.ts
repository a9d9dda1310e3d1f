/**
 * `deno task screenshot`: takes docs/status-page.png (and status-page-dark.png,
 * in the dark scheme), the status page of a live broker on the loopback rendered by headless Chromium: three ERP
 * stand-ins (one of them down), and three sites (broker-clients behind
 * chaos links from three loopback addresses: an office, a bad Wi-Fi, a 4G
 * router) through a day. The day passes in about a minute: broker-server's
 * clock (its `now` seam) jumps six minutes at a time, sessions open and
 * close with office hours, and the links are cut now and then, the clock
 * jumping while they are down, so that each outage lasts what the plan says.
 * The link timeout is set beyond the jumps: a jump alone is no outage.
 * @module
 */

import { BrokerClient } from "../src/client/client.ts";
import { loadClientConfig } from "../src/config/client_config.ts";
import { loadServerConfig } from "../src/config/server_config.ts";
import { BrokerServer } from "../src/server/server.ts";
import { ChaosLink } from "./chaos_link.ts";
import { findChromium, headlessArgs } from "./chromium.ts";

const OUTPUT = "docs/status-page.png";
const OUTPUT_DARK = "docs/status-page-dark.png";
const chromium = findChromium();
if (!chromium) {
  console.error("Cannot take the screenshot: install Chromium (Debian: apt-get install chromium)");
  Deno.exit(1);
}

const MINUTE = 60_000;
const STEP = 6 * MINUTE;
const STEPS = 240;

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
        conn.close(); // the Smart Client left: so does the ERP, and the session ends
      })().catch(() => {});
    }
  })();
  return (listener.addr as Deno.NetAddr).port;
}

const config = await loadServerConfig("examples/loopback/appserver.ini");
config.listen.port = 0;
config.status = { enabled: true, listen: { hostname: "127.0.0.1", port: 0 }, accessKey: null };
config.drainTimeoutMs = 0;
config.tuning.linkTimeoutMs = 120 * MINUTE; // the most a client accepts, far beyond one step
// Real time: an outage of the plan takes well under a second, a lost session's window runs out in 2.
config.tuning.resumeTimeoutMs = 2_000;
const down = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const downPort = (down.addr as Deno.NetAddr).port;
down.close();
config.remoteServers = config.remoteServers.map((s, i) => ({
  ...s,
  hostname: "127.0.0.1",
  port: i === 1 ? downPort : echoServer(),
}));
let shift = -(STEPS - 1) * STEP;
const server = new BrokerServer(config, { now: () => Date.now() + shift });
server.listen();

/** A site: its broker-client behind a chaos link from its own loopback address, and its Smart Clients. */
interface Site {
  address: string;
  chaos: ChaosLink;
  client: BrokerClient;
  apps: Deno.Conn[];
  /** Sessions wanted at an hour of the day. */
  want: (hour: number) => number;
  /** Outages (s) planned at a step, if any. */
  outage: (step: number) => number | null;
}

async function site(address: string, plan: Pick<Site, "want" | "outage">): Promise<Site> {
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port, localAddress: address });
  const clientConfig = await loadClientConfig("examples/loopback/smartclient.ini");
  clientConfig.listen.port = 0;
  clientConfig.brokerServers = [{ hostname: "127.0.0.1", port: chaos.port }];
  clientConfig.log.file = null;
  clientConfig.statusPort = 0;
  const client = new BrokerClient(clientConfig);
  client.listen();
  return { address, chaos, client, apps: [], ...plan };
}

const office = (hour: number) => hour >= 8 && hour < 18;
const wifiOutages = [0.4, 0.8, 2, 3, 0.6, 7, 1.5, 12, 0.5, 47, 0.9, 4];
const sites = [
  await site("127.0.0.1", { want: (h) => office(h) ? 12 : 2, outage: (i) => i % 80 === 40 ? 0.3 : null }),
  await site("127.0.0.23", {
    want: (h) => office(h) ? 7 : 1,
    outage: (i) => office(i / 10) && i % 3 === 0 ? wifiOutages[(i / 3) % wifiOutages.length] as number : null,
  }),
  await site("127.0.5.40", {
    want: (h) => h >= 14 && h < 16 ? 1 : 3,
    outage: (i) => i % 17 === 5 ? [2, 6, 25][i % 3] as number : null,
  }),
];

async function waitFor(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out waiting for ${what} (sessions: ${server.sessions.map((x) => x.client).join(" ")})`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function exchange(app: Deno.Conn, bytes: number): Promise<void> {
  await app.write(new Uint8Array(bytes));
  const buf = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) got += (await app.read(buf.subarray(got))) ?? bytes;
}

const sessionsOf = (s: Site) => server.sessions.filter((x) => x.client.startsWith(`${s.address}:`));

/** Opens or closes Smart Clients of `s` until it has what it wants at `hour`. */
async function staff(s: Site, hour: number): Promise<void> {
  while (s.apps.length < s.want(hour)) {
    const app = await Deno.connect({ hostname: "127.0.0.1", port: s.client.address.port });
    await exchange(app, 20_000);
    s.apps.push(app);
  }
  while (s.apps.length > s.want(hour)) s.apps.pop()?.close();
  await waitFor(
    () => sessionsOf(s).length === s.apps.length,
    `${s.address}'s ${s.apps.length} sessions`,
  );
}

/** Cuts the link of `s` for `seconds` of the server's clock (or, with `lose`, until its sessions expire). */
async function outage(s: Site, seconds: number, lose = false): Promise<void> {
  s.chaos.setMode("refuse");
  s.chaos.resetAll();
  await waitFor(() => sessionsOf(s).every((x) => x.session.state === "detached"), `${s.address} to detach`);
  shift += seconds * 1000;
  server.history(); // the detached sessions show in this minute
  if (lose) {
    await waitFor(() => sessionsOf(s).length === 0, `${s.address}'s sessions to expire`);
    for (const app of s.apps.splice(0)) app.close();
  }
  s.chaos.setMode("pass");
  await waitFor(() => sessionsOf(s).every((x) => x.session.state === "attached"), `${s.address} to resume`);
}

for (let step = 0; step < STEPS; step++) {
  const hour = step / 10;
  const before = shift;
  for (const s of sites) await staff(s, hour);
  for (const s of sites) {
    const seconds = s.outage(step);
    if (seconds !== null && s.apps.length > 0) await outage(s, seconds);
  }
  if (step === 150) await outage(sites[2] as Site, 0, true); // 15:00: the 4G router is off too long
  if (step % 5 === 0) {
    for (const s of sites) for (const app of s.apps) await exchange(app, 2_000 + (step % 7) * 10_000);
  }
  // A sample in every minute of the step, as the server's own timer would take over a real day.
  for (let minute = 1; minute <= STEP / MINUTE && step < STEPS - 1; minute++) {
    shift = Math.max(shift, before + minute * MINUTE - 1_000);
    server.history();
  }
}

/** Takes the page in the light scheme, or the dark one (what a phone at night asks for). */
async function screenshot(path: string, dark: boolean): Promise<boolean> {
  const profile = await Deno.makeTempDir();
  const out = await new Deno.Command(chromium as string, {
    args: [
      ...headlessArgs(profile),
      ...(dark ? ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"] : []),
      "--window-size=1200,1450",
      `--screenshot=${Deno.cwd()}/${path}`,
      `http://127.0.0.1:${server.statusAddress?.port}/`,
    ],
    stdout: "null",
    stderr: "null",
  }).output();
  await Deno.remove(profile, { recursive: true });
  console.log(out.success ? `Wrote ${path}` : `Chromium failed (exit ${out.code})`);
  return out.success;
}

const success = await screenshot(OUTPUT, false) && await screenshot(OUTPUT_DARK, true);

for (const s of sites) {
  for (const app of s.apps) app.close();
  await s.client.close();
}
await server.close();
for (const s of sites) {
  s.chaos.dropFrozen();
  await s.chaos.close();
}
for (const l of listeners) l.close();
for (const c of conns) {
  try {
    c.close();
  } catch { /* closed */ }
}
Deno.exit(success ? 0 : 1);
