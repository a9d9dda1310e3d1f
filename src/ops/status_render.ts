/**
 * Renders broker-server's status snapshot for people (an HTML page that refreshes itself,
 * readable on a phone, no scripts) and for Prometheus (text format 0.0.4).
 * Pure functions: snapshot in, text out.
 * @module
 */

import type { FlakyRow, HistorySnapshot } from "../server/history.ts";
import type { ClusterStatus, SessionStatus, StatusSnapshot } from "../server/stats.ts";
import {
  chartStyle,
  formatCount,
  formatOutage,
  headline,
  outagesChart,
  PALETTE,
  resumesChart,
  type Scheme,
  sessionsChart,
} from "./status_charts.ts";

/** Seconds between automatic refreshes of the HTML page. */
export const REFRESH_SECONDS = 5;

/** Most sessions listed on the HTML page; status.json lists them all. */
export const SESSION_ROWS = 200;

/** Longest filter value taken from the query string (characters); longer ones are cut. */
export const FILTER_MAX_LENGTH = 64;

/** Which sessions the page lists: substrings of the client address and ERP server name, and a state. */
export interface SessionFilter {
  client: string;
  server: string;
  state: "" | "attached" | "detached";
}

/** Options of renderHtml. */
export interface RenderHtmlOptions {
  /** The access key the page was opened with as `?key=`, kept in its links; null or absent otherwise. */
  linkKey?: string | null;
  /** The last 24 hours, for the charts; absent: no charts. */
  history?: HistorySnapshot;
  /** Which sessions to list (default: all). */
  filter?: SessionFilter;
}

