import { deepEqual as assertEquals, equal as assertStrictEquals, ok as assert } from "node:assert/strict";
import { type SessionEntry, SessionRegistry, shortId } from "../../src/server/registry.ts";
import { VirtualClock } from "../sim/clock.ts";
import type { Session } from "../../src/session/session.ts";
import type { Backend } from "../../src/server/balancer.ts";

function registry(clock: VirtualClock, maxTombstones?: number): SessionRegistry {
  return new SessionRegistry({ clock, ...(maxTombstones === undefined ? {} : { maxTombstones }) });
}

/** An entry whose session reports `state` and `confirmed` as set on it. */
function entry(id: string, session: { confirmed?: boolean; state?: string } = {}): SessionEntry {
  const fake = { confirmed: session.confirmed ?? false, state: session.state ?? "attached" };
  return {
    id,
    client: "127.0.0.1:1",
    backend: {} as Backend,
    openedAt: 0,
    session: fake as unknown as Session,
    sessionId: new Uint8Array(16),
    source: "127.0.0.1",
    key: {} as CryptoKey,
    secret: new Uint8Array(32).fill(7),
    attaches: 1,
  };
}

const ended = { secret: new Uint8Array(32), reason: "the ERP closed", clean: true, received: 42 };

Deno.test("registry: an opening is connecting until it opens a session, then that session is its orphan", () => {
  const clock = new VirtualClock(1_000);
  const r = registry(clock);
  const attempt = r.beginOpening("tok", new Uint8Array([1]));
  assert(r.connecting("tok"));
  assertEquals(r.orphan("tok"), undefined);
  const e = entry("aa");
  attempt.opened(new Uint8Array([2]), e);
  assert(!r.connecting("tok"));
  assertStrictEquals(r.orphan("tok"), e);
  assertStrictEquals(r.get("aa"), e);
  assertEquals(r.size, 1);
  assertEquals(r.opening("tok")?.serverPublicKey, new Uint8Array([2]));
});

Deno.test("registry: a confirmed or closed session is no orphan", () => {
  const r = registry(new VirtualClock(1_000));
  r.beginOpening("a", new Uint8Array()).opened(new Uint8Array(), entry("1", { confirmed: true }));
  r.beginOpening("b", new Uint8Array()).opened(new Uint8Array(), entry("2", { state: "closed" }));
  assertEquals(r.orphan("a"), undefined);
  assertEquals(r.orphan("b"), undefined);
});

Deno.test("registry: giving up forgets the token, unless a later attempt replaced this one", () => {
  const r = registry(new VirtualClock(1_000));
  const first = r.beginOpening("tok", new Uint8Array([1]));
  const second = r.beginOpening("tok", new Uint8Array([1]));
  assert(!first.isLatest());
  assert(second.isLatest());
  first.giveUp();
  assert(r.connecting("tok"), "the later attempt still holds the token");
  second.giveUp();
  assert(!r.connecting("tok"));
  assertEquals(r.opening("tok"), undefined);
});

Deno.test("registry: deleting a session leaves its opening to the opener", () => {
  const r = registry(new VirtualClock(1_000));
  const attempt = r.beginOpening("tok", new Uint8Array());
  attempt.opened(new Uint8Array(), entry("aa"));
  r.delete("aa");
  assertEquals(r.size, 0);
  assertEquals(r.get("aa"), undefined);
  attempt.giveUp();
  assertEquals(r.opening("tok"), undefined);
});

Deno.test("registry: a tombstone answers for one window, then one sweep timer forgets it", () => {
  const clock = new VirtualClock(1_000);
  const r = registry(clock);
  r.bury("aa", ended, 1_000);
  clock.advance(500);
  r.bury("bb", { ...ended, clean: false }, 1_000);
  assertEquals(clock.pending, 1, "one timer for all tombstones");
  assertEquals(r.tombstone("aa")?.received, 42);
  assertEquals(r.tombstone("bb")?.clean, false);
  clock.advance(499);
  assert(r.tombstone("aa"));
  clock.advance(1);
  assertEquals(r.tombstone("aa"), undefined);
  assertEquals(r.tombstoneCount, 1, "the sweep forgot the first");
  assertEquals(clock.pending, 1, "and set the timer for the next");
  clock.advance(500);
  assertEquals(r.tombstone("bb"), undefined);
  assertEquals(r.tombstoneCount, 0);
  assertEquals(clock.pending, 0);
});

Deno.test("registry: an expired tombstone is not answered even before the sweep", () => {
  const clock = new VirtualClock(1_000);
  const r = registry(clock);
  r.bury("aa", ended, 1_000);
  clock.jump(1_000); // the clock moves without the timer firing
  assertEquals(r.tombstone("aa"), undefined);
  assertEquals(r.tombstoneCount, 1);
});

Deno.test("registry: beyond the most tombstones, the oldest goes first", () => {
  const clock = new VirtualClock(1_000);
  const r = registry(clock, 2);
  r.bury("a", ended, 10_000);
  r.bury("b", ended, 10_000);
  r.bury("c", ended, 10_000);
  assertEquals(r.tombstoneCount, 2);
  assertEquals(r.tombstone("a"), undefined);
  assert(r.tombstone("b"));
  assert(r.tombstone("c"));
});

Deno.test("registry: clearing tombstones stops the sweep timer", () => {
  const clock = new VirtualClock(1_000);
  const r = registry(clock);
  r.bury("aa", ended, 1_000);
  r.clearTombstones();
  assertEquals(clock.pending, 0);
  assertEquals(r.tombstone("aa"), undefined);
  r.bury("bb", ended, 1_000);
  assertEquals(clock.pending, 1, "a new tombstone starts the sweep again");
  r.clearTombstones();
});

Deno.test("registry: the default timers leave nothing behind once cleared", () => {
  const r = new SessionRegistry();
  r.bury("aa", ended, 60_000);
  assert(r.tombstone("aa"));
  r.clearTombstones();
});

Deno.test("registry: shortId is the first 8 hex digits", () => {
  assertEquals(shortId("0123456789abcdef"), "01234567");
});
