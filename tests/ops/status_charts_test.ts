import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  columns,
  contrastRatio,
  formatOutage,
  headline,
  niceCeil,
  outagesChart,
  PALETTE,
  resumesChart,
  sessionsChart,
} from "../../src/ops/status_charts.ts";
import { HISTORY_MINUTES, MINUTE_MS, ServerHistory } from "../../src/server/history.ts";
import { markupProblem } from "../helpers/markup.ts";

const T0 = 29_000_000 * MINUTE_MS;

/** A day of a broker under flaky Wi-Fi: 1,284 outages, two sessions lost. */
function busyDay(): ServerHistory {
  const h = new ServerHistory(T0);
  for (let m = 0; m < HISTORY_MINUTES; m++) {
    const at = T0 + m * MINUTE_MS;
    h.sample(at, { attached: 300 + (m % 97), detached: m % 13, serversUp: 2, bytesToClients: m * 1e6, bytesToErp: 0 });
    if (m % 9 === 0) {
      for (let i = 0; i < 8; i++) h.outageHidden(at, { client: `10.1.${i}.5:1`, seconds: (i * m) % 40 });
    }
  }
  for (let i = 0; i < 1_284 - 8 * 160; i++) h.outageHidden(T0 + 10 * MINUTE_MS, { client: "10.2.0.1:1", seconds: 0.3 });
  h.outageHidden(T0 + 20 * MINUTE_MS, { client: "10.2.0.1:1", seconds: 47 });
  h.sessionLost(T0 + 30 * MINUTE_MS, "expired", { client: "10.2.0.1:1", seconds: 180 });
  h.sessionLost(T0 + 40 * MINUTE_MS, "expired", { client: "10.2.0.9:1", seconds: 180 });
  return h;
}

const NOW = T0 + (HISTORY_MINUTES - 1) * MINUTE_MS;

Deno.test("charts: the headline says whether the broker does its job, in words", () => {
  equal(
    headline(busyDay().snapshot(NOW)),
    "1,285 outages hidden in the last 24 h, longest 47 s; 2 sessions lost (window expired)",
  );
  const quiet = new ServerHistory(T0);
  equal(headline(quiet.snapshot(T0)), "No outages in the last 24 h; no session lost");
  quiet.outageHidden(T0, { client: "10.0.0.1:1", seconds: 0.42 });
  quiet.sessionLost(T0, "aborted", { client: "10.0.0.1:1", seconds: 0 });
  equal(
    headline(quiet.snapshot(T0)),
    "1 outage hidden in the last 24 h, longest 0.4 s; 1 session lost (ended by error)",
  );
  quiet.sessionLost(T0, "expired", { client: "10.0.0.1:1", seconds: 180 });
  quiet.sessionLost(T0, "expired", { client: "10.0.0.1:1", seconds: 180 });
  match(headline(quiet.snapshot(T0)), /; 3 sessions lost \(2 window expired, 1 ended by error\)$/);
  deepEqual([0, 9.96, 10, 59.4, 185].map(formatOutage), ["0 s", "10 s", "10 s", "59 s", "3 min 5 s"]);
});

Deno.test("charts: well-formed SVG with every count as text, nothing undefined or NaN", () => {
  const s = busyDay().snapshot(NOW);
  for (const chart of [sessionsChart(s), resumesChart(s), outagesChart(s)]) {
    equal(markupProblem(chart), null, chart.slice(0, 200));
    ok(chart.startsWith('<svg class="chart" viewBox="0 0 ') && chart.endsWith("</svg>"));
    ok(!/NaN|undefined|Infinity|null/.test(chart), "no missing numbers");
    match(chart, /<title>[^<]+<\/title>/, "a title that screen readers and hover read");
    ok(!/<script|href=|url\(/i.test(chart), "no scripts, links or external files");
  }
  const outages = outagesChart(s);
  for (const [label, count] of s.outages.bins.map((b) => [b.label, b.count] as const).slice(0, 4)) {
    ok(outages.includes(`>${label.replace("<", "&#60;")}</text>`), `the ${label} bar is named`);
    ok(outages.includes(`>${count.toLocaleString("en-US")}</text>`), `and its count ${count} is written`);
  }
  ok(outages.includes(">lost: window expired</text>") && outages.includes(">2</text>"));
  ok(!outages.includes("&#62; 180 s"), "the over-180 s bar only when something lasted that long");
  ok(resumesChart(s).includes(">resumes (busiest minute 8)</text>"), "the busiest minute, written");
  match(sessionsChart(s), />live sessions \(now \d+\)<\/text>/);
  ok(sessionsChart(s).length + resumesChart(s).length + outagesChart(s).length < 40_000, "the charts stay small");
});

Deno.test("charts: an empty history draws empty charts (a fresh start), still well-formed", () => {
  const s = new ServerHistory(T0).snapshot(T0);
  for (const chart of [sessionsChart(s), resumesChart(s), outagesChart(s)]) {
    equal(markupProblem(chart), null);
    ok(!/NaN|undefined|Infinity/.test(chart));
  }
});

Deno.test("charts: every colour reads on its background, light and dark", () => {
  for (const [name, s] of Object.entries(PALETTE)) {
    for (const ground of [s.panel, s.background]) {
      ok(contrastRatio(s.text, ground) >= 7, `${name}: text on ${ground}`);
      ok(contrastRatio(s.muted, ground) >= 4.5, `${name}: muted text on ${ground}`);
      for (const series of [s.live, s.detached, s.resumes, s.lost]) {
        ok(contrastRatio(series, ground) >= 3, `${name}: ${series} on ${ground}: ${contrastRatio(series, ground)}`);
      }
    }
    // The series colours also colour text in the tables (attached, detached, up, down) on the panel.
    for (const series of [s.live, s.detached, s.resumes, s.lost]) {
      ok(contrastRatio(series, s.panel) >= 4.5, `${name}: text in ${series} on the panel`);
    }
    ok(contrastRatio(s.text, s.grid) >= 4.5, `${name}: table headings on ${s.grid}`);
  }
  ok(contrastRatio(PALETTE.dark.panel, "#000000") < 1.5, "the dark scheme is dark");
  equal(Math.round(contrastRatio("#ffffff", "#000000")), 21);
});

Deno.test("charts: columns keep each span's largest value; scales round up to 1, 2, 3, 4, 5, 6 or 8", () => {
  const values: (number | null)[] = Array(HISTORY_MINUTES).fill(null);
  values[0] = 3;
  values[5] = 7;
  values[6] = 0;
  const c = columns(values);
  equal(c.length, 240);
  deepEqual(c.slice(0, 3), [7, 0, null]);
  deepEqual([0, 1, 3, 7, 10, 11, 22, 240, 1001].map(niceCeil), [1, 1, 3, 8, 10, 20, 30, 300, 2000]);
});
