/**
 * Per-source-address rate limit of new sessions: a token bucket per address
 * (capacity and refill from NEW_SESSIONS_PER_MINUTE). Pure, with an
 * injectable clock.
 * @module
 */

interface Bucket {
  tokens: number;
  at: number;
}

/** Most addresses tracked; full buckets are forgotten first. */
const MAX_TRACKED = 50_000;

/** Token buckets by address. */
export class RateLimiter {
  #perMinute: number;
  #buckets = new Map<string, Bucket>();
  #now: () => number;

  /** Allows `perMinute` events per key and minute, in bursts of up to `perMinute`. */
  constructor(perMinute: number, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#now = now;
  }

  /** Addresses tracked now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const now = this.#now();
    const bucket = this.#buckets.get(key) ?? { tokens: this.#perMinute, at: now };
    bucket.tokens = Math.min(this.#perMinute, bucket.tokens + ((now - bucket.at) * this.#perMinute) / 60_000);
    bucket.at = now;
    if (bucket.tokens < 1) {
      this.#buckets.set(key, bucket);
      return false;
    }
    bucket.tokens -= 1;
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > MAX_TRACKED) this.#forgetFull(now);
    return true;
  }

  #forgetFull(now: number): void {
    for (const [key, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) * this.#perMinute) / 60_000 >= this.#perMinute) this.#buckets.delete(key);
    }
  }
}
