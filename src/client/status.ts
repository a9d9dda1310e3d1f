/**
 * broker-client's status for the helpdesk: what status.json holds (each
 * broker server and its link state, each session with its outages, the
 * outage going on now), the page that shows it, and the summary that
 * `broker-client --status` prints. Session metadata only: never a key, a
 * proof or a payload byte.
 * @module
 */

import { formatHostPort, type HostPort } from "../config/values.ts";
import type { Session } from "../session/session.ts";
import { escapeHtml, formatAge, formatBytes, REFRESH_SECONDS, STATUS_STYLE } from "../ops/status_render.ts";
import type { OutageHistory } from "./outages.ts";

/** What the status needs to know of one session in progress. */
export interface SessionView {
  /** The session's short id (8 hex digits, as in the log), or null while it opens. */
  id: string | null;
  /** Smart Client's address (the loopback and its port). */
  smartClient: string;
  /** The broker server that holds the session, once one welcomed it. */
  server: HostPort | null;
  /** When Smart Client connected (clock ms). */
  openedAt: number;
  session: Session;
  outages: OutageHistory;
  /** Rounds of opening attempts that failed so far, and why the last one did. */
  opening: { failedRounds: number; lastFailure: string };
}

/** The last error seen talking to a broker server. */
export interface LinkError {
  message: string;
  /** ISO 8601. */
  at: string;
}

/** What the status is built from. */
export interface ClientStatusSource {
  version: string;
  pid: number;
  /** When broker-client started (clock ms). */
  startedAt: number;
  configPath: string;
  /** Where Smart Client connects. */
  listen: HostPort;
  brokerServers: HostPort[];
  sessions: SessionView[];
  /** The last error per broker server ("host:port"). */
  linkErrors: ReadonlyMap<string, LinkError>;
  /** Now (clock ms). */
  now: number;
}

/** A broker server and broker-client's links to it (one per session). */
export interface ServerStatus {
  address: string;
  /** `connected` (every session's link is up), `reconnecting` (some are down), `no link` (no session uses it). */
  link: "connected" | "reconnecting" | "no link";
  sessions: number;
  attached: number;
  reconnecting: number;
  lastError: LinkError | null;
}

/** An outage going on: the session's link is down and broker-client redials. */
export interface OutageStatus {
  seconds: number;
  /** The resume window: past it, the session ends. */
  windowSeconds: number;
  /** What ended the link: `link error`, `silence`, `suspicion race won`. */
  trigger: string;
  /** Why the last attempt to resume failed, or null before any failed. */
  lastError: string | null;
}

/** One session, as status.json lists it. */
export interface SessionStatus {
  id: string | null;
  smartClient: string;
  server: string | null;
  /** `opening`, `attached`, `reconnecting`. */
  state: "opening" | "attached" | "reconnecting";
  stateSeconds: number;
  /** ISO 8601. */
  openedAt: string;
  ageSeconds: number;
  outagesHidden: number;
  longestOutageSeconds: number;
  bytesFromSmartClient: number;
  bytesToSmartClient: number;
  bytesReplayedToServer: number;
  bytesReplayedByServer: number;
  /** While reconnecting. */
  outage: OutageStatus | null;
  /** While opening: rounds over the broker servers that failed, and why the last did (null before any). */
  openingFailure: { rounds: number; reason: string } | null;
}

/** broker-client's status.json. */
export interface ClientStatus {
  program: "broker-client";
  version: string;
  pid: number;
  startedAt: string;
  uptimeSeconds: number;
  config: string;
  /** Where Smart Client connects. */
  listen: string;
  brokerServers: ServerStatus[];
  sessions: SessionStatus[];
  /** The longest outage going on, and how many sessions are reconnecting; null when none is. */
  outage: (OutageStatus & { sessions: number; summary: string }) | null;
}

/** Elapsed seconds; never negative, even when the wall clock stepped back. */
const seconds = (ms: number) => Math.round(Math.max(0, ms) / 1000);

/** "1 session", "2 sessions". */
const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

/** "reconnecting for 12 s, window 180 s". */
export function outageSummary(outage: OutageStatus): string {
  return `reconnecting for ${outage.seconds} s, window ${outage.windowSeconds} s`;
}

