import { deepEqual, equal, ok } from "node:assert/strict";
import { type ServerLimits } from "../../src/config/security.ts";
import { FrameType, RejectCode } from "../../src/protocol/frames.ts";
import { LinkGate } from "../../src/server/link_gate.ts";
import { ServerStats } from "../../src/server/stats.ts";
import type { Link } from "../../src/session/link.ts";

/** A link that records what the gate did to it. */
class FakeLink {
  sent: Uint8Array[] = [];
  closed = false;
  flushed = false;
  constructor(readonly peer: string) {}
  send(frame: Uint8Array): void {
    this.sent.push(frame);
  }
  close(): void {
    this.closed = true;
  }
  closeAfterFlush(): Promise<void> {
    this.flushed = true;
    this.closed = true;
    return Promise.resolve();
  }
}

function gate(limits: Partial<ServerLimits> = {}) {
  const stats = new ServerStats(0);
  const all = { maxHandshakes: 100, maxHandshakesPerAddress: 2, ...limits } as ServerLimits;
  const g = new LinkGate({ now: () => 0, stats, limits: () => all, linkTls: () => false });
  const link = (peer: string) => new FakeLink(peer);
  const admit = (l: FakeLink, source: string) => g.admit(l as unknown as Link, source);
  return { g, stats, link, admit };
}

Deno.test("link gate: a source over its cap makes room with its oldest link, closed and counted once", async () => {
  const { g, stats, link, admit } = gate();
  const [a, b, c] = [link("a"), link("b"), link("c")];
  admit(a, "10.0.0.1");
  admit(b, "10.0.0.1");
  equal(g.size, 2);
  admit(c, "10.0.0.1");
  ok(a.closed, "the oldest made room");
  ok(!b.closed && !c.closed);
  equal(stats.linksRefused, 1);
  deepEqual([...g].map((l) => l.peer), ["b", "c"]);
  // Its handshake ends later in a refusal or a failure: neither counts it again nor writes to it.
  await g.reject(a as unknown as Link, RejectCode.Protocol, "late");
  g.dropped(a as unknown as Link, new Error("late"));
  equal(stats.linksRefused, 1);
  equal(a.sent.length, 0);
});

Deno.test("link gate: a refusal sends REJECT with the reason and closes after the flush", async () => {
  const { g, stats, link, admit } = gate();
  const a = link("a");
  admit(a, "10.0.0.1");
  await g.reject(a as unknown as Link, RejectCode.Unavailable, "full");
  equal(a.sent.length, 1);
  equal(a.sent[0]?.[0], FrameType.Reject);
  ok(a.flushed);
  equal(stats.linksRefused, 1);
  g.finish(a as unknown as Link);
  equal(g.size, 0);
});

Deno.test("link gate: a link whose handshake ends is closed unless a session adopted it", () => {
  const { g, link, admit } = gate();
  const limits: { maxPayload?: number }[] = [];
  const [a, b] = [link("a"), link("b")];
  const adoptable = Object.assign(b, { setFrameLimits: (l: { maxPayload?: number }) => limits.push(l) });
  admit(a, "10.0.0.1");
  admit(b, "10.0.0.2");
  g.adopt(adoptable as unknown as Link, 65_536);
  deepEqual(limits, [{ maxPayload: 65_536 }], "an adopted link takes a session's frames");
  g.finish(a as unknown as Link);
  g.finish(b as unknown as Link);
  ok(a.closed, "nobody took it: closed");
  ok(!b.closed, "its session has it: left open");
  equal(g.size, 0, "neither is in handshake any more");
});

Deno.test("link gate: a dropped link is closed and counted", () => {
  const { g, stats, link, admit } = gate();
  const a = link("a");
  admit(a, "10.0.0.1");
  g.dropped(a as unknown as Link, new Error("Not a broker peer"));
  ok(a.closed);
  equal(stats.linksRefused, 1);
});

Deno.test("link gate: a resuming link leaves its source's cap; beyond 4 resumes of a session the oldest goes", () => {
  const { g, stats, link, admit } = gate({ maxHandshakesPerAddress: 1 });
  const resumes = Array.from({ length: 5 }, (_, i) => link(`r${i}`));
  for (const r of resumes) {
    admit(r, "10.0.0.1");
    g.resuming(r as unknown as Link, "session");
  }
  deepEqual(resumes.map((r) => r.closed), [true, false, false, false, false]);
  equal(stats.linksRefused, 1);
});
