import { deepEqual, equal } from "node:assert/strict";
import { type BoundedKey, BOUNDS, formatBound, MAX_DURATION_MS, withinBounds } from "../../src/config/bounds.ts";
import { parseDuration, parseSize } from "../../src/config/values.ts";

Deno.test("every duration stays below what a timer can wait (2^31 ms); bounds read back as written", () => {
  equal(MAX_DURATION_MS < 2 ** 31, true);
  for (const [key, bounds] of Object.entries(BOUNDS)) {
    equal(bounds.min > 0 && bounds.min < bounds.max, true, key);
    if (bounds.kind === "duration") {
      equal(bounds.max <= MAX_DURATION_MS, true, key);
      equal(parseDuration(formatBound(bounds.min, "duration")), bounds.min, key);
      equal(parseDuration(formatBound(bounds.max, "duration")), bounds.max, key);
    } else {
      equal(parseSize(formatBound(bounds.min, "size")), bounds.min, key);
      equal(parseSize(formatBound(bounds.max, "size")), bounds.max, key);
    }
  }
  equal(withinBounds("HEALTH_CHECK_INTERVAL", 0), true);
  equal(withinBounds("HEARTBEAT_INTERVAL", 0), false);
  equal(withinBounds("RESUME_TIMEOUT", parseDuration("1" + "0".repeat(400))), false);
  equal(formatBound(576 * 3_600_000, "duration"), "576h");
  equal(formatBound(1500, "duration"), "1500ms");
  equal(formatBound(1024 ** 4, "size"), "1024G");
});

Deno.test("the table of bounds in docs/configuration.md is the code's table", async () => {
  const readme = await Deno.readTextFile(new URL("../../docs/configuration.md", import.meta.url));
  const lines = readme.split("\n");
  const header = lines.findIndex((line) => line.replaceAll(" ", "") === "|Key|Smallest|Largest|`0`means|");
  equal(header >= 0, true, "docs/configuration.md has a table with columns Key, Smallest, Largest, `0` means");
  const rows: string[][] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith("|")) break;
    rows.push(line.split("|").slice(1, -1).map((cell) => cell.trim()));
  }
  const expected = (Object.keys(BOUNDS) as BoundedKey[]).map((key) => {
    const bounds: { kind: "duration" | "size"; min: number; max: number; zero?: string } = BOUNDS[key];
    return [
      `\`${key}\``,
      `\`${formatBound(bounds.min, bounds.kind)}\``,
      `\`${formatBound(bounds.max, bounds.kind)}\``,
      bounds.zero ?? "",
    ];
  });
  deepEqual(rows, expected);
});