/** One session's status at `now`. */
function sessionStatus(view: SessionView, now: number): SessionStatus {
  const { session, outages } = view;
  const state = session.state === "connecting" ? "opening" : session.state === "detached" ? "reconnecting" : "attached";
  return {
    id: view.id,
    smartClient: view.smartClient,
    server: view.server ? formatHostPort(view.server) : null,
    state,
    stateSeconds: seconds(now - session.stateSince),
    openedAt: new Date(view.openedAt).toISOString(),
    ageSeconds: seconds(now - view.openedAt),
    outagesHidden: outages.hidden,
    longestOutageSeconds: Math.round(outages.longestMs / 100) / 10,
    bytesFromSmartClient: session.stats.bytesSent,
    bytesToSmartClient: session.stats.bytesReceived,
    bytesReplayedToServer: outages.replayedToServer,
    bytesReplayedByServer: outages.replayedByServer,
    outage: state === "reconnecting"
      ? {
        seconds: seconds(now - session.stateSince),
        windowSeconds: seconds(session.timers.resumeTimeoutMs),
        trigger: session.linkLoss ?? "link error",
        lastError: outages.lastAttemptError,
      }
      : null,
    openingFailure: state === "opening" && view.opening.failedRounds > 0
      ? { rounds: view.opening.failedRounds, reason: view.opening.lastFailure }
      : null,
  };
}

/** Each broker server with the sessions it holds. */
function serverStatus(source: ClientStatusSource, sessions: SessionStatus[]): ServerStatus[] {
  return source.brokerServers.map((server) => {
    const address = formatHostPort(server);
    const held = sessions.filter((s) => s.server === address && s.state !== "opening");
    const reconnecting = held.filter((s) => s.state === "reconnecting").length;
    return {
      address,
      link: reconnecting > 0 ? "reconnecting" : held.length > 0 ? "connected" : "no link",
      sessions: held.length,
      attached: held.length - reconnecting,
      reconnecting,
      lastError: source.linkErrors.get(address) ?? null,
    };
  });
}

/** The status at `source.now`. */
export function clientStatus(source: ClientStatusSource): ClientStatus {
  const sessions = source.sessions.map((view) => sessionStatus(view, source.now));
  const outages = sessions.flatMap((s) => s.outage ? [s.outage] : []);
  const longest = outages.reduce<OutageStatus | null>((a, b) => a && a.seconds >= b.seconds ? a : b, null);
  return {
    program: "broker-client",
    version: source.version,
    pid: source.pid,
    startedAt: new Date(source.startedAt).toISOString(),
    uptimeSeconds: seconds(source.now - source.startedAt),
    config: source.configPath,
    listen: formatHostPort(source.listen),
    brokerServers: serverStatus(source, sessions),
    sessions,
    outage: longest ? { ...longest, sessions: outages.length, summary: outageSummary(longest) } : null,
  };
}

/** Whether every session is attached: false while one reconnects, or opens and cannot reach a broker server. */
export function allAttached(status: ClientStatus): boolean {
  return status.sessions.every((s) => s.outage === null && s.openingFailure === null);
}

/** A session's state in a few words: "attached 5 min 2 s", "reconnecting for 12 s, window 180 s (silence)". */
function describeState(s: SessionStatus): string {
  if (s.outage) {
    const last = s.outage.lastError ? `; last attempt: ${s.outage.lastError}` : "";
    return `${outageSummary(s.outage)} (link lost: ${s.outage.trigger}${last})`;
  }
  if (s.openingFailure) return `opening, no broker server reached yet (${s.openingFailure.reason})`;
  return `${s.state} ${formatAge(s.stateSeconds)}`;
}

/** One line per session for the console. */
function sessionLine(s: SessionStatus): string {
  const hidden = s.outagesHidden > 0
    ? `${count(s.outagesHidden, "outage")} hidden (longest ${s.longestOutageSeconds} s)`
    : "no outage so far";
  return `  ${s.id ?? "(new)   "}  ${describeState(s)}\n` +
    `            opened ${s.openedAt} (${formatAge(s.ageSeconds)} ago) for Smart Client ${s.smartClient}` +
    `${s.server ? ` on ${s.server}` : ""}; ${hidden}; ${formatBytes(s.bytesFromSmartClient)} from Smart Client, ` +
    `${formatBytes(s.bytesToSmartClient)} to it`;
}

