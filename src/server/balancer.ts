/**
 * Placement of new sessions on ERP servers, without I/O: which servers to
 * try, in which order, and why the others were skipped. Health (passive
 * marks on connect failures, active probe results with rise/fall) and
 * draining after a reload live here too, so the rules are unit-tested with
 * no sockets.
 *
 * - CONNECTION: fewest sessions (attached or detached) per unit of weight;
 *   ties rotate, so a burst of logins spreads evenly.
 * - ROUND_ROBIN: smooth weighted round robin (each server in turn, in
 *   proportion to its weight).
 * Failover order after the first choice follows the same rule.
 * @module
 */

import type { HealthCheckConfig, RemoteServer, SortMethod } from "../config/server_config.ts";
import { formatHostPort } from "../config/values.ts";

/** Health of an ERP server as the balancer sees it. */
export type BackendHealth = "up" | "down";

/** One ERP server with its live counters. */
export interface Backend {
  /** Stable identity across reloads: key and address. */
  readonly id: string;
  /** Configuration (weight, max) as last loaded. */
  server: RemoteServer;
  /** Sessions on it now, attached or detached, and those still connecting to it. */
  active: number;
  /** Sessions placed on it since start (not counting those whose connect failed). */
  total: number;
  /** Up or down. */
  health: BackendHealth;
  /** Removed from the configuration: takes no new sessions, keeps its live ones. */
  draining: boolean;
  /** Consecutive good probes (while down) or failed probes (while up). */
  streak: number;
  /** The last connect or probe error, and when (clock ms). */
  lastError: { message: string; at: number } | null;
  /** Smooth round-robin state. */
  currentWeight: number;
}

/** Why a server was not tried first. */
export interface Skip {
  /** The server. */
  backend: Backend;
  /** In words, for the log. */
  reason: string;
}

/** A placement decision: servers to try in order, and the ones left out. */
export interface Placement {
  /** Candidates, best first. */
  order: Backend[];
  /** Servers not tried, with the reason. */
  skipped: Skip[];
  /** Why the first candidate was chosen. */
  why: string;
}

/** Identity of a configured server: its key and address. */
export function backendId(server: RemoteServer): string {
  return `${server.name}@${formatHostPort(server)}`;
}

/** The balancer's state and rules. */
export class Balancer {
  #method: SortMethod;
  #health: HealthCheckConfig;
  #backends: Backend[] = [];
  #rotation = 0;
  #now: () => number;

  /** Creates a balancer over `servers`. */
  constructor(method: SortMethod, servers: RemoteServer[], health: HealthCheckConfig, now: () => number = Date.now) {
    this.#method = method;
    this.#health = health;
    this.#now = now;
    this.update(method, servers, health);
  }

  /** Every server known, configured first, then draining ones. */
  get backends(): readonly Backend[] {
    return this.#backends;
  }

  /** The balancing method in force. */
  get method(): SortMethod {
    return this.#method;
  }

  /** Whether active probes run. */
  get checksEnabled(): boolean {
    return this.#health.intervalMs > 0;
  }

  /**
   * Applies a (re)loaded configuration: new servers join (as up), servers no
   * longer listed drain, servers listed again stop draining. Returns what
   * changed, in words.
   */
  update(method: SortMethod, servers: RemoteServer[], health: HealthCheckConfig): string[] {
    const changes: string[] = [];
    if (method !== this.#method) changes.push(`SORT_METHOD ${this.#method} -> ${method}`);
    this.#method = method;
    this.#health = health;
    const wanted = new Map(servers.map((s) => [backendId(s), s]));
    for (const b of this.#backends) {
      const server = wanted.get(b.id);
      if (server) {
        if (b.draining) changes.push(`${b.server.name} is back in the configuration`);
        if (server.weight !== b.server.weight || server.maxSessions !== b.server.maxSessions) {
          changes.push(`${server.name} now weight=${server.weight} max=${server.maxSessions || "unlimited"}`);
        }
        b.server = server;
        b.draining = false;
      } else if (!b.draining) {
        b.draining = true;
        changes.push(`${b.server.name} (${formatHostPort(b.server)}) removed: draining ${b.active} sessions`);
      }
    }
    const known = new Set(this.#backends.map((b) => b.id));
    for (const server of servers) {
      if (known.has(backendId(server))) continue;
      this.#backends.push({
        id: backendId(server),
        server,
        active: 0,
        total: 0,
        health: "up",
        draining: false,
        streak: 0,
        lastError: null,
        currentWeight: 0,
      });
      if (known.size > 0) changes.push(`${server.name} (${formatHostPort(server)}) added`);
    }
    // Configuration order first; drained-out servers leave once empty.
    const order = new Map(servers.map((s, i) => [backendId(s), i]));
    this.#backends = this.#backends
      .filter((b) => !b.draining || b.active > 0)
      .sort((a, b) => (order.get(a.id) ?? Infinity) - (order.get(b.id) ?? Infinity));
    return changes;
  }

