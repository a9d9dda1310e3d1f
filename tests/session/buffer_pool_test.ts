import { deepEqual, equal } from "node:assert/strict";
import { BufferPool, LentBuffers, PoolLease } from "../../src/session/buffer_pool.ts";
import { type Transport, WriteQueue } from "../../src/session/transport.ts";
import { ReplayBuffer } from "../../src/session/replay_buffer.ts";
import { Link } from "../../src/session/link.ts";
import { encodeData, encodeOffsetFrame, encodePreface, FrameType, readU64 } from "../../src/protocol/frames.ts";
import { readBufferPool } from "../../src/session/buffer_pool.ts";

Deno.test("the pool hands back buffers of the exact length asked, reused before allocated", () => {
  const pool = new BufferPool(64 * 1024);
  const a = pool.take(4096);
  equal(a.length, 4096);
  pool.give(a);
  equal(pool.pooledBytes, 4096);
  equal(pool.take(8192).length, 8192, "another length is not served from the 4 KiB list");
  equal(pool.take(4096), a, "the same buffer comes back");
  equal(pool.pooledBytes, 0);
  equal(pool.counts.reused, 1);
  equal(pool.counts.allocated, 2);
});

Deno.test("the pool keeps no views, no empty buffers and nothing beyond its budget", () => {
  const pool = new BufferPool(10_000);
  const whole = new Uint8Array(8192);
  pool.give(whole.subarray(0, 4096));
  pool.give(whole.subarray(4096));
  pool.give(new Uint8Array(0));
  equal(pool.pooledBytes, 0, "views and empty buffers are left to the collector");
  pool.give(whole);
  pool.give(new Uint8Array(8192));
  equal(pool.pooledBytes, 8192, "the second buffer would exceed the budget");
});

Deno.test("a lease returns its buffer only when every holder released it", () => {
  const pool = new BufferPool(1 << 20);
  const buffer = pool.take(4096);
  const lease = new PoolLease(buffer, pool, 2);
  lease.release();
  equal(pool.pooledBytes, 0, "one holder still has it");
  lease.release();
  equal(pool.pooledBytes, 4096);
});

