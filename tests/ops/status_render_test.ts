import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  FILTER_MAX_LENGTH,
  parseSessionFilter,
  renderHtml,
  renderMetrics,
  selectSessions,
  SESSION_ROWS,
} from "../../src/ops/status_render.ts";
import { MINUTE_MS, ServerHistory } from "../../src/server/history.ts";
import type { SessionStatus, StatusSnapshot } from "../../src/server/stats.ts";
import { markupProblem } from "../helpers/markup.ts";

/** Session `i` of a big broker: every 50th detached, resumes and addresses spread out. */
function session(i: number): SessionStatus {
  return {
    id: i.toString(16).padStart(8, "0"),
    client: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:${50_000 + (i % 10_000)}`,
    server: `REMOTE_SERVER_0${i % 4}`,
    state: i % 50 === 7 ? "detached" : "attached",
    stateSeconds: i % 50 === 7 ? 1 + (i % 170) : 3_600,
    ageSeconds: 3_600 + i,
    bytesToClient: 123_456_789,
    bytesToErp: 1_234_567,
    resumes: i % 7,
    lastLinkLoss: i % 7 ? "link error" : null,
    bufferedBytes: 4_096,
  };
}

/** A status snapshot with `count` sessions (`sessions` replaces them when given). */
function snapshot(count: number, sessions?: SessionStatus[]): StatusSnapshot {
  const list = sessions ?? Array.from({ length: count }, (_, i) => session(i));
  return {
    version: "1.0.0",
    startedAt: new Date(0).toISOString(),
    uptimeSeconds: 86_400,
    listen: "0.0.0.0:4000",
    memory: { rss: 100e6, heapUsed: 40e6, heapTotal: 60e6, external: 5e6 },
    sortMethod: "CONNECTION",
    replayBufferBytes: 2 ** 21,
    maxBufferedBytes: 2 ** 30,
    servers: [0, 1, 2, 3].map((n) => ({
      name: `REMOTE_SERVER_0${n}`,
      address: `10.0.0.${n}:5000`,
      state: "up" as const,
      health: "up" as const,
      draining: false,
      weight: 1,
      maxSessions: 0,
      activeSessions: list.length / 4,
      totalSessions: list.length,
      lastError: null,
    })),
    sessions: list,
    totals: {
      sessionsOpened: list.length,
      sessionsActive: list.length,
      resumes: 0,
      resumesByTrigger: { linkError: 0, silence: 0, replacedWhileAttached: 0 },
      sessionsCompleted: 0,
      sessionsExpired: 0,
      sessionsAborted: 0,
      linksRefused: 0,
      linksInHandshake: 0,
      bytesToClients: 0,
      bytesToErp: 0,
      bytesReplayed: 0,
      bytesBuffered: 0,
    },
    resumeDuration: { buckets: [], sum: 0, count: 0 },
    config: {
      path: "/etc/appserver.ini",
      reloadedAt: null,
      admissionKey: true,
      linkTls: true,
      statusAccessKey: true,
      log: "info",
      pendingRestart: [],
    },
    cluster: null,
  };
}

const none = { client: "", server: "", state: "" as const };
const listedIds = (html: string) => [...html.matchAll(/<tr><td><code>([0-9a-f]{8})<\/code>/g)].map((m) => m[1]);

/** A busy day's history, with one flaky client per /24 from 0 to 29. */
function history(): ServerHistory {
  const h = new ServerHistory(0);
  for (let m = 0; m < 1_440; m++) {
    h.sample(m * MINUTE_MS, { attached: 4_900, detached: 100, serversUp: 4, bytesToClients: m * 1e9, bytesToErp: 0 });
    h.outageHidden(m * MINUTE_MS, { client: `10.0.${m % 30}.${m % 7}:1`, seconds: m % 60 });
  }
  return h;
}

Deno.test("page: 5,000 sessions and a full day of history stay under 300 KB, with SESSION_ROWS rows", () => {
  const html = renderHtml(snapshot(5_000), { history: history().snapshot(1_439 * MINUTE_MS), filter: none });
  const bytes = new TextEncoder().encode(html).length;
  console.log(`Status page with 5,000 sessions and 24 h of history: ${bytes} bytes`);
  ok(bytes < 300_000, `${bytes} bytes`);
  equal(listedIds(html).length, SESSION_ROWS);
  match(html, /<h2>Sessions \(5000\)<\/h2>/);
  match(html, new RegExp(`… and ${5_000 - SESSION_ROWS} more sessions: see <a href="status\\.json">`));
  equal((html.match(/<svg class="chart"/g) ?? []).length, 3);
  match(html, /<p class="headline">1,440 outages hidden in the last 24 h, longest 59 s; no session lost<\/p>/);
  match(html, /<td>10\.0\.\d+\.\d<\/td><td class="n">\d+<\/td>/, "flakiest clients");
  match(html, /<td>10\.0\.\d+\.0\/24<\/td>/, "flakiest networks");
  ok(html.includes('href="history.json"'));
  match(html, /@media \(prefers-color-scheme:dark\)/);
  const body = html.slice(html.indexOf("<body>"), html.indexOf("</body>") + 7);
  // The void elements and the bare attribute aside, the body must close every tag it opens.
  equal(markupProblem(body.replace(/<input[^>]*>/g, "").replace(/ selected>/g, ' selected="">')), null);
});

Deno.test("page: detached sessions first (longest away first), then the most resumed", () => {
  const picked = selectSessions(snapshot(5_000).sessions, none);
  const detached = picked.filter((s) => s.state === "detached");
  equal(detached.length, 100);
  ok(picked.slice(0, 100).every((s) => s.state === "detached"), "all 100 detached come first");
  ok(detached.every((s, i) => i === 0 || (detached[i - 1] as SessionStatus).stateSeconds >= s.stateSeconds));
  const attached = picked.slice(100);
  ok(attached.every((s, i) => i === 0 || (attached[i - 1] as SessionStatus).resumes >= s.resumes));
  equal(attached[0]?.resumes, 6);
});

Deno.test("page: the filter by client, ERP server and state, from the query string", () => {
  const all = snapshot(5_000);
  const pick = (query: string) => selectSessions(all.sessions, parseSessionFilter(new URLSearchParams(query)));
  ok(pick("client=10.0.3.").every((s) => s.client.startsWith("10.0.3.")));
  equal(pick("client=10.0.3.").length, 256);
  equal(pick("server=remote_server_02").length, 1_250, "case does not matter");
  equal(pick("state=detached").length, 100);
  equal(pick("state=DETACHED&server=REMOTE_SERVER_03").length, 50, "sessions 7, 107, 207...");
  equal(pick("client=10.0.0.7:").length, 1, "an address and the colon before its port");
  deepEqual(parseSessionFilter(new URLSearchParams("state=<b>&client=%00")), { client: "\0", server: "", state: "" });
  equal(parseSessionFilter(new URLSearchParams(`client=${"9".repeat(1_000_000)}`)).client.length, FILTER_MAX_LENGTH);

  const html = renderHtml(all, { filter: parseSessionFilter(new URLSearchParams("state=detached&server=_03")) });
  match(html, /<h2>Sessions \(50 of 5000\)<\/h2>/);
  equal(listedIds(html).length, 50);
  ok(html.includes('<option value="detached" selected>'), "the form shows the filter in force");
  ok(html.includes('name="server" value="_03"'));
  const nothing = renderHtml(all, { filter: { ...none, client: "192.168." } });
  match(nothing, /<h2>Sessions \(0 of 5000\)<\/h2>[^]*No session matches the filter\./);
});

Deno.test("page: client addresses, ERP names and filter values cannot inject markup", () => {
  const evil = `<script>alert(1)</script>"'&`;
  const sessions = [{ ...session(7), client: `${evil}:1`, server: evil }];
  const s = snapshot(0, sessions);
  s.servers[0] = { ...s.servers[0] as StatusSnapshot["servers"][number], name: evil, address: evil };
  const h = new ServerHistory(0);
  h.outageHidden(0, { client: evil, seconds: 1 });
  const html = renderHtml(s, {
    history: h.snapshot(0),
    filter: { client: `"><script>x</script>`, server: evil, state: "" },
    linkKey: `k"><script>y</script>`,
  });
  ok(!/<script/i.test(html), "no script tag anywhere");
  ok(html.includes("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#38;"), "shown, escaped");
  ok(html.includes('name="key" value="k&#34;&#62;&#60;script&#62;y&#60;/script&#62;"'), "the key in the form, escaped");
});

