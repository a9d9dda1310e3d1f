import { deepEqual, equal } from "node:assert/strict";
import { HandshakeAdmission, MAX_RESUMES_PER_SESSION } from "../../src/server/admission.ts";

const limits = { total: 6, perSource: 3 };

Deno.test("admission: a source over its cap makes room with its own oldest silent link", () => {
  const a = new HandshakeAdmission<string>();
  for (const link of ["a1", "a2", "a3"]) deepEqual(a.admit(link, "A", limits), { evicted: [], cap: null });
  a.spoke("a1");
  deepEqual(a.admit("a4", "A", limits), { evicted: ["a2"], cap: "perSource" }, "a1 spoke: the silent a2 goes");
  deepEqual(a.admit("b1", "B", limits), { evicted: [], cap: null }, "another source is not touched");
  a.spoke("a3");
  a.spoke("a4");
  deepEqual(a.admit("a5", "A", limits).evicted, ["a1"], "all spoke: the oldest goes");
  equal(a.unprovenFrom("A"), 3);
  equal(a.size, 4);
});

Deno.test("admission: over the total cap, the busiest source makes room, never a quiet one", () => {
  const a = new HandshakeAdmission<string>();
  for (const link of ["b1", "a1", "a2", "c1", "a3", "c2"]) a.admit(link, link[0] as string, limits);
  equal(a.unproven, 6);
  deepEqual(a.admit("d1", "D", limits), { evicted: ["a1"], cap: "total" });
  deepEqual(a.admit("d2", "D", limits).evicted, ["a2"]);
  equal(a.unprovenFrom("b"), 1);
  equal(a.unproven, 6);
});

Deno.test("admission: a link that names a session it resumes leaves the caps, and cannot be evicted by the crowd", () => {
  const a = new HandshakeAdmission<string>();
  a.admit("resume", "A", limits);
  a.spoke("resume");
  deepEqual(a.resuming("resume", "s1"), []);
  equal(a.unproven, 0);
  // Thousands of idle links from the same source churn among themselves.
  for (let i = 0; i < 5_000; i++) {
    const { evicted } = a.admit(`idle${i}`, "A", limits);
    equal(evicted.includes("resume"), false);
  }
  equal(a.unprovenFrom("A"), 3);
  equal(a.size, 4);
  a.remove("resume");
  equal(a.size, 3);
});

Deno.test(`admission: at most ${MAX_RESUMES_PER_SESSION} resume handshakes per session; the oldest make room`, () => {
  const a = new HandshakeAdmission<string>();
  const links = Array.from({ length: MAX_RESUMES_PER_SESSION + 2 }, (_, i) => `r${i}`);
  const evicted = links.flatMap((link) => {
    a.admit(link, "A", limits);
    return a.resuming(link, "s1");
  });
  deepEqual(evicted, ["r0", "r1"]);
  equal(a.size, MAX_RESUMES_PER_SESSION);
  deepEqual(a.resuming("r5", "s1"), [], "naming it twice changes nothing");
  for (const link of links) a.remove(link);
  equal(a.size, 0);
  equal(a.unproven, 0);
});
