import { deepEqual, equal, throws } from "node:assert/strict";
import {
  CLIENT_HANDSHAKE_LIMITS,
  concatBytes,
  DATA_HEADER_SIZE,
  decodeHelloNew,
  decodeProof,
  decodeReject,
  decodeWelcome,
  decodeWelcomeBack,
  encodeAbort,
  encodeChallenge,
  encodeClose,
  encodeData,
  encodeDataHeader,
  encodeGoAway,
  encodeHelloNew,
  encodeHelloResume,
  encodeOffsetFrame,
  encodePreface,
  encodeProof,
  encodeReject,
  encodeWelcome,
  encodeWelcomeBack,
  type Frame,
  FrameDecoder,
  FrameType,
  PROTOCOL_VERSION,
  ProtocolError,
  readU64,
  RejectCode,
  sealDataFrame,
  writeU64,
} from "../../src/protocol/frames.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

Deno.test("preface is PBRK and the version", () => {
  equal(hex(encodePreface()), "5042524b02");
});

Deno.test("frames encode byte for byte", () => {
  equal(hex(encodeOffsetFrame(FrameType.Ack, 0x0102030405)), "11" + "00000008" + "0000000102030405");
  equal(hex(encodeOffsetFrame(FrameType.Heartbeat, 0)), "12" + "00000008" + "0000000000000000");
  equal(hex(encodeOffsetFrame(FrameType.Fin, 7)), "13" + "00000008" + "0000000000000007");
  equal(hex(encodeData(0x100000000, new Uint8Array([0xaa, 0xbb]))), "10" + "0000000a" + "0000000100000000" + "aabb");
  equal(hex(encodeClose()), "14" + "00000000");
  equal(hex(encodeAbort("bye")), "20" + "00000003" + "627965");
  equal(hex(encodeReject(RejectCode.BadProof, "no")), "21" + "00000003" + "03" + "6e6f");
  equal(hex(encodeChallenge(fill(16, 1))), "04" + "00000010" + "01".repeat(16));
  equal(
    hex(encodeHelloNew(fill(32, 2), fill(16, 3), 4 * 1024 * 1024)),
    "01" + "00000034" + "02".repeat(32) + "03".repeat(16) + "00400000",
  );
  const hello = decodeHelloNew(encodeHelloNew(fill(32, 2), fill(16, 3), 65536).subarray(5));
  deepEqual([hex(hello.publicKey), hex(hello.openToken), hello.replayBufferBytes], [
    "02".repeat(32),
    "03".repeat(16),
    65536,
  ]);
  equal(hex(encodeHelloResume(fill(16, 4), fill(16, 5))), "02" + "00000020" + "04".repeat(16) + "05".repeat(16));
  equal(
    hex(encodeProof(FrameType.Proof, fill(32, 6), 9)),
    "05" + "00000028" + "06".repeat(32) + "0000000000000009",
  );
  equal(
    hex(
      encodeWelcome(fill(16, 7), fill(32, 8), {
        resumeTimeoutMs: 180000,
        heartbeatIntervalMs: 2000,
        linkTimeoutMs: 6000,
        replayBufferBytes: 4 * 1024 * 1024,
      }),
    ),
    "03" + "00000040" + "07".repeat(16) + "08".repeat(32) + "0002bf20" + "000007d0" + "00001770" + "00400000",
  );
});

Deno.test("encodeDataHeader followed by the bytes is the same DATA frame as encodeData", () => {
  const bytes = new Uint8Array([7, 8, 9, 10]);
  equal(hex(concatBytes(encodeDataHeader(2 ** 33, bytes.length), bytes)), hex(encodeData(2 ** 33, bytes)));
  throws(() => encodeDataHeader(0, 0), RangeError);
});

Deno.test("sealDataFrame writes the header in front of bytes read in place", () => {
  const frame = new Uint8Array(DATA_HEADER_SIZE + 3);
  frame.set([1, 2, 3], DATA_HEADER_SIZE);
  equal(hex(sealDataFrame(frame, 5)), "10" + "0000000b" + "0000000000000005" + "010203");
  throws(() => sealDataFrame(new Uint8Array(DATA_HEADER_SIZE), 0), RangeError);
});