/** `text` safe inside HTML text and quoted attributes. */
export function escapeHtml(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The session filter of a query string (`client`, `server`, `state`):
 * values are cut to FILTER_MAX_LENGTH characters, an unknown state is
 * ignored; whatever is given is only ever compared and escaped.
 */
export function parseSessionFilter(params: URLSearchParams): SessionFilter {
  const value = (name: string) => (params.get(name) ?? "").trim().slice(0, FILTER_MAX_LENGTH);
  const state = value("state").toLowerCase();
  return {
    client: value("client"),
    server: value("server"),
    state: state === "attached" || state === "detached" ? state : "",
  };
}

/**
 * The sessions that `filter` lets through, most in need of a look first:
 * detached ones (longest away first), then the most resumed, then the oldest.
 */
export function selectSessions(list: readonly SessionStatus[], filter: SessionFilter): SessionStatus[] {
  const client = filter.client.toLowerCase();
  const server = filter.server.toLowerCase();
  const picked = list.filter((x) =>
    (client === "" || x.client.toLowerCase().includes(client)) &&
    (server === "" || x.server.toLowerCase().includes(server)) &&
    (filter.state === "" || x.state === filter.state)
  );
  const detached = (x: SessionStatus) => x.state === "detached" ? 1 : 0;
  return picked.sort((a, b) =>
    detached(b) - detached(a) ||
    (detached(a) ? b.stateSeconds - a.stateSeconds : 0) ||
    b.resumes - a.resumes ||
    b.ageSeconds - a.ageSeconds ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/** "3 d 4 h", "12 min 5 s", "42 s". */
export function formatAge(seconds: number): string {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** "1.5 MiB", "312 KiB", "20 B". */
export function formatBytes(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  return `${bytes} B`;
}

/** The page's colours as CSS variables, for one scheme. */
function schemeVariables(s: Scheme): string {
  return `--bg:${s.background};--panel:${s.panel};--text:${s.text};--muted:${s.muted};--grid:${s.grid};` +
    `--ok:${s.resumes};--warn:${s.detached};--bad:${s.lost};--head:${s.grid}`;
}

/** The style sheet of both programs' status pages (light and dark schemes). */
export const STATUS_STYLE = `
:root{color-scheme:light dark;${schemeVariables(PALETTE.light)}}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1rem;color:var(--text);background:var(--bg)}
a{color:inherit}h1{font-size:1.3rem;margin:0 0 .25rem}h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.meta{color:var(--muted);font-size:.9rem}.cards{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:1rem}
.card{background:var(--panel);border-radius:6px;padding:.5rem .8rem;box-shadow:0 1px 2px #0002;min-width:7rem}
.card b{display:block;font-size:1.2rem}.wrap{overflow-x:auto;background:var(--panel);border-radius:6px;box-shadow:0 1px 2px #0002}
.headline{font-size:1.15rem;font-weight:600;margin:1rem 0 0;padding:.6rem .8rem;background:var(--panel);border-radius:6px;border-left:4px solid var(--ok)}
.headline.lost{border-left-color:var(--bad)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,30rem),1fr));gap:.75rem}
.chart{display:block;width:100%;height:auto;background:var(--panel);border-radius:6px;padding:.3rem 0}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr));gap:.75rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{padding:.4rem .6rem;text-align:left;white-space:nowrap;border-bottom:1px solid var(--grid)}
th{background:var(--head);font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:var(--ok);font-weight:600}.down{color:var(--bad);font-weight:600}.draining{color:var(--warn);font-weight:600}
td.err{white-space:normal;min-width:14rem}.attached{color:var(--ok)}.detached{color:var(--warn);font-weight:600}.empty{color:var(--muted);padding:.8rem}
form.filter{display:flex;flex-wrap:wrap;gap:.4rem;margin:0 0 .5rem}form.filter input,form.filter select,form.filter button{font:inherit;padding:.3rem .5rem;color:var(--text);background:var(--panel);border:1px solid var(--muted);border-radius:4px}
${chartStyle(PALETTE.light)}
@media (prefers-color-scheme:dark){:root{${schemeVariables(PALETTE.dark)}}${chartStyle(PALETTE.dark)}}
`;

/** The status page: the last 24 hours, every ERP server, and up to SESSION_ROWS sessions. */
export function renderHtml(s: StatusSnapshot, options: RenderHtmlOptions = {}): string {
  const t = s.totals;
  const query = options.linkKey ? `?key=${encodeURIComponent(options.linkKey)}` : "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="${REFRESH_SECONDS}"><title>Protheus broker: ${t.sessionsActive} sessions</title>
<style>${STATUS_STYLE}</style></head><body>
<h1>Protheus broker-server</h1>
${metaLines(s)}
${options.history ? historySection(options.history) : ""}
<div class="cards">${cards(s)}</div>
<h2>ERP servers</h2>
<div class="wrap"><table><thead><tr><th>Server</th><th>Address</th><th>State</th><th>Sessions</th><th>Total</th><th>Weight</th><th>Last error</th></tr></thead>
<tbody>${serverRows(s.servers)}</tbody></table></div>
${s.cluster ? clusterSection(s.cluster) : ""}
${sessionsSection(s, options.filter ?? { client: "", server: "", state: "" }, options.linkKey ?? null)}
<p class="meta">Machine-readable: <a href="status.json${escapeHtml(query)}">status.json</a> · <a href="history.json${
    escapeHtml(query)
  }">history.json</a> · <a href="metrics${escapeHtml(query)}">metrics</a> (Prometheus)</p>
</body></html>
`;
}

/** The lines under the title: version, uptime, address, memory, configuration in force. */
function metaLines(s: StatusSnapshot): string {
  return `<div class="meta">version ${escapeHtml(s.version)} · up ${
    escapeHtml(formatAge(s.uptimeSeconds))
  } · listening on ${escapeHtml(s.listen)} · balancing ${escapeHtml(s.sortMethod)} · memory ${
    escapeHtml(formatBytes(s.memory.rss))
  } · refreshes every ${REFRESH_SECONDS} s</div>
<div class="meta">In force: ${escapeHtml(s.config.path)}${
    s.config.reloadedAt ? ` (reloaded ${escapeHtml(s.config.reloadedAt)})` : ""
  } · admission key ${s.config.admissionKey ? "set" : "not set"} · link ${
    s.config.linkTls ? "TLS" : "plain TCP"
  } · status page key ${s.config.statusAccessKey ? "set" : "not set"} · log ${escapeHtml(s.config.log)}</div>${
    s.config.pendingRestart.length > 0
      ? `\n<div class="meta"><span class="draining">Changed in the file, waiting for a restart: ${
        escapeHtml(s.config.pendingRestart.join(", "))
      }</span></div>`
      : ""
  }`;
}

/** The counters since start. */
function cards(s: StatusSnapshot): string {
  const t = s.totals;
  const card = (label: string, value: string | number) =>
    `<div class="card">${escapeHtml(label)}<b>${escapeHtml(value)}</b></div>`;
  return card("Active sessions", t.sessionsActive) + card("Opened", t.sessionsOpened) + card("Resumes", t.resumes) +
    card("Replaced while attached", t.resumesByTrigger.replacedWhileAttached) + card("Expired", t.sessionsExpired) +
    card("Ended by error", t.sessionsAborted) + card("To clients", formatBytes(t.bytesToClients)) +
    card("To ERP", formatBytes(t.bytesToErp)) + card("Replayed", formatBytes(t.bytesReplayed));
}

/** The cluster: this process's tag, the peers and the processes it took over from, and the relays. */
function clusterSection(c: ClusterStatus): string {
  const rows = c.peers.map((p) =>
    `<tr><td>${escapeHtml(p.name)}</td><td>${escapeHtml(p.address)}</td><td class="${p.reachable ? "up" : "down"}">${
      p.reachable ? "reachable" : "unreachable"
    }</td><td>${escapeHtml(p.version ?? "")}</td><td class="n">${p.pid ?? ""}</td><td class="n">${
      p.sessions ?? ""
    }</td><td class="err">${escapeHtml(p.error ?? "")}</td></tr>`
  ).join("");
  const handed = c.handedOverTo
    ? `<p class="headline lost">Taken over by broker-server ${
      escapeHtml(c.handedOverTo.version)
    } (pid ${c.handedOverTo.pid}) at ${
      escapeHtml(c.handedOverTo.since)
    }: this process takes no new sessions and exits when its last one ends.</p>`
    : "";
  return `<h2>Cluster</h2>${handed}
<div class="meta">holder tag ${escapeHtml(c.tag)} · ${
    c.listen ? `peers reach this one on ${escapeHtml(c.listen)}` : "no longer listening for peers"
  } · links passed to their holder ${c.relayedOut} (${c.relaying} open, ${c.relayFailed} failed) · relayed links received ${c.relayedIn}</div>
<div class="wrap"><table><thead><tr><th>Peer</th><th>Address</th><th>State</th><th>Version</th><th>Pid</th><th>Sessions</th><th>Last error</th></tr></thead>
<tbody>${
    rows || '<tr><td colspan="7" class="empty">No peers (PEER_&lt;suffix&gt;) configured</td></tr>'
  }</tbody></table></div>`;
}

/** The headline, the three charts and the flakiest clients and networks. */
function historySection(h: HistorySnapshot): string {
  const lost = h.totals.expired + h.totals.aborted > 0;
  return `<p class="headline${lost ? " lost" : ""}">${escapeHtml(headline(h))}</p>
<h2>Last 24 hours</h2>
<div class="charts">${sessionsChart(h)}${resumesChart(h)}${outagesChart(h)}</div>
<h2>Flakiest clients (24 h)</h2>
<div class="pair"><div class="wrap">${flakyTable("Client", h.flakiest.clients)}</div><div class="wrap">${
    flakyTable("Network", h.flakiest.networks)
  }</div></div>`;
}

/** One flakiest table: where the bad Wi-Fi is. */
function flakyTable(what: string, rows: FlakyRow[]): string {
  if (rows.length === 0) return `<div class="empty">No outages in the last 24 h.</div>`;
  return `<table><thead><tr><th>${what}</th><th>Outages</th><th>Lost</th><th>Total</th><th>Longest</th></tr></thead><tbody>${
    rows.map((r) =>
      `<tr><td>${escapeHtml(r.key)}</td><td class="n">${escapeHtml(formatCount(r.outages))}</td><td class="n">${
        escapeHtml(formatCount(r.lost))
      }</td><td class="n">${escapeHtml(formatOutage(r.totalSeconds))}</td><td class="n">${
        escapeHtml(formatOutage(r.longestSeconds))
      }</td></tr>`
    ).join("")
  }</tbody></table>`;
}

/** The sessions heading, the filter form and the table of up to SESSION_ROWS sessions. */
function sessionsSection(s: StatusSnapshot, filter: SessionFilter, linkKey: string | null): string {
  const picked = selectSessions(s.sessions, filter);
  const listed = picked.slice(0, SESSION_ROWS);
  const filtered = filter.client !== "" || filter.server !== "" || filter.state !== "";
  const query = linkKey ? `?key=${encodeURIComponent(linkKey)}` : "";
  const count = filtered ? `${picked.length} of ${s.sessions.length}` : `${s.sessions.length}`;
  const more = picked.length - listed.length;
  const table = listed.length === 0
    ? `<div class="empty">${filtered ? "No session matches the filter." : "No sessions."}</div>`
    : `<table><thead><tr><th>Session</th><th>Client</th><th>ERP server</th><th>State</th><th>Age</th><th>To client</th><th>To ERP</th><th>Resumes</th><th>Replay buffer (of ${
      escapeHtml(formatBytes(s.replayBufferBytes))
    })</th></tr></thead><tbody>${sessionRows(listed)}</tbody></table>`;
  return `<h2>Sessions (${count})</h2>
${filterForm(filter, linkKey)}
<div class="wrap">${table}${
    more > 0
      ? `<div class="empty">… and ${more} more sessions: see <a href="status.json${
        escapeHtml(query)
      }">status.json</a> for all of them.</div>`
      : ""
  }</div>`;
}

/** The filter form (a plain GET: no scripts); a page opened with ?key= keeps it. */
function filterForm(filter: SessionFilter, linkKey: string | null): string {
  const option = (value: string, words: string) =>
    `<option value="${value}"${filter.state === value ? " selected" : ""}>${words}</option>`;
  return `<form class="filter" method="get"><input name="client" value="${
    escapeHtml(filter.client)
  }" placeholder="client address" aria-label="client address"><input name="server" value="${
    escapeHtml(filter.server)
  }" placeholder="ERP server" aria-label="ERP server"><select name="state" aria-label="state">${
    option("", "any state") + option("detached", "detached") + option("attached", "attached")
  }</select>${
    linkKey ? `<input type="hidden" name="key" value="${escapeHtml(linkKey)}">` : ""
  }<button>Filter</button></form>`;
}

/** The ERP servers table's rows. */
function serverRows(list: StatusSnapshot["servers"]): string {
  return list.map((b) =>
    `<tr><td>${escapeHtml(b.name)}</td><td>${escapeHtml(b.address)}</td><td class="${b.health}">${b.health}${
      b.draining ? ` <span class="draining">draining</span>` : ""
    }</td>` +
    `<td class="n">${b.activeSessions}${
      b.maxSessions > 0 ? ` / ${b.maxSessions}` : ""
    }</td><td class="n">${b.totalSessions}</td>` +
    `<td class="n">${b.weight}</td><td class="err">${
      b.lastError ? `${escapeHtml(b.lastError.message)} <span class="meta">(${escapeHtml(b.lastError.at)})</span>` : ""
    }</td></tr>`
  ).join("");
}

/** The sessions table's rows. */
function sessionRows(list: StatusSnapshot["sessions"]): string {
  return list.map((x) =>
    `<tr><td><code>${escapeHtml(x.id)}</code></td><td>${escapeHtml(x.client)}</td><td>${escapeHtml(x.server)}</td>` +
    `<td class="${x.state}">${x.state} ${escapeHtml(formatAge(x.stateSeconds))}</td><td class="n">${
      escapeHtml(formatAge(x.ageSeconds))
    }</td>` +
    `<td class="n">${escapeHtml(formatBytes(x.bytesToClient))}</td><td class="n">${
      escapeHtml(formatBytes(x.bytesToErp))
    }</td>` +
    `<td class="n">${x.resumes}${
      x.resumes > 0 && x.lastLinkLoss ? ` (last: ${escapeHtml(x.lastLinkLoss)})` : ""
    }</td>` +
    `<td class="n">${escapeHtml(formatBytes(x.bufferedBytes))}</td></tr>`
  ).join("");
}

function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Prometheus text exposition of the snapshot. */
export function renderMetrics(s: StatusSnapshot): string {
  const out: string[] = [];
  const metric: MetricWriter = (name, type, help, samples) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`);
  };
  const t = s.totals;
  metric("broker_info", "gauge", "Version of broker-server.", [[`{version="${label(s.version)}"}`, 1]]);
  metric("broker_uptime_seconds", "gauge", "Seconds since broker-server started.", [["", s.uptimeSeconds]]);
  metric("broker_process_memory_bytes", "gauge", "Memory of the broker-server process, by kind.", [
    ['{kind="rss"}', s.memory.rss],
    ['{kind="heap_used"}', s.memory.heapUsed],
    ['{kind="heap_total"}', s.memory.heapTotal],
    ['{kind="external"}', s.memory.external],
  ]);
  const attached = s.sessions.filter((x) => x.state === "attached").length;
  metric("broker_sessions", "gauge", "Live sessions by state.", [
    ['{state="attached"}', attached],
    ['{state="detached"}', s.sessions.length - attached],
  ]);
  metric("broker_sessions_opened_total", "counter", "Sessions opened.", [["", t.sessionsOpened]]);
  metric("broker_sessions_closed_total", "counter", "Sessions ended, by cause.", [
    ['{cause="complete"}', t.sessionsCompleted],
    ['{cause="expired"}', t.sessionsExpired],
    ['{cause="aborted"}', t.sessionsAborted],
  ]);
  resumeMetrics(s, metric, out);
  metric("broker_relayed_bytes_total", "counter", "Application bytes relayed, by direction.", [
    ['{direction="to_client"}', t.bytesToClients],
    ['{direction="to_erp"}', t.bytesToErp],
  ]);
  metric("broker_replayed_bytes_total", "counter", "Bytes sent again to clients on resume.", [["", t.bytesReplayed]]);
  metric("broker_links_refused_total", "counter", "Links refused or dropped during their handshake.", [[
    "",
    t.linksRefused,
  ]]);
  metric("broker_links_handshaking", "gauge", "Links connected and still introducing themselves.", [[
    "",
    t.linksInHandshake,
  ]]);
  metric(
    "broker_replay_buffer_bytes",
    "gauge",
    "Bytes held in replay buffers (sent to clients, not yet acknowledged).",
    [["", s.sessions.reduce((n, x) => n + x.bufferedBytes, 0)]],
  );
  metric(
    "broker_buffered_bytes",
    "gauge",
    "Bytes held for live sessions (replay buffers and bytes waiting for the ERP), as MAX_BUFFERED counts them.",
    [["", t.bytesBuffered]],
  );
  metric("broker_buffered_limit_bytes", "gauge", "MAX_BUFFERED: new sessions wait above this.", [[
    "",
    s.maxBufferedBytes,
  ]]);
  backendMetrics(s.servers, metric);
  if (s.cluster) clusterMetrics(s.cluster, metric);
  return out.join("\n") + "\n";
}

