/**
 * The status page's charts of the last 24 hours, drawn on the server as
 * inline SVG (no scripts, no external files): sessions, resumes per minute
 * with sessions lost, and hidden outages by duration; and the headline that
 * says whether the broker does its job. Pure functions: history in, markup
 * out. Colours come from CSS classes that the page defines for a light and
 * a dark scheme (PALETTE), so the charts follow `prefers-color-scheme`.
 * Every number a chart shows is text, not only a bar.
 * @module
 */

import type { HistorySnapshot } from "../server/history.ts";

/** Colours of one scheme: page, text, and one per series. */
export interface Scheme {
  background: string;
  panel: string;
  text: string;
  muted: string;
  grid: string;
  live: string;
  detached: string;
  resumes: string;
  lost: string;
}

/** The light and dark schemes (text at least 4.5:1, series at least 3:1 against the panel). */
export const PALETTE: { light: Scheme; dark: Scheme } = {
  light: {
    background: "#f5f7fa",
    panel: "#ffffff",
    text: "#1d2733",
    muted: "#52606e",
    grid: "#d5dce4",
    live: "#1f63d6",
    detached: "#b35c00",
    resumes: "#0b7a5b",
    lost: "#c4161c",
  },
  dark: {
    background: "#0d1117",
    panel: "#161b22",
    text: "#e6edf3",
    muted: "#9aa7b4",
    grid: "#30363d",
    live: "#58a6ff",
    detached: "#f0b429",
    resumes: "#3fb950",
    lost: "#ff7b72",
  },
};

