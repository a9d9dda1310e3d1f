import { deepEqual, equal, throws } from "node:assert/strict";
import { ReplayBuffer, ResumeGapError } from "../../src/session/replay_buffer.ts";

const bytes = (...v: number[]) => new Uint8Array(v);
const collect = (buf: ReplayBuffer, from: number) =>
  [...buf.bytesFrom(from)].map(({ offset, bytes }) => [offset, [...bytes]]);

Deno.test("append assigns consecutive offsets and keeps the caller's buffers without copying", () => {
  const buf = new ReplayBuffer();
  const a = bytes(1, 2, 3);
  equal(buf.append(a), 0);
  equal(buf.append(bytes(4, 5)), 3);
  equal(buf.append(new Uint8Array(0)), 5);
  equal(buf.end, 5);
  equal(buf.size, 5);
  const [first] = buf.bytesFrom(0);
  equal(first?.bytes, a, "the same view, not a copy");
});

Deno.test("ackUpTo trims whole and partial chunks and ignores old acknowledgements", () => {
  const buf = new ReplayBuffer();
  buf.append(bytes(1, 2, 3));
  buf.append(bytes(4, 5, 6));
  equal(buf.ackUpTo(4), 4);
  equal(buf.start, 4);
  equal(buf.size, 2);
  deepEqual(collect(buf, 4), [[4, [5, 6]]]);
  equal(buf.ackUpTo(2), 0, "an older ack frees nothing");
  equal(buf.ackUpTo(6), 2);
  equal(buf.size, 0);
  deepEqual(collect(buf, 6), []);
  throws(() => buf.ackUpTo(7), /Cannot acknowledge up to offset 7: only 6 bytes were sent/);
});

Deno.test("bytesFrom hands back exactly what the peer missed, from inside a chunk", () => {
  const buf = new ReplayBuffer();
  buf.append(bytes(1, 2, 3));
  buf.append(bytes(4, 5));
  buf.append(bytes(6));
  deepEqual(collect(buf, 0), [[0, [1, 2, 3]], [3, [4, 5]], [5, [6]]]);
  deepEqual(collect(buf, 4), [[4, [5]], [5, [6]]]);
  deepEqual(collect(buf, 6), []);
});

Deno.test("a request for dropped bytes is a ResumeGapError; beyond the end a RangeError", () => {
  const buf = new ReplayBuffer();
  buf.append(bytes(1, 2, 3, 4));
  buf.ackUpTo(3);
  const err = throws(() => buf.bytesFrom(2).next(), ResumeGapError);
  void err;
  try {
    buf.bytesFrom(1).next();
  } catch (e) {
    equal((e as ResumeGapError).requested, 1);
    equal((e as ResumeGapError).oldest, 3);
    equal((e as Error).message, "Cannot resume from offset 1: the oldest byte still buffered is at offset 3");
  }
  throws(() => buf.bytesFrom(5).next(), RangeError);
});

Deno.test("offsets stay exact across 2^32 and near 2^53", () => {
  for (const start of [2 ** 32 - 2, 2 ** 53 - 10]) {
    const buf = new ReplayBuffer(start);
    equal(buf.append(bytes(1, 2, 3)), start);
    equal(buf.append(bytes(4, 5)), start + 3);
    equal(buf.end, start + 5);
    buf.ackUpTo(start + 4);
    deepEqual(collect(buf, start + 4), [[start + 4, [5]]]);
    throws(() => buf.bytesFrom(start + 1).next(), ResumeGapError);
  }
  throws(() => new ReplayBuffer(-1), RangeError);
});

Deno.test("many small chunks: trimming keeps order and memory bounded", () => {
  const buf = new ReplayBuffer();
  let expectedStart = 0;
  for (let i = 0; i < 10_000; i++) {
    buf.append(bytes(i & 0xff));
    if (i % 7 === 6) {
      expectedStart = i - 2;
      buf.ackUpTo(expectedStart);
    }
  }
  equal(buf.start, expectedStart);
  const replayed = collect(buf, expectedStart).map(([, b]) => (b as number[])[0]);
  deepEqual(replayed, Array.from({ length: 10_000 - expectedStart }, (_, k) => (expectedStart + k) & 0xff));
  buf.clear();
  equal(buf.size, 0);
});
