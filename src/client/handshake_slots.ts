/**
 * How many links broker-client may be setting up at once (to one broker
 * server: see MAX_LINK_HANDSHAKES in client.ts): each takes a slot
 * from its dial to the server's CHALLENGE or WELCOME, and the others wait
 * their turn, first come first served.
 *
 * Why: when every session of a PC loses its link at once (a roam, a Wi-Fi
 * drop, or a machine so loaded that links look dead), all of them redial
 * together. On a slow or overloaded machine (the Windows socket layer under
 * Wine crawls past a hundred sockets) a hundred handshakes at once can each
 * take longer than the handshake timeout: every attempt fails, is retried,
 * and adds load, and no session ever comes back. A few at a time finish
 * within their timeouts, which start only once a slot is taken. Pure: no
 * timers, no I/O.
 */
export class HandshakeSlots {
  #free: number;
  #queue: Array<() => void> = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be at least 1: ${capacity}`);
    this.#free = capacity;
  }

  /** Slots taken now. */
  get busy(): number {
    return this.capacity - this.#free;
  }

  /** Takers waiting for a slot. */
  get waiting(): number {
    return this.#queue.length;
  }

  /**
   * Resolves, once a slot is free, with the function that gives it back
   * (later calls of it do nothing). Rejects with the signal's reason if
   * `signal` aborts first; the place in the queue is then given up.
   */
  take(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(this.#releaser());
      };
      const onAbort = () => {
        const at = this.#queue.indexOf(grant);
        if (at >= 0) this.#queue.splice(at, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(grant);
    });
  }

  #releaser(): () => void {
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const next = this.#queue.shift();
      // The slot passes straight to the next in line, or becomes free.
      if (next) next();
      else this.#free++;
    };
  }
}