Deno.test("u64 offsets: exact up to 2^53-1, across the 2^32 boundary; larger values are refused", () => {
  const buf = new Uint8Array(8);
  for (const v of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1]) {
    writeU64(buf, 0, v);
    equal(readU64(buf, 0), v);
  }
  throws(() => writeU64(buf, 0, 2 ** 53), RangeError);
  throws(() => writeU64(buf, 0, -1), RangeError);
  buf.set([0x00, 0x20, 0, 0, 0, 0, 0, 0]); // 2^53
  throws(() => readU64(buf, 0), ProtocolError);
});

Deno.test("decoded handshake payloads round-trip", () => {
  const w = decodeWelcome(
    encodeWelcome(fill(16, 1), fill(32, 2), {
      resumeTimeoutMs: 5,
      heartbeatIntervalMs: 6,
      linkTimeoutMs: 7,
      replayBufferBytes: 8,
    })
      .subarray(5),
  );
  deepEqual(
    { ...w, sessionId: hex(w.sessionId), publicKey: hex(w.publicKey) },
    {
      sessionId: "01".repeat(16),
      publicKey: "02".repeat(32),
      resumeTimeoutMs: 5,
      heartbeatIntervalMs: 6,
      linkTimeoutMs: 7,
      replayBufferBytes: 8,
      admissionMac: null,
    },
  );
  const timers = { resumeTimeoutMs: 5, heartbeatIntervalMs: 6, linkTimeoutMs: 7, replayBufferBytes: 8 };
  const withProof = decodeWelcome(encodeWelcome(fill(16, 1), fill(32, 2), timers, fill(32, 3)).subarray(5));
  equal(hex(withProof.admissionMac ?? new Uint8Array()), "03".repeat(32));
  throws(() => decodeWelcome(new Uint8Array(70)), /Malformed WELCOME: 70 bytes, expected 64 or 96/);
  // u32 fields refuse what they cannot hold instead of wrapping around.
  throws(
    () => encodeWelcome(fill(16, 1), fill(32, 2), { ...timers, resumeTimeoutMs: 2 ** 32 }),
    { name: "RangeError", message: "Cannot encode resumeTimeoutMs 4294967296: expected an integer in 0..2^32-1" },
  );
  throws(() => encodeGoAway(-1, "bye"), /Cannot encode drain time -1/);
  // WELCOME_BACK: the server's nonce, then the WELCOME payload as it was, admission proof included.
  const welcome = encodeWelcome(fill(16, 1), fill(32, 2), timers, fill(32, 3));
  const back = encodeWelcomeBack(fill(16, 4), welcome);
  equal(hex(back), "07" + "00000070" + "04".repeat(16) + hex(welcome.subarray(5)));
  const decoded = decodeWelcomeBack(back.subarray(5));
  equal(hex(decoded.serverNonce), "04".repeat(16));
  equal(hex(decoded.welcomePayload), hex(welcome.subarray(5)));
  deepEqual(decoded.welcome, decodeWelcome(welcome.subarray(5)));
  throws(() => encodeWelcomeBack(fill(16, 4), encodeChallenge(fill(16, 1))), /around frame type 4/);
  const p = decodeProof(encodeProof(FrameType.Resumed, fill(32, 9), 2 ** 40).subarray(5));
  equal(hex(p.mac), "09".repeat(32));
  equal(p.receivedOffset, 2 ** 40);
  deepEqual(decodeReject(encodeReject(RejectCode.CannotResume, "gone ✓").subarray(5)), {
    code: RejectCode.CannotResume,
    reason: "gone ✓",
  });
});

function stream(): { bytes: Uint8Array; expected: string[] } {
  const parts = [
    encodePreface(),
    encodeHelloNew(fill(32, 1), fill(16, 2), 1 << 20),
    encodeData(0, new Uint8Array([1, 2, 3, 4, 5])),
    encodeOffsetFrame(FrameType.Ack, 77),
    encodeData(5, fill(300, 9)),
    encodeClose(),
    encodeAbort("the end"),
  ];
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  const expected = [`0:0${PROTOCOL_VERSION}`, ...parts.slice(1).map((p) => `${p[0]}:${hex(p.subarray(5))}`)];
  return { bytes, expected };
}

function drain(decoder: FrameDecoder, out: string[]): void {
  for (let f: Frame | null; (f = decoder.next());) out.push(`${f.type}:${hex(f.payload)}`);
}

