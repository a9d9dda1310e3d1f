/**
 * Pooled buffers through a whole Session, with scripted transports: every
 * buffer handed back to the pool is poisoned (filled with 0xEE) at once, so
 * any view still queued, in flight, kept for replay or held by the decoder
 * that sees its bytes change shows up as corrupt output.
 */
import { deepEqual, equal } from "node:assert/strict";
import { poisonOnGive, takeChunks } from "../helpers/pool.ts";
import { readBufferPool } from "../../src/session/buffer_pool.ts";
import { Link } from "../../src/session/link.ts";
import { Session, type SessionTimers } from "../../src/session/session.ts";
import type { Transport } from "../../src/session/transport.ts";
import {
  encodeAbort,
  encodeData,
  encodeOffsetFrame,
  encodePreface,
  FrameDecoder,
  FrameType,
  readU64,
} from "../../src/protocol/frames.ts";

const TIMERS: SessionTimers = {
  resumeTimeoutMs: 60_000,
  heartbeatIntervalMs: 60_000,
  linkTimeoutMs: 120_000,
  replayBufferBytes: 8 << 20,
  receiveWindowBytes: 64 << 20,
};

/** The byte at stream offset `i` (any pattern that poison cannot imitate over a run). */
const byteAt = (i: number) => (i * 31 + (i >>> 9) * 7 + 1) & 0xff;

function stream(from: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = byteAt(from + i);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Equal bytes, with the first difference in the message. */
function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) throw new Error(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 5000 && !cond(); i++) await tick();
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

/** A seeded generator, so a failure can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A link transport the test feeds; writes complete when the test allows; each write is checked for bytes changed while in flight. */
function linkTransport() {
  const chunks: Uint8Array[] = [];
  let waiting: { p: Uint8Array; resolve: (n: number | null) => void } | null = null;
  const written: Uint8Array[] = [];
  const started: Uint8Array[] = [];
  const gate: (() => void)[] = [];
  let permits = Infinity;
  let changedInFlight = 0;
  const take = (p: Uint8Array) => takeChunks(chunks, p);
  const transport: Transport = {
    read: (p) => chunks.length > 0 ? Promise.resolve(take(p)) : new Promise((resolve) => waiting = { p, resolve }),
    write: async (p) => {
      const atStart = p.slice();
      started.push(atStart);
      if (permits <= 0) await new Promise<void>((resolve) => gate.push(resolve));
      permits--;
      if (atStart.some((b, i) => b !== p[i])) changedInFlight++;
      written.push(atStart);
      return p.length;
    },
    closeWrite: () => Promise.resolve(),
    close: () => {}, // a pending read stays pending: the test may still answer it
  };
  return {
    transport,
    written,
    started,
    changedInFlight: () => changedInFlight,
    feed(bytes: Uint8Array) {
      chunks.push(bytes);
      const w = waiting;
      if (w) {
        waiting = null;
        w.resolve(take(w.p));
      }
    },
    reading: () => waiting !== null,
    /** Answers the pending read with `n` bytes of junk (a read that returns data after close). */
    lateJunk() {
      const w = waiting as { p: Uint8Array; resolve: (n: number | null) => void };
      waiting = null;
      w.p.fill(0xab);
      w.resolve(w.p.length);
    },
    hold() {
      permits = 0;
    },
    allow(n: number) {
      permits = n;
      for (const open of gate.splice(0, n)) open();
    },
    openAll() {
      permits = Infinity;
      for (const open of gate.splice(0)) open();
    },
  };
}

async function handshaken(t: ReturnType<typeof linkTransport>, peer: string): Promise<Link> {
  const link = new Link(t.transport, peer);
  t.feed(encodePreface());
  equal((await link.readFrame())?.type, FrameType.Preface);
  return link;
}

/** The local socket: writes wait for the test's gate; reads serve `source` (or wait forever), null once closed. */
function localTransport(source?: { from: number; length: number }) {
  const out: Uint8Array[] = [];
  const views: Uint8Array[] = [];
  const waiters: (() => void)[] = [];
  let open = false;
  let changedInFlight = 0;
  let readAt = 0;
  let endRead: ((n: number | null) => void) | null = null;
  const transport: Transport = {
    read: (p) => {
      const left = source ? source.length - readAt : 0;
      if (left <= 0) return new Promise((resolve) => endRead = resolve);
      const n = Math.min(p.length, left);
      p.set(stream((source as { from: number }).from + readAt, n));
      readAt += n;
      return Promise.resolve(n);
    },
    write: async (p) => {
      const atStart = p.slice();
      views.push(p);
      if (!open) await new Promise<void>((resolve) => waiters.push(resolve));
      if (atStart.some((b, i) => b !== p[i])) changedInFlight++;
      out.push(atStart);
      return p.length;
    },
    closeWrite: () => Promise.resolve(),
    close: () => endRead?.(null),
  };
  return {
    transport,
    out,
    views,
    readAll: () => source !== undefined && readAt >= source.length,
    changedInFlight: () => changedInFlight,
    open() {
      open = true;
      for (const w of waiters.splice(0)) w();
    },
    hold() {
      open = false;
    },
  };
}

