/**
 * The broker-servers of one site, as this one sees them (docs/cluster.md).
 *
 * Every session id ends with the holder tag of the process that holds it
 * (random per process start). A resume that reaches a broker-server whose
 * tag it does not carry is relayed, byte for byte, to the process that
 * holds it: a peer (`PEER_<suffix>`), or a process on this host that this
 * one took over from (a predecessor). The holder runs the handshake, so the
 * relaying side needs no session secret, and the client's resume proof
 * proves to the holder what it would prove directly.
 *
 * Peers prove the cluster key to each other on every connection
 * (wire.ts). This module listens for them, asks each peer every few seconds
 * which tags it reaches, relays, and hands over to a new process.
 * @module
 */

import type { ClusterConfig } from "../config/cluster.ts";
import { formatHostPort, type HostPort, isLoopback, parseHostPort } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import type { NetConn, NetListener, Network } from "../session/network.ts";
import { closeQuietly, describeError, writeAll } from "../session/transport.ts";
import { acceptPeer, dialPeer, type PeerProof, readExact, sendReply } from "./peer_conn.ts";
import { acceptLoop, type AcceptNote, openFileLimit, SERVER_DESCRIPTOR_ADVICE } from "../ops/accept_errors.ts";
import { LogBudget } from "../ops/log_budget.ts";
import { peerText } from "../ops/peer_text.ts";
import { sourceOf } from "../server/rate_limit.ts";
import { type RelayCounts, splice } from "./relay.ts";
import {
  type Handover,
  importClusterKey,
  parseHandover,
  parseOpeningAnswer,
  parsePeerInfo,
  parseRelayAnswer,
  type PeerInfo,
  type PeerRequest,
  type Predecessor,
} from "./wire.ts";
import { MAGIC, PREFACE_SIZE } from "../protocol/frames.ts";
import type { Transport } from "../session/transport.ts";

const log = logger("cluster");

/** How often each peer and predecessor is asked what it holds (ms). */
export const PEER_POLL_MS = 5_000;
/** Time a peer has to answer, and a relay to be granted (ms). */
export const PEER_TIMEOUT_MS = 3_000;
/**
 * Most connections on the peer port that have not proven the key yet, in
 * all and per address. A peer passes a burst of resumes on after a network
 * blink, but each proves the key within a round trip; those over the cap
 * are refused as unavailable, and their clients try again.
 */
const MAX_UNPROVEN = 256;
const MAX_UNPROVEN_PER_ADDRESS = 64;

/** Sends the (signed) reply to a peer's request. */
type Reply = (message: unknown) => Promise<void>;

/** Time a peer has to say whether it holds an opening (ms): every new session waits for the answers. */
export const OPENING_QUERY_MS = 1_000;
/** Time a peer gives the processes it took over from to answer the same (ms): within OPENING_QUERY_MS. */
const PREDECESSOR_QUERY_MS = 500;
/** A tag nobody claims makes this side ask every peer again, at most this often (ms). */
const REFRESH_MIN_MS = 1_000;

/** A peer or predecessor as the status page shows it. */
export interface PeerState {
  /** PEER_<suffix>, or "predecessor". */
  name: string;
  /** Where it is reached. */
  address: string;
  /** Whether its last poll answered. */
  reachable: boolean;
  /** What its last poll said, when it answered. */
  info: PeerInfo | null;
  /** Why its last poll failed. */
  error: string | null;
}

/** The figures /metrics counts. */
export interface ClusterCounts {
  /** Links this side passed on to the holder of their session. */
  relayedOut: number;
  /** Relayed links this side received for its own sessions. */
  relayedIn: number;
  /** Links whose holder could not be reached, or refused the relay. */
  relayFailed: number;
  /** Relays under way now (this side passing links on). */
  relaying: number;
  /** Bytes carried by relays so far, each way. */
  bytes: RelayCounts;
}

