import { deepEqual, equal, ok } from "node:assert/strict";
import type { HealthCheckConfig, RemoteServer } from "../../src/config/server_config.ts";
import { type Backend, Balancer } from "../../src/server/balancer.ts";

const checks: HealthCheckConfig = { intervalMs: 2000, rise: 2, fall: 3 };
const noChecks: HealthCheckConfig = { intervalMs: 0, rise: 2, fall: 3 };

function servers(...specs: [string, number?, number?][]): RemoteServer[] {
  return specs.map(([name, weight = 1, maxSessions = 0], i) => ({
    name,
    line: i + 1,
    hostname: "10.0.0.1",
    port: 5000 + i,
    weight,
    maxSessions,
  }));
}

/** Places `n` sessions that stay open; returns how many went where. */
function placeMany(balancer: Balancer, n: number): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const first = balancer.place().order[0] as Backend;
    balancer.acquire(first);
    counts[first.server.name] = (counts[first.server.name] ?? 0) + 1;
  }
  return counts;
}

Deno.test("CONNECTION: 300 sessions over 3 servers end within one of equal", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"], ["C"]), checks);
  deepEqual(placeMany(balancer, 300), { A: 100, B: 100, C: 100 });
});

Deno.test("CONNECTION: ties rotate, so a burst spreads over every server at once", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"], ["C"]), checks);
  const firsts = Array.from({ length: 3 }, () => {
    const b = balancer.place().order[0] as Backend;
    balancer.acquire(b);
    return b.server.name;
  });
  deepEqual([...firsts].sort(), ["A", "B", "C"]);
});

Deno.test("CONNECTION with weights 1:2 splits 1:2", () => {
  const balancer = new Balancer("CONNECTION", servers(["A", 1], ["B", 2]), checks);
  deepEqual(placeMany(balancer, 300), { A: 100, B: 200 });
});

Deno.test("CONNECTION counts every live session, so a server full of detached sessions is not empty", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"]), checks);
  const [a] = balancer.backends as Backend[];
  for (let i = 0; i < 5; i++) balancer.acquire(a as Backend); // detached or not: they hold ERP connections
  deepEqual(placeMany(balancer, 5), { B: 5 });
  balancer.release(a as Backend);
  equal(a?.active, 4);
});

Deno.test("ROUND_ROBIN visits servers in turn, in proportion to weight", () => {
  const rr = new Balancer("ROUND_ROBIN", servers(["A"], ["B"], ["C"]), checks);
  const names = Array.from({ length: 6 }, () => (rr.place().order[0] as Backend).server.name);
  deepEqual(names, ["A", "B", "C", "A", "B", "C"]);
  const weighted = new Balancer("ROUND_ROBIN", servers(["A", 1], ["B", 2]), checks);
  const seq = Array.from({ length: 6 }, () => (weighted.place().order[0] as Backend).server.name);
  deepEqual(seq, ["B", "A", "B", "B", "A", "B"]);
  equal(rr.place().order.length, 3, "the others follow as failover candidates");
});

Deno.test("a full server is skipped with the reason", () => {
  const balancer = new Balancer("CONNECTION", servers(["A", 1, 2], ["B"]), checks);
  const [a] = balancer.backends as Backend[];
  balancer.acquire(a as Backend);
  balancer.acquire(a as Backend);
  const placement = balancer.place();
  deepEqual(placement.order.map((b) => b.server.name), ["B"]);
  deepEqual(placement.skipped.map((s) => `${s.backend.server.name}: ${s.reason}`), ["A: full (2 of max 2 sessions)"]);
});

Deno.test("passive: a failed connect takes a server out at once; rise good probes bring it back", () => {
  const now = 0;
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"]), checks, () => now);
  const [a] = balancer.backends as Backend[];
  equal(balancer.connectFailed(a as Backend, "connection refused"), true, "reported once");
  equal(balancer.connectFailed(a as Backend, "connection refused"), false);
  const placement = balancer.place();
  deepEqual(placement.order.map((b) => b.server.name), ["B"]);
  deepEqual(placement.skipped.map((s) => s.reason), ["down (connection refused)"]);
  equal(balancer.probed(a as Backend, true), null, "one good probe is not enough");
  equal(balancer.probed(a as Backend, false, "refused"), null, "a failure restarts the count");
  equal(balancer.probed(a as Backend, true), null);
  equal(balancer.probed(a as Backend, true), "up");
  equal(balancer.place().order.length, 2);
});

