import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { VirtualClock } from "./clock.ts";
import { Rng } from "./rng.ts";
import { FAST_PATH, type PathModel, SimConnection, type SimEndpoint } from "./connection.ts";
import { SimNetwork } from "./network.ts";
import { runUntil, settle } from "./settle.ts";
import { APP_KINDS, type AppResult, checkPair, describePlan, planApp, runApp } from "./apps.ts";

const A: Deno.NetAddr = { transport: "tcp", hostname: "192.0.2.10", port: 50_000 };
const B: Deno.NetAddr = { transport: "tcp", hostname: "192.0.2.1", port: 7000 };

function connection(seed: number, model: PathModel = FAST_PATH) {
  const clock = new VirtualClock();
  const events: string[] = [];
  const conn = new SimConnection(clock, new Rng(seed), model, A, B, (e) => events.push(`${clock.now()} ${e}`));
  return { clock, conn, events };
}

/** Reads `b` until end of stream (or `limit` bytes), recording each read's size. */
async function drain(end: { read(p: Uint8Array): Promise<number | null> }, sizes: number[] = [], limit = Infinity) {
  const got: number[] = [];
  const buffer = new Uint8Array(4096);
  while (got.length < limit) {
    const n = await end.read(buffer);
    if (n === null) break;
    sizes.push(n);
    got.push(...buffer.subarray(0, n));
  }
  return got;
}

function bytes(n: number, from = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff);
}

Deno.test("virtual clock: timers run in time order, same-time ones in the order set; intervals repeat; cleared ones never run", () => {
  const clock = new VirtualClock(0);
  const ran: string[] = [];
  clock.setTimeout(() => ran.push("b@20"), 20);
  clock.setTimeout(() => ran.push("a@10"), 10);
  clock.setTimeout(() => ran.push("c@20"), 20);
  const gone = clock.setTimeout(() => ran.push("never"), 5);
  clock.clear(gone);
  const every = clock.setInterval(() => ran.push(`i@${clock.now()}`), 15);
  while (clock.now() < 40 && clock.runNext()) { /* run */ }
  clock.clear(every);
  while (clock.runNext()) { /* the rest */ }
  deepEqual(ran, ["a@10", "i@15", "b@20", "c@20", "i@30", "i@45"]);
  equal(clock.pending, 0);
});

Deno.test("rng: the same seed gives the same numbers, another seed others; int stays within bounds", () => {
  const a = new Rng(42), b = new Rng(42), c = new Rng(43);
  const seq = (r: Rng) => Array.from({ length: 8 }, () => r.u32());
  const first = seq(a);
  deepEqual(first, seq(b));
  ok(first.join() !== seq(c).join());
  const r = new Rng(7);
  for (let i = 0; i < 10_000; i++) {
    const v = r.int(3, 9);
    ok(v >= 3 && v <= 9 && Number.isInteger(v));
  }
});

Deno.test("sim connection: bytes arrive in order, in odd pieces, after the latency, then the end of stream", async () => {
  const { clock, conn } = connection(1, { latencyMs: [5, 9], maxPiece: 700, capacity: 1 << 20 });
  const sent = bytes(50_000);
  const start = clock.now();
  await conn.a.write(sent);
  await conn.a.closeWrite();
  const sizes: number[] = [];
  let got: number[] = [];
  const reading = drain(conn.b, sizes).then((g) => got = g);
  const outcome = await runUntil(clock, () => got.length > 0, start + 10_000);
  await reading;
  equal(outcome, "done");
  deepEqual(Uint8Array.from(got), sent);
  ok(sizes.some((n) => n < 700) && Math.max(...sizes) <= 700, "pieces of odd sizes, none above maxPiece");
  ok(clock.now() - start >= 5, "not before the latency");
});