/** Options of a Cluster. */
export interface ClusterOptions {
  config: ClusterConfig;
  network: Network;
  /** This process's holder tag (8 hex digits). */
  tag: string;
  version: string;
  /** Live sessions now. */
  sessions: () => number;
  /** Whether this process holds, or is opening, the session of an open token (hex). */
  holdsOpening: (token: string) => boolean;
  /** A relayed link for one of our sessions: run the normal handshake on it. */
  adopt: (conn: NetConn) => void;
  /** The new process that took over has bound the ports. */
  settled: () => void;
  /** A new process took over: stop accepting (it binds the ports once this resolves). */
  takenOver: (by: { version: string; pid: number }) => Promise<void>;
  /** The processes this one took over from. */
  predecessors: Predecessor[];
}

/** Where a tag's holder is reached. */
interface Route {
  hostname: string;
  port: number;
  /** For logs: PEER_B, or "predecessor (pid 1234)". */
  name: string;
}

/** What became of a link offered to the cluster. */
export type RelayOutcome =
  | { kind: "relayed" }
  | { kind: "unknown"; reason: string }
  | { kind: "unavailable"; reason: string };

/** The cluster as seen from one broker-server. */
export class Cluster {
  #options: ClusterOptions;
  #key: Promise<CryptoKey>;
  #listener: NetListener | null = null;
  #handoverListener: NetListener | null = null;
  #accepting: Promise<void>[] = [];
  #peers = new Map<string, PeerState>();
  #routes = new Map<string, Route>();
  #predecessors: Predecessor[];
  #pollTimer: ReturnType<typeof setInterval> | undefined;
  #lastRefresh = -Infinity;
  #open = new Set<Transport>();
  #serving = new Set<Promise<void>>();
  #polling: Promise<void> | null = null;
  #unproven = new Map<string, number>();
  #unprovenTotal = 0;
  #refusals = new LogBudget(20, 10_000);
  #stop = new AbortController();
  #closed = false;
  #handedOver = false;
  #counts: ClusterCounts = {
    relayedOut: 0,
    relayedIn: 0,
    relayFailed: 0,
    relaying: 0,
    bytes: { toHolder: 0, toClient: 0 },
  };

  /** A cluster member with the options above; call listen(). */
  constructor(options: ClusterOptions) {
    this.#options = options;
    this.#key = importClusterKey(options.config.key);
    this.#predecessors = [...options.predecessors];
    for (const peer of options.config.peers) {
      this.#peers.set(peer.name, {
        name: peer.name,
        address: formatHostPort(peer),
        reachable: false,
        info: null,
        error: "not asked yet",
      });
    }
    for (const p of this.#predecessors) this.#addPredecessorState(p);
  }

  /** This process's holder tag. */
  get tag(): string {
    return this.#options.tag;
  }

  /** Where peers reach this one, once listening. */
  get address(): HostPort | null {
    const addr = this.#listener?.addr as Deno.NetAddr | undefined;
    return addr ? { hostname: addr.hostname, port: addr.port } : null;
  }

  /** Peers and predecessors, for the status page. */
  get peers(): PeerState[] {
    return [...this.#peers.values()];
  }

  /** Relay counters. */
  get counts(): Readonly<ClusterCounts> {
    return this.#counts;
  }

  /** Whether a new process took over from this one. */
  get handedOver(): boolean {
    return this.#handedOver;
  }

  /** Binds CLUSTER_ADDRESS:CLUSTER_PORT (throws as Deno.listen does) and starts asking the peers. */
  listen(): void {
    this.#bind();
    log.info("cluster: listening for peers on {address}; holder tag {tag}; peers: {peers}", {
      address: formatHostPort(this.address as HostPort),
      tag: this.tag,
      peers: this.#options.config.peers.map((p) => `${p.name}=${formatHostPort(p)}`).join(", ") || "none",
    });
    this.#poll();
    this.#pollTimer = setInterval(() => this.#poll(), PEER_POLL_MS);
  }

  #bind(): void {
    const { hostname, port } = this.#options.config.listen;
    this.#listener = this.#options.network.listen({ hostname, port });
    this.#accepting.push(this.#acceptFrom(this.#listener, false));
  }

  /**
   * Listens on CLUSTER_PORT again after a handover whose new process never
   * took the ports (it failed to start): this process is the one in charge
   * again. Throws as Deno.listen does.
   */
  reclaim(): void {
    this.#bind();
    this.#handedOver = false;
  }

  #acceptFrom(listener: NetListener, handover: boolean): Promise<void> {
    const options = {
      what: "peer connections",
      advice: SERVER_DESCRIPTOR_ADVICE,
      openFileLimit,
      signal: this.#stop.signal,
      log: (note: AcceptNote) => log[note.level](note.message, note.fields),
    };
    return acceptLoop(listener, options, (conn) => {
      const serving = this.#serve(conn, handover).catch(() => {});
      this.#serving.add(serving);
      serving.finally(() => this.#serving.delete(serving));
    });
  }

  /** Counts a connection that has not proven the key yet; false (close it) when its address or everyone is over the cap. */
  #admitUnproven(source: string): boolean {
    const mine = this.#unproven.get(source) ?? 0;
    if (mine >= MAX_UNPROVEN_PER_ADDRESS || this.#unprovenTotal >= MAX_UNPROVEN) return false;
    this.#unproven.set(source, mine + 1);
    this.#unprovenTotal++;
    return true;
  }

  #proven(source: string): void {
    const mine = (this.#unproven.get(source) ?? 1) - 1;
    if (mine <= 0) this.#unproven.delete(source);
    else this.#unproven.set(source, mine);
    this.#unprovenTotal--;
  }

  #refused(from: string, error: string): void {
    const heldBack = this.#refusals.spend();
    if (heldBack === null) return;
    log.warn("cluster: refused a connection from {from}: {error}{heldBack}", {
      from,
      error: peerText(error),
      heldBack: heldBack > 0 ? ` (${heldBack} more refused before this one)` : "",
    });
  }

  /** One peer connection: proofs, then its request. */
  async #serve(conn: NetConn, handover: boolean): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const from = formatHostPort(remote);
    const source = sourceOf(remote.hostname);
    if (this.#closed || !this.#admitUnproven(source)) {
      this.#refused(from, "too many peer connections that have not proven the cluster key yet");
      return closeQuietly(conn);
    }
    this.#open.add(conn);
    let request: PeerRequest;
    let proof: PeerProof;
    try {
      ({ request, proof } = await acceptPeer(conn, await this.#key, PEER_TIMEOUT_MS));
    } catch (err) {
      this.#open.delete(conn);
      this.#refused(from, describeError(err));
      return closeQuietly(conn);
    } finally {
      this.#proven(source);
    }
    try {
      const reply = (message: unknown) => sendReply(conn, proof, message);
      if (request.op === "hello") await this.#answerHello(reply, handover);
      else if (request.op === "opening") await reply(await this.#answerOpening(request.token, handover));
      else if (request.op === "settled") {
        await reply({ ok: handover });
        if (handover) this.#options.settled();
      } else if (request.op === "relay") {
        this.#open.delete(conn);
        return await this.#answerRelay(conn, reply, request, handover);
      } else await this.#answerTakeover(conn, reply, request, from, handover);
    } catch (err) {
      log.warn("cluster: a {op} request from {from} failed: {error}", {
        op: request.op,
        from,
        error: describeError(err),
      });
    } finally {
      this.#open.delete(conn);
    }
    closeQuietly(conn);
  }

  /** Who we are; through the handover port, only our own tag (the new process reaches our predecessors itself). */
  async #answerHello(reply: Reply, viaHandover: boolean): Promise<void> {
    const info: PeerInfo = {
      tag: this.tag,
      version: this.#options.version,
      pid: Deno.pid,
      sessions: this.#options.sessions(),
      holders: viaHandover ? [this.tag] : [this.tag, ...this.#predecessors.map((p) => p.tag)],
    };
    await reply(info);
  }

  /**
   * Whether this process holds or opens `token`; if not (and not asked
   * through the handover port), whether a process it took over from does:
   * a relay to that tag reaches it through this one.
   */
  async #answerOpening(token: string, viaHandover: boolean): Promise<{ held: boolean; tag: string }> {
    if (this.#options.holdsOpening(token)) return { held: true, tag: this.tag };
    if (viaHandover || this.#predecessors.length === 0) return { held: false, tag: this.tag };
    const asked = this.#predecessors.map((p) =>
      this.#askOpening(predecessorName(p), { hostname: "127.0.0.1", port: p.port }, token, PREDECESSOR_QUERY_MS)
    );
    try {
      const { tag } = await Promise.any(asked);
      return { held: true, tag };
    } catch {
      return { held: false, tag: this.tag };
    }
  }

  /** Asks the process at `at` whether it holds `token`; rejects when not (or no answer within `ms`). */
  async #askOpening(name: string, at: HostPort, token: string, ms: number): Promise<{ tag: string; route: Route }> {
    const { conn, reply } = await dialPeer(at.hostname, at.port, { op: "opening", token }, {
      network: this.#options.network,
      key: await this.#key,
      timeoutMs: ms,
      signal: this.#stop.signal,
    });
    closeQuietly(conn);
    const answer = parseOpeningAnswer(reply);
    if (!answer.held) throw new Error("not held");
    return { tag: answer.tag, route: { ...at, name } };
  }

  /** A relay for a session we hold is handed to the server; one for a predecessor's goes on to it. */
  async #answerRelay(
    conn: NetConn,
    reply: Reply,
    request: { tag: string; client: string },
    viaHandover: boolean,
  ): Promise<void> {
    if (request.tag === this.tag) {
      let client: HostPort;
      try {
        client = parseHostPort(request.client);
      } catch {
        await reply({ ok: false, reason: "malformed client address" });
        return closeQuietly(conn);
      }
      await reply({ ok: true });
      this.#counts.relayedIn++;
      this.#options.adopt(relayedConn(conn, client));
      return;
    }
    // Through the handover port only our own sessions: the new process relays to each predecessor directly.
    const predecessor = viaHandover ? undefined : this.#predecessors.find((p) => p.tag === request.tag);
    if (!predecessor) {
      await reply({ ok: false, reason: `no process here holds tag ${request.tag}` });
      return closeQuietly(conn);
    }
    const route = { hostname: "127.0.0.1", port: predecessor.port, name: predecessorName(predecessor) };
    let onward: NetConn;
    try {
      onward = await this.#dialRelay(route, request);
    } catch (err) {
      await reply({ ok: false, reason: describeError(err) }).catch(() => {});
      return closeQuietly(conn);
    }
    await reply({ ok: true });
    await this.#splice(conn, onward);
  }

  /** A new process on this host asks to take over: tell it where we are, then stop accepting. */
  async #answerTakeover(
    conn: NetConn,
    reply: Reply,
    request: { version: string; pid: number },
    from: string,
    viaHandover: boolean,
  ): Promise<void> {
    const remote = (conn.remoteAddr as Deno.NetAddr).hostname;
    const local = isLoopback(remote) || this.#localAddresses().includes(remote);
    if (viaHandover || this.#handedOver || !local) {
      const reason = !local ? "a takeover must come from this host" : "this process has already handed over to another";
      await reply({ ok: false, reason });
      return;
    }
    this.#handedOver = true;
    this.#handoverListener ??= this.#openHandoverListener();
    const own: Predecessor = {
      tag: this.tag,
      port: (this.#handoverListener.addr as Deno.NetAddr).port,
      version: this.#options.version,
      pid: Deno.pid,
    };
    const answer: Handover = { ok: true, predecessors: [own, ...this.#predecessors] };
    log.info(
      "cluster: broker-server {version} (pid {pid}, from {from}) takes over; this process ({own}) stops accepting and keeps its {sessions} sessions until they end",
      {
        version: request.version,
        pid: request.pid,
        from,
        own: this.#options.version,
        sessions: this.#options.sessions(),
      },
    );
    await reply(answer);
    closeQuietly(conn);
    await this.#options.takenOver(request);
    this.#listener?.close();
    this.#listener = null;
  }

  /** The loopback port the new process relays our sessions' links to. */
  #openHandoverListener(): NetListener {
    const listener = this.#options.network.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting.push(this.#acceptFrom(listener, true));
    return listener;
  }

  #localAddresses(): string[] {
    try {
      return this.#options.network.addresses();
    } catch {
      return [];
    }
  }

  /** Asks every peer and predecessor what it holds. */
  #poll(): Promise<void> {
    if (this.#polling) return this.#polling;
    this.#lastRefresh = performance.now();
    const asks = [
      ...this.#options.config.peers.map((p) => this.#ask(p.name, { hostname: p.hostname, port: p.port })),
      ...this.#predecessors.map((p) => this.#ask(predecessorName(p), { hostname: "127.0.0.1", port: p.port })),
    ];
    this.#polling = Promise.all(asks).then(() => {}).finally(() => this.#polling = null);
    return this.#polling;
  }

  async #ask(name: string, at: HostPort): Promise<void> {
    const state = this.#peers.get(name);
    if (!state || this.#closed) return;
    try {
      const { conn, reply } = await dialPeer(at.hostname, at.port, { op: "hello" }, {
        network: this.#options.network,
        key: await this.#key,
        timeoutMs: PEER_TIMEOUT_MS,
        signal: this.#stop.signal,
      });
      closeQuietly(conn);
      const info = parsePeerInfo(reply);
      if (!state.reachable) {
        log.info("cluster: {name} ({address}) is reachable, broker-server {version}", {
          name,
          address: state.address,
          version: info.version,
        });
      }
      Object.assign(state, { reachable: true, info, error: null });
      // Tags it no longer holds (its sessions' process exited, or it restarted) are forgotten.
      for (const [tag, route] of this.#routes) {
        if (route.name === name && !info.holders.includes(tag) && tag !== info.tag) this.#routes.delete(tag);
      }
      for (const tag of info.holders) {
        // Our own predecessors are reached directly, whoever else says it reaches them.
        const direct = this.#predecessors.find((p) => p.tag === tag);
        if (!direct || predecessorName(direct) === name) this.#routes.set(tag, { ...at, name });
      }
    } catch (err) {
      const error = describeError(err);
      if (state.reachable || state.error === "not asked yet") {
        log.warn("cluster: {name} ({address}) cannot be reached: {error}", { name, address: state.address, error });
      }
      Object.assign(state, { reachable: false, error });
      const predecessor = this.#predecessors.find((p) => predecessorName(p) === name);
      if (predecessor && err instanceof Deno.errors.ConnectionRefused) this.#forget(predecessor);
    }
  }

  /** A predecessor whose port is closed has exited. */
  #forget(predecessor: Predecessor): void {
    this.#predecessors = this.#predecessors.filter((p) => p !== predecessor);
    this.#peers.delete(predecessorName(predecessor));
    this.#routes.delete(predecessor.tag);
    log.info("cluster: the process this one took over from (broker-server {version}, pid {pid}) has exited", {
      version: predecessor.version,
      pid: predecessor.pid,
    });
  }

  #addPredecessorState(p: Predecessor): void {
    const name = predecessorName(p);
    this.#peers.set(name, { name, address: `127.0.0.1:${p.port}`, reachable: true, info: null, error: null });
    this.#routes.set(p.tag, { hostname: "127.0.0.1", port: p.port, name });
  }

  /**
   * Returns once a poll that started after this call has ended (a tag
   * nobody claimed: a peer may have started a process since the last poll),
   * polling at most every REFRESH_MIN_MS: callers share the polls.
   */
  async #refresh(): Promise<void> {
    const asked = performance.now();
    while (this.#lastRefresh < asked && !this.#closed) {
      if (this.#polling) {
        await this.#polling;
        continue;
      }
      const wait = this.#lastRefresh + REFRESH_MIN_MS - performance.now();
      if (wait > 0) await this.#pause(wait);
      else await this.#poll();
    }
  }

  /** Waits `ms`, or less when the cluster closes. */
  #pause(ms: number): Promise<void> {
    const signal = this.#stop.signal;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /**
   * Passes a client's link for a session held elsewhere to its holder:
   * `preamble` is what the client sent so far (its preface and hello, and
   * anything after), to be said again to the holder, whose own preface is
   * not passed back (the client has ours). Resolves once the relay is set
   * up or refused; the relay then runs on its own.
   */
  async relay(
    tag: string,
    client: string,
    take: () => Promise<{ transport: Transport; preamble: Uint8Array } | null>,
  ): Promise<RelayOutcome> {
    if (this.#closed) return { kind: "unavailable", reason: "broker-server is shutting down" };
    let route = this.#routes.get(tag);
    if (!route) {
      await this.#refresh();
      route = this.#routes.get(tag);
    }
    if (!route) {
      const unreachable = [...this.#peers.values()].filter((p) => !p.reachable).map((p) => p.name);
      const reason = `no broker-server of the cluster holds tag ${tag}`;
      if (unreachable.length > 0) {
        return {
          kind: "unavailable",
          reason: `${reason} among those reachable (${unreachable.join(", ")} cannot be reached)`,
        };
      }
      return { kind: "unknown", reason };
    }
    return await this.#relayTo(route, tag, client, take);
  }

  /** Dials `route` for a relay of `tag`'s link from `client`, then passes the link taken by `take` on. */
  async #relayTo(
    route: Route,
    tag: string,
    client: string,
    take: () => Promise<{ transport: Transport; preamble: Uint8Array } | null>,
  ): Promise<RelayOutcome> {
    let holder: NetConn;
    try {
      holder = await this.#dialRelay(route, { tag, client });
    } catch (err) {
      this.#counts.relayFailed++;
      return {
        kind: "unavailable",
        reason: `the broker-server holding it (${route.name}, ${formatHostPort(route)}) cannot take it: ${
          describeError(err)
        }`,
      };
    }
    const taken = await take();
    if (!taken) {
      closeQuietly(holder);
      return { kind: "unavailable", reason: "the client's link closed" };
    }
    this.#counts.relayedOut++;
    this.#passOn(taken.transport, holder, taken.preamble).catch(() => {});
    return { kind: "relayed" };
  }

  /**
   * A new session's hello that may be a retry whose first attempt reached
   * another broker-server (its WELCOME lost): asks every peer that answered
   * its last poll, and every predecessor, whether it holds or is opening
   * `token` (hex), within OPENING_QUERY_MS. The first that does gets the
   * link (as relay() would pass it); null when none does, and the opening
   * is this process's to make.
   */
  async relayOpening(
    token: string,
    client: string,
    take: () => Promise<{ transport: Transport; preamble: Uint8Array } | null>,
  ): Promise<RelayOutcome | null> {
    if (this.#closed) return null;
    const asked = [...this.#asked()].map(([name, at]) => this.#askOpening(name, at, token, OPENING_QUERY_MS));
    if (asked.length === 0) return null;
    let holder: { tag: string; route: Route };
    try {
      holder = await Promise.any(asked);
    } catch {
      return null;
    }
    return await this.#relayTo(holder.route, holder.tag, client, take);
  }

  /** Peers that answered their last poll (or were not asked yet), and predecessors: name and address. */
  *#asked(): Iterable<[string, HostPort]> {
    for (const peer of this.#options.config.peers) {
      const state = this.#peers.get(peer.name);
      if (state && (state.reachable || state.info === null && state.error === "not asked yet")) {
        yield [peer.name, { hostname: peer.hostname, port: peer.port }];
      }
    }
    for (const p of this.#predecessors) yield [predecessorName(p), { hostname: "127.0.0.1", port: p.port }];
  }

  /** Says the client's preamble to the holder, drops the holder's preface, then splices. */
  async #passOn(client: Transport, holder: NetConn, preamble: Uint8Array): Promise<void> {
    this.#open.add(client);
    try {
      await writeAll(holder, preamble);
      const preface = await readExact(holder, PREFACE_SIZE);
      if (!MAGIC.every((b, i) => preface[i] === b)) throw new Error("the holder did not answer with a preface");
    } catch {
      this.#open.delete(client);
      closeQuietly(client);
      closeQuietly(holder);
      return;
    }
    this.#open.delete(client);
    await this.#splice(client, holder);
  }

  async #splice(a: Transport, b: Transport): Promise<void> {
    this.#open.add(a);
    this.#open.add(b);
    this.#counts.relaying++;
    try {
      await splice(a, b, this.#counts.bytes);
    } finally {
      this.#counts.relaying--;
      this.#open.delete(a);
      this.#open.delete(b);
    }
  }

  async #dialRelay(route: Route, request: { tag: string; client: string }): Promise<NetConn> {
    const { conn, reply } = await dialPeer(route.hostname, route.port, { op: "relay", ...request }, {
      network: this.#options.network,
      key: await this.#key,
      timeoutMs: PEER_TIMEOUT_MS,
      signal: this.#stop.signal,
    });
    const answer = parseRelayAnswer(reply);
    if (!answer.ok) {
      closeQuietly(conn);
      throw new Error(answer.reason);
    }
    return conn;
  }

  /** Tells the process this one took over from that the ports are bound (logged when it cannot be told). */
  async notifySettled(): Promise<void> {
    const [first] = this.#predecessors;
    if (!first) return;
    let error: unknown;
    for (let attempt = 0; attempt < 3 && !this.#closed; attempt++) {
      try {
        const { conn } = await dialPeer("127.0.0.1", first.port, { op: "settled", pid: Deno.pid }, {
          network: this.#options.network,
          key: await this.#key,
          timeoutMs: PEER_TIMEOUT_MS,
          signal: this.#stop.signal,
        });
        closeQuietly(conn);
        return;
      } catch (err) {
        error = err;
        await this.#pause(500);
      }
    }
    // It finds out by itself 15 s after the takeover, when it cannot bind LOCAL_SERVER_PORT.
    log.warn("cluster: cannot tell the process this one took over from (pid {pid}) that it runs: {error}", {
      pid: first.pid,
      error: describeError(error),
    });
  }

  /** Stops listening and polling, and cuts every relay. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop.abort();
    clearInterval(this.#pollTimer);
    this.#listener?.close();
    this.#handoverListener?.close();
    for (const t of this.#open) closeQuietly(t);
    await Promise.all(this.#accepting);
    await Promise.all([...this.#serving]);
    for (const t of this.#open) closeQuietly(t);
    await this.#polling;
  }
}

/**
 * Asks the process that listens on `at` (this host) to hand over; resolves
 * to the processes to relay to, or throws when there is none there, or it
 * does not prove the key, or refuses.
 */
export async function takeOver(
  at: HostPort,
  key: string,
  options: { network: Network; version: string },
): Promise<Predecessor[]> {
  const { conn, reply } = await dialPeer(at.hostname, at.port, {
    op: "takeover",
    version: options.version,
    pid: Deno.pid,
  }, {
    network: options.network,
    key: await importClusterKey(key),
    timeoutMs: PEER_TIMEOUT_MS,
  });
  closeQuietly(conn);
  return parseHandover(reply).predecessors;
}

function predecessorName(p: Predecessor): string {
  return `predecessor pid ${p.pid}`;
}

/** A relayed connection as the holder's handshake sees it: from the client's address. */
function relayedConn(conn: NetConn, client: HostPort): NetConn {
  const remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: client.hostname, port: client.port };
  return {
    remoteAddr,
    localAddr: conn.localAddr,
    read: (p) => conn.read(p),
    write: (p) => conn.write(p),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
}
