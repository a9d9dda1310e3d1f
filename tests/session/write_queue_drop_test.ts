/**
 * A WriteQueue that is closed or failed drops what is pushed to it; the
 * owner that came with the bytes must still hear that this holder is done
 * (buffer_pool.ts: every count ends), or the pooled buffer is never given
 * back and stays charged to whatever counts it.
 */
import { equal } from "node:assert/strict";
import { type Transport, WriteQueue } from "../../src/session/transport.ts";
import { PoolLease, readBufferPool } from "../../src/session/buffer_pool.ts";

const failing: Transport = {
  read: () => Promise.resolve(null),
  write: () => Promise.reject(new Deno.errors.BrokenPipe("Broken pipe")),
  closeWrite: () => Promise.resolve(),
  close: () => {},
};

Deno.test("a push to a WriteQueue whose transport failed ends the owner's count", async () => {
  const before = PoolLease.live;
  let failed = 0;
  const queue = new WriteQueue(failing, () => failed++);
  queue.push(new Uint8Array([1]));
  await new Promise((r) => setTimeout(r, 0));
  equal(failed, 1);
  equal(queue.closed, true);
  // The session has not heard of the failure yet: it pushes a frame it also keeps for replay.
  const lease = new PoolLease(readBufferPool.take(1024), readBufferPool, 2);
  queue.push(new Uint8Array(lease.buffer.buffer, 0, 16), lease);
  lease.release(); // the replay buffer's count
  equal(PoolLease.live, before);
});

Deno.test("a push to a closed WriteQueue ends the owner's count", () => {
  const before = PoolLease.live;
  const queue = new WriteQueue(failing, () => {});
  queue.close();
  const lease = new PoolLease(readBufferPool.take(1024), readBufferPool, 1);
  queue.push(lease.buffer.subarray(0, 16), lease);
  equal(PoolLease.live, before);
});
