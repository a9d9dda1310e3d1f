import { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { parseIni } from "../../src/config/ini.ts";
import { configError } from "../helpers/assert_config.ts";
import { loadServerConfig, serverConfigFromIni } from "../../src/config/server_config.ts";

const parse = (...lines: string[]) => serverConfigFromIni(parseIni(lines.join("\n"), "appserver.ini"));
const section = ["[BALANCE_SMART_CLIENT_DESKTOP]", "LOCAL_SERVER_PORT = 4000"];

Deno.test("the TOTVS example file loads as documented", async () => {
  const config = await loadServerConfig("examples/appserver.ini");
  equal(config.listen.port, 4000);
  equal(config.listen.hostname, "0.0.0.0");
  deepEqual(
    config.remoteServers.map((s) => [s.name, s.hostname, s.port]),
    [
      ["REMOTE_SERVER_01", "172.16.50.42", 5000],
      ["REMOTE_SERVER_02", "172.16.50.42", 5001],
      ["REMOTE_SERVER_03", "172.16.50.42", 5002],
    ],
  );
  equal(config.serviceName, "XXX_TOTVS_BALANCE_SC_001");
  equal(config.serviceDisplayName, "BROKER SERVICE");
  equal(config.consoleLog, true);
  equal(config.sortMethod, "CONNECTION");
  deepEqual(config.warnings, []);
  equal(config.tuning.resumeTimeoutMs, 180_000);
});

Deno.test("the loopback example loads with every spelling of server addresses", async () => {
  const config = await loadServerConfig("examples/loopback/appserver.ini");
  equal(config.listen.hostname, "127.0.0.1");
  deepEqual(config.remoteServers.map((s) => `${s.name} ${s.hostname} ${s.port}`), [
    "REMOTE_SERVER_01 127.0.0.1 15000",
    "REMOTE_SERVER_02 127.0.0.1 15001",
    "REMOTE_SERVER_0A ::1 15002",
  ]);
  equal(config.tuning.heartbeatIntervalMs, 2000);
  equal(config.tuning.replayBufferBytes, 4 * 1024 * 1024);
});

Deno.test("other sections are ignored; keys in any order and case", () => {
  const config = parse(
    "[Drivers]",
    "garbage without equals",
    "[balance_smart_client_desktop]",
    "remote_server_xy = erp2.local 5001",
    "Remote_Server_0A = erp1.local:5000",
    "local_server_port=4100",
    "sort_method = round_robin",
  );
  deepEqual(config.remoteServers.map((s) => s.name), ["REMOTE_SERVER_XY", "REMOTE_SERVER_0A"]);
  equal(config.listen.port, 4100);
  equal(config.sortMethod, "ROUND_ROBIN");
});

Deno.test("bad input: one clear message naming file, line and key", () => {
  const cases: [string[], RegExp][] = [
    [["[GENERAL]", "CONSOLELOG=1"], /^appserver\.ini: Cannot find section \[BALANCE_SMART_CLIENT_DESKTOP\]/],
    [[section[0] as string, "REMOTE_SERVER_01 = a 1"], /^appserver\.ini:1: Cannot find LOCAL_SERVER_PORT/],
    [section, /^appserver\.ini:1: Cannot find any REMOTE_SERVER_xx in \[BALANCE_SMART_CLIENT_DESKTOP\]/],
    [
      [section[0] as string, "LOCAL_SERVER_PORT = quatro mil", "REMOTE_SERVER_01 = a 1"],
      /^appserver\.ini:2: Cannot parse LOCAL_SERVER_PORT: expected a port number, got "quatro mil"/,
    ],
    [
      [section[0] as string, "LOCAL_SERVER_PORT = 70000", "REMOTE_SERVER_01 = a 1"],
      /^appserver\.ini:2: Cannot parse LOCAL_SERVER_PORT: expected a port in 1\.\.65535, got "70000"/,
    ],
    [
      [...section, "REMOTE_SERVER_02 = 10.0.0.1 0"],
      /^appserver\.ini:3: Cannot parse REMOTE_SERVER_02: expected a port in 1\.\.65535, got "0"/,
    ],
    [
      [...section, "REMOTE_SERVER_02 = 10.0.0.1"],
      /^appserver\.ini:3: Cannot parse REMOTE_SERVER_02: expected "host port", "host:port" or "\[ipv6\]:port", got "10\.0\.0\.1"/,
    ],
    [
      [...section, "REMOTE_SERVER_02 = :5000"],
      /^appserver\.ini:3: Cannot parse REMOTE_SERVER_02: expected a host name/,
    ],
    [
      [...section, "REMOTE_SERVER_02 = []:5000"],
      /^appserver\.ini:3: Cannot parse REMOTE_SERVER_02: expected a host name/,
    ],
    [[...section, "REMOTE_SERVER_02 ="], /^appserver\.ini:3: Cannot parse REMOTE_SERVER_02: expected "host port"/],
    [[...section, "REMOTE_SERVER_ = a 1"], /^appserver\.ini:3: Cannot parse key REMOTE_SERVER_: the suffix/],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "SERVICE_NAME = MY BROKER"],
      /^appserver\.ini:4: Cannot parse SERVICE_NAME: expected a name without spaces, got "MY BROKER"/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "SORT_METHOD = FASTEST"],
      /^appserver\.ini:4: Cannot parse SORT_METHOD: expected CONNECTION, ROUND_ROBIN/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "RESUME_TIMEOUT = soon"],
      /^appserver\.ini:4: Cannot parse RESUME_TIMEOUT: expected a duration/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "RESUME_TIMEOUT = 0"],
      /^appserver\.ini:4: RESUME_TIMEOUT must be greater than zero/,
    ],
    [
      // 2^31 ms and more would overflow the timers and end every session at once.
      [...section, "REMOTE_SERVER_01 = a 1", "RESUME_TIMEOUT = 2147484"],
      /^appserver\.ini:4: Cannot parse RESUME_TIMEOUT: expected a duration of at most 576h \(24 days\), got "2147484"/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "DRAIN_TIMEOUT = 99999999999999999999999h"],
      /^appserver\.ini:4: Cannot parse DRAIN_TIMEOUT: expected a duration of at most 576h \(24 days\)/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "HEALTH_CHECK_INTERVAL = 600h"],
      /^appserver\.ini:4: Cannot parse HEALTH_CHECK_INTERVAL: expected a duration of at most 576h/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "REPLAY_BUFFER_SIZE = 2G"],
      /^appserver\.ini:4: REPLAY_BUFFER_SIZE must be at most 1G \(1073741824 bytes\), got 2147483648/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "MAX_FRAME_SIZE = 1G"],
      /^appserver\.ini:4: MAX_FRAME_SIZE must be at most 16M \(16777216 bytes\), got 1073741824/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "MAX_BUFFERED = 99999999999999999999G"],
      /^appserver\.ini:4: Cannot parse MAX_BUFFERED: expected a size of at most 1024G, got "99999999999999999999G"/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "HEARTBEAT_INTERVAL = 5s", "LINK_TIMEOUT = 6s"],
      /^appserver\.ini:5: LINK_TIMEOUT \(6000 ms\) must be at least twice HEARTBEAT_INTERVAL \(5000 ms\)/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "REPLAY_BUFFER_SIZE = 1K"],
      /^appserver\.ini:4: REPLAY_BUFFER_SIZE must be at least 65536 bytes/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "CONSOLELOG 1"],
      /^appserver\.ini:4: Cannot parse line in \[BALANCE_SMART_CLIENT_DESKTOP\]/,
    ],
    [
      ["[GENERAL]", "CONSOLELOG = talvez", ...section, "REMOTE_SERVER_01 = a 1"],
      /^appserver\.ini:2: Cannot parse CONSOLELOG: expected 1 or 0/,
    ],
  ];
  for (const [lines, expected] of cases) {
    throws(() => parse(...lines), configError(expected), lines.join(" | "));
  }
});

