/**
 * broker-server's counters and the status snapshot that the status page,
 * /status.json and /metrics are rendered from. Pure data: the server feeds
 * it events and live figures, and buildStatus() puts them together.
 * @module
 */

import type { ServerConfig } from "../config/server_config.ts";
import { describeLogSettings } from "../config/logging.ts";
import { formatHostPort } from "../config/values.ts";
import { VERSION } from "../version.ts";
import type { Backend } from "./balancer.ts";
import { type ServerSessionInfo, shortId } from "./registry.ts";
import type { LinkLoss, SessionStats } from "../session/session.ts";

/**
 * A server session's bytes in the administrator's terms: the session sends
 * what it reads from the ERP (to the client) and receives what it writes
 * to the ERP. The one place where the session's names meet the server's.
 */
export function erpTraffic(stats: SessionStats): { toClient: number; toErp: number } {
  return { toClient: stats.bytesSent, toErp: stats.bytesReceived };
}

/** Upper bounds (s) of the resume duration histogram buckets. */
export const RESUME_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 180];

/**
 * Resumes counted by what ended the link before: its error or end, its
 * silence, or a new link from the client while it was still attached (the
 * client noticed first: a roam, or a half-open link).
 */
export interface ResumesByTrigger {
  linkError: number;
  silence: number;
  replacedWhileAttached: number;
}

/** Counters since start. */
export class ServerStats {
  /** When the server started (clock ms). */
  readonly startedAt: number;
  /** Sessions opened. */
  sessionsOpened = 0;
  /** Successful resumes. */
  resumes = 0;
  /** Successful resumes by what ended the link before. */
  readonly resumesByTrigger: ResumesByTrigger = { linkError: 0, silence: 0, replacedWhileAttached: 0 };
  /** Sessions ended cleanly (both streams finished). */
  sessionsCompleted = 0;
  /** Sessions ended because the resume window passed. */
  sessionsExpired = 0;
  /** Sessions ended by an error or by the peer. */
  sessionsAborted = 0;
  /** Links refused or dropped during their handshake. */
  linksRefused = 0;
  /** Bytes of ended sessions, ERP to client. */
  endedBytesToClient = 0;
  /** Bytes of ended sessions, client to ERP. */
  endedBytesToErp = 0;
  /** Bytes replayed to clients by ended sessions. */
  endedBytesReplayed = 0;
  /** Resume durations: counts per bucket (cumulative on output), sum and count. */
  readonly resumeHistogram = { buckets: RESUME_BUCKETS.map(() => 0), sum: 0, count: 0 };

  /** Starts counting at `startedAt`. */
  constructor(startedAt: number) {
    this.startedAt = startedAt;
  }

  /** A session resumed after `seconds` away; `trigger`: what ended its link before. */
  recordResume(seconds: number, trigger: LinkLoss | null): void {
    this.resumes++;
    if (trigger === "silence") this.resumesByTrigger.silence++;
    else if (trigger === "replaced while attached") this.resumesByTrigger.replacedWhileAttached++;
    else this.resumesByTrigger.linkError++;
    const h = this.resumeHistogram;
    h.sum += seconds;
    h.count++;
    const i = RESUME_BUCKETS.findIndex((upper) => seconds <= upper);
    if (i >= 0) h.buckets[i] = (h.buckets[i] ?? 0) + 1;
  }

  /** A session ended. */
  recordEnd(
    cause: "complete" | "expired" | "aborted",
    bytes: { toClient: number; toErp: number; replayed: number },
  ): void {
    if (cause === "complete") this.sessionsCompleted++;
    else if (cause === "expired") this.sessionsExpired++;
    else this.sessionsAborted++;
    this.endedBytesToClient += bytes.toClient;
    this.endedBytesToErp += bytes.toErp;
    this.endedBytesReplayed += bytes.replayed;
  }
}

/** One ERP server in the status. */
export interface ServerStatus {
  /** Key, e.g. REMOTE_SERVER_01. */
  name: string;
  /** host:port. */
  address: string;
  /** up, down or draining (draining wins: see health for the health of a draining server). */
  state: "up" | "down" | "draining";
  /** up or down, draining or not. */
  health: "up" | "down";
  /** Removed from the configuration, finishing its sessions. */
  draining: boolean;
  /** Weight. */
  weight: number;
  /** Most sessions, 0 for no limit. */
  maxSessions: number;
  /** Sessions now. */
  activeSessions: number;
  /** Sessions since start. */
  totalSessions: number;
  /** Last connect or probe error. */
  lastError: { message: string; at: string } | null;
}