Deno.test("sim connection: a writer blocks once the reader leaves `capacity` bytes unread, and goes on when it reads", async () => {
  const { clock, conn } = connection(2, { latencyMs: [1, 1], maxPiece: 1000, capacity: 10_000 });
  let written = 0;
  const writing = (async () => {
    const chunk = bytes(3000);
    for (let i = 0; i < 10; i++) {
      for (let done = 0; done < chunk.length;) done += await conn.a.write(chunk.subarray(done));
      written += chunk.length;
    }
  })();
  equal(
    await runUntil(clock, () => written >= 30_000, clock.now() + 60_000),
    "stuck",
    "nobody reads: the writer waits for good",
  );
  ok(written <= 10_000 && written >= 9000, `at most the capacity went out (${written})`);
  let got = 0;
  const reading = (async () => {
    const buffer = new Uint8Array(4096);
    while (got < 30_000) got += (await conn.b.read(buffer)) ?? 0;
  })();
  equal(await runUntil(clock, () => got >= 30_000, clock.now() + 60_000), "done");
  await writing;
  await reading;
});

Deno.test("sim connection: a frozen connection holds what was sent and delivers it on thaw before anything newer", async () => {
  const { clock, conn, events } = connection(3, { latencyMs: [10, 20], maxPiece: 100, capacity: 1 << 20 });
  await conn.a.write(bytes(1000, 0));
  conn.freeze();
  await conn.a.write(bytes(1000, 1000));
  let got: number[] = [];
  const reading = drain(conn.b, [], 3000).then((g) => got = g);
  equal(await runUntil(clock, () => false, clock.now() + 5_000), "stuck", "nothing arrives while frozen");
  conn.thaw();
  await conn.a.write(bytes(1000, 2000));
  await conn.a.closeWrite();
  equal(await runUntil(clock, () => got.length > 0, clock.now() + 5_000), "done");
  await reading;
  deepEqual(Uint8Array.from(got), bytes(3000, 0), "in order across the freeze");
  equal(events.length, 2, "freeze and thaw traced");
});

Deno.test("sim connection: a reset fails the pending read and every later operation on both sides", async () => {
  const { clock, conn } = connection(4);
  const pending = conn.b.read(new Uint8Array(10));
  conn.reset();
  await rejects(pending, Deno.errors.ConnectionReset);
  await rejects(conn.a.write(bytes(10)), Deno.errors.ConnectionReset);
  await rejects(conn.a.read(new Uint8Array(10)), Deno.errors.ConnectionReset);
  ok(conn.finished);
  equal(await runUntil(clock, () => false, clock.now() + 1000), "stuck");
});

Deno.test("sim connection: closing with unread data resets the peer, as TCP does; a clean close gives the peer its end of stream", async () => {
  const unclean = connection(5);
  await unclean.conn.a.write(bytes(100));
  await runUntil(unclean.clock, () => false, unclean.clock.now() + 100);
  unclean.conn.b.close();
  const peerRead = rejects(unclean.conn.a.read(new Uint8Array(10)), Deno.errors.ConnectionReset);
  await runUntil(unclean.clock, () => unclean.conn.wasReset, unclean.clock.now() + 1000);
  await peerRead;

  const clean = connection(6);
  clean.conn.a.close();
  let end: number | null | undefined;
  clean.conn.b.read(new Uint8Array(10)).then((n) => end = n);
  await runUntil(clean.clock, () => end !== undefined, clean.clock.now() + 1000);
  equal(end, null);
  await rejects(clean.conn.a.read(new Uint8Array(1)), Deno.errors.BadResource);
});

Deno.test("sim connection: a clean close delivers what was in flight both ways, then the end of stream; later writes fail", async () => {
  const { clock, conn } = connection(7);
  await conn.a.write(bytes(100));
  await conn.b.write(bytes(50));
  conn.closeCleanly();
  await rejects(conn.a.write(bytes(1)), Deno.errors.BrokenPipe);
  const drain = async (end: SimEndpoint) => {
    let total = 0;
    for (;;) {
      const n = await end.read(new Uint8Array(1000));
      if (n === null) return total;
      total += n;
    }
  };
  let got: [number, number] | undefined;
  Promise.all([drain(conn.b), drain(conn.a)]).then((r) => got = r);
  await runUntil(clock, () => got !== undefined, clock.now() + 1000);
  deepEqual(got, [100, 50]);
  ok(!conn.wasReset);
});

