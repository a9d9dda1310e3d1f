/**
 * Active health checks: a TCP connect probe to each ERP server at an
 * interval, closed at once (cheap for the ERP, never counted as a session).
 * Results go to the Balancer, which applies rise/fall.
 * @module
 */

import { formatHostPort } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import { describeError } from "../session/transport.ts";
import { type Clock, systemClock, type TimerHandle } from "../session/clock.ts";
import { type Network, systemNetwork } from "../session/network.ts";
import type { Backend, Balancer } from "./balancer.ts";

const log = logger("server", "health");

/** Probes every configured server of a Balancer at an interval. */
export class HealthChecker {
  #balancer: Balancer;
  #timer: TimerHandle | undefined;
  #clock: Clock;
  #network: Network;
  #inFlight = new Map<Backend, Promise<void>>();
  #connectTimeoutMs: number;
  #abort = new AbortController();

  /** Creates a checker (on `options`' clock and network, default the system's); start() begins probing. */
  constructor(balancer: Balancer, connectTimeoutMs: number, options: { clock?: Clock; network?: Network } = {}) {
    this.#balancer = balancer;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#clock = options.clock ?? systemClock;
    this.#network = options.network ?? systemNetwork;
  }

  /** (Re)starts probing every `intervalMs` (0 stops it). */
  start(intervalMs: number, connectTimeoutMs = this.#connectTimeoutMs): void {
    this.#clock.clear(this.#timer);
    this.#timer = undefined;
    this.#connectTimeoutMs = connectTimeoutMs;
    if (intervalMs <= 0) return;
    this.#timer = this.#clock.setInterval(
      () => this.probeAll(Math.min(this.#connectTimeoutMs, intervalMs)),
      intervalMs,
    );
  }

  /** Probes every server not draining, skipping those whose last probe is still running. */
  probeAll(timeoutMs = this.#connectTimeoutMs): Promise<void> {
    for (const backend of this.#balancer.backends) {
      if (backend.draining || this.#inFlight.has(backend)) continue;
      const probe = this.#probe(backend, timeoutMs).finally(() => this.#inFlight.delete(backend));
      this.#inFlight.set(backend, probe);
    }
    return Promise.all(this.#inFlight.values()).then(() => {});
  }

  async #probe(backend: Backend, timeoutMs: number): Promise<void> {
    let ok = true;
    let message = "";
    try {
      const conn = await this.#network.dial(backend.server.hostname, backend.server.port, {
        timeoutMs,
        signal: this.#abort.signal,
      });
      conn.close();
    } catch (err) {
      if (this.#abort.signal.aborted) return;
      ok = false;
      message = describeError(err);
    }
    const changed = this.#balancer.probed(backend, ok, message);
    const where = `${backend.server.name} (${formatHostPort(backend.server)})`;
    if (changed === "down") {
      log.warn("ERP server {server} is DOWN: health probes failed ({error})", { server: where, error: message });
    }
    if (changed === "up") log.info("ERP server {server} is UP again: health probes succeed", { server: where });
  }

  /** Stops probing and waits for probes in flight. */
  async stop(): Promise<void> {
    this.#clock.clear(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
    await Promise.all(this.#inFlight.values());
  }
}
