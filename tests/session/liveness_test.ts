import { equal, ok } from "node:assert/strict";
import { LinkWatch, MIN_PROBE_QUIET_MS, MIN_SUSPICION_MS, RttEstimator } from "../../src/session/liveness.ts";

const LINK_TIMEOUT = 6_000;

Deno.test("RttEstimator: the ceiling before any sample, then srtt with a margin of at least srtt / 2, within the bounds", () => {
  const rtt = new RttEstimator();
  equal(rtt.timeout(1_000, LINK_TIMEOUT), LINK_TIMEOUT);
  rtt.sample(10);
  equal(rtt.timeout(1_000, LINK_TIMEOUT), 1_000, "a LAN round trip: the floor");
  const slow = new RttEstimator();
  for (let i = 0; i < 50; i++) slow.sample(3_000);
  equal(slow.timeout(1_000, LINK_TIMEOUT), 4_500, "a steady 3 s round trip: srtt + srtt / 2");
  const jumpy = new RttEstimator();
  jumpy.sample(3_000);
  equal(jumpy.timeout(1_000, LINK_TIMEOUT), LINK_TIMEOUT, "3 s + 4 * 1.5 s is capped at the link timeout");
});

Deno.test("LinkWatch: a server that never echoed is never suspected, however long the probe waits", () => {
  const watch = new LinkWatch(0, LINK_TIMEOUT);
  watch.probed(0);
  for (let t = 0; t < LINK_TIMEOUT; t += 100) equal(watch.due(t, 0, false), null);
});

Deno.test("LinkWatch: an echo times the probe it answers, even when other frames and probes came between", () => {
  const watch = new LinkWatch(0, LINK_TIMEOUT);
  watch.probed(10);
  watch.heard(11, "activity");
  watch.probed(12); // not timed: the first probe's echo is still to come
  equal(watch.echoes, false);
  watch.heard(15, "echo");
  equal(watch.echoes, true);
  equal(watch.srtt, 5);
  // The round trip (3 s) is longer than the probe interval (2 s): echoes overlap the next probes.
  const slow = new LinkWatch(0, LINK_TIMEOUT);
  for (let t = 0; t <= 20_000; t += 1_000) {
    if (t % 2_000 === 0) slow.probed(t);
    else if (t >= 3_000) slow.heard(t, "echo"); // the echo of the probe sent 3 s before
  }
  equal(slow.srtt, 3_000, "each sample pairs an echo with its own probe");
});

Deno.test("LinkWatch: after activity, quiet makes a probe; the probe unanswered for the timeout makes one suspicion", () => {
  const watch = new LinkWatch(0, LINK_TIMEOUT, { echoes: true });
  watch.probed(0);
  watch.heard(1, "echo");
  watch.heard(100, "activity");
  equal(watch.due(100 + MIN_PROBE_QUIET_MS - 1, 0, false), null);
  equal(watch.due(100 + MIN_PROBE_QUIET_MS, 0, false), "probe");
  const probeAt = 100 + MIN_PROBE_QUIET_MS;
  watch.probed(probeAt);
  equal(watch.due(probeAt + MIN_SUSPICION_MS - 1, 0, false), null);
  equal(watch.due(probeAt + MIN_SUSPICION_MS, 0, false), "suspect");
  ok(watch.suspected);
  equal(watch.due(probeAt + MIN_SUSPICION_MS + 500, 0, false), null, "once per silence");
  equal(watch.heard(probeAt + 2_000, "other"), true, "a frame after the suspicion reassures");
  equal(watch.suspected, false);
});

Deno.test("LinkWatch: an idle link makes no probe of its own (the heartbeat is the probe); our unanswered DATA does", () => {
  const watch = new LinkWatch(0, LINK_TIMEOUT, { echoes: true });
  watch.probed(0);
  watch.heard(1, "echo");
  for (let t = 0; t < 5_000; t += 100) equal(watch.due(t, 0, false), null);
  // DATA sent at 5 s, not acknowledged: quiet since then makes a probe.
  equal(watch.due(5_000, 1_000, true), null);
  equal(watch.due(5_000 + MIN_PROBE_QUIET_MS, 1_000, true), "probe");
  watch.probed(5_000 + MIN_PROBE_QUIET_MS);
  watch.heard(5_600, "echo");
  // Still unacknowledged (the ERP does not read), nothing new sent: no more probes.
  for (let t = 5_600; t < 9_000; t += 100) equal(watch.due(t, 1_000, true), null);
});

Deno.test("LinkWatch: the handshake's duration seeds the round trip, so a slow link's first probe is given time", () => {
  const watch = new LinkWatch(0, LINK_TIMEOUT, { echoes: true });
  watch.handshakeTook(3_000);
  equal(watch.suspicionMs, LINK_TIMEOUT);
  watch.probed(0);
  equal(watch.due(LINK_TIMEOUT - 1, 0, false), null);
  watch.heard(3_100, "echo");
  ok(watch.suspicionMs >= 3_100 * 1.5 - 1, `suspicion after ${watch.suspicionMs} ms`);
});

Deno.test("LinkWatch: a first handshake that took 9 s (a slow ERP connect) gives way to the probes' fast round trips at once", () => {
  // As in Session.attach: the attach probe goes out, then the handshake's duration is taken.
  const watch = new LinkWatch(0, LINK_TIMEOUT, { echoes: true });
  watch.probed(0);
  watch.handshakeTook(9_000);
  watch.heard(20, "echo");
  // The echo measured the link; the handshake was only an upper bound of it (it included the ERP connect).
  equal(
    watch.suspicionMs,
    MIN_SUSPICION_MS,
    `suspicion after a 20 ms echo: ${watch.suspicionMs} ms (srtt ${watch.srtt})`,
  );
  // Idle link, a heartbeat (probe) every 2 s, each answered in 20 ms: a roam must be suspected in about 1 s, not at the link timeout.
  for (let t = 2_000; t <= 10_000; t += 2_000) {
    watch.probed(t);
    watch.heard(t + 20, "echo");
  }
  equal(watch.suspicionMs, MIN_SUSPICION_MS, `after 5 more fast echoes: ${watch.suspicionMs} ms (srtt ${watch.srtt})`);
});