Deno.test("a missing file says so with its path", async () => {
  await rejects(loadServerConfig("does/not/exist.ini"), {
    name: "ConfigError",
    message: 'Cannot read configuration file "does/not/exist.ini": file not found',
  });
});

Deno.test("duplicate keys: the first wins, and the warning says so", () => {
  const config = parse(...section, "REMOTE_SERVER_01 = a 1", "LOCAL_SERVER_PORT = 4001", "REMOTE_SERVER_01 = b 2");
  equal(config.listen.port, 4000);
  deepEqual(config.remoteServers.map((s) => s.hostname), ["a"]);
  deepEqual(config.warnings, [
    'appserver.ini:4: Duplicate key LOCAL_SERVER_PORT in [BALANCE_SMART_CLIENT_DESKTOP]: the first one (line 2, "4000") wins, this one ("4001") is ignored',
    'appserver.ini:5: Duplicate key REMOTE_SERVER_01 in [BALANCE_SMART_CLIENT_DESKTOP]: the first one (line 3, "a 1") wins, this one ("b 2") is ignored',
  ]);
});

Deno.test("unknown keys and monitoring sort methods give warnings that name key and line", () => {
  const config = parse(
    ...section,
    "REMOTE_SERVER_01 = a 1",
    "REMOTE_SEVER_02 = b 2",
    "SORT_METHOD = PROTHEUS_SERVER_MEMORY",
  );
  equal(config.sortMethod, "CONNECTION");
  deepEqual(config.warnings, [
    "appserver.ini:5: SORT_METHOD PROTHEUS_SERVER_MEMORY needs Protheus' own monitoring protocol, which this broker does not speak: balancing by CONNECTION (fewest sessions) instead",
    "appserver.ini:4: Unknown key REMOTE_SEVER_02 in [BALANCE_SMART_CLIENT_DESKTOP] is ignored",
  ]);
});