  /** Decides where a new session goes. */
  place(): Placement {
    const skipped: Skip[] = [];
    const eligible: Backend[] = [];
    const downLast: Backend[] = [];
    for (const b of this.#backends) {
      if (b.draining) skipped.push({ backend: b, reason: "draining (removed from the configuration)" });
      else if (b.server.maxSessions > 0 && b.active >= b.server.maxSessions) {
        skipped.push({ backend: b, reason: `full (${b.active} of max ${b.server.maxSessions} sessions)` });
      } else if (b.health === "down") {
        const why = `down${b.lastError ? ` (${b.lastError.message})` : ""}`;
        // Without probes nothing would ever bring it back: try it, but last.
        if (this.checksEnabled) skipped.push({ backend: b, reason: why });
        else downLast.push(b);
      } else eligible.push(b);
    }
    const ordered = this.#method === "ROUND_ROBIN" ? this.#roundRobin(eligible) : this.#fewest(eligible);
    const order = [...ordered, ...downLast];
    const first = order[0];
    const why = !first
      ? "no server available"
      : this.#method === "ROUND_ROBIN"
      ? `round robin (weight ${first.server.weight})`
      : `fewest sessions (${first.active}${first.server.weight > 1 ? `, weight ${first.server.weight}` : ""})`;
    return { order, skipped, why };
  }

  #fewest(eligible: Backend[]): Backend[] {
    if (eligible.length === 0) return [];
    // Rotate the starting point so that ties go to each server in turn.
    const start = this.#rotation++ % eligible.length;
    const rotated = [...eligible.slice(start), ...eligible.slice(0, start)];
    return rotated
      .map((b, i) => ({ b, i, load: b.active / b.server.weight }))
      .sort((x, y) => x.load - y.load || x.i - y.i)
      .map((x) => x.b);
  }

  #roundRobin(eligible: Backend[]): Backend[] {
    if (eligible.length === 0) return [];
    const totalWeight = eligible.reduce((n, b) => n + b.server.weight, 0);
    for (const b of eligible) b.currentWeight += b.server.weight;
    const ordered = [...eligible].sort((x, y) => y.currentWeight - x.currentWeight);
    (ordered[0] as Backend).currentWeight -= totalWeight;
    return ordered;
  }

  /**
   * A session is placed on `backend`: it counts there from now on, while it
   * still connects, so that a burst of logins sees every session placed
   * before it (for max=N and for CONNECTION). False, and nothing counted,
   * when the server is full or draining by now: a failover candidate is
   * checked again when the session reaches it.
   */
  acquire(backend: Backend): boolean {
    if (backend.draining) return false;
    if (backend.server.maxSessions > 0 && backend.active >= backend.server.maxSessions) return false;
    backend.active++;
    backend.total++;
    return true;
  }

  /** A placement on `backend` that never became a session (its connect failed): as if it had not been made. */
  cancel(backend: Backend): void {
    backend.total = Math.max(0, backend.total - 1);
    this.release(backend);
  }

  /** A session on `backend` ended; a draining server leaves once empty. */
  release(backend: Backend): void {
    backend.active = Math.max(0, backend.active - 1);
    if (backend.draining && backend.active === 0) {
      this.#backends = this.#backends.filter((b) => b !== backend);
    }
  }

  /** A connect for a session failed: the server is down at once (passive check). */
  connectFailed(backend: Backend, message: string): boolean {
    backend.lastError = { message, at: this.#now() };
    const wasUp = backend.health === "up";
    backend.health = "down";
    backend.streak = 0;
    return wasUp;
  }

  /** A connect for a session succeeded: proof that the server is up. */
  connectSucceeded(backend: Backend): boolean {
    const wasDown = backend.health === "down";
    backend.health = "up";
    backend.streak = 0;
    return wasDown;
  }

  /**
   * Records an active probe. A down server needs `rise` good probes in a
   * row to come back, an up one `fall` failures in a row to go down.
   * Returns the new health when it changed.
   */
  probed(backend: Backend, ok: boolean, message = ""): BackendHealth | null {
    if (!ok) backend.lastError = { message, at: this.#now() };
    if (backend.health === "down") {
      backend.streak = ok ? backend.streak + 1 : 0;
      if (backend.streak >= this.#health.rise) {
        backend.health = "up";
        backend.streak = 0;
        return "up";
      }
    } else {
      backend.streak = ok ? 0 : backend.streak + 1;
      if (backend.streak >= this.#health.fall) {
        backend.health = "down";
        backend.streak = 0;
        return "down";
      }
    }
    return null;
  }
}
