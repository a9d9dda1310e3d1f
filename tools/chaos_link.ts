/**
 * A TCP relay for tests that sits between broker-client and broker-server
 * and misbehaves on command: reset every connection (RST), close them
 * cleanly (FIN), freeze them (bytes silently stop, nothing is closed), add
 * delay, deliver in bursts, or refuse new connections as an unreachable
 * host would.
 * Built on node:net because it can send a real RST (resetAndDestroy).
 * @module
 */

import net from "node:net";

interface Pair {
  front: net.Socket;
  back: net.Socket;
  frozen: boolean;
  /** Which connection this is (0 for the first accepted). */
  index: number;
}

/** Where the relay forwards to; `localAddress` (another 127.x address on Linux) shows the server another client. */
export interface ChaosTarget {
  host: string;
  port: number;
  localAddress?: string;
}

/** The relay's fault modes for new connections. */
export type ChaosMode = "pass" | "refuse" | "blackhole";

/** A misbehaving TCP relay on 127.0.0.1. */
export class ChaosLink {
  #server: net.Server;
  #target: ChaosTarget;
  #rotation: ChaosTarget[] | null = null;
  #pairs = new Set<Pair>();
  #mode: ChaosMode = "pass";
  #delayMs = 0;
  #burstMs = 0;
  /** Counters of faults injected, for test reports. */
  readonly faults = { resets: 0, closes: 0, freezes: 0 };
  /** Connections accepted. */
  connections = 0;

  private constructor(server: net.Server, target: ChaosTarget) {
    this.#server = server;
    this.#target = target;
  }

