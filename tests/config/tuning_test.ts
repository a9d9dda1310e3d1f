import { throws } from "node:assert/strict";
import { checkAdoptedTimers, DEFAULT_TUNING } from "../../src/config/tuning.ts";

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
    /replay buffer cap \(REPLAY_BUFFER_SIZE\) of 1024 bytes is out of range: expected 64K to 1G/,
  );
  throws(() => checkAdoptedTimers({ ...sane, linkTimeoutMs: 0 }), {
    name: "RangeError",
    message: "link timeout (LINK_TIMEOUT) of 0 ms is out of range: expected 200ms to 2h",
  });
  throws(
    () => checkAdoptedTimers({ ...sane, heartbeatIntervalMs: 0 }),
    /heartbeat interval \(HEARTBEAT_INTERVAL\) of 0 ms is out of range: expected 100ms to 1h/,
  );
  throws(
    () => checkAdoptedTimers({ ...sane, resumeTimeoutMs: 2 ** 32 - 1 }),
    /resume window \(RESUME_TIMEOUT\) of 4294967295 ms is out of range: expected 1s to 576h/,
  );
  throws(
    () => checkAdoptedTimers({ ...sane, heartbeatIntervalMs: 5_000, linkTimeoutMs: 6_000 }),
    {
      message:
        "link timeout (LINK_TIMEOUT) of 6000 ms is less than twice the heartbeat interval (HEARTBEAT_INTERVAL) of 5000 ms: healthy links would be declared dead",
    },
  );
});
