/**
 * WriteQueue.pushCopy gathers small pieces into shared pooled buffers: it
 * must never append to a buffer a write is using, must keep the order with
 * plain pushes, and must hand its buffers back only once written.
 */
import { deepEqual, equal } from "node:assert/strict";
import { type Transport, WriteQueue } from "../../src/session/transport.ts";
import { readBufferPool } from "../../src/session/buffer_pool.ts";

/** A transport whose writes complete when the test says so; it records what each write carried when issued. */
function gatedTransport() {
  const out: number[] = [];
  let open: (() => void) | null = null;
  let writes = 0;
  const transport: Transport = {
    read: () => Promise.resolve(null),
    write: async (p) => {
      writes++;
      const copy = [...p];
      await new Promise<void>((resolve) => open = resolve);
      out.push(...copy);
      return p.length;
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  return { transport, out, writes: () => writes, step: () => open?.() };
}

Deno.test("pushCopy gathers small pieces behind the write in flight, in order with plain pushes", async () => {
  const { transport, out, writes, step } = gatedTransport();
  let written = 0;
  const queue = new WriteQueue(transport, () => {}, () => written++);
  queue.pushCopy(new Uint8Array([1]));
  await Promise.resolve();
  queue.pushCopy(new Uint8Array([2])); // the first buffer is being written: a new one
  queue.pushCopy(new Uint8Array([3]));
  queue.push(new Uint8Array([4, 5]));
  queue.pushCopy(new Uint8Array([6])); // after a plain push: a new one
  queue.pushCopy(new Uint8Array([7]));
  equal(queue.pushedTotal, 7);
  equal(queue.queuedBytes, 7);
  while (queue.writtenTotal < 7) {
    step();
    await new Promise((r) => setTimeout(r, 0));
  }
  deepEqual(out, [1, 2, 3, 4, 5, 6, 7]);
  equal(writes(), 4, "one write per gathered buffer: [1] [2 3] [4 5] [6 7]");
  equal(written, 4);
});

Deno.test("pushCopy's buffers go back to the pool only once written, and never when dropped", async () => {
  const { transport, step } = gatedTransport();
  const queue = new WriteQueue(transport, () => {});
  queue.pushCopy(new Uint8Array(100));
  await Promise.resolve();
  queue.pushCopy(new Uint8Array(100)); // the first is being written: a second buffer
  const out = readBufferPool.pooledBytes;
  step();
  while (queue.writtenTotal < 100) await new Promise((r) => setTimeout(r, 0));
  equal(readBufferPool.pooledBytes, out + 16 * 1024, "the written buffer is back in the pool");
  const before = readBufferPool.pooledBytes;
  queue.close();
  step();
  await new Promise((r) => setTimeout(r, 0));
  equal(readBufferPool.pooledBytes, before, "the dropped one is not: it may still be in flight");
});