Deno.test("tuning keys accept units", () => {
  const config = parse(
    ...section,
    "REMOTE_SERVER_01 = [::1]:5000",
    "RESUME_TIMEOUT = 3m",
    "HEARTBEAT_INTERVAL = 500ms",
    "LINK_TIMEOUT = 2.5",
    "REPLAY_BUFFER_SIZE = 16MiB",
    "LOCAL_SERVER_ADDRESS = ::",
  );
  equal(config.tuning.resumeTimeoutMs, 180_000);
  equal(config.tuning.heartbeatIntervalMs, 500);
  equal(config.tuning.linkTimeoutMs, 2500);
  equal(config.tuning.replayBufferBytes, 16 * 1024 * 1024);
  equal(config.listen.hostname, "::");
  equal(config.remoteServers[0]?.hostname, "::1");
});

Deno.test("REMOTE_SERVER values take optional weight and max; health check keys have HAProxy's defaults", () => {
  const config = parse(
    ...section,
    "REMOTE_SERVER_01 = 10.0.0.5 5000 weight=2 max=300",
    "REMOTE_SERVER_02 = [::1]:5001 MAX=10",
    "REMOTE_SERVER_03 = erp3 5002",
    "HEALTH_CHECK_INTERVAL = 0",
    "HEALTH_CHECK_FALL = 5",
  );
  deepEqual(
    config.remoteServers.map((s) => [s.hostname, s.port, s.weight, s.maxSessions]),
    [["10.0.0.5", 5000, 2, 300], ["::1", 5001, 1, 10], ["erp3", 5002, 1, 0]],
  );
  deepEqual(config.health, { intervalMs: 0, rise: 2, fall: 5 });
  deepEqual(parse(...section, "REMOTE_SERVER_01 = a 1").health, { intervalMs: 2000, rise: 2, fall: 3 });
  const bad: [string, RegExp][] = [
    ["REMOTE_SERVER_01 = a 1 weight=0", /expected weight=1\.\.1000, got "weight=0"/],
    ["REMOTE_SERVER_01 = a 1 max=lots", /expected max=N with N >= 1, got "max=lots"/],
    ["REMOTE_SERVER_01 = a 1 backup=1", /then optional weight=N and max=N, got "backup=1"/],
    ["HEALTH_CHECK_RISE = 0", /Cannot parse HEALTH_CHECK_RISE: expected a count in 1\.\.100, got "0"/],
  ];
  for (const [line, expected] of bad) {
    throws(() => parse(...section, "REMOTE_SERVER_09 = z 9", line), configError(expected), line);
  }
});

