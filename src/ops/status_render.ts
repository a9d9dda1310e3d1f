/**
 * Renders broker-server's status snapshot for people (an HTML page that refreshes itself,
 * readable on a phone, no scripts) and for Prometheus (text format 0.0.4).
 * Pure functions: snapshot in, text out.
 * @module
 */

import type { StatusSnapshot } from "../server/stats.ts";

/** Seconds between automatic refreshes of the HTML page. */
export const REFRESH_SECONDS = 5;

/** Most sessions listed on the HTML page; status.json lists them all. */
export const SESSION_ROWS = 100;

/** Options of renderHtml. */
export interface RenderHtmlOptions {
  /** The access key the page was opened with as `?key=`, kept in its links; null or absent otherwise. */
  linkKey?: string | null;
}

/** `text` safe inside HTML text and quoted attributes. */
export function escapeHtml(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
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

/** The style sheet of both programs' status pages. */
export const STATUS_STYLE = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1rem;color:#1d2733;background:#f5f7fa}
h1{font-size:1.3rem;margin:0 0 .25rem}h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.meta{color:#5b6b7c;font-size:.9rem}.cards{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:1rem}
.card{background:#fff;border-radius:6px;padding:.5rem .8rem;box-shadow:0 1px 2px #0002;min-width:7rem}
.card b{display:block;font-size:1.2rem}.wrap{overflow-x:auto;background:#fff;border-radius:6px;box-shadow:0 1px 2px #0002}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{padding:.4rem .6rem;text-align:left;white-space:nowrap;border-bottom:1px solid #e6eaef}
th{background:#eef2f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#0a7a32;font-weight:600}.down{color:#c4161c;font-weight:600}.draining{color:#a15c00;font-weight:600}
td.err{white-space:normal;min-width:14rem}.attached{color:#0a7a32}.detached{color:#a15c00;font-weight:600}.empty{color:#5b6b7c;padding:.8rem}
`;

/** The status page: every ERP server, the first SESSION_ROWS sessions. */
export function renderHtml(s: StatusSnapshot, options: RenderHtmlOptions = {}): string {
  const t = s.totals;
  const query = options.linkKey ? `?key=${encodeURIComponent(options.linkKey)}` : "";
  const card = (label: string, value: string | number) =>
    `<div class="card">${escapeHtml(label)}<b>${escapeHtml(value)}</b></div>`;
  const listed = s.sessions.slice(0, SESSION_ROWS);
  const unlisted = s.sessions.length - listed.length;
  const servers = serverRows(s.servers);
  const sessions = sessionRows(listed);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="${REFRESH_SECONDS}"><title>Protheus broker: ${t.sessionsActive} sessions</title>
<style>${STATUS_STYLE}</style></head><body>
<h1>Protheus broker-server</h1>
<div class="meta">version ${escapeHtml(s.version)} · up ${escapeHtml(formatAge(s.uptimeSeconds))} · listening on ${
    escapeHtml(s.listen)
  } · balancing ${escapeHtml(s.sortMethod)} · memory ${
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
  }
<div class="cards">${card("Active sessions", t.sessionsActive)}${card("Opened", t.sessionsOpened)}${
    card("Resumes", t.resumes)
  }${card("Replaced while attached", t.resumesByTrigger.replacedWhileAttached)}${card("Expired", t.sessionsExpired)}${
    card("Ended by error", t.sessionsAborted)
  }${card("To clients", formatBytes(t.bytesToClients))}${card("To ERP", formatBytes(t.bytesToErp))}${
    card("Replayed", formatBytes(t.bytesReplayed))
  }</div>
<h2>ERP servers</h2>
<div class="wrap"><table><thead><tr><th>Server</th><th>Address</th><th>State</th><th>Sessions</th><th>Total</th><th>Weight</th><th>Last error</th></tr></thead>
<tbody>${servers}</tbody></table></div>
<h2>Sessions (${s.sessions.length})</h2>
<div class="wrap">${
    s.sessions.length === 0
      ? `<div class="empty">No sessions.</div>`
      : `<table><thead><tr><th>Session</th><th>Client</th><th>ERP server</th><th>State</th><th>Age</th><th>To client</th><th>To ERP</th><th>Resumes</th><th>Replay buffer (of ${
        escapeHtml(formatBytes(s.replayBufferBytes))
      })</th></tr></thead><tbody>${sessions}</tbody></table>${
        unlisted > 0
          ? `<div class="empty">… and ${unlisted} more sessions: see <a href="status.json${
            escapeHtml(query)
          }">status.json</a> for all of them.</div>`
          : ""
      }`
  }</div>
<p class="meta">Machine-readable: <a href="status.json${escapeHtml(query)}">status.json</a> · <a href="metrics${
    escapeHtml(query)
  }">metrics</a> (Prometheus)</p>
</body></html>
`;
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
  return out.join("\n") + "\n";
}

type MetricWriter = (name: string, type: string, help: string, samples: [string, number][]) => void;

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