/** DATA frames from stream offset `from`, of the sizes given, and their total. */
function dataFrames(from: number, sizes: number[]): { bytes: Uint8Array; total: number } {
  const frames: Uint8Array[] = [];
  let at = from;
  for (const size of sizes) {
    frames.push(encodeData(at, stream(at, size)));
    at += size;
  }
  return { bytes: concat(frames), total: at - from };
}

/** Feeds `bytes` in random slices. */
function feedSplit(t: ReturnType<typeof linkTransport>, bytes: Uint8Array, random: () => number): void {
  for (let at = 0; at < bytes.length;) {
    const n = 1 + Math.floor(random() * 300_000);
    t.feed(bytes.subarray(at, at + n));
    at += n;
  }
}

/** A server session over a local socket that takes nothing until the test lets it, and whether it has ended. */
function stuckServerSession() {
  const local = localTransport();
  let ended = false;
  const session = new Session({
    role: "server",
    local: local.transport,
    timers: TIMERS,
    events: { ended: () => ended = true },
  });
  return { local, session, isEnded: () => ended };
}

Deno.test("inbound DATA lent to a stuck local socket survives a resume, a read answered after close and the copy budget; the budget comes back", async () => {
  const undo = poisonOnGive();
  const random = prng(7);
  const { local, session, isEnded } = stuckServerSession();
  try {
    session.start();
    const a = linkTransport();
    session.attach(await handshaken(a, "A"), 0);
    // Sizes around SMALL_DATA_BYTES (4096: lent, 4095: copied) and large ones, past the 2 MiB lending budget.
    const sizes = [4096, 4095, 5000, 60_000, 100, 70_000, 4097, 200_000, 1, 12_345, 4096, 4096];
    const first = dataFrames(0, [...sizes, ...sizes, ...sizes, ...sizes, ...sizes, ...sizes, ...sizes]);
    feedSplit(a, first.bytes, random);
    await until(() => session.received === first.total, "link A's DATA");
    await until(() => a.reading(), "link A's next read");
    // The local socket takes what A brought (A's buffers go back), then is stuck again for B.
    local.open();
    await until(() => session.pendingLocalBytes === 0, "the local socket to take A's bytes");
    sameBytes(concat(local.out), stream(0, first.total), "what the local socket got from A");
    local.hold();
    session.detach("replaced by a test"); // closes A while its read is pending
    const b = linkTransport();
    session.attach(await handshaken(b, "B"), 0);
    const second = dataFrames(
      first.total,
      [...sizes, ...sizes, ...sizes, ...sizes, ...sizes, ...sizes, ...sizes, ...sizes].reverse(),
    );
    feedSplit(b, second.bytes, random);
    const total = first.total + second.total;
    await until(() => session.received === total, "link B's DATA");
    // A's read returns bytes only now, after B took buffers from the pool and lent views of them.
    a.lateJunk();
    await tick();
    local.open();
    await until(() => session.pendingLocalBytes === 0, "the local socket to take everything");
    equal(local.changedInFlight(), 0, "no local write saw its bytes change while in flight");
    sameBytes(concat(local.out), stream(0, total), "what the local socket got");
    // Everything was written: nothing stays counted as lent, so a large payload is lent again, not copied.
    b.feed(dataFrames(total, [8192]).bytes);
    await until(() => session.pendingLocalBytes === 0 && session.received === total + 8192, "one more DATA");
    const last = local.views.at(-1) as Uint8Array;
    sameBytes(local.out.at(-1) as Uint8Array, stream(total, 8192), "the last payload");
    equal(
      last.buffer.byteLength > last.length,
      true,
      "the last payload was lent (a view of a link buffer), not copied",
    );
    session.abort("test over");
    await session.settled;
    equal(isEnded(), true);
  } finally {
    undo();
    session.abort("test over");
  }
});

/** DATA frames in what a link transport wrote, in order: [offset, bytes]. */
function writtenData(written: Uint8Array[]): { offset: number; bytes: Uint8Array }[] {
  const decoder = new FrameDecoder({ preface: false });
  decoder.push(concat(written));
  const out: { offset: number; bytes: Uint8Array }[] = [];
  for (let f = decoder.next(); f; f = decoder.next()) {
    if (f.type === FrameType.Data) out.push({ offset: readU64(f.payload, 0), bytes: f.payload.slice(8) });
  }
  return out;
}

