/**
 * A simulated network on a virtual clock: listeners by address, dialing
 * with a timeout, and the faults a network can have between two hosts:
 * refusing new connections for a while, dropping them silently (a dial
 * that only times out), and every fault of a SimConnection on the ones
 * already open. Every connection is kept, with which hosts it joins, so a
 * world can strike the links between the two brokers and leave the
 * loopback connections of the applications alone.
 * @module
 */

import type { VirtualClock } from "./clock.ts";
import type { TimerHandle } from "../../src/session/clock.ts";
import { type PathModel, SimConnection, type SimEndpoint } from "./connection.ts";
import type { Rng } from "./rng.ts";

/** An accepting socket of the simulated network. */
export class SimListener {
  readonly addr: Deno.NetAddr;
  #queue: SimEndpoint[] = [];
  #waiters: { resolve: (c: SimEndpoint) => void; reject: (e: Error) => void }[] = [];
  #closed = false;
  #onClose: () => void;

  constructor(addr: Deno.NetAddr, onClose: () => void) {
    this.addr = addr;
    this.#onClose = onClose;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The next connection; rejects with BadResource once closed. */
  accept(): Promise<SimEndpoint> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Listener has been closed"));
    const next = this.#queue.shift();
    if (next) return Promise.resolve(next);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w.reject(new Deno.errors.BadResource("Listener has been closed"));
    for (const pending of this.#queue.splice(0)) pending.connection.reset();
    this.#onClose();
  }

  /** A dialed connection arrives. */
  deliver(endpoint: SimEndpoint): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(endpoint);
    else this.#queue.push(endpoint);
  }
}

/** What happens to new connections toward a host for now. */
export type DialFault = "refuse" | "drop" | null;

/** A connection of the network, with the hosts it joins. */
export interface NetConnection {
  connection: SimConnection;
  /** Dialing host and accepting host. */
  from: string;
  to: string;
  openedAt: number;
}

/** The simulated network of one world. */
export class SimNetwork {
  #clock: VirtualClock;
  #rng: Rng;
  #listeners = new Map<string, SimListener>();
  #nextPort = 40_000;
  #dialFaults = new Map<string, DialFault>();
  #models = new Map<string, PathModel>();
  #defaultModel: PathModel;
  readonly connections: NetConnection[] = [];
  #trace: (line: string) => void;

  /** A network whose connections follow `model` unless set per pair of hosts. */
  constructor(clock: VirtualClock, rng: Rng, model: PathModel, trace: (line: string) => void = () => {}) {
    this.#clock = clock;
    this.#rng = rng;
    this.#defaultModel = model;
    this.#trace = trace;
  }

  /** Sets how connections between hosts `from` and `to` behave. */
  setModel(from: string, to: string, model: PathModel): void {
    this.#models.set(`${from}>${to}`, model);
  }

  /** From now on, new connections toward `host` are refused, dropped, or (null) work. */
  setDialFault(host: string, fault: DialFault): void {
    this.#dialFaults.set(host, fault);
    this.#trace(`dial fault toward ${host}: ${fault ?? "none"}`);
  }

  /** Listens on `hostname:port` (port 0: any free one). */
  listen(hostname: string, port: number): SimListener {
    const chosen = port === 0 ? this.#nextPort++ : port;
    const key = `${hostname}:${chosen}`;
    if (this.#listeners.has(key)) throw new Deno.errors.AddrInUse(`Address already in use: ${key}`);
    const listener = new SimListener({ transport: "tcp", hostname, port: chosen }, () => this.#listeners.delete(key));
    this.#listeners.set(key, listener);
    return listener;
  }

  /** Dials `hostname:port` from host `from`; fails as a real dial would (refused, timed out, cancelled). */
  dial(
    from: string,
    hostname: string,
    port: number,
    options: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<SimEndpoint> {
    const where = `${hostname}:${port}`;
    const fault = this.#dialFaults.get(hostname) ?? null;
    const model = this.#models.get(`${from}>${hostname}`) ?? this.#defaultModel;
    const rtt = 2 * this.#rng.int(model.latencyMs[0], model.latencyMs[1]);
    return new Promise((resolve, reject) => {
      let settled = false;
      // Declared before finish() can run: a dial cancelled before it started finishes with no timers.
      const timers: { timeout?: TimerHandle | undefined; answer?: TimerHandle | undefined } = {};
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        this.#clock.clear(timers.timeout);
        this.#clock.clear(timers.answer);
        options.signal?.removeEventListener("abort", onAbort);
        fn();
      };
      const onAbort = () => finish(() => reject(new Deno.errors.Interrupted(`Dial to ${where} cancelled`)));
      if (options.signal?.aborted) {
        queueMicrotask(onAbort);
        return;
      }
      options.signal?.addEventListener("abort", onAbort, { once: true });
      timers.timeout = this.#clock.setTimeout(
        () =>
          finish(() =>
            reject(new Deno.errors.TimedOut(`Cannot connect to ${where}: no answer within ${options.timeoutMs} ms`))
          ),
        options.timeoutMs,
      );
      timers.answer = fault === "drop" ? undefined : this.#clock.setTimeout(() => {
        const listener = this.#listeners.get(where);
        if (fault === "refuse" || !listener) {
          finish(() => reject(new Deno.errors.ConnectionRefused(`Cannot connect to ${where}: connection refused`)));
          return;
        }
        const local: Deno.NetAddr = { transport: "tcp", hostname: from, port: this.#nextPort++ };
        const connection = new SimConnection(
          this.#clock,
          this.#rng.fork(),
          model,
          local,
          listener.addr,
          (e) => this.#trace(`${from}:${local.port} -> ${where} ${e}`),
        );
        this.connections.push({ connection, from, to: hostname, openedAt: this.#clock.now() });
        listener.deliver(connection.b);
        finish(() => resolve(connection.a));
      }, rtt);
    });
  }

  /** The open connections between `from` and `to` (both directions of naming). */
  between(from: string, to: string): SimConnection[] {
    return this.connections
      .filter((c) => !c.connection.finished && ((c.from === from && c.to === to) || (c.from === to && c.to === from)))
      .map((c) => c.connection);
  }
}