Deno.test("sim connection: the same seed replays the same deliveries", async () => {
  const trace = async (seed: number) => {
    const { clock, conn } = connection(seed, { latencyMs: [1, 30], maxPiece: 300, capacity: 1 << 20 });
    const sizes: number[] = [];
    await conn.a.write(bytes(20_000));
    await conn.a.closeWrite();
    let done = false;
    const reading = drain(conn.b, sizes).then(() => done = true);
    await runUntil(clock, () => done, clock.now() + 60_000);
    await reading;
    await settle();
    return `${clock.now()}:${sizes.join(",")}`;
  };
  equal(await trace(9), await trace(9));
  ok(await trace(9) !== await trace(10));
});

Deno.test("sim apps: every kind of application pair, over a bare simulated connection, gets every byte right (300 seeds)", async () => {
  const started = performance.now();
  const kinds = new Map<string, number>();
  for (let seed = 1; seed <= 300; seed++) {
    const rng = new Rng(seed);
    const clock = new VirtualClock();
    const model: PathModel = {
      latencyMs: [rng.int(0, 5), rng.int(5, 50)],
      maxPiece: rng.pick([7, 100, 1500, 65_536]),
      capacity: rng.pick([512, 4096, 65_536, 1 << 20]),
    };
    const plan = planApp(rng, 50_000);
    kinds.set(plan.kind, (kinds.get(plan.kind) ?? 0) + 1);
    const conn = new SimConnection(clock, rng.fork(), model, A, B);
    let results: [AppResult, AppResult] | null = null;
    Promise.all([runApp(conn.a, "client", plan, clock), runApp(conn.b, "erp", plan, clock)]).then((r) => results = r);
    const outcome = await runUntil(clock, () => results !== null, clock.now() + 3_600_000);
    equal(outcome, "done", `seed ${seed} (${describePlan(plan)}): ${outcome}`);
    const [client, erp] = results as unknown as [AppResult, AppResult];
    deepEqual(checkPair(plan, client, erp), [], `seed ${seed} (${describePlan(plan)})`);
  }
  equal(kinds.size, APP_KINDS.length, "every kind drawn");
  console.log(`300 worlds in ${(performance.now() - started).toFixed(0)} ms`);
});

Deno.test("sim network: dials reach listeners; refused, dropped and cancelled dials fail as real ones do", async () => {
  const clock = new VirtualClock();
  const net = new SimNetwork(clock, new Rng(11), FAST_PATH);
  const listener = net.listen("192.0.2.1", 0);
  const accepted: SimEndpoint[] = [];
  (async () => {
    for (;;) accepted.push(await listener.accept());
  })().catch(() => {});
  const outcomes: string[] = [];
  const note = (name: string, p: Promise<unknown>) =>
    p.then(() => outcomes.push(`${name}: ok`), (e) => outcomes.push(`${name}: ${(e as Error).name}`));
  note("open", net.dial("192.0.2.10", "192.0.2.1", listener.addr.port, { timeoutMs: 1000 }));
  note("nobody", net.dial("192.0.2.10", "192.0.2.1", listener.addr.port + 1, { timeoutMs: 1000 }));
  net.setDialFault("192.0.2.1", "drop");
  note("dropped", net.dial("192.0.2.10", "192.0.2.1", listener.addr.port, { timeoutMs: 1000 }));
  const controller = new AbortController();
  note(
    "cancelled",
    net.dial("192.0.2.10", "192.0.2.1", listener.addr.port, { timeoutMs: 1000, signal: controller.signal }),
  );
  controller.abort();
  await runUntil(clock, () => outcomes.length === 4, clock.now() + 10_000);
  net.setDialFault("192.0.2.1", "refuse");
  note("refused", net.dial("192.0.2.10", "192.0.2.1", listener.addr.port, { timeoutMs: 1000 }));
  await runUntil(clock, () => outcomes.length === 5, clock.now() + 10_000);
  deepEqual(outcomes.sort(), [
    "cancelled: Interrupted",
    "dropped: TimedOut",
    "nobody: ConnectionRefused",
    "open: ok",
    "refused: ConnectionRefused",
  ]);
  equal(accepted.length, 1);
  equal(accepted[0]?.remoteAddr.hostname, "192.0.2.10");
  equal(net.between("192.0.2.10", "192.0.2.1").length, 1);
  listener.close();
  equal(clock.pending, 0, "no timer left behind");
});
