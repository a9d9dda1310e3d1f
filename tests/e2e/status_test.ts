/**
 * The status page, /status.json and /metrics of a live broker, over real
 * HTTP; the access key; and the page rendered by headless Chromium.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import type { StatusSnapshot } from "../../src/server/stats.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { findChromium, headlessArgs } from "../../tools/chromium.ts";
import { echo, freePort } from "../helpers/apps.ts";

async function exchange(app: Deno.Conn, bytes: number): Promise<void> {
  await app.write(new Uint8Array(bytes));
  const buf = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) got += (await app.read(buf.subarray(got))) ?? bytes;
}

function withStatus(config: ReturnType<typeof serverConfig>, accessKey: string | null = null) {
  config.status = { enabled: true, listen: { hostname: "127.0.0.1", port: 0 }, accessKey };
  return config;
}

Deno.test("status.json, metrics and the HTML page describe the live broker", async () => {
  await using erp = startErp(echo);
  const deadPort = freePort();
  await using server = startServer(
    withStatus(
      serverConfig([erp.port, deadPort], {
        HEARTBEAT_INTERVAL: "100ms",
        LINK_TIMEOUT: "400ms",
        SORT_METHOD: "ROUND_ROBIN",
      }),
    ),
  );
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  await using client = startClient(clientConfig([chaos.port]));
  const apps = [
    await Deno.connect({ hostname: "127.0.0.1", port: client.address.port }),
    await Deno.connect({ hostname: "127.0.0.1", port: client.address.port }),
  ];
  for (const app of apps) await exchange(app, 1000);
  chaos.resetAll();
  await waitFor(() => server.sessions.every((s) => s.session.stats.resumes === 1), "both sessions to resume");
  for (const app of apps) await exchange(app, 500);

  const base = `http://127.0.0.1:${server.statusAddress?.port}`;
  const status = await (await fetch(`${base}/status.json`)).json() as StatusSnapshot;
  equal(status.sortMethod, "ROUND_ROBIN");
  deepEqual(status.servers.map((s) => [s.name, s.state]), [["REMOTE_SERVER_01", "up"], ["REMOTE_SERVER_02", "down"]]);
  equal(status.servers[0]?.activeSessions, 2);
  match(status.servers[1]?.lastError?.message ?? "", /connection refused/);
  equal(status.sessions.length, 2);
  for (const s of status.sessions) {
    equal(s.server, "REMOTE_SERVER_01");
    equal(s.state, "attached");
    equal(s.bytesToErp, 1500);
    equal(s.bytesToClient, 1500);
    equal(s.resumes, 1);
    match(s.id, /^[0-9a-f]{8}$/);
  }
  equal(status.totals.sessionsOpened, 2);
  equal(status.totals.resumes, 2);
  equal(status.totals.bytesToErp, 3000);
  equal(status.resumeDuration.count, 2);
  ok(status.memory.rss > 10 * 2 ** 20 && status.memory.rss < 2 ** 32, `a plausible RSS: ${status.memory.rss}`);
  ok(status.memory.heapUsed > 0 && status.memory.heapUsed <= status.memory.heapTotal);

  const metrics = await (await fetch(`${base}/metrics`)).text();
  for (
    const line of [
      'broker_sessions{state="attached"} 2',
      "broker_sessions_opened_total 2",
      "broker_resumes_total 2",
      'broker_relayed_bytes_total{direction="to_erp"} 3000',
      `broker_backend_up{server="REMOTE_SERVER_02",address="127.0.0.1:${deadPort}"} 0`,
      'broker_resume_duration_seconds_bucket{le="+Inf"} 2',
      "broker_resume_duration_seconds_count 2",
      "# TYPE broker_resume_duration_seconds histogram",
    ]
  ) ok(metrics.includes(`${line}\n`), `metrics has "${line}"`);
  match(metrics, /^broker_process_memory_bytes\{kind="rss"\} \d{7,}$/m);

  const html = await (await fetch(`${base}/`)).text();
  ok(html.includes('<meta http-equiv="refresh"'));
  for (const s of status.sessions) ok(html.includes(s.id), `page shows session ${s.id}`);
  ok(html.includes("REMOTE_SERVER_02") && html.includes('class="down"'));
  equal((await fetch(`${base}/nope`)).status, 404);
  await (await fetch(`${base}/nope`)).body?.cancel();

  for (const app of apps) app.close();
  await waitFor(() => server.sessions.length === 0, "sessions to end");
  await chaos.close();
});

Deno.test("with an access key, requests without it get a bare 401", async () => {
  await using erp = startErp(echo);
  const key = "s3cret-key-for-tests";
  await using server = startServer(withStatus(serverConfig([erp.port]), key));
  const url = `http://127.0.0.1:${server.statusAddress?.port}/status.json`;
  const refused = await fetch(url);
  equal(refused.status, 401);
  equal(await refused.text(), "Unauthorized\n");
  for (const headers of [{ authorization: "Bearer wrong-key-xxxxxxx" }, { authorization: "Basic !!!" }]) {
    const r = await fetch(url, { headers });
    equal(r.status, 401);
    await r.body?.cancel();
  }
  for (
    const [target, headers] of [
      [url, { authorization: `Bearer ${key}` }],
      [url, { authorization: `Basic ${btoa(`admin:${key}`)}` }],
      [`${url}?key=${key}`, {}],
    ] as [string, Record<string, string>][]
  ) {
    const r = await fetch(target, { headers });
    equal(r.status, 200);
    await r.body?.cancel();
  }
});

const CHROMIUM = findChromium();
if (!CHROMIUM) console.log("Skipping the headless Chromium test of the status page: install Debian's chromium package");

Deno.test({
  name: "headless Chromium renders the status page with the servers and sessions of a live broker",
  ignore: CHROMIUM === undefined,
  async fn() {
    await using erp = startErp(echo);
    await using server = startServer(withStatus(serverConfig([erp.port])));
    await using client = startClient(clientConfig([server.address.port]));
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    await exchange(app, 100);
    const profile = await Deno.makeTempDir();
    const out = await new Deno.Command(CHROMIUM as string, {
      args: [
        ...headlessArgs(profile),
        "--dump-dom",
        `http://127.0.0.1:${server.statusAddress?.port}/`,
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    const dom = new TextDecoder().decode(out.stdout);
    const id = server.sessions[0]?.id.slice(0, 8) ?? "none";
    ok(dom.includes("Protheus broker-server"), "the page rendered");
    ok(dom.includes("REMOTE_SERVER_01"), "with the ERP server");
    ok(dom.includes(id), `with session ${id}`);
    app.close();
    await waitFor(() => server.sessions.length === 0, "sessions to end");
    await Deno.remove(profile, { recursive: true });
  },
});
