/**
 * The status page's outage histogram and /metrics' broker_resume_duration_seconds
 * count an outage of exactly 1, 5, 30 or 180 s on the same side of the edge,
 * and the bins' labels say where such an outage goes.
 */
import { deepEqual, equal } from "node:assert/strict";
import { MINUTE_MS, OUTAGE_BOUNDS, outageBin, ServerHistory } from "../../src/server/history.ts";
import { RESUME_BUCKETS, ServerStats } from "../../src/server/stats.ts";

const T0 = 29_000_000 * MINUTE_MS;

Deno.test("history: an outage of exactly a bin's edge lands where /metrics' le bucket puts it, and the labels say so", () => {
  const h = new ServerHistory(T0);
  const stats = new ServerStats(T0);
  const outages = [0.5, 1, 1.001, 5, 5.001, 30, 30.001, 180, 180.001];
  for (const seconds of outages) {
    h.outageHidden(T0 + 1, { client: "10.0.0.1:1", seconds });
    stats.recordResume(seconds, null);
  }
  const bins = h.snapshot(T0 + 2).outages.bins;
  // Cumulative, as Prometheus counts: outages up to each edge.
  let upTo = 0;
  for (const [i, edge] of OUTAGE_BOUNDS.entries()) {
    upTo += bins[i]?.count ?? 0;
    const b = RESUME_BUCKETS.indexOf(edge);
    const le = stats.resumeHistogram.buckets.slice(0, b + 1).reduce((a, n) => a + n, 0);
    equal(upTo, le, `outages up to ${edge} s: the page counts ${upTo}, le="${edge}" counts ${le}`);
  }
  deepEqual([1, 5, 30, 180].map(outageBin), [0, 1, 2, 3], "an edge belongs to the bin it closes");
  deepEqual(bins.map((b) => b.label), ["≤ 1 s", "1–5 s", "5–30 s", "30–180 s", "> 180 s"]);
});
