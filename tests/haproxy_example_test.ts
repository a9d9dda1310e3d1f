/**
 * examples/haproxy/broker-cluster.cfg: HAProxy parses it (`haproxy -c`,
 * skipped where HAProxy is not installed or on Windows), and it says what
 * docs/cluster.md asks of a load balancer in front of a cluster.
 */
import { equal, match, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { checkHaproxyConfig, haproxyUnavailable } from "./helpers/haproxy.ts";
import { parseDuration } from "../src/config/values.ts";

const EXAMPLE = fileURLToPath(new URL("../examples/haproxy/broker-cluster.cfg", import.meta.url));
const unavailable = haproxyUnavailable();
if (unavailable) console.log(`SKIPPED: haproxy -c on the HAProxy example: ${unavailable}`);

/** The file's lines without comments and blank lines, trimmed. */
async function directives(): Promise<string[]> {
  return (await Deno.readTextFile(EXAMPLE)).split("\n").map((l) => l.replace(/#.*/, "").trim()).filter(Boolean);
}

Deno.test({
  name: "examples/haproxy/broker-cluster.cfg: haproxy -c accepts it",
  ignore: unavailable !== null,
  fn: async () => {
    const { ok: valid, output } = await checkHaproxyConfig(EXAMPLE);
    ok(valid, output);
  },
});

Deno.test("examples/haproxy/broker-cluster.cfg: tcp, round robin, no affinity, long timeouts, health checks", async () => {
  const lines = await directives();
  ok(lines.includes("mode tcp"), "mode tcp");
  ok(lines.includes("balance roundrobin"), "balance roundrobin");
  ok(!lines.some((l) => /^(stick|balance source|hash-type)/.test(l)), "no affinity");
  // Well above a link's LINK_TIMEOUT (6 s by default, heartbeats every 2 s): HAProxy must not cut idle links.
  for (const side of ["client", "server"]) {
    const line = lines.find((l) => l.startsWith(`timeout ${side} `));
    ok(line, `timeout ${side}`);
    ok(parseDuration(line.split(/\s+/)[2]!) >= 60 * 60_000, line);
  }
  const servers = lines.filter((l) => l.startsWith("server "));
  equal(servers.length, 3, "three broker-servers");
  const checked = lines.some((l) => /^default-server .*\bcheck\b/.test(l)) || servers.every((l) => /\bcheck\b/.test(l));
  ok(checked, "every broker-server is health-checked");
  for (const s of servers) match(s, /^server \S+ 10\.0\.0\.\d+:\d+/, "documentation addresses");
});
