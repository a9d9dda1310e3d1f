import { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { HandshakeSlots } from "../../src/client/handshake_slots.ts";

Deno.test("slots: up to the capacity at once, the rest in order of arrival", async () => {
  const slots = new HandshakeSlots(2);
  const a = await slots.take();
  const b = await slots.take();
  equal(slots.busy, 2);
  const order: string[] = [];
  const c = slots.take().then((release) => (order.push("c"), release));
  const d = slots.take().then((release) => (order.push("d"), release));
  equal(slots.waiting, 2);
  await Promise.resolve();
  deepEqual(order, [], "nobody past the capacity gets a slot");
  b();
  const releaseC = await c;
  deepEqual(order, ["c"]);
  equal(slots.busy, 2, "the slot passed on, never freed in between");
  a();
  const releaseD = await d;
  deepEqual(order, ["c", "d"]);
  releaseC();
  releaseD();
  equal(slots.busy, 0);
  equal(slots.waiting, 0);
});

Deno.test("slots: giving a slot back twice frees it once", async () => {
  const slots = new HandshakeSlots(1);
  const release = await slots.take();
  release();
  release();
  equal(slots.busy, 0);
  await slots.take();
  equal(slots.busy, 1);
  let second = false;
  slots.take().then(() => (second = true));
  await new Promise((r) => setTimeout(r, 0));
  equal(second, false, "a double release must not make room for two");
});

Deno.test("slots: a taker whose signal aborts leaves the queue and never holds a slot", async () => {
  const slots = new HandshakeSlots(1);
  const first = await slots.take();
  const gone = new AbortController();
  const leaving = slots.take(gone.signal);
  const staying = slots.take();
  gone.abort(new Error("the session ended"));
  await rejects(leaving, /the session ended/);
  equal(slots.waiting, 1);
  first();
  const release = await staying;
  equal(slots.busy, 1, "the slot went to the one still waiting");
  release();
  equal(slots.busy, 0);
  await rejects(slots.take(AbortSignal.abort(new Error("already"))), /already/);
  equal(slots.busy, 0, "an aborted signal takes nothing");
});

Deno.test("slots: the capacity is a positive whole number", () => {
  throws(() => new HandshakeSlots(0), RangeError);
  throws(() => new HandshakeSlots(1.5), RangeError);
});
