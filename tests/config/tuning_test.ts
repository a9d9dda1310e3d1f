import { equal, throws } from "node:assert/strict";
import { checkAdoptedTimers, DEFAULT_TUNING } from "../../src/config/tuning.ts";
import { MAX_DURATION_MS, parseDuration, parseSize } from "../../src/config/values.ts";

Deno.test("durations stop below what a timer can wait (2^31 ms), sizes at 1024G", () => {
  equal(MAX_DURATION_MS < 2 ** 31, true);
  equal(parseDuration("576h"), MAX_DURATION_MS);
  throws(() => parseDuration("2147484"), { name: "RangeError", message: /at most 576h \(24 days\), got "2147484"/ });
  throws(() => parseDuration("1" + "0".repeat(400)), RangeError);
  equal(parseSize("1024G"), 1024 ** 4);
  throws(() => parseSize("1025G"), { name: "RangeError", message: 'expected a size of at most 1024G, got "1025G"' });
});

Deno.test("broker-client refuses nonsense timers in a WELCOME, saying which and why", () => {
  const sane = {
    resumeTimeoutMs: DEFAULT_TUNING.resumeTimeoutMs,
    heartbeatIntervalMs: DEFAULT_TUNING.heartbeatIntervalMs,
    linkTimeoutMs: DEFAULT_TUNING.linkTimeoutMs,
    replayBufferBytes: DEFAULT_TUNING.replayBufferBytes,
  };
  checkAdoptedTimers(sane);
  throws(
    () => checkAdoptedTimers({ ...sane, replayBufferBytes: 1024 }),
    /replay buffer cap \(REPLAY_BUFFER_SIZE\) of 1024 bytes is out of range: expected 65536 \(64K\) to 1073741824 \(1G\)/,
  );
  throws(() => checkAdoptedTimers({ ...sane, linkTimeoutMs: 0 }), {
    name: "RangeError",
    message: "link timeout (LINK_TIMEOUT) of 0 ms is out of range: expected 1 ms to 576h",
  });
  throws(
    () => checkAdoptedTimers({ ...sane, heartbeatIntervalMs: 0 }),
    /heartbeat interval \(HEARTBEAT_INTERVAL\) of 0 ms/,
  );
  throws(
    () => checkAdoptedTimers({ ...sane, resumeTimeoutMs: 2 ** 32 - 1 }),
    /resume window \(RESUME_TIMEOUT\) of 4294967295 ms is out of range/,
  );
  throws(
    () => checkAdoptedTimers({ ...sane, heartbeatIntervalMs: 5_000, linkTimeoutMs: 6_000 }),
    {
      message:
        "link timeout (LINK_TIMEOUT) of 6000 ms is less than twice the heartbeat interval (HEARTBEAT_INTERVAL) of 5000 ms: healthy links would be declared dead",
    },
  );
});