type MetricWriter = (name: string, type: string, help: string, samples: [string, number][]) => void;

/** The resume counters and the histogram of how long sessions were detached (written to `out` as is). */
function resumeMetrics(s: StatusSnapshot, metric: MetricWriter, out: string[]): void {
  const t = s.totals;
  metric("broker_resumes_total", "counter", "Successful resumes.", [["", t.resumes]]);
  metric("broker_resumes_by_trigger_total", "counter", "Successful resumes by what ended the link before.", [
    ['{trigger="link error"}', t.resumesByTrigger.linkError],
    ['{trigger="silence"}', t.resumesByTrigger.silence],
    ['{trigger="replaced while attached"}', t.resumesByTrigger.replacedWhileAttached],
  ]);
  out.push(
    "# HELP broker_resume_duration_seconds Time sessions spent detached before resuming.",
    "# TYPE broker_resume_duration_seconds histogram",
  );
  for (const b of s.resumeDuration.buckets) out.push(`broker_resume_duration_seconds_bucket{le="${b.le}"} ${b.count}`);
  out.push(
    `broker_resume_duration_seconds_bucket{le="+Inf"} ${s.resumeDuration.count}`,
    `broker_resume_duration_seconds_sum ${s.resumeDuration.sum}`,
    `broker_resume_duration_seconds_count ${s.resumeDuration.count}`,
  );
}