/** One session in the status. */
export interface SessionStatus {
  /** Short id (8 hex digits). */
  id: string;
  /** Broker-client address of the latest link. */
  client: string;
  /** ERP server key. */
  server: string;
  /** attached or detached. */
  state: "attached" | "detached";
  /** Seconds in that state. */
  stateSeconds: number;
  /** Seconds since opened. */
  ageSeconds: number;
  /** Bytes ERP to client. */
  bytesToClient: number;
  /** Bytes client to ERP. */
  bytesToErp: number;
  /** Resumes so far. */
  resumes: number;
  /**
   * What ended the link before the latest resume (or, while detached, the
   * link just lost): "link error", "silence" or "replaced while attached";
   * null before any.
   */
  lastLinkLoss: string | null;
  /** Replay buffer in use (bytes). */
  bufferedBytes: number;
}

/** Everything the status page shows; also /status.json. */
export interface StatusSnapshot {
  /** Program version. */
  version: string;
  /** Start time (ISO 8601). */
  startedAt: string;
  /** Seconds since start. */
  uptimeSeconds: number;
  /** Where broker-clients connect. */
  listen: string;
  /** Memory of the broker-server process (bytes), as Deno.memoryUsage() reports it. */
  memory: {
    /** Resident set size: what the operating system charges the process. */
    rss: number;
    /** JavaScript heap in use. */
    heapUsed: number;
    /** JavaScript heap reserved. */
    heapTotal: number;
    /** Memory outside the heap held by JavaScript objects (read buffers, mostly). */
    external: number;
  };
  /** Balancing method. */
  sortMethod: string;
  /** Replay buffer cap per session and direction (bytes). */
  replayBufferBytes: number;
  /** MAX_BUFFERED: above this many bytes held for sessions (`totals.bytesBuffered`), new sessions wait. */
  maxBufferedBytes: number;
  /** ERP servers. */
  servers: ServerStatus[];
  /** Live sessions. */
  sessions: SessionStatus[];
  /** Counters since start, including live sessions' bytes. */
  totals: {
    sessionsOpened: number;
    sessionsActive: number;
    resumes: number;
    resumesByTrigger: ResumesByTrigger;
    sessionsCompleted: number;
    sessionsExpired: number;
    sessionsAborted: number;
    linksRefused: number;
    linksInHandshake: number;
    bytesToClients: number;
    bytesToErp: number;
    bytesReplayed: number;
    /** Bytes held for live sessions now (replay buffers and bytes waiting for the ERP): what MAX_BUFFERED limits. */
    bytesBuffered: number;
  };
  /** Resume durations: cumulative counts per `le` bucket (s), sum and count. */
  resumeDuration: { buckets: { le: number; count: number }[]; sum: number; count: number };
  /** The configuration in force (after reloads; secrets only as set or not). */
  config: ConfigStatus;
  /** The cluster (peers, relays, hand-over), or null without CLUSTER_KEY. */
  cluster: ClusterStatus | null;
}

/** The cluster as the status page shows it (docs/cluster.md). */
export interface ClusterStatus {
  /** This process's holder tag: the last 8 hex digits of its session ids. */
  tag: string;
  /** Where peers reach this one (host:port), or null when it no longer listens (handed over). */
  listen: string | null;
  /** The process that took over from this one, or null. */
  handedOverTo: { version: string; pid: number; since: string } | null;
  /** Peers (PEER_<suffix>) and the processes this one took over from. */
  peers: {
    name: string;
    address: string;
    reachable: boolean;
    version: string | null;
    pid: number | null;
    sessions: number | null;
    error: string | null;
  }[];
  /** Links passed on to the holder of their session. */
  relayedOut: number;
  /** Relayed links received for sessions held here. */
  relayedIn: number;
  /** Links whose holder could not be reached or refused. */
  relayFailed: number;
  /** Relays under way (links passed on, still open). */
  relaying: number;
  /** Bytes carried by relays so far, each way. */
  relayBytesToHolder: number;
  relayBytesToClient: number;
}

/** The configuration in force, as the status page shows it. */
export interface ConfigStatus {
  /** The configuration file. */
  path: string;
  /** When a reload last applied it (ISO 8601), or null when none has since start. */
  reloadedAt: string | null;
  /** An admission key is in force. */
  admissionKey: boolean;
  /** The link uses TLS. */
  linkTls: boolean;
  /** The status page needs a key. */
  statusAccessKey: boolean;
  /** Log level, format and file, in words. */
  log: string;
  /** Keys changed in the file that take a restart (or a re-install); their running values stay. */
  pendingRestart: string[];
}

/** The process's memory figures; zeros where the platform cannot tell. */
function processMemory(): StatusSnapshot["memory"] {
  try {
    const { rss, heapUsed, heapTotal, external } = Deno.memoryUsage();
    return { rss, heapUsed, heapTotal, external };
  } catch {
    return { rss: 0, heapUsed: 0, heapTotal: 0, external: 0 };
  }
}