Deno.test("decoder yields the same frames whatever the split points", () => {
  const { bytes, expected } = stream();
  // Every single split point, and every pair of split points in the first 80 bytes.
  for (let i = 0; i <= bytes.length; i++) {
    const d = new FrameDecoder();
    const out: string[] = [];
    d.push(bytes.slice(0, i));
    drain(d, out);
    d.push(bytes.slice(i));
    drain(d, out);
    deepEqual(out, expected, `split at ${i}`);
  }
  for (let i = 0; i < 80; i++) {
    for (let j = i; j < 80; j++) {
      const d = new FrameDecoder();
      const out: string[] = [];
      for (const piece of [bytes.slice(0, i), bytes.slice(i, j), bytes.slice(j)]) {
        d.push(piece);
        drain(d, out);
      }
      deepEqual(out, expected, `split at ${i} and ${j}`);
    }
  }
  // One byte at a time, into a reused buffer: the decoder must not keep views of it.
  const d = new FrameDecoder();
  const out: string[] = [];
  const scratch = new Uint8Array(1);
  for (const b of bytes) {
    scratch[0] = b;
    d.push(scratch);
    drain(d, out);
  }
  deepEqual(out, expected);
  equal(d.bufferedBytes, 0);
});

Deno.test("decoder rejects a wrong magic as soon as it shows", () => {
  const d = new FrameDecoder();
  d.push(new TextEncoder().encode("GE"));
  throws(() => d.next(), /Not a broker peer: expected the preface "PBRK", got bytes 0x4745/);
});

Deno.test("decoder reports another version through the preface frame", () => {
  const d = new FrameDecoder();
  d.push(encodePreface(9));
  const f = d.next();
  equal(f?.type, FrameType.Preface);
  equal(f?.payload[0], 9);
});

Deno.test("decoder rejects unknown types, oversized and malformed frames", () => {
  const after = (bytes: number[]) => {
    const d = new FrameDecoder({ preface: false, maxPayload: 1024 });
    d.push(new Uint8Array(bytes));
    return () => d.next();
  };
  throws(after([0x7f, 0, 0, 0, 0]), /Unknown frame type 127/);
  throws(after([0x10, 0, 0, 0x10, 0]), /Frame too large: type 16 with 4096 bytes, limit 1024/);
  throws(after([0x11, 0, 0, 0, 4, 1, 2, 3, 4]), /Malformed frame: type 17 with a 4-byte payload, expected 8/);
  throws(after([0x10, 0, 0, 0, 8]), /expected at least 9/);
  throws(after([0x14, 0, 0, 0, 1, 0]), /Malformed frame: type 20/);
});

Deno.test("decoder with a list of types refuses the others, and takes every type once its limits are lifted", () => {
  const d = new FrameDecoder({ ...CLIENT_HANDSHAKE_LIMITS, preface: false });
  d.push(concatBytes(encodeHelloResume(new Uint8Array(16), new Uint8Array(16)), encodeData(0, new Uint8Array(3))));
  equal(d.next()?.type, FrameType.HelloResume);
  throws(() => d.next(), /Unexpected frame type 16: only types 1, 2, 5 are accepted now/);
  d.setLimits({ maxPayload: 1024 });
  equal(d.next()?.type, FrameType.Data, "the same pending frame, judged by the new limits");
  const big = new FrameDecoder({ ...CLIENT_HANDSHAKE_LIMITS, preface: false });
  big.push(new Uint8Array([FrameType.HelloNew, 0, 0x10, 0, 0]));
  throws(() => big.next(), /Frame too large: type 1 with 1048576 bytes, limit 52/);
});

Deno.test("decoder in carry mode leaves split frames to the caller, who completes them in one chunk", () => {
  const { bytes, expected } = stream();
  for (let i = 0; i <= bytes.length; i += 3) {
    const d = new FrameDecoder({ carry: true });
    const out: string[] = [];
    d.push(bytes.subarray(0, i));
    drain(d, out);
    const size = d.pendingFrameSize;
    const carried = d.takePending();
    equal(d.bufferedBytes, 0);
    if (carried.length > 0) {
      equal(carried.buffer, bytes.buffer, "the pending bytes are a view, not a copy");
      if (size > 0 && i > 5) equal(new DataView(carried.buffer, carried.byteOffset + 1, 4).getUint32(0) + 5, size);
    }
    const next = new Uint8Array(carried.length + bytes.length - i);
    next.set(carried);
    next.set(bytes.subarray(i), carried.length);
    d.push(next);
    drain(d, out);
    deepEqual(out, expected, `split at ${i}`);
  }
});
