/**
 * Per-source rate limit of new sessions: a token bucket per source (an IPv4
 * address, an IPv6 /64; capacity and refill from NEW_SESSIONS_PER_MINUTE),
 * and `sourceOf`, which says what a source is. Pure, with an injectable clock.
 * @module
 */

interface Bucket {
  tokens: number;
  at: number;
}

/** Sources tracked before full buckets are forgotten. */
export const MAX_TRACKED = 50_000;

/** Milliseconds an untouched bucket takes to fill up again (capacity and refill are both per minute). */
const REFILL_MS = 60_000;

/**
 * The source an address counts as: an IPv4 address as is (also when written
 * as IPv4-mapped IPv6), an IPv6 address as its /64, the smallest block a
 * site is given: one host can pick any of 2^64 addresses inside it.
 */
export function sourceOf(hostname: string): string {
  const address = hostname.replace(/^\[|\]$/g, "").replace(/%.*$/, "").toLowerCase();
  if (!address.includes(":")) return address;
  const mapped = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (mapped) return mapped[1] as string;
  const [head = "", tail] = address.split("::");
  const parts = (text: string) => text === "" ? [] : text.split(":");
  const groups = tail === undefined
    ? parts(head)
    : [...parts(head), ...Array(Math.max(0, 8 - parts(head).length - parts(tail).length)).fill("0"), ...parts(tail)];
  const prefix = groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16));
  while (prefix.length < 4) prefix.push("0");
  return `${prefix.join(":")}::/64`;
}

/** Token buckets by source. */
export class RateLimiter {
  #perMinute: number;
  /** Least recently touched first: take() moves a bucket to the end. */
  #buckets = new Map<string, Bucket>();
  #now: () => number;

  /** Allows `perMinute` events per key and minute, in bursts of up to `perMinute`. */
  constructor(perMinute: number, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#now = now;
  }

  /** Sources tracked now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** True when `key` has a token to take now (takes nothing: see take). */
  allows(key: string): boolean {
    const bucket = this.#buckets.get(key);
    return !bucket || this.#tokens(bucket, this.#now()) >= 1;
  }

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const now = this.#now();
    const known = this.#buckets.get(key);
    const bucket = known ?? { tokens: this.#perMinute, at: now };
    bucket.tokens = this.#tokens(bucket, now);
    bucket.at = now;
    if (known) this.#buckets.delete(key);
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > MAX_TRACKED) this.#forgetFull(now);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  #tokens(bucket: Bucket, now: number): number {
    return Math.min(this.#perMinute, bucket.tokens + (Math.max(0, now - bucket.at) * this.#perMinute) / REFILL_MS);
  }

  /**
   * Forgets the least recently touched buckets while they are full again:
   * each is looked at once, however many sources there are, and a source
   * that still owes tokens is never forgotten (that would refill it).
   */
  #forgetFull(now: number): void {
    for (const [key, bucket] of this.#buckets) {
      if (this.#buckets.size <= MAX_TRACKED || this.#tokens(bucket, now) < this.#perMinute) return;
      this.#buckets.delete(key);
    }
  }
}
