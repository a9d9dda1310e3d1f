import { deepEqual, equal, ok, throws } from "node:assert/strict";
import {
  FlakyTable,
  HISTORY_MINUTES,
  MAX_TRACKED_CLIENTS,
  MAX_TRACKED_NETWORKS,
  MINUTE_MS,
  networkOf,
  outageBin,
  peerAddress,
  ServerHistory,
} from "../../src/server/history.ts";

/** A time on a minute boundary, far from the epoch. */
const T0 = 29_000_000 * MINUTE_MS;
const HOUR = 60 * MINUTE_MS;
const sample = { attached: 0, detached: 0, serversUp: 2, bytesToClients: 0, bytesToErp: 0 };

Deno.test("history: events land in their minute, the newest last, and leave the window after 24 h", () => {
  const h = new ServerHistory(T0);
  h.opened(T0 + 1_000);
  h.opened(T0 + 59_999);
  h.opened(T0 + MINUTE_MS);
  h.outageHidden(T0 + MINUTE_MS + 5, { client: "10.0.0.1:4000", seconds: 3.25 });
  let s = h.snapshot(T0 + MINUTE_MS + 10);
  equal(s.series.opened.length, HISTORY_MINUTES);
  deepEqual(s.series.opened.slice(-3), [null, 2, 1], "null before the start, then 2 and 1");
  deepEqual(s.series.resumes.slice(-2), [0, 1]);
  equal(s.series.longestOutageSeconds.at(-1), 3.3);
  equal(s.to, new Date(T0 + MINUTE_MS).toISOString());
  equal(s.from, new Date(T0 + MINUTE_MS - (HISTORY_MINUTES - 1) * MINUTE_MS).toISOString());
  deepEqual([s.totals.opened, s.totals.resumes], [3, 1]);

  // 23 h 59 min later the first minute is the oldest still shown; one minute more and it is gone.
  s = h.snapshot(T0 + (HISTORY_MINUTES - 1) * MINUTE_MS);
  equal(s.series.opened[0], 2);
  equal(s.totals.opened, 3);
  s = h.snapshot(T0 + HISTORY_MINUTES * MINUTE_MS);
  equal(s.totals.opened, 1);
  // A slot reused a day later starts from zero.
  h.opened(T0 + HISTORY_MINUTES * MINUTE_MS);
  s = h.snapshot(T0 + HISTORY_MINUTES * MINUTE_MS);
  deepEqual([s.series.opened.at(-1), s.totals.opened], [1, 2]);
  s = h.snapshot(T0 + 3 * HISTORY_MINUTES * MINUTE_MS);
  deepEqual([s.totals.opened, s.totals.resumes], [0, 0], "after days of silence nothing old shows");
});

Deno.test("history: outages by duration, up to 1 s, 1-5 s, 5-30 s, 30-180 s, over 180 s", () => {
  const edges = [0, 0.999, 1, 1.01, 4.99, 5, 29.9, 30, 179.9, 180, 180.01, 3600];
  deepEqual(edges.map(outageBin), [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4], "an edge belongs to the bin it closes");
  const h = new ServerHistory(T0);
  for (const seconds of [0.2, 0.5, 2, 7, 8, 9, 47, 200]) h.outageHidden(T0 + 100, { client: "10.0.0.1:1", seconds });
  h.sessionLost(T0 + 200, "expired", { client: "10.0.0.2:1", seconds: 180 });
  h.sessionLost(T0 + 300, "aborted", { client: "10.0.0.3:1", seconds: 0 });
  h.sessionLost(T0 + 300, "aborted", { client: "10.0.0.3:1", seconds: 0 });
  const s = h.snapshot(T0 + 400);
  deepEqual(s.outages.bins.map((b) => b.count), [2, 1, 3, 1, 1]);
  deepEqual(s.outages.bins.map((b) => b.label), ["≤ 1 s", "1–5 s", "5–30 s", "30–180 s", "> 180 s"]);
  deepEqual([s.outages.expired, s.outages.aborted], [1, 2]);
  deepEqual([s.totals.resumes, s.totals.longestOutageSeconds, s.totals.expired, s.totals.aborted], [8, 200, 1, 2]);
  // Aborted sessions are the ERP's or the application's doing, not the client's network: not charged to it.
  deepEqual(s.flakiest.clients.map((r) => [r.key, r.outages, r.lost]), [["10.0.0.1", 8, 0], ["10.0.0.2", 1, 1]]);
});