/** What a status snapshot is built from. */
export interface StatusSources {
  /** Clock ms now. */
  now: number;
  /** The counters. */
  stats: ServerStats;
  /** Where broker-clients connect (host:port). */
  listen: string;
  /** The configuration in force. */
  config: ServerConfig;
  /** When a reload last applied it (clock ms), or null. */
  reloadedAt: number | null;
  /** Keys that take a restart. */
  pendingRestart: readonly string[];
  /** Balancing method. */
  sortMethod: string;
  /** The ERP servers. */
  backends: readonly Backend[];
  /** Live sessions. */
  sessions: readonly ServerSessionInfo[];
  /** Links in handshake now. */
  linksInHandshake: number;
  /** The cluster, or null. */
  cluster: ClusterStatus | null;
}

/** The figures of the status page, /status.json and /metrics. */
export function buildStatus(from: StatusSources): StatusSnapshot {
  const { now, stats, config } = from;
  let cumulative = 0;
  return {
    version: VERSION,
    startedAt: new Date(stats.startedAt).toISOString(),
    uptimeSeconds: Math.round((now - stats.startedAt) / 1000),
    listen: from.listen,
    memory: processMemory(),
    sortMethod: from.sortMethod,
    replayBufferBytes: config.tuning.replayBufferBytes,
    maxBufferedBytes: config.limits.maxBufferedBytes,
    servers: from.backends.map(serverStatus),
    sessions: from.sessions.map((e) => sessionStatus(e, now)),
    totals: totals(from),
    resumeDuration: {
      buckets: RESUME_BUCKETS.map((le, i) => ({ le, count: cumulative += stats.resumeHistogram.buckets[i] ?? 0 })),
      sum: stats.resumeHistogram.sum,
      count: stats.resumeHistogram.count,
    },
    config: {
      path: config.path,
      reloadedAt: from.reloadedAt === null ? null : new Date(from.reloadedAt).toISOString(),
      admissionKey: config.admissionKey !== null,
      linkTls: config.tls !== null,
      statusAccessKey: config.status.accessKey !== null,
      log: describeLogSettings(config.log),
      pendingRestart: [...from.pendingRestart],
    },
    cluster: from.cluster,
  };
}

/** One ERP server's status. */
function serverStatus(b: Backend): ServerStatus {
  return {
    name: b.server.name,
    address: formatHostPort(b.server),
    state: b.draining ? "draining" : b.health,
    health: b.health,
    draining: b.draining,
    weight: b.server.weight,
    maxSessions: b.server.maxSessions,
    activeSessions: b.active,
    totalSessions: b.total,
    lastError: b.lastError ? { message: b.lastError.message, at: new Date(b.lastError.at).toISOString() } : null,
  };
}

/** One live session's status. */
function sessionStatus(e: ServerSessionInfo, now: number): SessionStatus {
  return {
    id: shortId(e.id),
    client: e.client,
    server: e.backend.server.name,
    state: e.session.state === "attached" ? "attached" : "detached",
    stateSeconds: Math.round((now - e.session.stateSince) / 1000),
    ageSeconds: Math.round((now - e.openedAt) / 1000),
    bytesToClient: erpTraffic(e.session.stats).toClient,
    bytesToErp: erpTraffic(e.session.stats).toErp,
    resumes: e.session.stats.resumes,
    lastLinkLoss: e.session.linkLoss,
    bufferedBytes: e.session.bufferedBytes,
  };
}

/** Counters since start, with the live sessions' bytes. */
function totals(from: StatusSources): StatusSnapshot["totals"] {
  const { stats, sessions } = from;
  const sum = (pick: (e: ServerSessionInfo) => number) => sessions.reduce((n, e) => n + pick(e), 0);
  return {
    sessionsOpened: stats.sessionsOpened,
    sessionsActive: sessions.length,
    resumes: stats.resumes,
    resumesByTrigger: { ...stats.resumesByTrigger },
    sessionsCompleted: stats.sessionsCompleted,
    sessionsExpired: stats.sessionsExpired,
    sessionsAborted: stats.sessionsAborted,
    linksRefused: stats.linksRefused,
    linksInHandshake: from.linksInHandshake,
    bytesToClients: stats.endedBytesToClient + sum((e) => erpTraffic(e.session.stats).toClient),
    bytesToErp: stats.endedBytesToErp + sum((e) => erpTraffic(e.session.stats).toErp),
    bytesReplayed: stats.endedBytesReplayed + sum((e) => e.session.stats.bytesReplayed),
    bytesBuffered: sum((e) => e.session.bufferedBytes + e.session.pendingLocalBytes),
  };
}