/** A transport whose writes complete when the test says so. */
function gatedTransport() {
  const written: number[] = [];
  let open: (() => void) | null = null;
  const transport: Transport = {
    read: () => Promise.resolve(null),
    write: async (p) => {
      await new Promise<void>((resolve) => open = resolve);
      written.push(p.length);
      return p.length;
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  return { transport, written, step: () => open?.() };
}

Deno.test("a write queue counts pushed and written bytes and releases owners only after the write", async () => {
  const { transport, step } = gatedTransport();
  const queue = new WriteQueue(transport, () => {});
  let released = 0;
  queue.push(new Uint8Array(10), { release: () => released++ });
  queue.push(new Uint8Array(5));
  equal(queue.pushedTotal, 15);
  equal(queue.writtenTotal, 0);
  await Promise.resolve();
  equal(released, 0, "not released while the write is in flight");
  step();
  while (queue.writtenTotal < 10) await new Promise((r) => setTimeout(r, 0));
  equal(released, 1);
  step();
  await queue.flushed();
  equal(queue.writtenTotal, 15);
});

Deno.test("a closed write queue never releases what it dropped", async () => {
  const { transport, step } = gatedTransport();
  const queue = new WriteQueue(transport, () => {});
  let released = 0;
  queue.push(new Uint8Array(10), { release: () => released++ });
  queue.push(new Uint8Array(10), { release: () => released++ });
  queue.close();
  step();
  await new Promise((r) => setTimeout(r, 0));
  equal(released, 0, "bytes that may still be in flight must not go back to the pool");
  equal(queue.writtenTotal, 0);
});

Deno.test("the replay buffer releases a chunk's owner once all of its bytes are acknowledged, not on clear", () => {
  const buf = new ReplayBuffer();
  const released: string[] = [];
  buf.append(new Uint8Array(4), { retain: () => {}, release: () => released.push("a") });
  buf.append(new Uint8Array(4), { retain: () => {}, release: () => released.push("b") });
  buf.append(new Uint8Array(4), { retain: () => {}, release: () => released.push("c") });
  buf.ackUpTo(2);
  equal(released.length, 0, "a partly acknowledged chunk is still needed");
  buf.ackUpTo(6);
  equal(released.join(), "a");
  buf.ackUpTo(8);
  equal(released.join(), "a,b");
  buf.clear();
  equal(released.join(), "a,b", "cleared bytes may still be on their way: not released");
  equal(buf.size, 0);
});

/** A transport that hands out scripted chunks, one per read (split to the reader's buffer). */
function scriptedTransport(chunks: Uint8Array[]): Transport {
  let pending: Uint8Array | undefined;
  return {
    read: (p) => {
      pending ??= chunks.shift();
      if (!pending) return Promise.resolve(null);
      const n = Math.min(p.length, pending.length);
      p.set(pending.subarray(0, n));
      pending = n < pending.length ? pending.subarray(n) : undefined;
      return Promise.resolve(n);
    },
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
}

Deno.test("a link never reads into a buffer whose DATA the local side has not written yet", async () => {
  const frames = Array.from({ length: 40 }, (_, i) => encodeData(i * 1000, new Uint8Array(1000).fill(i)));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  const local = { pushedTotal: 0, writtenTotal: 0 };
  equal((await link.readFrame())?.type, FrameType.Preface);
  const lent = new LentBuffers(local);
  link.recycleBuffersAfter(lent);
  const held: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) {
    const frame = await link.readFrame();
    const payload = frame?.payload.subarray(8) as Uint8Array;
    held.push(payload);
    local.pushedTotal += payload.length;
    link.lendReadBuffer();
    if (i % 10 === 9) {
      // The local socket catches up only now and then: earlier payloads must be intact meanwhile.
      for (const [j, bytes] of held.entries()) deepEqual(bytes, new Uint8Array(1000).fill(i - held.length + 1 + j));
      local.writtenTotal = local.pushedTotal;
      held.length = 0;
    }
  }
  equal(await link.readFrame(), null);
  link.close();
});

Deno.test("a link reuses its read buffers once the local side wrote what they carried", async () => {
  const frames = Array.from({ length: 200 }, (_, i) => encodeData(i * 3000, new Uint8Array(3000).fill(i)));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  const local = { pushedTotal: 0, writtenTotal: 0 };
  await link.readFrame();
  const lent = new LentBuffers(local);
  link.recycleBuffersAfter(lent);
  const before = readBufferPool.counts.allocated;
  for (let i = 0; i < 200; i++) {
    const frame = await link.readFrame();
    equal(frame?.payload[8], i & 0xff, `frame ${i} intact`);
    local.pushedTotal += 3000;
    link.lendReadBuffer();
    local.writtenTotal = local.pushedTotal; // written at once
  }
  const allocated = readBufferPool.counts.allocated - before;
  equal(allocated <= 4, true, `200 frames split across reads needed only ${allocated} new buffers`);
  link.close();
});

Deno.test("a link whose local side is stuck keeps no buffer for frames it did not lend (control frames, copies)", async () => {
  // The local socket never takes anything (pushedTotal > writtenTotal for good): every
  // read used to retire the buffer, so a stream of ACKs and heartbeats grew memory without end.
  const frames = Array.from({ length: 2000 }, (_, i) => encodeOffsetFrame(FrameType.Heartbeat, i));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  const local = { pushedTotal: 1000, writtenTotal: 0 };
  await link.readFrame();
  const lent = new LentBuffers(local);
  link.recycleBuffersAfter(lent);
  const before = readBufferPool.counts.allocated + readBufferPool.counts.reused;
  for (let i = 0; i < 2000; i++) equal(readU64((await link.readFrame())?.payload as Uint8Array, 0), i);
  equal(lent.bytes, 0, "no buffer is kept for the stuck local side");
  const taken = readBufferPool.counts.allocated + readBufferPool.counts.reused - before;
  equal(taken <= 8, true, `2000 control frames took ${taken} buffers`);
  link.close();
});

Deno.test("a link keeps a lent buffer until the local side wrote past it, and counts what it keeps", async () => {
  const frames = Array.from({ length: 8 }, (_, i) => encodeData(i * 1000, new Uint8Array(1000).fill(i)));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  const local = { pushedTotal: 0, writtenTotal: 0 };
  await link.readFrame();
  const lent = new LentBuffers(local);
  link.recycleBuffersAfter(lent);
  const held: Uint8Array[] = [];
  for (let i = 0; i < 8; i++) {
    held.push(((await link.readFrame())?.payload as Uint8Array).subarray(8));
    local.pushedTotal += 1000;
    link.lendReadBuffer();
  }
  equal(lent.bytes > 0, true, "buffers holding unwritten DATA are kept and counted");
  for (const [i, bytes] of held.entries()) deepEqual(bytes, new Uint8Array(1000).fill(i), `payload ${i} intact`);
  local.writtenTotal = local.pushedTotal;
  equal(await link.readFrame(), null);
  equal(lent.bytes, 0, "all handed back once written");
  link.close();
});
