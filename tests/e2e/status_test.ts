/**
 * The status page, /status.json, /history.json and /metrics of a live
 * broker, over real HTTP; the access key; the session filter; the history
 * after forced link cuts; and the page rendered by headless Chromium.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import type { StatusSnapshot } from "../../src/server/stats.ts";
import type { HistorySnapshot } from "../../src/server/history.ts";
import { ChaosLink } from "../../tools/chaos_link.ts";
import { findChromium, headlessArgs } from "../../tools/chromium.ts";
import { echo, freePort, getWithHost } from "../helpers/apps.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { loadServerConfig } from "../../src/config/server_config.ts";
import { SESSION_ROWS } from "../../src/ops/status_render.ts";

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

Deno.test({
  name: "headless Chromium shows the charts of a run with forced link cuts, with the counts of status.json",
  ignore: CHROMIUM === undefined,
  async fn() {
    const count = 2;
    await using run = await flakyRun(count);
    const status = await (await fetch(`${run.base}/status.json`)).json() as StatusSnapshot;
    const profile = await Deno.makeTempDir();
    const out = await new Deno.Command(CHROMIUM as string, {
      args: [...headlessArgs(profile), "--dump-dom", `${run.base}/`],
      stdout: "piped",
      stderr: "null",
    }).output();
    await Deno.remove(profile, { recursive: true });
    const dom = new TextDecoder().decode(out.stdout);
    const hidden = status.totals.resumes;
    ok(hidden > 0 && status.totals.sessionsExpired === count, "the run cut and lost what it meant to");
    match(dom, new RegExp(`${hidden} outages hidden in the last 24 h, longest [0-9.]+ s; ${count} sessions lost`));
    equal((dom.match(/<svg class="chart"/g) ?? []).length, 3, "three charts");
    match(dom, /resumes \(busiest minute [1-9]\d*\)/, "resumes per minute");
    const bins = [...dom.matchAll(/by duration: ([^"]*)"/g)][0]?.[1] ?? "";
    const counted = [...bins.matchAll(/s: (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
    equal(counted, hidden, `the outage bars add up to the resumes in status.json: ${bins}`);
    match(bins, new RegExp(`lost: window expired: ${count}`));
  },
});

Deno.test("the keyless loopback page answers only to loopback host names (no DNS rebinding)", async () => {
  await using erp = startErp(echo);
  await using server = startServer(withStatus(serverConfig([erp.port])));
  const port = server.statusAddress?.port as number;
  for (const host of ["127.0.0.1", `127.0.0.1:${port}`, "localhost", `LocalHost:${port}`, `[::1]:${port}`, "[::1]"]) {
    equal(await getWithHost(port, "/status.json", host), 200, `Host: ${host} is the loopback`);
  }
  for (const host of ["evil.example", `evil.example:${port}`, "127.0.0.1.evil.example", "localhost.evil.example"]) {
    equal(await getWithHost(port, "/status.json", host), 403, `Host: ${host} is refused`);
    equal(await getWithHost(port, "/", host), 403, `Host: ${host} is refused for the page too`);
  }
});

Deno.test("a page opened with ?key= links to status.json and metrics with the key", async () => {
  await using erp = startErp(echo);
  const key = "s3cret-key-for-tests";
  await using server = startServer(withStatus(serverConfig([erp.port]), key));
  const base = `http://127.0.0.1:${server.statusAddress?.port}`;
  const html = await (await fetch(`${base}/?key=${key}`)).text();
  const links = [...html.matchAll(/href="([^"]+)"/g)].map((m) => m[1] as string);
  deepEqual(links, [`status.json?key=${key}`, `history.json?key=${key}`, `metrics?key=${key}`]);
  for (const link of links) {
    const r = await fetch(new URL(link, `${base}/`));
    equal(r.status, 200, `${link} is served`);
    await r.body?.cancel();
  }
  // Opened with the header, the page does not put the key in its links.
  const viaHeader = await (await fetch(`${base}/`, { headers: { authorization: `Bearer ${key}` } })).text();
  ok(!viaHeader.includes(key), "no key in a page opened with the Authorization header");
  // The filter form keeps the key too, as a hidden field (a GET form drops the page's own query string).
  match(html, new RegExp(`<input type="hidden" name="key" value="${key}">`));
  ok(!viaHeader.includes('name="key"'));
});

Deno.test("with many sessions the page lists them all up to its bound, and filters them by the query string", async () => {
  await using erp = startErp(echo);
  await using server = startServer(withStatus(serverConfig([erp.port])));
  await using client = startClient(clientConfig([server.address.port]));
  const apps: Deno.TcpConn[] = [];
  const count = 103;
  for (let i = 0; i < count; i++) {
    const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
    await exchange(app, 10);
    apps.push(app);
  }
  ok(count < SESSION_ROWS, "the page's bound is tested with 5,000 sessions in tests/ops/status_render_test.ts");
  const base = `http://127.0.0.1:${server.statusAddress?.port}`;
  const status = await (await fetch(`${base}/status.json`)).json() as StatusSnapshot;
  equal(status.sessions.length, count, "status.json lists every session");
  const html = await (await fetch(`${base}/`)).text();
  equal(status.sessions.filter((s) => html.includes(`<code>${s.id}</code>`)).length, count);
  match(html, /<h2>Sessions \(103\)<\/h2>/);
  const filtered = async (query: string) => {
    const page = await (await fetch(`${base}/?${query}`)).text();
    return { page, rows: status.sessions.filter((s) => page.includes(`<code>${s.id}</code>`)).length };
  };
  equal((await filtered("server=remote_server_01&state=attached")).rows, count);
  const none = await filtered("state=detached");
  equal(none.rows, 0);
  match(none.page, /<h2>Sessions \(0 of 103\)<\/h2>/);
  const port = status.sessions[0]?.client.split(":")[1] ?? "none";
  equal((await filtered(`client=127.0.0.1%3A${port}`)).rows, 1, "one client by address and port");
  // Garbage in the query string: a huge value, markup, an unknown state, broken escapes.
  const garbage = await fetch(`${base}/?client=${"x".repeat(8_000)}&server=%3Cscript%3E&state=%00&state=nope`);
  equal(garbage.status, 200);
  const text = await garbage.text();
  ok(!text.includes("<script>") && text.includes("&#60;script&#62;"), "echoed, escaped");
  match(text, /<h2>Sessions \(0 of 103\)<\/h2>/);
  for (const app of apps) app.close();
  // Under Wine, whose socket layer crawls with hundreds of sockets in one
  // process, ending these 103 sessions has taken from 3 to over 10 s.
  await waitFor(() => server.sessions.length === 0, "sessions to end", 60_000);
});

/**
 * A broker whose link is reset twice under `count` sessions (each resumes
 * twice: hidden outages), then refused until their 3 s window has closed
 * (each is lost). Resolves once every session has ended on the server.
 */
