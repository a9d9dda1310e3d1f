import { deepEqual, equal, ok } from "node:assert/strict";
import { backoffDelay, backoffSchedule, sleep } from "../../src/session/backoff.ts";
import { seededRandom } from "../../tools/streams.ts";

Deno.test("full jitter: the ceiling doubles from 100 ms and stops at 1 s", () => {
  const top = () => 0.999999;
  deepEqual(
    Array.from({ length: 7 }, (_, i) => backoffDelay(i, { random: top })),
    [99, 199, 399, 799, 999, 999, 999],
  );
  equal(backoffDelay(0, { random: () => 0 }), 0, "a retry may come at once");
  equal(backoffDelay(1000, { random: top }), 999, "huge attempt counts do not overflow");
  equal(backoffDelay(6, { random: top, capMs: 2000 }), 1999, "the cap is an option");
});

Deno.test("full jitter: delays are spread over the whole range (seeded)", () => {
  const random = seededRandom(42);
  const delays = Array.from({ length: 2000 }, () => backoffDelay(10, { random }));
  ok(delays.every((d) => d >= 0 && d < 1000));
  const low = delays.filter((d) => d < 500).length;
  ok(low > 900 && low < 1100, `about half below 0.5 s, got ${low}`);
});

Deno.test("schedule stops at the deadline and shortens the last wait (fake clock)", () => {
  let now = 0;
  const waits: number[] = [];
  for (const wait of backoffSchedule(1000, () => now, { random: () => 0.5 })) {
    waits.push(wait);
    now += wait + 10; // each attempt also takes 10 ms
  }
  deepEqual(waits, [50, 100, 200, 400, 210]);
});

Deno.test("sleep resolves false when aborted, true when it ran its course", async () => {
  const controller = new AbortController();
  const pending = sleep(60_000, controller.signal);
  controller.abort();
  equal(await pending, false);
  equal(await sleep(1), true);
  equal(await sleep(10, AbortSignal.abort()), false);
});
