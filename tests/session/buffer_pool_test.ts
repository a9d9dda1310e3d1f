import { deepEqual, equal } from "node:assert/strict";
import { poisonOnGive } from "../helpers/pool.ts";
import { BufferPool, type HeldBytes, PoolLease } from "../../src/session/buffer_pool.ts";
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
  queue.push(new Uint8Array(10), { release: () => released++, abandon: () => {} });
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

Deno.test("a closed write queue abandons the entry being written and releases the others", async () => {
  const { transport, step } = gatedTransport();
  const queue = new WriteQueue(transport, () => {});
  const ends: string[] = [];
  const owner = (name: string) => ({
    release: () => ends.push(`${name} released`),
    abandon: () => ends.push(`${name} abandoned`),
  });
  queue.push(new Uint8Array(10), owner("a"));
  queue.push(new Uint8Array(10), owner("b"));
  await Promise.resolve();
  queue.close();
  // a's write is in flight: its bytes may still be read by the transport, so
  // its buffer must never be reused; b was never handed to the transport.
  deepEqual(ends, ["a abandoned", "b released"]);
  step();
  await new Promise((r) => setTimeout(r, 0));
  deepEqual(ends, ["a abandoned", "b released"], "each count ends once");
  equal(queue.writtenTotal, 0);
});

