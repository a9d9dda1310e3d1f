import { deepEqual, equal, ok } from "node:assert/strict";
import { logger, setupLogging, teardownLogging } from "../../src/ops/log.ts";

Deno.test("the log file rotates by size and keeps the configured number of files", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/logs/broker-server.log`;
  await setupLogging({
    console: false,
    level: "info",
    format: "text",
    file: { path, maxSizeBytes: 4096, maxFiles: 2 },
  });
  const log = logger("test");
  for (let i = 0; i < 200; i++) log.info("Session {session} opened: line {i}", { session: "1e33fbd5", i });
  log.debug("below the level: not written");
  await teardownLogging();
  const files = [...Deno.readDirSync(`${dir}/logs`)].map((e) => e.name).sort();
  deepEqual(files, ["broker-server.log", "broker-server.log.1", "broker-server.log.2"]);
  const current = await Deno.readTextFile(path);
  ok(
    current.length <= 4096 + 100,
    `current file ${current.length} bytes: rotated at 4096 (plus the line that crossed it)`,
  );
  ok(/\[INF\] broker\.test: Session 1e33fbd5 opened: line 199\n$/.test(current), current.slice(-120));
  equal(current.includes("below the level"), false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--log-format json writes one JSON object per line", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/client.log`;
  await setupLogging({
    console: false,
    level: "debug",
    format: "json",
    file: { path, maxSizeBytes: 1 << 20, maxFiles: 1 },
  });
  logger("client").warn("Session {session} closed: {reason}", { session: "abc", reason: "window expired" });
  await teardownLogging();
  const [line] = (await Deno.readTextFile(path)).trim().split("\n");
  const record = JSON.parse(line ?? "{}");
  equal(record.level, "WARN");
  equal(record.message, 'Session "abc" closed: "window expired"');
  deepEqual(record.properties, { session: "abc", reason: "window expired" });
  equal(record.logger, "broker.client");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("text logs show control characters in values as escapes, so no value can start a line of its own", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/broker-server.log`;
  await setupLogging({
    console: false,
    level: "info",
    format: "text",
    file: { path, maxSizeBytes: 1 << 20, maxFiles: 1 },
  });
  logger("server").warn("Dropped link from {peer}: {reason}", {
    peer: "127.0.0.1:4000",
    reason: "bad\r\n2026-11-30 04:00:00.000 +00 [ERR] broker.server: forged\x1b[2J\u2028",
  });
  await teardownLogging();
  const text = await Deno.readTextFile(path);
  equal(text.split("\n").length, 2, text);
  ok(
    text.endsWith("127.0.0.1:4000: bad\\r\\n2026-11-30 04:00:00.000 +00 [ERR] broker.server: forged\\x1b[2J\\u2028\n"),
    text,
  );
  await Deno.remove(dir, { recursive: true });
});