Deno.test("outbound DATA queued on a link, acknowledged before it was written, in flight at a resume and replayed stays intact", async () => {
  const undo = poisonOnGive();
  const total = 3 << 20;
  const local = localTransport({ from: 0, length: total });
  const session = new Session({ role: "server", local: local.transport, timers: TIMERS, events: { ended: () => {} } });
  try {
    const a = linkTransport();
    a.hold();
    session.attach(await handshaken(a, "A"), 0);
    session.start();
    // The pump fills link A's queue up to its high-water mark.
    await until(() => session.bufferedBytes >= 1 << 20, "the pump to read");
    a.allow(6); // a few writes (the first ACK, some DATA) go out; the next is in flight
    await tick();
    const startedA = writtenData(a.started).reduce((n, d) => n + d.bytes.length, 0);
    // A hostile or lucky peer acknowledges bytes link A is writing or has not written yet.
    const acked = startedA + 100_000;
    a.feed(encodeOffsetFrame(FrameType.Ack, acked));
    await tick();
    equal(a.reading(), true, "the ACK was taken");
    // The write in flight (held) and the acknowledged queued ones are dropped with the link.
    session.detach("replaced by a test");
    const resumeAt = acked + 12_345;
    const b = linkTransport();
    session.attach(await handshaken(b, "B"), resumeAt);
    await until(() => local.readAll() && session.bufferedBytes === total - acked && b.written.length > 0, "the rest");
    await until(
      () => writtenData(b.written).reduce((n, d) => Math.max(n, d.offset + d.bytes.length), 0) === total,
      "B to send it all",
    );
    a.openAll(); // A's held write completes only now: its bytes were not handed back meanwhile
    await tick();
    equal(a.changedInFlight(), 0, "no write on A saw its bytes change while in flight");
    equal(b.changedInFlight(), 0, "no write on B saw its bytes change while in flight");
    let expectedAt = 0;
    for (const { offset, bytes } of writtenData(a.written)) {
      equal(offset, expectedAt, "A's DATA in order");
      sameBytes(bytes, stream(offset, bytes.length), `A's DATA at ${offset}`);
      expectedAt += bytes.length;
    }
    expectedAt = resumeAt;
    for (const { offset, bytes } of writtenData(b.written)) {
      equal(offset, expectedAt, "B's DATA in order, from the resume offset");
      sameBytes(bytes, stream(offset, bytes.length), `B's DATA at ${offset}`);
      expectedAt += bytes.length;
    }
    equal(expectedAt, total);
    // Two more resumes from the same offset: each replays bytes the previous links wrote.
    let last = b;
    for (const name of ["C", "D"]) {
      session.detach(`replaced by ${name}`);
      const next = linkTransport();
      session.attach(await handshaken(next, name), resumeAt);
      await until(
        () => writtenData(next.written).reduce((n, d) => Math.max(n, d.offset + d.bytes.length), 0) === total,
        `${name} to send it all`,
      );
      expectedAt = resumeAt;
      for (const { offset, bytes } of writtenData(next.written)) {
        equal(offset, expectedAt, `${name}'s DATA in order, from the resume offset`);
        sameBytes(bytes, stream(offset, bytes.length), `${name}'s DATA at ${offset}`);
        expectedAt += bytes.length;
      }
      equal(expectedAt, total);
      last = next;
    }
    // The peer acknowledges everything: the buffers go back (poisoned) and nothing checked above changes.
    last.feed(encodeOffsetFrame(FrameType.Ack, total));
    await until(() => session.bufferedBytes === 0, "the last ACK");
    deepEqual(session.bufferedMemory, 0);
  } finally {
    undo();
    session.abort("test over");
    await session.settled;
  }
});

Deno.test("the peer's ABORT: DATA lent to a stuck local socket is still delivered intact after the link closed", async () => {
  const undo = poisonOnGive();
  const { local, session, isEnded } = stuckServerSession();
  try {
    session.start();
    const a = linkTransport();
    const link = await handshaken(a, "A");
    session.attach(link, 0);
    const sizes = [4096, 50_000, 4095, 300_000, 8192, 100, 200_000];
    const data = dataFrames(0, [...sizes, ...sizes]);
    // The ABORT comes in the same read as the last DATA, a heartbeat behind it.
    a.feed(concat([data.bytes, encodeAbort("peer gives up"), encodeOffsetFrame(FrameType.Heartbeat, 0)]));
    await until(() => isEnded() && link.closed, "the abort and the link's close");
    // Other links take buffers from the pool and fill them meanwhile.
    for (const size of [2048, 4096, 8192, 16_384, 65_536, 262_144, 524_288, 1_048_576]) {
      readBufferPool.take(size).fill(0x55);
    }
    local.open();
    await session.settled;
    equal(local.changedInFlight(), 0, "no local write saw its bytes change while in flight");
    sameBytes(concat(local.out), stream(0, data.total), "what the local socket got before the end");
  } finally {
    undo();
    session.abort("test over");
  }
});
