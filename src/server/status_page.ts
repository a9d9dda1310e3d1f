/**
 * broker-server's status page as the server runs it: started when the
 * server listens, moved or re-keyed on reload, and never allowed to stop
 * the broker (a page that cannot listen is logged and left out).
 * @module
 */

import type { StatusConfig } from "../config/server_config.ts";
import { formatHostPort, type HostPort } from "../config/values.ts";
import { logger } from "../ops/log.ts";
import { startStatusServer, type StatusServer } from "../ops/status_server.ts";
import { parseSessionFilter, renderHtml, renderMetrics } from "../ops/status_render.ts";
import type { HistorySnapshot } from "./history.ts";
import type { StatusSnapshot } from "./stats.ts";

const log = logger("server");

/** The status page of one broker-server. */
export class StatusPage {
  #snapshot: () => StatusSnapshot;
  #history: () => HistorySnapshot;
  #server: StatusServer | null = null;

  /** A page that shows `snapshot()` and `history()`; call start() to listen. */
  constructor(snapshot: () => StatusSnapshot, history: () => HistorySnapshot) {
    this.#history = history;
    this.#snapshot = snapshot;
  }

  /** Where the page listens, when it does. */
  get address(): HostPort | null {
    return this.#server?.address ?? null;
  }

  /**
   * Starts the page for `status`; a failure is logged (unless
   * `options.quiet`: the caller reports it) and returned, the broker goes on without it.
   */
  start(status: StatusConfig, options: { quiet?: boolean } = {}): string | null {
    if (!status.enabled) return null;
    try {
      this.#server = startStatusServer({
        listen: status.listen,
        accessKey: status.accessKey,
        pages: {
          html: (options, query) =>
            renderHtml(this.#snapshot(), { ...options, filter: parseSessionFilter(query), history: this.#history() }),
          json: () => this.#snapshot(),
          history: () => this.#history(),
          metrics: () => renderMetrics(this.#snapshot()),
        },
      });
      return null;
    } catch (err) {
      // The broker's job matters more than its dashboard: log and go on.
      if (!options.quiet) log.error("{error}; broker-server runs without it", { error: (err as Error).message });
      return (err as Error).message;
    }
  }

  /**
   * A reloaded status configuration: a new key in place, a new address by
   * restarting the listener (only when `mayRestart`: the server listens and
   * is not stopping). When the new address cannot be listened on (a port
   * another program holds), the page goes back to the old address with the
   * new key, `next` is set back to the address in force (the next reload
   * tries again), and the result is false.
   */
  async apply(old: StatusConfig, next: StatusConfig, mayRestart: boolean): Promise<boolean> {
    const same = old.enabled === next.enabled && old.listen.hostname === next.listen.hostname &&
      old.listen.port === next.listen.port;
    if (same && this.#server) {
      this.#server.setAccessKey(next.accessKey);
      return true;
    }
    if (!mayRestart) return true;
    const previous = this.#server;
    this.#server = null;
    await previous?.shutdown();
    if (!previous) {
      this.start(next);
      return true;
    }
    const error = this.start(next, { quiet: true });
    if (error === null) return true;
    const kept: StatusConfig = { ...old, accessKey: next.accessKey };
    if (this.start(kept, { quiet: true }) === null) {
      log.error("{error}; the status page stays on http://{address}/", {
        error,
        address: formatHostPort(this.address ?? old.listen),
      });
      next.enabled = kept.enabled;
      next.listen = kept.listen;
      return false;
    }
    log.error("{error}; broker-server runs without it", { error });
    return true;
  }

  /** Stops the page. */
  async shutdown(): Promise<void> {
    await this.#server?.shutdown();
  }
}