/** The cluster's metrics: relays and peers. */
function clusterMetrics(c: ClusterStatus, metric: MetricWriter): void {
  metric(
    "broker_cluster_links_relayed_total",
    "counter",
    "Links passed on to the broker-server holding their session (out), or received from one (in).",
    [
      ['{direction="out"}', c.relayedOut],
      ['{direction="in"}', c.relayedIn],
    ],
  );
  metric("broker_cluster_relay_failures_total", "counter", "Links whose holder could not be reached or refused them.", [
    [
      "",
      c.relayFailed,
    ],
  ]);
  metric("broker_cluster_relays_open", "gauge", "Links passed on to their holder and still open.", [["", c.relaying]]);
  metric("broker_cluster_relayed_bytes_total", "counter", "Bytes carried by relays, by direction.", [
    ['{direction="to_holder"}', c.relayBytesToHolder],
    ['{direction="to_client"}', c.relayBytesToClient],
  ]);
  metric(
    "broker_cluster_peer_up",
    "gauge",
    "1 when the peer (or a process this one took over from) answered its last poll.",
    c.peers.map((p) => [`{peer="${label(p.name)}",address="${label(p.address)}"}`, p.reachable ? 1 : 0]),
  );
  metric("broker_cluster_handed_over", "gauge", "1 when a new process took over from this one.", [[
    "",
    c.handedOverTo ? 1 : 0,
  ]]);
}

/** The per-ERP-server metrics. */
function backendMetrics(servers: StatusSnapshot["servers"], metric: MetricWriter): void {
  const server = (b: StatusSnapshot["servers"][number]) => `server="${label(b.name)}",address="${label(b.address)}"`;
  metric(
    "broker_backend_up",
    "gauge",
    "ERP server health: 1 up, 0 down.",
    servers.map((b) => [`{${server(b)}}`, b.health === "up" ? 1 : 0]),
  );
  metric(
    "broker_backend_draining",
    "gauge",
    "1 when the ERP server was removed from the configuration and drains its sessions.",
    servers.map((b) => [`{${server(b)}}`, b.draining ? 1 : 0]),
  );
  metric(
    "broker_backend_sessions",
    "gauge",
    "Live sessions per ERP server.",
    servers.map((b) => [`{${server(b)}}`, b.activeSessions]),
  );
  metric(
    "broker_backend_sessions_total",
    "counter",
    "Sessions placed on each ERP server.",
    servers.map((b) => [`{${server(b)}}`, b.totalSessions]),
  );
}