Deno.test("the replay buffer releases a chunk's owner once all of its bytes are acknowledged, and the rest on clear", () => {
  const buf = new ReplayBuffer();
  const released: string[] = [];
  const owner = (name: string) => ({ retain: () => {}, release: () => released.push(name), abandon: () => {} });
  buf.append(new Uint8Array(4), owner("a"));
  buf.append(new Uint8Array(4), owner("b"));
  buf.append(new Uint8Array(4), owner("c"));
  buf.ackUpTo(2);
  equal(released.length, 0, "a partly acknowledged chunk is still needed");
  buf.ackUpTo(6);
  equal(released.join(), "a");
  buf.ackUpTo(8);
  equal(released.join(), "a,b");
  buf.clear();
  // A write queue still sending c's bytes holds a count of its own.
  equal(released.join(), "a,b,c", "the replay buffer's own count ends on clear");
  equal(buf.size, 0);
  buf.clear();
  equal(released.join(), "a,b,c", "once");
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

/** A stand-in for a session's local write queue: keeps the leases of lent payloads until "written". */
function fakeLocal() {
  const held: { bytes: Uint8Array; lease: PoolLease | undefined }[] = [];
  return {
    held,
    lend(link: Link, bytes: Uint8Array) {
      held.push({ bytes, lease: link.lendReadBuffer() });
    },
    writeAll() {
      for (const { lease } of held.splice(0)) lease?.release();
    },
  };
}

Deno.test("a link never reads into a buffer whose DATA the local side has not written yet", async () => {
  const frames = Array.from({ length: 40 }, (_, i) => encodeData(i * 1000, new Uint8Array(1000).fill(i)));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  equal((await link.readFrame())?.type, FrameType.Preface);
  const lent: HeldBytes = { bytes: 0 };
  link.recycleBuffers(lent);
  const local = fakeLocal();
  for (let i = 0; i < 40; i++) {
    const frame = await link.readFrame();
    local.lend(link, frame?.payload.subarray(8) as Uint8Array);
    if (i % 10 === 9) {
      // The local socket catches up only now and then: earlier payloads must be intact meanwhile.
      for (const [j, { bytes }] of local.held.entries()) {
        deepEqual(bytes, new Uint8Array(1000).fill(i - local.held.length + 1 + j));
      }
      local.writeAll();
    }
  }
  equal(await link.readFrame(), null);
  link.close();
  equal(lent.bytes, 0);
});

Deno.test("a link reuses its read buffers once the local side wrote what they carried", async () => {
  const frames = Array.from({ length: 200 }, (_, i) => encodeData(i * 3000, new Uint8Array(3000).fill(i)));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  await link.readFrame();
  link.recycleBuffers({ bytes: 0 });
  const local = fakeLocal();
  const before = readBufferPool.counts.allocated;
  for (let i = 0; i < 200; i++) {
    const frame = await link.readFrame();
    equal(frame?.payload[8], i & 0xff, `frame ${i} intact`);
    local.lend(link, frame?.payload as Uint8Array);
    local.writeAll(); // written at once
  }
  const allocated = readBufferPool.counts.allocated - before;
  equal(allocated <= 4, true, `200 frames split across reads needed only ${allocated} new buffers`);
  link.close();
});

Deno.test("a link whose local side is stuck keeps no buffer for frames it did not lend (control frames, copies)", async () => {
  // The local socket never takes anything: a stream of ACKs and heartbeats
  // must not keep buffers alive, since none of their bytes were lent.
  const frames = Array.from({ length: 2000 }, (_, i) => encodeOffsetFrame(FrameType.Heartbeat, i));
  const link = new Link(scriptedTransport([encodePreface(), ...frames]), "test");
  await link.readFrame();
  const lent: HeldBytes = { bytes: 0 };
  link.recycleBuffers(lent);
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
  await link.readFrame();
  const lent: HeldBytes = { bytes: 0 };
  link.recycleBuffers(lent);
  const local = fakeLocal();
  for (let i = 0; i < 8; i++) local.lend(link, ((await link.readFrame())?.payload as Uint8Array).subarray(8));
  equal(await link.readFrame(), null);
  link.close();
  equal(lent.bytes > 0, true, "buffers holding unwritten DATA are kept and counted");
  for (const [i, { bytes }] of local.held.entries()) {
    deepEqual(bytes, new Uint8Array(1000).fill(i), `payload ${i} intact`);
  }
  const pooled = readBufferPool.pooledBytes;
  local.writeAll();
  equal(lent.bytes, 0, "all handed back once written");
  equal(readBufferPool.pooledBytes > pooled, true, "and back in the pool");
});

Deno.test("a link closed while a read may still fill its buffer never hands that buffer back", async () => {
  let fill: ((n: number | null) => void) | null = null;
  let target: Uint8Array | null = null;
  const chunks = [encodePreface(), encodeData(0, new Uint8Array(5000).fill(7))];
  const transport: Transport = {
    read: (p) => {
      const next = chunks.shift();
      if (next) {
        const n = Math.min(p.length, next.length);
        p.set(next.subarray(0, n));
        if (n < next.length) chunks.unshift(next.subarray(n));
        return Promise.resolve(n);
      }
      target = p;
      return new Promise((resolve) => fill = resolve);
    },
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  const link = new Link(transport, "test");
  await link.readFrame();
  const lent: HeldBytes = { bytes: 0 };
  link.recycleBuffers(lent);
  const local = fakeLocal();
  local.lend(link, ((await link.readFrame())?.payload as Uint8Array).subarray(8));
  const pending = link.readFrame().catch(() => null);
  while (!target) await Promise.resolve();
  link.close();
  equal(lent.bytes > 0, true, "the lent view's buffer is counted after the close");
  local.writeAll();
  equal(lent.bytes, 0, "and uncounted once written");
  const buffer = (target as Uint8Array).buffer;
  const reused: ArrayBufferLike[] = [];
  for (let i = 0; i < 64 && readBufferPool.pooledBytes > 0; i++) reused.push(readBufferPool.take(8192).buffer);
  equal(reused.includes(buffer), false, "the buffer a read may still fill is not in the pool");
  (fill as unknown as (n: number | null) => void)(null);
  await pending;
});

Deno.test("DATA that came in the same read as the handshake is lent without a lease (its buffer is never pooled)", async () => {
  const data = encodeData(0, new Uint8Array(300).fill(9));
  const first = new Uint8Array([...encodePreface(), ...data]);
  const link = new Link(scriptedTransport([first, encodeData(300, new Uint8Array(5000).fill(8))]), "test");
  equal((await link.readFrame())?.type, FrameType.Preface);
  const lent: HeldBytes = { bytes: 0 };
  link.recycleBuffers(lent);
  const frame = await link.readFrame();
  equal(frame?.type, FrameType.Data);
  equal(link.lendReadBuffer(), undefined, "the handshake's buffer has no lease");
  const next = await link.readFrame();
  deepEqual(next?.payload.subarray(8), new Uint8Array(5000).fill(8));
  const lease = link.lendReadBuffer();
  equal(lease instanceof PoolLease, true, "pooled buffers come with their lease");
  deepEqual(frame?.payload.subarray(8), new Uint8Array(300).fill(9), "the first payload is intact");
  lease?.release();
  link.close();
});

Deno.test("a lease released more often than it is held puts its buffer in the pool only once", () => {
  // One holder too many (a bug elsewhere) must not make two takers share a buffer: the
  // old lease gave only when the count hit zero exactly.
  const pool = new BufferPool(1 << 20);
  const lease = new PoolLease(pool.take(4096), pool, 1);
  lease.release();
  lease.release();
  equal(pool.pooledBytes, 4096, "the buffer is in the pool once");
  const a = pool.take(4096);
  const b = pool.take(4096);
  equal(a === b, false, "two takers never get the same buffer");
});

Deno.test("a link closed between frames hands out no frame from a buffer that went back to the pool", async () => {
  // Three small DATA frames arrive in one read; the link is closed after the first
  // (not while reading): what the decoder still holds must stay intact if read.
  const frames = [1, 2, 3].map((i) => encodeData((i - 1) * 100, new Uint8Array(100).fill(i)));
  const link = new Link(scriptedTransport([encodePreface(), new Uint8Array(frames.flatMap((f) => [...f]))]), "test");
  await link.readFrame();
  link.recycleBuffers({ bytes: 0 });
  const undo = poisonOnGive();
  try {
    deepEqual((await link.readFrame())?.payload.subarray(8), new Uint8Array(100).fill(1));
    link.close();
    const next = await link.readFrame();
    if (next) deepEqual(next.payload.subarray(8), new Uint8Array(100).fill(2), "a frame read after close is intact");
  } finally {
    undo();
  }
});

Deno.test("recycleBuffers called again after reads started never pools a buffer with lent views or a carried frame", async () => {
  const frames = Array.from({ length: 30 }, (_, i) => encodeData(i * 5000, new Uint8Array(5000).fill(i + 1)));
  // Two frames and a half per read, so that reads carry the start of a frame.
  const stream = new Uint8Array(frames.flatMap((f) => [...f]));
  const chunks = [];
  for (let at = 0; at < stream.length; at += 12_500) chunks.push(stream.subarray(at, at + 12_500));
  const link = new Link(scriptedTransport([encodePreface(), ...chunks]), "test");
  await link.readFrame();
  const lent: HeldBytes = { bytes: 0 };
  link.recycleBuffers(lent);
  const local = fakeLocal();
  const fills: number[] = [];
  const check = () => {
    for (const [j, { bytes }] of local.held.entries()) {
      deepEqual(bytes, new Uint8Array(5000).fill(fills[j] as number), `held payload ${fills[j]} intact`);
    }
  };
  const undo = poisonOnGive();
  try {
    for (let i = 0; i < 30; i++) {
      const frame = await link.readFrame();
      check();
      deepEqual(frame?.payload.subarray(8), new Uint8Array(5000).fill(i + 1), `frame ${i} intact`);
      if (i % 7 === 3) {
        // A second attach of the same link (a misuse), while its buffer holds this frame and
        // maybe the start of the next: that buffer must stay out of the pool.
        local.writeAll();
        fills.length = 0;
        link.recycleBuffers(lent);
      }
      local.lend(link, (frame?.payload as Uint8Array).subarray(8));
      fills.push(i + 1);
    }
    check();
    local.writeAll();
    equal(await link.readFrame(), null);
    link.close();
    equal(lent.bytes, 0, "nothing stays counted");
  } finally {
    undo();
  }
});