Deno.test("the cluster section lists peers, escapes what peers report, and /metrics counts relays", () => {
  const s = snapshot(1);
  const evil = "<script>alert(1)</script>";
  s.cluster = {
    tag: "0badf00d",
    listen: "127.0.0.1:4001",
    handedOverTo: { version: evil, pid: 42, since: "2026-11-30T12:00:00.000Z" },
    peers: [
      { name: "PEER_B", address: "10.0.0.12:4001", reachable: true, version: evil, pid: 7, sessions: 12, error: null },
      {
        name: "PEER_C",
        address: "10.0.0.13:4001",
        reachable: false,
        version: null,
        pid: null,
        sessions: null,
        error: evil,
      },
    ],
    relayedOut: 5,
    relayedIn: 3,
    relayFailed: 1,
    relaying: 2,
    relayBytesToHolder: 100,
    relayBytesToClient: 200,
  };
  const html = renderHtml(s);
  ok(!html.includes(evil), "peer-reported text is escaped");
  match(html, /<h2>Cluster<\/h2>/);
  match(html, /Taken over by broker-server &#60;script&#62;/);
  match(html, /PEER_B<\/td><td>10\.0\.0\.12:4001<\/td><td class="up">reachable/);
  match(html, /PEER_C<\/td><td>10\.0\.0\.13:4001<\/td><td class="down">unreachable/);
  const metrics = renderMetrics(s);
  match(metrics, /^broker_cluster_links_relayed_total\{direction="out"\} 5$/m);
  match(metrics, /^broker_cluster_links_relayed_total\{direction="in"\} 3$/m);
  match(metrics, /^broker_cluster_peer_up\{peer="PEER_C",address="10\.0\.0\.13:4001"\} 0$/m);
  match(metrics, /^broker_cluster_handed_over 1$/m);
  ok(!renderMetrics(snapshot(1)).includes("broker_cluster"), "no cluster metrics without a cluster");
});