  /**
   * Starts a relay on 127.0.0.1 (port 0) to `target`; given several, each
   * new connection goes to the next in turn (a load balancer without
   * affinity).
   */
  static async start(target: ChaosTarget | ChaosTarget[]): Promise<ChaosLink> {
    const server = net.createServer({ noDelay: true });
    const targets = Array.isArray(target) ? target : [target];
    const link = new ChaosLink(server, targets[0] as ChaosTarget);
    if (targets.length > 1) link.#rotation = targets;
    server.on("connection", (socket) => link.#accept(socket));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return link;
  }

  /** The relay's port: point broker-client here. */
  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Open connection pairs. */
  get openPairs(): number {
    return this.#pairs.size;
  }

  /** Changes where new connections go (e.g. a restarted server on a new port). */
  retarget(target: { host: string; port: number }): void {
    this.#target = target;
  }

  /** pass: relay; refuse: reset new connections at once; blackhole: accept and never answer. */
  setMode(mode: ChaosMode): void {
    this.#mode = mode;
  }

  /** Adds `ms` of delay to every chunk in both directions (0: none). */
  setDelay(ms: number): void {
    this.#delayMs = ms;
  }

  /**
   * Holds every chunk until the next multiple of `ms` on the clock, then
   * releases all that waited, in both directions at once (0: none): a link
   * that delivers in bursts, as a congested radio link does.
   */
  setBursts(ms: number): void {
    this.#burstMs = ms;
  }

  /** When a chunk that arrives now may go on. */
  #releaseAt(now: number): number {
    const burst = this.#burstMs > 0 ? Math.ceil((now + 1) / this.#burstMs) * this.#burstMs : now;
    return Math.max(burst, now + this.#delayMs);
  }

  #accept(front: net.Socket): void {
    this.connections++;
    front.on("error", () => {});
    if (this.#mode === "refuse") {
      front.resetAndDestroy();
      return;
    }
    if (this.#rotation) this.#target = this.#rotation[this.connections % this.#rotation.length] as ChaosTarget;
    const { host, port, localAddress } = this.#target;
    const back = net.connect({ host, port, noDelay: true, ...(localAddress ? { localAddress } : {}) });
    back.on("error", () => {});
    const pair: Pair = { front, back, frozen: this.#mode === "blackhole", index: this.connections - 1 };
    this.#pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket) => {
      // Delayed chunks wait in order: a TCP path may be slow, never reordered,
      // and its FIN comes after its last bytes.
      const delayed: { at: number; chunk: Uint8Array }[] = [];
      let timer: ReturnType<typeof setTimeout> | undefined;
      let endAfterDelayed = false;
      const end = () => {
        if (delayed.length > 0) endAfterDelayed = true;
        else if (!pair.frozen && !to.destroyed) to.end();
      };
      const release = () => {
        timer = undefined;
        while (delayed.length > 0 && (delayed[0] as { at: number }).at <= Date.now()) {
          const { chunk } = delayed.shift() as { chunk: Uint8Array };
          if (!pair.frozen && !to.destroyed) to.write(chunk);
        }
        if (delayed.length > 0) timer = setTimeout(release, (delayed[0] as { at: number }).at - Date.now());
        else if (endAfterDelayed && !pair.frozen && !to.destroyed) to.end();
      };
      from.on("data", (chunk: Uint8Array) => {
        if (pair.frozen) return; // a dead Wi-Fi: bytes vanish, nobody is told
        if (this.#delayMs === 0 && this.#burstMs === 0 && delayed.length === 0) {
          if (!to.destroyed) to.write(chunk);
          return;
        }
        const at = this.#releaseAt(Date.now());
        delayed.push({ at, chunk });
        if (timer === undefined) timer = setTimeout(release, at - Date.now());
      });
      to.on("close", () => clearTimeout(timer));
      from.on("end", end);
      from.on("close", (hadError: boolean) => {
        if (pair.frozen) return;
        this.#pairs.delete(pair);
        if (to.destroyed) return;
        // Pass a reset on as a reset; otherwise let queued (and delayed) bytes drain first.
        if (hadError) {
          clearTimeout(timer);
          to.resetAndDestroy();
        } else {
          end();
        }
      });
    };
    forward(front, back);
    forward(back, front);
  }

  /** Resets every open connection (RST both ways), like a crashed router. */
  resetAll(): void {
    for (const pair of [...this.#pairs]) {
      this.faults.resets++;
      this.#pairs.delete(pair);
      pair.front.resetAndDestroy();
      pair.back.resetAndDestroy();
    }
  }

  /** Resets the connection accepted `index`-th (0 for the first), if it is still open; true if it was. */
  reset(index: number): boolean {
    for (const pair of this.#pairs) {
      if (pair.index !== index) continue;
      this.faults.resets++;
      this.#pairs.delete(pair);
      pair.front.resetAndDestroy();
      pair.back.resetAndDestroy();
      return true;
    }
    return false;
  }

  /** Closes every open connection cleanly (FIN both ways). */
  closeAll(): void {
    for (const pair of [...this.#pairs]) {
      this.faults.closes++;
      this.#pairs.delete(pair);
      pair.front.end();
      pair.back.end();
      pair.front.destroySoon();
      pair.back.destroySoon();
    }
  }

  /**
   * Cuts every connection every `ms`, alternating resets and clean closes,
   * until the returned function is called (it resolves once the loop ended).
   */
  cutEvery(ms: number): () => Promise<void> {
    let cutting = true;
    const loop = (async () => {
      for (let i = 0; cutting; i++) {
        await new Promise((r) => setTimeout(r, ms));
        if (!cutting) return;
        if (i % 2 === 0) this.resetAll();
        else this.closeAll();
      }
    })();
    return () => {
      cutting = false;
      return loop;
    };
  }

  /** Freezes every open connection: bytes stop, nothing is closed. */
  freezeAll(): void {
    for (const pair of this.#pairs) {
      if (!pair.frozen) this.faults.freezes++;
      pair.frozen = true;
    }
  }

  /** Destroys frozen connections (both ends see them close), keeping live ones. */
  dropFrozen(): void {
    for (const pair of [...this.#pairs]) {
      if (!pair.frozen) continue;
      this.#pairs.delete(pair);
      pair.front.destroy();
      pair.back.destroy();
    }
  }

  /** Stops the relay and destroys every connection. */
  async close(): Promise<void> {
    for (const pair of this.#pairs) {
      pair.front.destroy();
      pair.back.destroy();
    }
    this.#pairs.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