async function flakyRun(count: number) {
  const erp = startErp(echo);
  const config = serverConfig([erp.port], { RESUME_TIMEOUT: "3s", HEARTBEAT_INTERVAL: "100ms", LINK_TIMEOUT: "400ms" });
  const server = startServer(withStatus(config));
  const chaos = await ChaosLink.start({ host: "127.0.0.1", port: server.address.port });
  const client = startClient(clientConfig([chaos.port]));
  const apps: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i++) {
    apps.push(await Deno.connect({ hostname: "127.0.0.1", port: client.address.port }));
    await exchange(apps[i] as Deno.TcpConn, 1000);
  }
  for (let cut = 1; cut <= 2; cut++) {
    chaos.resetAll();
    await waitFor(() => server.sessions.every((s) => s.session.stats.resumes === cut), `resume ${cut} of each session`);
    for (const app of apps) await exchange(app, 100);
  }
  chaos.setMode("refuse");
  chaos.resetAll();
  await waitFor(() => server.sessions.length === 0, "the sessions' windows to expire");
  return {
    base: `http://127.0.0.1:${server.statusAddress?.port}`,
    async [Symbol.asyncDispose]() {
      for (const app of apps) app.close();
      await client.close();
      await server.close();
      await chaos.close();
      await erp[Symbol.asyncDispose]();
    },
  };
}

