/**
 * A budget of log lines for events that peers can cause at will (links
 * dropped during their handshake): the first lines of each window are
 * written, the rest are counted and the count rides on the next line
 * written, so a flood cannot flood the log too. Pure, with an injectable
 * clock.
 * @module
 */

/** At most `perWindow` lines per `windowMs`; the rest are counted. */
export class LogBudget {
  #perWindow: number;
  #windowMs: number;
  #now: () => number;
  #windowStart = -Infinity;
  #spent = 0;
  #heldBack = 0;

  /** A budget of `perWindow` lines per `windowMs` ms. */
  constructor(perWindow: number, windowMs: number, now: () => number = Date.now) {
    this.#perWindow = perWindow;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /**
   * For an event that would be logged: null when its line must be held
   * back (it is counted), else how many lines were held back before it
   * (say so in the line).
   */
  spend(): number | null {
    const now = this.#now();
    if (now - this.#windowStart >= this.#windowMs || now < this.#windowStart) {
      this.#windowStart = now;
      this.#spent = 0;
    }
    if (this.#spent >= this.#perWindow) {
      this.#heldBack++;
      return null;
    }
    this.#spent++;
    const heldBack = this.#heldBack;
    this.#heldBack = 0;
    return heldBack;
  }
}