Deno.test("status page: on the loopback by default, off with 0, a key required beyond the loopback", () => {
  const base = [...section, "REMOTE_SERVER_01 = a 1"];
  deepEqual(parse(...base).status, { enabled: true, listen: { hostname: "127.0.0.1", port: 8404 }, accessKey: null });
  equal(parse(...base, "STATUS_PORT = 0").status.enabled, false);
  equal(parse(...base, "STATUS_PORT = off").status.enabled, false);
  throws(
    () => parse(...base, "STATUS_ADDRESS = 0.0.0.0"),
    configError(/STATUS_ADDRESS 0\.0\.0\.0 is reachable from other machines: set STATUS_ACCESS_KEY/),
  );
  throws(() => parse(...base, "STATUS_ACCESS_KEY = short"), configError(/STATUS_ACCESS_KEY is too short/));
  const open = parse(...base, "STATUS_ADDRESS = 0.0.0.0", "STATUS_PORT = 9000", "STATUS_ACCESS_KEY = long-enough-key");
  deepEqual(open.status, { enabled: true, listen: { hostname: "0.0.0.0", port: 9000 }, accessKey: "long-enough-key" });
});

Deno.test("log keys: level, format, file beside the configuration, rotation", () => {
  const config = parse(
    ...section,
    "REMOTE_SERVER_01 = a 1",
    "LOG_FILE = logs/broker.log",
    "LOG_MAX_SIZE = 1M",
    "LOG_FILES = 3",
    "LOG_LEVEL = warn",
    "LOG_FORMAT = JSON",
  );
  deepEqual(config.log, {
    level: "warning",
    format: "json",
    file: join("logs", "broker.log"),
    maxSizeBytes: 1048576,
    maxFiles: 3,
  });
  equal(parse(...section, "REMOTE_SERVER_01 = a 1").log.file, null);
  throws(
    () => parse(...section, "REMOTE_SERVER_01 = a 1", "LOG_LEVEL = loud"),
    configError(/Cannot parse LOG_LEVEL: expected one of debug, info, warning, error/),
  );
});

Deno.test("security keys: admission key length, TLS files in pairs, limits with sane bounds", () => {
  const base = [...section, "REMOTE_SERVER_01 = a 1"];
  equal(parse(...base).admissionKey, null);
  equal(parse(...base, "ADMISSION_KEY = 0123456789abcdef").admissionKey, "0123456789abcdef");
  throws(
    () => parse(...base, "ADMISSION_KEY = short"),
    configError(/ADMISSION_KEY is too short: use at least 16 characters/),
  );
  throws(() => parse(...base, "LINK_TLS_CERT = cert.pem"), configError(/needs both LINK_TLS_CERT .* and LINK_TLS_KEY/));
  deepEqual(parse(...base, "LINK_TLS_CERT = cert.pem", "LINK_TLS_KEY = /etc/broker/key.pem").tls, {
    certFile: "cert.pem",
    keyFile: "/etc/broker/key.pem",
  });
  deepEqual(parse(...base).limits, {
    maxSessions: 5000,
    maxHandshakes: 500,
    maxHandshakesPerAddress: 100,
    newSessionsPerMinute: 6000,
    maxFrameBytes: 1048576,
    maxBufferedBytes: 2 * 1024 ** 3,
  });
  throws(() => parse(...base, "MAX_FRAME_SIZE = 64K"), configError(/MAX_FRAME_SIZE must be at least 320K/));
  throws(
    () => parse(...base, "MAX_SESSIONS = 0"),
    configError(/Cannot parse MAX_SESSIONS: expected a whole number of at least 1/),
  );
});
