/**
 * broker-server's answers to the client's probes (HEARTBEAT → ACK 0) while
 * much waits to be written to the link: the client pairs the n-th echo with
 * its n-th probe (liveness.ts), so an echo skipped for good shifts every
 * later pairing on that link by one probe.
 */
import { equal, ok } from "node:assert/strict";
import { takeChunks } from "../helpers/pool.ts";
import { Link } from "../../src/session/link.ts";
import { Session, type SessionTimers } from "../../src/session/session.ts";
import type { Transport } from "../../src/session/transport.ts";
import { encodeOffsetFrame, encodePreface, FrameDecoder, FrameType, readU64 } from "../../src/protocol/frames.ts";
import { LinkWatch } from "../../src/session/liveness.ts";

const TIMERS: SessionTimers = {
  resumeTimeoutMs: 60_000,
  heartbeatIntervalMs: 60_000,
  linkTimeoutMs: 120_000,
  replayBufferBytes: 8 << 20,
  receiveWindowBytes: 8 << 20,
};

const tick = () => new Promise((r) => setTimeout(r, 0));
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 5000 && !cond(); i++) await tick();
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

/** A link transport the test feeds; writes wait while held. */
function linkTransport() {
  const chunks: Uint8Array[] = [];
  let waiting: { p: Uint8Array; resolve: (n: number | null) => void } | null = null;
  const written: Uint8Array[] = [];
  const gate: (() => void)[] = [];
  let held = false;
  const take = (p: Uint8Array) => takeChunks(chunks, p);
  const transport: Transport = {
    read: (p) => chunks.length > 0 ? Promise.resolve(take(p)) : new Promise((resolve) => waiting = { p, resolve }),
    write: async (p) => {
      if (held) await new Promise<void>((resolve) => gate.push(resolve));
      written.push(p.slice());
      return p.length;
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  return {
    transport,
    written,
    feed(bytes: Uint8Array) {
      chunks.push(bytes);
      const w = waiting;
      if (w) {
        waiting = null;
        w.resolve(take(w.p));
      }
    },
    reading: () => waiting !== null && chunks.length === 0,
    hold() {
      held = true;
    },
    openAll() {
      held = false;
      for (const open of gate.splice(0)) open();
    },
  };
}

/** A local (ERP) socket that has `length` bytes to send, then waits; takes whatever is written. */
function localTransport(length: number): Transport {
  let readAt = 0;
  let endRead: ((n: number | null) => void) | null = null;
  return {
    read: (p) => {
      const left = length - readAt;
      if (left <= 0) return new Promise((resolve) => endRead = resolve);
      const n = Math.min(p.length, left);
      p.fill(0x42, 0, n);
      readAt += n;
      return Promise.resolve(n);
    },
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => endRead?.(null),
  };
}

/** The ACK offsets among the frames written, in order. */
function writtenAcks(written: Uint8Array[]): number[] {
  const all = new Uint8Array(written.reduce((n, w) => n + w.length, 0));
  let at = 0;
  for (const w of written) {
    all.set(w, at);
    at += w.length;
  }
  const decoder = new FrameDecoder({ preface: false });
  decoder.push(all);
  const acks: number[] = [];
  for (let f = decoder.next(); f; f = decoder.next()) if (f.type === FrameType.Ack) acks.push(readU64(f.payload, 0));
  return acks;
}

Deno.test("broker-server: probes that arrive while the link is backed up are answered once it drains, so the client's n-th echo still answers its n-th probe", async () => {
  const session = new Session({
    role: "server",
    local: localTransport(512 * 1024),
    timers: TIMERS,
    events: { ended: () => {} },
  });
  const t = linkTransport();
  try {
    const link = new Link(t.transport, "client");
    t.feed(encodePreface());
    equal((await link.readFrame())?.type, FrameType.Preface);
    t.hold(); // the client's downlink is slow: what the server writes waits
    session.attach(link, 0);
    session.start();
    await until(() => link.writer.queuedBytes > 64 * 1024, "the ERP's bytes to back up on the link");
    // Three probes arrive while the link is backed up (the client sent them, its uplink is fine).
    for (let i = 0; i < 3; i++) t.feed(encodeOffsetFrame(FrameType.Heartbeat, 0));
    await until(() => t.reading(), "the probes to be read");
    t.openAll(); // the downlink catches up
    await until(() => link.writer.queuedBytes === 0 && session.bufferedBytes === 512 * 1024, "the link to drain");
    // One more probe on a quiet link.
    t.feed(encodeOffsetFrame(FrameType.Heartbeat, 0));
    await until(() => t.reading(), "the last probe to be read");
    await until(() => link.writer.queuedBytes === 0, "its answer to be written");
    const zeros = writtenAcks(t.written).filter((offset) => offset === 0).length;
    // One ACK 0 for the attach, and one echo per probe (late, never skipped).
    equal(zeros, 1 + 4, `ACK 0 frames written: ${zeros}`);
  } finally {
    session.abort("test over");
  }
});

Deno.test("LinkWatch: a late echo (owed while the link was backed up) costs one long sample, not every later one", () => {
  // The client's side of the test above. Had the server skipped the first
  // probe's echo for good, every later sample would have paired an echo with
  // the probe before its own: srtt 2010 ms and a suspicion after 3015 ms on
  // this 10 ms link (as measured before the fix), for the link's life.
  const HEARTBEAT = 2_000;
  const watch = new LinkWatch(0, 6_000, { echoes: true });
  watch.probed(0); // answered only once the server's side of the link drains
  watch.heard(5, "activity");
  watch.heard(300, "echo");
  // Then an idle link: a heartbeat every 2 s, each answered in 10 ms.
  for (let t = HEARTBEAT; t <= 40_000; t += HEARTBEAT) {
    watch.probed(t);
    watch.heard(t + 10, "echo");
  }
  ok((watch.srtt ?? 0) < 100, `srtt ${watch.srtt} ms on a 10 ms link; suspicion after ${watch.suspicionMs} ms`);
  equal(watch.suspicionMs, 1_000);
});