Deno.test("active: fall failed probes in a row take an up server down", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"]), checks);
  const [a] = balancer.backends as Backend[];
  equal(balancer.probed(a as Backend, false, "x"), null);
  equal(balancer.probed(a as Backend, true), null, "a success resets the count");
  equal(balancer.probed(a as Backend, false, "x"), null);
  equal(balancer.probed(a as Backend, false, "x"), null);
  equal(balancer.probed(a as Backend, false, "timed out"), "down");
  equal(balancer.place().order.length, 0);
  equal(balancer.place().why, "no server available");
});

Deno.test("without probes, a down server is still tried, last", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"]), noChecks);
  balancer.connectFailed(balancer.backends[0] as Backend, "refused");
  deepEqual(balancer.place().order.map((b) => b.server.name), ["B", "A"]);
});

Deno.test("reload: added servers join, removed ones drain and leave once empty", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"]), checks);
  const [a] = balancer.backends as Backend[];
  balancer.acquire(a as Backend);
  const changes = balancer.update(
    "ROUND_ROBIN",
    servers(["B"], ["C"]).map((s, i) => ({ ...s, port: 5001 + i })),
    checks,
  );
  deepEqual(changes, [
    "SORT_METHOD CONNECTION -> ROUND_ROBIN",
    "A (10.0.0.1:5000) removed: draining 1 sessions",
    "C (10.0.0.1:5002) added",
  ]);
  const placement = balancer.place();
  deepEqual(placement.order.map((b) => b.server.name).sort(), ["B", "C"]);
  deepEqual(placement.skipped.map((s) => `${s.backend.server.name}: ${s.reason}`), [
    "A: draining (removed from the configuration)",
  ]);
  balancer.release(a as Backend);
  deepEqual(balancer.backends.map((b) => b.server.name), ["B", "C"], "A left once its last session ended");
  ok(balancer.backends.every((b) => !b.draining));
});

Deno.test("a session counts from its placement: acquire refuses a server that filled up or drains meanwhile", () => {
  const balancer = new Balancer("CONNECTION", servers(["A", 1, 1], ["B"]), checks);
  const [a, b] = balancer.backends as Backend[];
  // Another session placed on A while this one was trying a server before it: A is full now.
  equal(balancer.acquire(a as Backend), true);
  equal(balancer.acquire(a as Backend), false, "full: its failover candidates are checked again as it reaches them");
  equal(a?.active, 1, "nothing counted for the refused one");
  equal(a?.total, 1);
  balancer.update("CONNECTION", servers(["A", 1, 1]), checks);
  equal(balancer.acquire(b as Backend), false, "draining: removed from the configuration meanwhile");
});

Deno.test("a placement whose ERP connect fails is cancelled: it neither holds a place nor counts in the total", () => {
  const balancer = new Balancer("CONNECTION", servers(["A", 1, 1], ["B"]), checks);
  const [a] = balancer.backends as Backend[];
  equal(balancer.acquire(a as Backend), true);
  balancer.cancel(a as Backend);
  equal(a?.active, 0);
  equal(a?.total, 0);
  equal(balancer.acquire(a as Backend), true, "its place is free again");
});

Deno.test("CONNECTION with A at 100 and B at 101: a burst of 50 placed before any connect completes splits evenly", () => {
  const balancer = new Balancer("CONNECTION", servers(["A"], ["B"]), checks);
  const [a, b] = balancer.backends as Backend[];
  for (let i = 0; i < 100; i++) balancer.acquire(a as Backend);
  for (let i = 0; i < 101; i++) balancer.acquire(b as Backend);
  // Each placement is acquired at once (the server does so before dialing): the next one sees it.
  const counts: Record<string, number> = {};
  for (let i = 0; i < 50; i++) {
    const first = balancer.place().order[0] as Backend;
    ok(balancer.acquire(first));
    counts[first.server.name] = (counts[first.server.name] ?? 0) + 1;
  }
  deepEqual(counts, { A: 25, B: 25 });
});
