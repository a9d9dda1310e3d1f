import { equal, ok } from "node:assert/strict";
import { MAX_TRACKED, RateLimiter, sourceOf } from "../../src/server/rate_limit.ts";

/** A clock the test moves by hand. */
function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => t += ms };
}

Deno.test("rate limit: a burst of the per-minute figure, then one token every 60/N s", () => {
  const clock = fakeClock();
  const rates = new RateLimiter(6, clock.now);
  for (let i = 0; i < 6; i++) ok(rates.take("10.0.0.1"), `token ${i + 1}`);
  equal(rates.take("10.0.0.1"), false, "the burst is spent");
  ok(rates.take("10.0.0.2"), "another source has its own bucket");
  clock.advance(9_999);
  equal(rates.take("10.0.0.1"), false, "not yet 10 s");
  clock.advance(1);
  ok(rates.take("10.0.0.1"), "one token after 10 s");
  equal(rates.take("10.0.0.1"), false);
  clock.advance(3_600_000);
  for (let i = 0; i < 6; i++) ok(rates.take("10.0.0.1"), "a full bucket again, not more");
  equal(rates.take("10.0.0.1"), false);
});

Deno.test("rate limit: allows() looks without taking, so a failed admission proof spends nothing", () => {
  const clock = fakeClock();
  const rates = new RateLimiter(2, clock.now);
  for (let i = 0; i < 10; i++) ok(rates.allows("10.0.0.1"));
  ok(rates.take("10.0.0.1"));
  ok(rates.take("10.0.0.1"));
  equal(rates.allows("10.0.0.1"), false);
  clock.advance(30_000);
  ok(rates.allows("10.0.0.1"));
});

Deno.test("rate limit: sources are IPv4 addresses and IPv6 /64 blocks", () => {
  equal(sourceOf("192.0.2.7"), "192.0.2.7");
  equal(sourceOf("::ffff:192.0.2.7"), "192.0.2.7");
  equal(sourceOf("[::ffff:192.0.2.7]"), "192.0.2.7");
  equal(sourceOf("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  equal(sourceOf("2001:DB8:1:2::1"), "2001:db8:1:2::/64");
  equal(sourceOf("2001:0db8:0001:0002::ffff:1"), "2001:db8:1:2::/64");
  equal(sourceOf("2001:db8::1"), "2001:db8:0:0::/64");
  equal(sourceOf("::1"), "0:0:0:0::/64");
  equal(sourceOf("fe80::1%eth0"), "fe80:0:0:0::/64");
  const rates = new RateLimiter(3, fakeClock().now);
  // One host walking through its /64: the addresses share one bucket.
  for (let i = 1; i <= 3; i++) ok(rates.take(sourceOf(`2001:db8:1:2::${i.toString(16)}`)));
  equal(rates.take(sourceOf("2001:db8:1:2:ffff::9")), false);
  ok(rates.take(sourceOf("2001:db8:1:3::1")), "the next /64 is another source");
});

Deno.test(`rate limit: past ${MAX_TRACKED} sources, full buckets are forgotten without walking all of them each time`, () => {
  const clock = fakeClock();
  const rates = new RateLimiter(2, clock.now);
  ok(rates.take("owing") && rates.take("owing"));
  for (let i = 0; i < MAX_TRACKED; i++) rates.take(`a${i}`);
  equal(rates.size, MAX_TRACKED + 1);
  // A crowd of sources that each spent a token just now: nothing is full, nothing is forgotten,
  // and the limiter must not walk the whole map for each of them.
  clock.advance(1_000);
  const started = performance.now();
  for (let i = 0; i < 20_000; i++) rates.take(`b${i}`);
  const took = performance.now() - started;
  ok(took < 1_500, `20,000 takes past the limit took ${took.toFixed(0)} ms`);
  equal(rates.size, MAX_TRACKED + 1 + 20_000, "buckets that still owe tokens are kept");
  equal(rates.take("owing"), false, "a source that spent its burst is not refilled by being forgotten");
  // A minute later every old bucket is full again: they go as new sources arrive.
  clock.advance(60_000);
  rates.take("late");
  ok(rates.size <= MAX_TRACKED, `${rates.size} sources tracked`);
  ok(rates.take("late"), "the newest is kept");
});