/** WCAG relative luminance of `#rrggbb`. */
function luminance(hex: string): number {
  const channel = (i: number) => {
    const c = parseInt(hex.slice(1 + 2 * i, 3 + 2 * i), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
}

/** WCAG contrast ratio of two `#rrggbb` colours (1 to 21). */
export function contrastRatio(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number];
  return (hi + 0.05) / (lo + 0.05);
}

/** The charts' CSS for one scheme (classes used by the SVG below). */
export function chartStyle(s: Scheme): string {
  return `.chart text{fill:${s.text};font-size:13px}.chart .m{fill:${s.muted}}.chart .g{stroke:${s.grid};stroke-width:1}` +
    `.chart .att{fill:${s.live}}.chart .det{fill:${s.detached}}.chart .res{fill:${s.resumes}}.chart .lost{fill:${s.lost}}` +
    `.chart .k-att{fill:${s.live}}.chart .k-det{fill:${s.detached}}.chart .k-res{fill:${s.resumes}}.chart .k-lost{fill:${s.lost}}`;
}

function escape(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** "1,284". */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** An outage's length: "0.4 s", "47 s", "3 min 5 s". */
export function formatOutage(seconds: number): string {
  if (seconds < 10) return `${(Math.round(seconds * 10) / 10).toString()} s`;
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

const plural = (n: number, one: string, many: string) => `${formatCount(n)} ${n === 1 ? one : many}`;

/** The page's answer to "is the broker doing its job?", in one line. */
export function headline(h: HistorySnapshot): string {
  const t = h.totals;
  const hidden = t.resumes === 0
    ? "No outages in the last 24 h"
    : `${plural(t.resumes, "outage", "outages")} hidden in the last 24 h, longest ${
      formatOutage(t.longestOutageSeconds)
    }`;
  const lost = t.expired + t.aborted;
  if (lost === 0) return `${hidden}; no session lost`;
  const causes = [
    t.expired > 0 ? `${t.expired === lost ? "" : `${formatCount(t.expired)} `}window expired` : "",
    t.aborted > 0 ? `${t.aborted === lost ? "" : `${formatCount(t.aborted)} `}ended by error` : "",
  ].filter((c) => c !== "");
  return `${hidden}; ${plural(lost, "session", "sessions")} lost (${causes.join(", ")})`;
}

/** Geometry shared by the time charts (viewBox units; text stays readable on a phone at full width). */
const W = 540;
const LEFT = 48;
const COLUMNS = 240;
const COLUMN = 2;
const TOP = 26;
const PLOT = 110;
const BASE = TOP + PLOT;
const H = BASE + 24;

/** The smallest of 1, 2, 3, 4, 5, 6, 8 x 10^k at or above `n` (at least 1): the scale fills most of its height. */
export function niceCeil(n: number): number {
  if (!(n > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 3, 4, 5, 6, 8, 10].map((m) => m * power).find((v) => v >= n) as number;
}

/** `values` (oldest first) in COLUMNS columns, each the largest value it covers (null: none known). */
export function columns(values: (number | null)[]): (number | null)[] {
  const per = Math.max(1, Math.ceil(values.length / COLUMNS));
  const out: (number | null)[] = [];
  for (let c = 0; c < COLUMNS; c++) {
    let best: number | null = null;
    for (let i = c * per; i < Math.min(values.length, (c + 1) * per); i++) {
      const v = values[i];
      if (v !== null && v !== undefined) best = Math.max(best ?? 0, v);
    }
    out.push(best);
  }
  return out;
}

/** Axes: horizontal grid lines with their values, and the hours along the bottom. */
function frame(max: number): string {
  const lines = [0, max / 2, max].map((v) => {
    const y = BASE - (v / max) * PLOT;
    return `<line class="g" x1="${LEFT}" x2="${LEFT + COLUMNS * COLUMN}" y1="${y}" y2="${y}"/>` +
      `<text class="m" x="${LEFT - 6}" y="${y + 4}" text-anchor="end">${
        escape(Number.isInteger(v) ? formatCount(v) : v.toFixed(1))
      }</text>`;
  }).join("");
  const hours = [24, 18, 12, 6, 0].map((ago, i) =>
    `<text class="m" x="${LEFT + i * (COLUMNS * COLUMN / 4)}" y="${H - 6}" text-anchor="${
      i === 0 ? "start" : i === 4 ? "end" : "middle"
    }">${ago === 0 ? "now" : `−${ago} h`}</text>`
  ).join("");
  return lines + hours;
}

/** A step area from `base[c]` up to `top[c]` per column, one subpath per run of known columns. */
function area(top: (number | null)[], base: (number | null)[], max: number): string {
  const y = (v: number) => Math.round((BASE - (v / max) * PLOT) * 10) / 10;
  let d = "";
  let c = 0;
  while (c < top.length) {
    if (top[c] === null) {
      c++;
      continue;
    }
    const start = c;
    while (c < top.length && top[c] !== null) c++;
    d += `M${LEFT + start * COLUMN} ${y(base[start] ?? 0)}`;
    for (let i = start; i < c; i++) d += `V${y(top[i] as number)}H${LEFT + (i + 1) * COLUMN}`;
    for (let i = c - 1; i >= start; i--) d += `V${y(base[i] ?? 0)}H${LEFT + i * COLUMN}`;
    d += "Z";
  }
  return d;
}

/** A legend entry at `x`: a swatch of class `k` and its words. */
function key(x: number, k: string, words: string): string {
  return `<rect class="${k}" x="${x}" y="6" width="12" height="12" rx="2"/><text x="${x + 17}" y="17">${
    escape(words)
  }</text>`;
}

function svg(label: string, height: number, body: string): string {
  return `<svg class="chart" viewBox="0 0 ${W} ${height}" role="img" aria-label="${escape(label)}">` +
    `<title>${escape(label)}</title>${body}</svg>`;
}

/** Live sessions over 24 h (each column: its busiest minute), and the detached ones among them. */
export function sessionsChart(h: HistorySnapshot): string {
  const live = columns(h.series.live);
  const detached = columns(h.series.detached);
  const zero = live.map(() => 0);
  const max = niceCeil(Math.max(0, ...live.map((v) => v ?? 0)));
  const nowLive = lastKnown(h.series.live);
  const nowDetached = lastKnown(h.series.detached);
  return svg(
    `Live sessions over the last 24 hours: now ${nowLive}, of them ${nowDetached} detached`,
    H,
    frame(max) + `<path class="att" d="${area(live, zero, max)}"/>` +
      `<path class="det" d="${area(detached, zero, max)}"/>` +
      key(LEFT, "k-att", `live sessions (now ${formatCount(nowLive)})`) +
      key(LEFT + 250, "k-det", `detached (now ${formatCount(nowDetached)})`),
  );
}

function lastKnown(values: (number | null)[]): number {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i] as number;
  return 0;
}

/** Bars from the base line, one per non-zero column. */
function bars(values: (number | null)[], max: number): string {
  let d = "";
  values.forEach((v, c) => {
    if (!v) return;
    const height = Math.max(1.5, Math.round((v / max) * PLOT * 10) / 10);
    d += `M${LEFT + c * COLUMN} ${BASE}v${-height}h${COLUMN}v${height}Z`;
  });
  return d;
}

/** Resumes per minute over 24 h, with the sessions lost (expired or aborted) below them in red. */
export function resumesChart(h: HistorySnapshot): string {
  const resumes = columns(h.series.resumes);
  const lostPerMinute = h.series.expired.map((e, i) => e === null ? null : e + (h.series.aborted[i] ?? 0));
  const lost = columns(lostPerMinute);
  const peak = Math.max(0, ...resumes.map((v) => v ?? 0));
  const max = niceCeil(Math.max(peak, ...lost.map((v) => v ?? 0)));
  const lostTotal = h.totals.expired + h.totals.aborted;
  return svg(
    `Resumes per minute over the last 24 hours: busiest minute ${peak}; ${lostTotal} sessions lost`,
    H,
    frame(max) + `<path class="res" d="${bars(resumes, max)}"/><path class="lost" d="${bars(lost, max)}"/>` +
      key(LEFT, "k-res", `resumes (busiest minute ${formatCount(peak)})`) +
      key(LEFT + 270, "k-lost", `sessions lost (${formatCount(lostTotal)})`),
  );
}

/** Hidden outages in 24 h by duration, then the sessions lost, as horizontal bars with their counts. */
export function outagesChart(h: HistorySnapshot): string {
  const rows = h.outages.bins
    .filter((b, i) => i < h.outages.bins.length - 1 || b.count > 0)
    .map((b) => ({ label: b.label, count: b.count, cls: "res" }));
  rows.push({ label: "lost: window expired", count: h.outages.expired, cls: "lost" });
  rows.push({ label: "lost: ended by error", count: h.outages.aborted, cls: "lost" });
  const labelWidth = 150;
  const barWidth = W - labelWidth - 70;
  const max = Math.max(1, ...rows.map((r) => r.count));
  const row = 26;
  const title = `<text x="12" y="18">outages hidden, by how long they lasted; sessions lost</text>`;
  const body = title + rows.map((r, i) => {
    const y = 30 + i * row;
    const width = r.count === 0 ? 0 : Math.max(2, Math.round((r.count / max) * barWidth));
    return `<text x="${labelWidth - 8}" y="${y + 14}" text-anchor="end">${escape(r.label)}</text>` +
      `<rect class="${r.cls}" x="${labelWidth}" y="${y + 2}" width="${width}" height="16" rx="2"/>` +
      `<text x="${labelWidth + width + 6}" y="${y + 15}">${escape(formatCount(r.count))}</text>`;
  }).join("");
  const summary = rows.map((r) => `${r.label}: ${r.count}`).join(", ");
  return svg(`Outages in the last 24 hours by duration: ${summary}`, 34 + rows.length * row, body);
}
