import { deepEqual, equal } from "node:assert/strict";
import { OutageHistory } from "../../src/client/outages.ts";
import { captureLogs } from "../helpers/log_capture.ts";

const facts = { session: "1e33fbd5", awayMs: 12_400, trigger: "silence", handshakeMs: 35 };
const resumed = (logs: { lines: string[] }) => logs.lines.filter((l) => l.includes(" resumed after "));

Deno.test("the resume line waits for the server's replay, which may come before or after broker-client's", async () => {
  await using logs = await captureLogs();
  const history = new OutageHistory();
  history.begin(facts);
  history.replayedTo(1024);
  equal(resumed(logs).length, 0, "not before the server's replay is counted");
  history.replayedBy(8192, true);
  // While the link is attached, the server's replay can already be in the link's buffer.
  history.begin({ ...facts, awayMs: 2_000 });
  history.replayedBy(0, true);
  history.replayedTo(10);
  deepEqual(resumed(logs), [
    "INFO broker.client: Session 1e33fbd5 resumed after 12.4 s (trigger: silence; handshake 35 ms): 1024 bytes replayed to the server, 8192 bytes replayed by the server",
    "INFO broker.client: Session 1e33fbd5 resumed after 2.0 s (trigger: silence; handshake 35 ms): 10 bytes replayed to the server, 0 bytes replayed by the server",
  ]);
  deepEqual([history.hidden, history.longestMs, history.replayedToServer, history.replayedByServer], [
    2,
    12_400,
    1034,
    8192,
  ]);
});

Deno.test("a resume whose link went before the server's replay ended says so; one that failed is not logged", async () => {
  await using logs = await captureLogs();
  const history = new OutageHistory();
  history.begin(facts);
  history.abandon();
  history.begin(facts);
  history.replayedTo(0);
  history.replayedBy(300, false);
  deepEqual(resumed(logs), [
    "INFO broker.client: Session 1e33fbd5 resumed after 12.4 s (trigger: silence; handshake 35 ms): 0 bytes replayed to the server, 300 bytes replayed by the server (cut short: the link or the session ended first)",
  ]);
  equal(history.hidden, 1);
});