Deno.test("after forced link cuts, the history, its charts and the headline count what status.json counts", async () => {
  const count = 3;
  await using run = await flakyRun(count);
  const status = await (await fetch(`${run.base}/status.json`)).json() as StatusSnapshot;
  const history = await (await fetch(`${run.base}/history.json`)).json() as HistorySnapshot;
  equal(status.totals.resumes, 2 * count);
  equal(status.totals.sessionsExpired, count);
  equal(history.totals.resumes, status.totals.resumes, "outages hidden");
  equal(history.totals.expired, status.totals.sessionsExpired, "sessions lost");
  equal(history.totals.opened, status.totals.sessionsOpened);
  equal(history.outages.bins.reduce((n, b) => n + b.count, 0), status.totals.resumes);
  equal(history.series.resumes.length, 1440);
  // The run takes seconds: it may straddle a minute boundary, so look at the last two minutes.
  const lastTwo = (series: (number | null)[]) => series.slice(-2).map((v) => v ?? 0);
  equal(lastTwo(history.series.resumes).reduce((a, b) => a + b), 2 * count);
  equal(Math.max(...lastTwo(history.series.live)), count, "the most live sessions");
  ok((history.totals.bytesToErp ?? 0) >= count * 1200, `bytes relayed: ${history.totals.bytesToErp}`);
  deepEqual(history.flakiest.clients.map((r) => [r.key, r.outages, r.lost]), [["127.0.0.1", 3 * count, count]]);
  deepEqual(history.flakiest.networks.map((r) => r.key), ["127.0.0.0/24"]);

  const html = await (await fetch(`${run.base}/`)).text();
  const longest = history.totals.longestOutageSeconds;
  match(
    html,
    new RegExp(
      `<p class="headline lost">${
        2 * count
      } outages hidden in the last 24 h, longest [0-9.]+ s; ${count} sessions lost \\(window expired\\)</p>`,
    ),
  );
  ok(longest > 0 && longest < 10, `the longest outage: ${longest} s`);
  const busiest = Number(/>resumes \(busiest minute (\d+)\)<\/text>/.exec(html)?.[1]);
  ok(busiest >= count && busiest <= 2 * count, `the resumes chart's busiest minute: ${busiest}`);
  ok(html.includes(`>lost: window expired</text>`) && html.includes(`>sessions lost (${count})</text>`));
  match(html, new RegExp(`Outages in the last 24 hours by duration: [^"]*lost: window expired: ${count}`));
  match(html, /<td>127\.0\.0\.1<\/td><td class="n">9<\/td><td class="n">3<\/td>/, "the flakiest client");
});

Deno.test("an ERP server that is draining and down reports broker_backend_up 0", async () => {
  await using logs = await captureLogs();
  await using keep = startErp(echo);
  // An ERP server that takes one session, then stops listening (its session goes on).
  const leaving = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const leavingPort = (leaving.addr as Deno.NetAddr).port;
  const served = (async () => {
    const conn = await leaving.accept();
    leaving.close();
    await echo(conn).catch(() => {});
    conn.close();
  })();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const statusPort = freePort();
  const write = (servers: Record<string, number>) =>
    Deno.writeTextFile(
      path,
      [
        "[BALANCE_SMART_CLIENT_DESKTOP]",
        "LOCAL_SERVER_ADDRESS = 127.0.0.1",
        `LOCAL_SERVER_PORT = ${freePort()}`,
        `STATUS_PORT = ${statusPort}`,
        "DRAIN_TIMEOUT = 0",
        "HEALTH_CHECK_INTERVAL = 100ms",
        "HEALTH_CHECK_FALL = 1",
        ...Object.entries(servers).map(([name, port]) => `${name} = 127.0.0.1 ${port}`),
      ].join("\n"),
    );
  await write({ REMOTE_SERVER_1: leavingPort, REMOTE_SERVER_2: keep.port });
  const config = await loadServerConfig(path);
  config.listen.port = 0;
  await using server = startServer(config);
  await using client = startClient(clientConfig([server.address.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await exchange(app, 10);
  await waitFor(() => server.backends[0]?.health === "down", "the probes to find REMOTE_SERVER_1 down");
  await write({ REMOTE_SERVER_2: keep.port });
  equal(await server.reload(), true);
  await logs.waitFor(/REMOTE_SERVER_1 \(127\.0\.0\.1:\d+\) removed: draining 1 sessions/);
  const base = `http://127.0.0.1:${statusPort}`;
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const labels = `{server="REMOTE_SERVER_1",address="127.0.0.1:${leavingPort}"}`;
  ok(metrics.includes(`broker_backend_up${labels} 0\n`), "down is down, draining or not");
  ok(metrics.includes(`broker_backend_draining${labels} 1\n`), "and it drains");
  const status = await (await fetch(`${base}/status.json`)).json() as StatusSnapshot;
  deepEqual(
    status.servers.map((s) => [s.name, s.state, s.health, s.draining]),
    [["REMOTE_SERVER_2", "up", "up", false], ["REMOTE_SERVER_1", "draining", "down", true]],
  );
  app.close();
  await served;
  await waitFor(() => server.sessions.length === 0, "sessions to end");
  await Deno.remove(dir, { recursive: true });
});
