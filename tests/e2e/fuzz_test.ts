/**
 * Fuzzing a live broker-server: 100,000 random, mutated and truncated
 * handshakes and frames (seeded, reproducible with FUZZ_SEED; FUZZ_CASES
 * sets the count), while a real session keeps moving data. The process must
 * not crash, every bad link must be closed, memory must come back, and the
 * real session's bytes must be intact.
 */
import { equal, ok } from "node:assert/strict";
import {
  concatBytes,
  encodeAbort,
  encodeChallenge,
  encodeData,
  encodeHelloNew,
  encodeHelloResume,
  encodeOffsetFrame,
  encodePreface,
  encodeProof,
  encodeReject,
  FrameType,
} from "../../src/protocol/frames.ts";
import { seededRandom } from "../../tools/streams.ts";
import { clientConfig, serverConfig, startClient, startErp, startServer, waitFor } from "../helpers/setup.ts";
import { DEFAULT_TUNING } from "../../src/config/tuning.ts";

const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 100_000);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 4242);
const WORKERS = 64;

/**
 * Heap in use after a full collection (the test task runs with --expose-gc).
 * RSS is not used: allocators keep freed pages, so it measures history, not leaks.
 */
function usedHeap(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) { for (let i = 0; i < 3; i++) gc(); }
  return Deno.memoryUsage().heapUsed;
}

/** The fuzz corpus: case `i` of the seeded sequence. */
function makeCase(random: () => number): Uint8Array {
  const int = (n: number) => Math.floor(random() * n);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  const valid = [
    () => concatBytes(encodePreface(), encodeHelloNew(bytes(32), bytes(16), DEFAULT_TUNING.replayBufferBytes)),
    () => concatBytes(encodePreface(), encodeHelloResume(bytes(16), bytes(16))),
    () =>
      concatBytes(
        encodePreface(),
        encodeHelloResume(bytes(16), bytes(16)),
        encodeProof(FrameType.Proof, bytes(32), int(1e9)),
      ),
    () => concatBytes(encodePreface(), encodeData(int(1000), bytes(int(64) + 1))),
    () => concatBytes(encodePreface(), encodeOffsetFrame(FrameType.Ack, int(1e6)), encodeChallenge(bytes(16))),
    () => concatBytes(encodePreface(), encodeAbort("x".repeat(int(40))), encodeReject(1, "no")),
    () => concatBytes(encodePreface(int(4)), encodeHelloNew(bytes(32), bytes(16), DEFAULT_TUNING.replayBufferBytes)),
  ];
  const kind = int(5);
  if (kind === 0) return bytes(int(64)); // noise
  if (kind === 1) {
    // A preface and a random header with a random (often huge) length, then a little payload.
    const header = new Uint8Array(5);
    header[0] = int(40);
    new DataView(header.buffer).setUint32(1, random() < 0.5 ? int(64) : int(2 ** 32));
    return concatBytes(encodePreface(), header, bytes(int(64)));
  }
  const base = (valid[int(valid.length)] as () => Uint8Array)();
  if (kind === 2) return base.subarray(0, int(base.length)); // truncated
  const mutated = base.slice();
  for (let flips = 1 + int(4); flips > 0; flips--) mutated[int(mutated.length)] = int(256);
  return kind === 3 ? mutated : concatBytes(mutated, bytes(int(32))); // mutated, with trailing noise
}

Deno.test(`fuzz: ${CASES} random, mutated and truncated handshakes and frames against a live broker-server`, async () => {
  await using erp = startErp(async (conn) => {
    const buf = new Uint8Array(16 * 1024);
    for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
  });
  await using server = startServer(serverConfig([erp.port], {
    HANDSHAKE_TIMEOUT: "2s",
    RESUME_TIMEOUT: "1s",
    MAX_HANDSHAKES: "5000",
    NEW_SESSIONS_PER_MINUTE: "1000000",
    MAX_SESSIONS: "200",
  }));
  await using client = startClient(clientConfig([server.address.port]));

  // The real session, exchanging numbered messages the whole time.
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  let fuzzing = true;
  const realSession = (async () => {
    let rounds = 0;
    const msg = new Uint8Array(1024);
    const back = new Uint8Array(1024);
    while (fuzzing) {
      new DataView(msg.buffer).setUint32(0, rounds);
      msg.fill(rounds & 0xff, 4);
      await app.write(msg);
      for (let got = 0; got < back.length;) {
        const n = await app.read(back.subarray(got));
        if (n === null) throw new Error("the real session was closed");
        got += n;
      }
      equal(new DataView(back.buffer).getUint32(0), rounds, "echoed in order");
      equal(back[1000], rounds & 0xff, "echoed intact");
      rounds++;
    }
    return rounds;
  })();

  const random = seededRandom(SEED);
  const cases = Array.from({ length: CASES }, () => makeCase(random));
  let next = 0;
  const heapBefore = usedHeap();
  const t0 = Date.now();
  await Promise.all(Array.from({ length: WORKERS }, async () => {
    const sink = new Uint8Array(4096);
    while (next < cases.length) {
      const input = cases[next++] as Uint8Array;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.address.port });
      try {
        if (input.length > 0) await conn.write(input);
        await conn.closeWrite();
        // The server answers or not, then closes: read to the end.
        while (await conn.read(sink) !== null) { /* discard */ }
      } catch {
        // A reset is a fine way for the server to drop a bad link.
      } finally {
        conn.close();
      }
    }
  }));
  const seconds = (Date.now() - t0) / 1000;
  fuzzing = false;
  const rounds = await realSession;
  console.log(`${CASES} fuzz cases in ${seconds.toFixed(1)} s; the real session made ${rounds} round trips meanwhile`);

  // Every bad link is closed; sessions opened by lucky hellos expire with their 1 s window.
  await waitFor(() => server.status().totals.linksInHandshake === 0, "links in handshake to drain", 10_000);
  await waitFor(() => server.sessions.length === 1, "only the real session to remain", 10_000);
  ok(rounds > 0, "the real session kept working");
  const heapAfter = usedHeap();
  console.log(
    `JS heap in use before ${(heapBefore / 2 ** 20).toFixed(1)} MiB, after ${(heapAfter / 2 ** 20).toFixed(1)} MiB`,
  );
  ok(
    heapAfter - heapBefore < 16 * 2 ** 20,
    `memory came back within slack: +${((heapAfter - heapBefore) / 2 ** 20).toFixed(1)} MiB`,
  );
  app.close();
  await waitFor(() => server.sessions.length === 0, "the real session to end");
});