/** What `broker-client --status` prints: the program, each broker server, each session, and a verdict. */
export function statusText(status: ClientStatus): string {
  const lines = [
    `broker-client ${status.version} (process ${status.pid}), up ${formatAge(status.uptimeSeconds)}, ` +
    `Smart Client connects to ${status.listen}`,
    `Configuration: ${status.config}`,
    "Broker servers:",
    ...status.brokerServers.map((b) =>
      `  ${b.address}  ${b.link}${b.sessions > 0 ? ` (${b.attached} of ${b.sessions} sessions attached)` : ""}${
        b.lastError ? `; last error at ${b.lastError.at}: ${b.lastError.message}` : ""
      }`
    ),
    `Sessions (${status.sessions.length}):`,
    ...status.sessions.map(sessionLine),
  ];
  if (status.sessions.length === 0) lines.push("  none");
  if (status.outage) {
    lines.push(`Outage now: ${count(status.outage.sessions, "session")} ${status.outage.summary}`);
  } else if (!allAttached(status)) {
    lines.push("Not every session is attached: a new session cannot reach a broker server yet");
  } else {
    lines.push("Every session is attached.");
  }
  return lines.join("\n");
}

/** The sessions table's rows. */
function sessionRows(list: SessionStatus[]): string {
  return list.map((s) =>
    `<tr><td><code>${escapeHtml(s.id ?? "(new)")}</code></td><td>${escapeHtml(s.server ?? "")}</td>` +
    `<td class="${s.state === "reconnecting" ? "detached" : "attached"}">${escapeHtml(describeState(s))}</td>` +
    `<td>${escapeHtml(s.openedAt)} (${escapeHtml(formatAge(s.ageSeconds))})</td>` +
    `<td class="n">${s.outagesHidden}</td><td class="n">${s.longestOutageSeconds} s</td>` +
    `<td class="n">${escapeHtml(formatBytes(s.bytesFromSmartClient))}</td>` +
    `<td class="n">${escapeHtml(formatBytes(s.bytesToSmartClient))}</td></tr>`
  ).join("");
}

/** The broker servers table's rows. */
function serverRows(list: ServerStatus[]): string {
  return list.map((b) =>
    `<tr><td>${escapeHtml(b.address)}</td><td class="${b.link === "reconnecting" ? "detached" : "attached"}">${
      escapeHtml(b.link)
    }</td><td class="n">${b.attached} / ${b.sessions}</td><td class="err">${
      b.lastError ? `${escapeHtml(b.lastError.message)} <span class="meta">(${escapeHtml(b.lastError.at)})</span>` : ""
    }</td></tr>`
  ).join("");
}

/** broker-client's status page (refreshes itself, no scripts). */
export function renderClientHtml(s: ClientStatus): string {
  const outage = s.outage
    ? `<p class="detached">Outage now: ${count(s.outage.sessions, "session")} ${escapeHtml(s.outage.summary)}</p>`
    : `<p class="attached">${
      allAttached(s) ? "Every session is attached." : "A new session cannot reach a broker server yet."
    }</p>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="${REFRESH_SECONDS}"><title>broker-client: ${s.sessions.length} sessions</title>
<style>${STATUS_STYLE}</style></head><body>
<h1>Protheus broker-client</h1>
<div class="meta">version ${escapeHtml(s.version)} · process ${s.pid} · up ${escapeHtml(formatAge(s.uptimeSeconds))} ·
Smart Client connects to ${escapeHtml(s.listen)} · ${escapeHtml(s.config)} · refreshes every ${REFRESH_SECONDS} s</div>
${outage}
<h2>Broker servers</h2>
<div class="wrap"><table><thead><tr><th>Broker server</th><th>Link</th><th>Attached / sessions</th><th>Last error</th></tr></thead>
<tbody>${serverRows(s.brokerServers)}</tbody></table></div>
<h2>Sessions (${s.sessions.length})</h2>
<div class="wrap">${
    s.sessions.length === 0
      ? `<div class="empty">No sessions.</div>`
      : `<table><thead><tr><th>Session</th><th>Broker server</th><th>State</th><th>Opened</th><th>Outages hidden</th><th>Longest</th><th>From Smart Client</th><th>To Smart Client</th></tr></thead><tbody>${
        sessionRows(s.sessions)
      }</tbody></table>`
  }</div>
<p class="meta">Machine-readable: <a href="status.json">status.json</a></p>
</body></html>
`;
}