Deno.test("history: samples keep each minute's most sessions, fewest ERP servers up, and bytes relayed", () => {
  const h = new ServerHistory(T0);
  h.sample(T0, { ...sample, attached: 5, bytesToClients: 1_000, bytesToErp: 10 });
  h.sample(T0 + 20_000, { attached: 9, detached: 2, serversUp: 1, bytesToClients: 1_500, bytesToErp: 30 });
  h.sample(T0 + 40_000, { attached: 3, detached: 0, serversUp: 2, bytesToClients: 1_600, bytesToErp: 30 });
  h.sample(T0 + 3 * MINUTE_MS, { attached: 1, detached: 0, serversUp: 2, bytesToClients: 2_600, bytesToErp: 40 });
  // A counter that went back (it cannot, but if it did) starts a new baseline instead of a negative minute.
  h.sample(T0 + 4 * MINUTE_MS, { attached: 1, detached: 0, serversUp: 2, bytesToClients: 100, bytesToErp: 0 });
  const s = h.snapshot(T0 + 4 * MINUTE_MS);
  deepEqual(s.series.live.slice(-5), [11, null, null, 1, 1], "minutes never sampled are null");
  deepEqual(s.series.detached.slice(-5), [2, null, null, 0, 0]);
  deepEqual(s.series.serversUp.slice(-5), [1, null, null, 2, 2]);
  deepEqual(s.series.bytesToClients.slice(-5), [600, 0, 0, 1_000, 0]);
  deepEqual(s.series.bytesToErp.slice(-5), [20, 0, 0, 10, 0]);
  deepEqual([s.totals.bytesToClients, s.totals.bytesToErp], [1_600, 30]);
  equal(s.series.live[HISTORY_MINUTES - 6], null, "before the start");
  // Sessions opening and ending report the live count at once: a minute's peak between samples shows.
  h.sessionsLive(T0 + 4 * MINUTE_MS + 1, 40);
  h.sessionsLive(T0 + 4 * MINUTE_MS + 2, 39);
  h.sessionsLive(T0 + 5 * MINUTE_MS, 0);
  const later = h.snapshot(T0 + 5 * MINUTE_MS);
  deepEqual(later.series.live.slice(-2), [40, 0]);
  deepEqual(later.series.serversUp.slice(-2), [2, null], "not sampled in the last minute");
});

Deno.test("history: a clock that steps back counts in the latest minute and never overwrites a newer one", () => {
  const h = new ServerHistory(T0);
  h.opened(T0 + 10 * MINUTE_MS);
  h.opened(T0 + 10 * MINUTE_MS - HISTORY_MINUTES * MINUTE_MS); // a day back: the same slot
  h.opened(T0 + 2 * MINUTE_MS);
  const s = h.snapshot(T0 + 3 * MINUTE_MS);
  equal(s.series.opened.at(-1), 3, "all three in minute 10, the latest seen");
  equal(s.totals.opened, 3);
});

Deno.test("history: peer addresses and their networks (IPv4 /24, IPv6 /64)", () => {
  equal(peerAddress("10.1.2.3:4000"), "10.1.2.3");
  equal(peerAddress("[2001:db8::1]:4000"), "2001:db8::1");
  equal(peerAddress("2001:db8::1"), "2001:db8::1");
  equal(peerAddress("10.1.2.3"), "10.1.2.3");
  equal(networkOf("10.1.2.3"), "10.1.2.0/24");
  equal(networkOf("2001:db8:1:2:3::1"), "2001:db8:1:2::/64");
  equal(networkOf("::ffff:10.9.8.7"), "10.9.8.0/24");
});

