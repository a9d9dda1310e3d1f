/**
 * Budgets of log lines for events that peers can cause at will (links
 * dropped during their handshake, sessions they abort): the first lines of
 * each window are written, the rest are counted and the count rides on the
 * next line written, so a flood cannot flood the log too. One budget for
 * everyone, or one per source. Pure, with an injectable clock.
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

/** Options of SourceLogBudgets. */
export interface SourceLogBudgetsOptions {
  /** Most sources tracked at once (default 1,000); the one heard from least recently is forgotten first. */
  maxSources?: number;
  /** Clock in ms (injectable). */
  now?: () => number;
}

/**
 * A LogBudget per source (an address), for events that one peer can repeat
 * at will: a noisy source spends its own budget, never another's.
 */
export class SourceLogBudgets {
  #perWindow: number;
  #windowMs: number;
  #maxSources: number;
  #now: () => number;
  /** In order of last use: the first is the one heard from least recently. */
  #budgets = new Map<string, LogBudget>();

  /** A budget of `perWindow` lines per `windowMs` ms for each source. */
  constructor(perWindow: number, windowMs: number, options: SourceLogBudgetsOptions = {}) {
    this.#perWindow = perWindow;
    this.#windowMs = windowMs;
    this.#maxSources = options.maxSources ?? 1_000;
    this.#now = options.now ?? Date.now;
  }

  /** LogBudget.spend for `source`'s budget. */
  spend(source: string): number | null {
    let budget = this.#budgets.get(source);
    if (budget) {
      this.#budgets.delete(source);
    } else {
      budget = new LogBudget(this.#perWindow, this.#windowMs, this.#now);
      if (this.#budgets.size >= this.#maxSources) {
        const [oldest] = this.#budgets.keys();
        if (oldest !== undefined) this.#budgets.delete(oldest);
      }
    }
    this.#budgets.set(source, budget);
    return budget.spend();
  }
}
