import { deepEqual, equal, ok } from "node:assert/strict";
import { type RetryOptions, retryUntil } from "../../src/client/retry.ts";
import { seededRandom } from "../../tools/streams.ts";

/** A fake clock whose sleep moves time on at once; records the waits and the signals they were given. */
function fakeTime() {
  const time = { now: 0, waits: [] as number[], signals: [] as (AbortSignal | undefined)[] };
  const options: Pick<RetryOptions<unknown>, "now" | "sleep"> = {
    now: () => time.now,
    sleep: (ms, signal) => {
      time.waits.push(ms);
      time.signals.push(signal);
      time.now += ms;
      return Promise.resolve(true);
    },
  };
  return { time, options };
}

const half = () => 0.5;

Deno.test("retryUntil: the first attempt starts at once, then the backoff schedule paces the retries", async () => {
  const { time, options } = fakeTime();
  const starts: number[] = [];
  const outcome = await retryUntil(10_000, () => "retry", {
    ...options,
    random: half,
    attempt: (n) => {
      starts.push(time.now);
      if (n < 4) return Promise.reject(new Error(`failure ${n}`));
      return Promise.resolve("opened");
    },
  });
  deepEqual(outcome, { kind: "done", value: "opened" });
  deepEqual(time.waits, [50, 100, 200, 400]);
  deepEqual(starts, [0, 50, 150, 350, 750]);
});

Deno.test("retryUntil: waitFirst waits before the first attempt too", async () => {
  const { time, options } = fakeTime();
  const outcome = await retryUntil(10_000, () => "retry", {
    ...options,
    random: half,
    waitFirst: true,
    attempt: () => Promise.resolve(time.now),
  });
  deepEqual(outcome, { kind: "done", value: 50 });
});

Deno.test("retryUntil: a failure classified final ends at once, with that error", async () => {
  const { time, options } = fakeTime();
  const seen: string[] = [];
  const outcome = await retryUntil(10_000, (err) => {
    seen.push((err as Error).message);
    return (err as Error).message === "refused" ? "final" : "retry";
  }, {
    ...options,
    random: half,
    attempt: (n) => Promise.reject(new Error(n < 2 ? "unreachable" : "refused")),
  });
  equal(outcome.kind, "final");
  equal(outcome.kind === "final" && (outcome.error as Error).message, "refused");
  deepEqual(seen, ["unreachable", "unreachable", "refused"], "classify sees every failure");
  deepEqual(time.waits, [50, 100]);
});

Deno.test("retryUntil: the deadline ends the retries with the last failure; the last wait is shortened to it", async () => {
  const { time, options } = fakeTime();
  const retried: [string, number][] = [];
  const outcome = await retryUntil(1_000, () => "retry", {
    ...options,
    random: half,
    retrying: (err, n) => retried.push([(err as Error).message, n]),
    attempt: (n) => {
      time.now += 10; // each attempt takes 10 ms
      return Promise.reject(new Error(`failure ${n}`));
    },
  });
  equal(outcome.kind, "expired");
  equal(outcome.kind === "expired" && (outcome.error as Error).message, "failure 5");
  deepEqual(time.waits, [50, 100, 200, 400, 200]);
  deepEqual(retried.map(([, n]) => n), [0, 1, 2, 3, 4], "retrying is told before each wait, not at the expiry");
  ok(time.now >= 1_000);
});

Deno.test("retryUntil: a deadline already past with waitFirst expires without an attempt", async () => {
  const { options } = fakeTime();
  let attempts = 0;
  const outcome = await retryUntil(0, () => "retry", {
    ...options,
    waitFirst: true,
    attempt: () => Promise.resolve(attempts++),
  });
  deepEqual(outcome, { kind: "expired", error: undefined });
  equal(attempts, 0);
});

Deno.test("retryUntil: stop() is asked after each wait; interrupt() is read before each wait", async () => {
  const { time, options } = fakeTime();
  const first = new AbortController();
  const second = new AbortController();
  let attempts = 0;
  const outcome = await retryUntil(10_000, () => "retry", {
    ...options,
    random: half,
    waitFirst: true,
    interrupt: () => attempts === 0 ? first.signal : second.signal,
    stop: () => attempts === 2,
    attempt: () => {
      attempts++;
      return Promise.reject(new Error("down"));
    },
  });
  deepEqual(outcome, { kind: "stopped" });
  equal(attempts, 2);
  deepEqual(time.signals, [first.signal, second.signal, second.signal]);
});

Deno.test("retryUntil: with real sleep, an interrupt cuts the wait short and the next attempt comes at once", async () => {
  const interrupt = new AbortController();
  let attempts = 0;
  const started = Date.now();
  const outcome = await retryUntil(Date.now() + 60_000, () => "retry", {
    now: Date.now,
    random: () => 0.999,
    interrupt: () => interrupt.signal,
    attempt: () => {
      attempts++;
      if (attempts === 3) return Promise.resolve("done");
      if (attempts === 2) interrupt.abort();
      return Promise.reject(new Error("down"));
    },
  });
  deepEqual(outcome, { kind: "done", value: "done" });
  ok(Date.now() - started < 1_000, "the second wait (up to 199 ms) was cut short");
});

Deno.test("retryUntil: seeded randomness gives the same waits each run, all within the backoff ceilings", async () => {
  const run = async () => {
    const { time, options } = fakeTime();
    await retryUntil(30_000, () => "retry", {
      ...options,
      random: seededRandom(7),
      attempt: () => Promise.reject(new Error("down")),
    });
    return time.waits;
  };
  const waits = await run();
  deepEqual(await run(), waits);
  ok(waits.every((w, i) => w >= 0 && w < Math.min(1_000, 100 * 2 ** i)), waits.join());
  ok(waits.length > 30, `a 30 s deadline with a 1 s cap allows many retries (${waits.length})`);
});