Deno.test("flakiest: ranked by outages in 24 h, with total, longest and lost; networks add up their clients", () => {
  const h = new ServerHistory(T0);
  const away = (client: string, seconds: number, at = T0) => h.outageHidden(at, { client, seconds });
  for (let i = 0; i < 5; i++) away("192.168.7.20:50000", 2);
  away("192.168.7.21:50000", 47);
  for (let i = 0; i < 3; i++) away("[2001:db8::9]:4000", 0.5);
  h.sessionLost(T0, "expired", { client: "192.168.7.21:50001", seconds: 180 });
  const s = h.snapshot(T0);
  deepEqual(s.flakiest.clients, [
    { key: "192.168.7.20", outages: 5, lost: 0, totalSeconds: 10, longestSeconds: 2 },
    { key: "2001:db8::9", outages: 3, lost: 0, totalSeconds: 1.5, longestSeconds: 0.5 },
    { key: "192.168.7.21", outages: 2, lost: 1, totalSeconds: 227, longestSeconds: 180 },
  ]);
  deepEqual(s.flakiest.networks.map((r) => [r.key, r.outages, r.lost]), [
    ["192.168.7.0/24", 7, 1],
    ["2001:db8:0:0::/64", 3, 0],
  ]);
  equal(h.snapshot(T0, { top: 1 }).flakiest.clients.length, 1);
  // 23 hours on, the same rows; 25 hours on, none.
  equal(h.snapshot(T0 + 23 * HOUR).flakiest.clients.length, 3);
  equal(h.snapshot(T0 + 25 * HOUR).flakiest.clients.length, 0);
  // An address seen again after a day starts afresh (its old hours were cleared, not added).
  away("192.168.7.20:1", 1, T0 + 25 * HOUR);
  deepEqual(h.snapshot(T0 + 25 * HOUR).flakiest.clients.map((r) => [r.key, r.outages]), [["192.168.7.20", 1]]);
});

Deno.test("flakiest: a peer with thousands of addresses cannot grow the table nor push out the flakiest", () => {
  const table = new FlakyTable(8);
  for (let i = 0; i < 20; i++) table.record(T0, "10.0.0.1", { seconds: 3, lost: false });
  for (let i = 0; i < 5; i++) table.record(T0, "10.0.0.2", { seconds: 1, lost: false });
  for (let i = 0; i < 10_000; i++) table.record(T0 + i, `172.16.${i >> 8}.${i & 255}`, { seconds: 1, lost: false });
  equal(table.size, 8);
  deepEqual(table.top(T0 + 10_000, 2).map((r) => [r.key, r.outages]), [["10.0.0.1", 20], ["10.0.0.2", 5]]);
  throws(() => new FlakyTable(0), RangeError);

  const h = new ServerHistory(T0);
  for (let i = 0; i < 20_000; i++) h.outageHidden(T0, { client: `[2001:db8:${i.toString(16)}::1]:1`, seconds: 1 });
  const s = h.snapshot(T0, { top: 1_000 });
  ok(s.flakiest.clients.length <= MAX_TRACKED_CLIENTS && s.flakiest.networks.length <= MAX_TRACKED_NETWORKS);
});

Deno.test("history: its memory is fixed, a few hundred KiB, however busy (measured on the heap)", () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  const fill = (h: ServerHistory) => {
    for (let m = 0; m < HISTORY_MINUTES; m++) {
      const at = T0 + m * MINUTE_MS;
      h.sample(at, { attached: 2_000, detached: 10, serversUp: 4, bytesToClients: m * 1e6, bytesToErp: m * 1e5 });
      h.outageHidden(at, { client: `10.${m & 255}.${m >> 8}.7:1`, seconds: m % 200 });
    }
  };
  const one = new ServerHistory(T0);
  fill(one);
  // The typed arrays: the ring (about 100 KiB) and the two flaky tables (about 100 KiB each).
  ok(one.byteLength < 320 * 1024, `typed arrays: ${one.byteLength} bytes`);
  if (!gc) return; // deno task test passes --expose-gc
  const count = 20;
  gc();
  const before = Deno.memoryUsage();
  const kept: ServerHistory[] = [];
  for (let i = 0; i < count; i++) {
    const h = new ServerHistory(T0);
    fill(h);
    kept.push(h);
  }
  gc();
  const after = Deno.memoryUsage();
  const each = (after.heapUsed + after.external - before.heapUsed - before.external) / count;
  console.log(`ServerHistory, filled: ${Math.round(each / 1024)} KiB each (typed arrays ${one.byteLength} bytes)`);
  ok(each < 512 * 1024, `a filled history takes ${Math.round(each / 1024)} KiB`);
  equal(kept.length, count);
});

Deno.test("history: a clock that starts at 0 (the simulation's virtual clock) counts like any other", () => {
  const h = new ServerHistory(0);
  h.opened(0);
  h.outageHidden(5, { client: "10.0.0.1:1", seconds: 2 });
  const s = h.snapshot(10);
  deepEqual([s.series.opened.at(-1), s.series.opened.at(-2), s.totals.resumes], [1, null, 1]);
  deepEqual(s.flakiest.clients.map((r) => [r.key, r.outages, r.longestSeconds]), [["10.0.0.1", 1, 2]]);
});
