/**
 * A roam on a real network stack (bench/roam.ts): broker-client's namespace
 * changes its address mid-transfer; the sessions move to a new link within
 * 3 s and every byte arrives intact. Skipped, with the reason, where network
 * namespaces are not available (not root, not Linux, under Wine).
 */
import { ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { roamUnavailable, runRoam } from "../../bench/roam.ts";

const unavailable = await roamUnavailable();
if (unavailable) console.log(`SKIPPED: the network namespace roam test: ${unavailable}`);

Deno.test({
  name: "in network namespaces: the client's address changes mid-transfer; sessions move within 3 s, every byte intact",
  ignore: unavailable !== null,
  fn: async () => {
    const result = await runRoam({
      fault: "address",
      runs: 1,
      sessions: 3,
      outageSeconds: 0,
      code: fileURLToPath(new URL("../..", import.meta.url)),
    });
    const standstills = result.runs[0] as number[];
    console.log(`standstill per session after the address change: ${standstills.map(Math.round).join(", ")} ms`);
    ok(result.bytes > 0);
    for (const ms of standstills) ok(ms < 3_000, `sessions stood still ${standstills.join(", ")} ms`);
  },
});
