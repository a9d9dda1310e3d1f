import { deepEqual, equal, match, rejects, throws } from "node:assert/strict";
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
      /^appserver\.ini:4: RESUME_TIMEOUT is out of range: expected 1s to 576h, got "0"$/,
    ],
    [
      // 2^31 ms and more would overflow the timers and end every session at once.
      [...section, "REMOTE_SERVER_01 = a 1", "RESUME_TIMEOUT = 2147484"],
      /^appserver\.ini:4: RESUME_TIMEOUT is out of range: expected 1s to 576h, got "2147484"$/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "DRAIN_TIMEOUT = 99999999999999999999999h"],
      /^appserver\.ini:4: DRAIN_TIMEOUT is out of range: expected 100ms to 24h, or 0 \(end sessions at once\)/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "HEALTH_CHECK_INTERVAL = 600h"],
      /^appserver\.ini:4: HEALTH_CHECK_INTERVAL is out of range: expected 100ms to 1h, or 0 \(no probes\), got "600h"$/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "REPLAY_BUFFER_SIZE = 2G"],
      /^appserver\.ini:4: REPLAY_BUFFER_SIZE is out of range: expected 64K to 1G, got "2G"$/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "MAX_FRAME_SIZE = 1G"],
      /^appserver\.ini:4: MAX_FRAME_SIZE is out of range: expected 320K to 16M, got "1G"$/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "MAX_BUFFERED = 99999999999999999999G"],
      /^appserver\.ini:4: MAX_BUFFERED is out of range: expected 64K to 1024G, got "99999999999999999999G"$/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "HEARTBEAT_INTERVAL = 5s", "LINK_TIMEOUT = 6s"],
      /^appserver\.ini:5: LINK_TIMEOUT \(6000 ms\) must be at least twice HEARTBEAT_INTERVAL \(5000 ms\)/,
    ],
    [
      [...section, "REMOTE_SERVER_01 = a 1", "REPLAY_BUFFER_SIZE = 1K"],
      /^appserver\.ini:4: REPLAY_BUFFER_SIZE is out of range: expected 64K to 1G, got "1K"$/,
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
    ["REMOTE_SERVER_01 = a 1 max=lots", /expected max=N with N >= 0 \(0: no limit\), got "max=lots"/],
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
  throws(
    () => parse(...base, "MAX_FRAME_SIZE = 64K"),
    configError(/MAX_FRAME_SIZE is out of range: expected 320K to 16M, got "64K"/),
  );
  throws(
    () => parse(...base, "MAX_SESSIONS = 0"),
    configError(/Cannot parse MAX_SESSIONS: expected a whole number of at least 1/),
  );
});

Deno.test("secrets never appear in messages: a key written twice (a key rotation) or a malformed secret line", () => {
  const admission = ["0123456789abcdef-first", "0123456789abcdef-second"];
  const access = ["status-key-number-one", "status-key-number-two"];
  const config = parse(
    ...section,
    "REMOTE_SERVER_01 = a 1",
    `ADMISSION_KEY = ${admission[0]}`,
    `admission_key = ${admission[1]}`,
    `STATUS_ACCESS_KEY = ${access[0]}`,
    `STATUS_ACCESS_KEY = ${access[1]}`,
  );
  equal(config.admissionKey, admission[0]);
  equal(config.status.accessKey, access[0]);
  deepEqual(config.warnings, [
    "appserver.ini:7: Duplicate key STATUS_ACCESS_KEY in [BALANCE_SMART_CLIENT_DESKTOP]: the first one (line 6) wins, this one is ignored (values hidden: secret)",
    "appserver.ini:5: Duplicate key admission_key in [BALANCE_SMART_CLIENT_DESKTOP]: the first one (line 4) wins, this one is ignored (values hidden: secret)",
  ]);
  const malformed = [...section, "REMOTE_SERVER_01 = a 1", `ADMISSION_KEY: ${admission[0]}`];
  throws(
    () => parse(...malformed),
    (err: Error) => {
      match(
        err.message,
        /^appserver\.ini:4: Cannot parse line in \[BALANCE_SMART_CLIENT_DESKTOP\]: expected "KEY = value", got "ADMISSION_KEY\.\.\." \(the rest hidden: secret\)$/,
      );
      return !err.message.includes(admission[0] as string);
    },
  );
});

Deno.test('UTF-16 appserver.ini (Notepad\'s "Unicode") loads', async () => {
  const dir = await Deno.makeTempDir();
  const text = "[GENERAL]\r\nCONSOLELOG=0\r\n[BALANCE_SMART_CLIENT_DESKTOP]\r\nLOCAL_SERVER_PORT = 4000\r\n" +
    'REMOTE_SERVER_01 = 172.16.50.42 5000\r\nSERVICE_DISPLAY_NAME = "Serviço"\r\n';
  const bytes = new Uint8Array(2 + text.length * 2);
  bytes.set([0xff, 0xfe]);
  for (let i = 0; i < text.length; i++) new DataView(bytes.buffer).setUint16(2 + i * 2, text.charCodeAt(i), true);
  await Deno.writeFile(join(dir, "appserver.ini"), bytes);
  try {
    const config = await loadServerConfig(join(dir, "appserver.ini"));
    equal(config.listen.port, 4000);
    equal(config.consoleLog, false);
    equal(config.serviceDisplayName, "Serviço");
    deepEqual(config.remoteServers.map((s) => [s.hostname, s.port]), [["172.16.50.42", 5000]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("REMOTE_SERVER: a port written twice is an error, a repeated address a warning, max=0 no limit", () => {
  throws(
    () => parse(...section, "REMOTE_SERVER_01 = erp1:5000 6000"),
    configError(
      /^appserver\.ini:3: Cannot parse REMOTE_SERVER_01: "erp1:5000" is neither a host name nor an IPv6 address: expected "host port", "host:port" or "\[ipv6\]:port", got "erp1:5000 6000"$/,
    ),
  );
  throws(
    () => parse(...section, "REMOTE_SERVER_01 = 10.0.0.5:5000 6000"),
    configError(/"10\.0\.0\.5:5000" is neither a host name nor an IPv6 address/),
  );
  equal(parse(...section, "REMOTE_SERVER_01 = fe80::1%eth0 5000").remoteServers[0]?.hostname, "fe80::1%eth0");
  const twice = parse(
    ...section,
    "REMOTE_SERVER_01 = erp1 5000",
    "REMOTE_SERVER_02 = ERP1:5000 weight=2",
    "REMOTE_SERVER_03 = erp1 5001",
  );
  deepEqual(twice.remoteServers.map((s) => s.name), ["REMOTE_SERVER_01", "REMOTE_SERVER_02", "REMOTE_SERVER_03"]);
  deepEqual(twice.warnings, [
    "appserver.ini:4: REMOTE_SERVER_02 names the same ERP server as REMOTE_SERVER_01 (line 3), erp1:5000: it gets the share of new sessions of both entries; remove one, or use weight=N",
  ]);
  deepEqual(
    parse(...section, "REMOTE_SERVER_01 = a 1 max=0").remoteServers.map((s) => s.maxSessions),
    [0],
  );
});

Deno.test("durations and sizes: one table of bounds, a clear message below and above", () => {
  const base = [...section, "REMOTE_SERVER_01 = a 1"];
  const cases: [string, RegExp][] = [
    [
      "HEALTH_CHECK_INTERVAL = 1ms",
      /^appserver\.ini:4: HEALTH_CHECK_INTERVAL is out of range: expected 100ms to 1h, or 0 \(no probes\), got "1ms"$/,
    ],
    [
      "HEALTH_CHECK_INTERVAL = 2h",
      /HEALTH_CHECK_INTERVAL is out of range: expected 100ms to 1h, or 0 \(no probes\), got "2h"/,
    ],
    ["RESUME_TIMEOUT = 600h", /^appserver\.ini:4: RESUME_TIMEOUT is out of range: expected 1s to 576h, got "600h"$/],
    ["RESUME_TIMEOUT = 0", /RESUME_TIMEOUT is out of range: expected 1s to 576h, got "0"/],
    [
      "DRAIN_TIMEOUT = 1000h",
      /DRAIN_TIMEOUT is out of range: expected 100ms to 24h, or 0 \(end sessions at once\), got "1000h"/,
    ],
    ["DRAIN_TIMEOUT = 1ms", /DRAIN_TIMEOUT is out of range: expected 100ms to 24h, or 0/],
    ["HEARTBEAT_INTERVAL = 10ms", /HEARTBEAT_INTERVAL is out of range: expected 100ms to 1h, got "10ms"/],
    ["CONNECT_TIMEOUT = 1h", /CONNECT_TIMEOUT is out of range: expected 100ms to 10m, got "1h"/],
    ["MAX_FRAME_SIZE = 8G", /MAX_FRAME_SIZE is out of range: expected 320K to 16M, got "8G"/],
    ["MAX_BUFFERED = 1K", /MAX_BUFFERED is out of range: expected 64K to 1024G, got "1K"/],
    ["LOG_MAX_SIZE = 2000G", /LOG_MAX_SIZE is out of range: expected 64K to 1024G, got "2000G"/],
    ["REPLAY_BUFFER_SIZE = 2G", /REPLAY_BUFFER_SIZE is out of range: expected 64K to 1G, got "2G"/],
  ];
  for (const [line, expected] of cases) {
    throws(() => parse(...base, line), configError(expected), line);
  }
  equal(parse(...base, "HEALTH_CHECK_INTERVAL = 100ms").health.intervalMs, 100);
  equal(parse(...base, "DRAIN_TIMEOUT = 24h").drainTimeoutMs, 24 * 3_600_000);
  equal(parse(...base, "RESUME_TIMEOUT = 576h").tuning.resumeTimeoutMs, 576 * 3_600_000);
});

Deno.test("a UNC path in LOG_FILE stays a UNC path (Windows: not a folder of the current drive)", () => {
  const config = parse(...section, "REMOTE_SERVER_01 = a 1", "LOG_FILE = \\\\nas\\logs\\broker.log ; on the NAS");
  if (Deno.build.os === "windows") equal(config.log.file, "\\\\nas\\logs\\broker.log");
  else equal(config.log.file?.endsWith("\\\\nas\\logs\\broker.log"), true, config.log.file ?? "null");
});

Deno.test("secrets never appear in messages: a long key wrapped onto the next line, or a secret key's name in quotes", () => {
  const secret = "wrapped-admission-key-0123456789";
  for (
    const lines of [
      ["ADMISSION_KEY =", `    ${secret}`], // pasted from a mail that wrapped the long key
      ["STATUS_ACCESS_KEY =", secret],
      [`"ADMISSION_KEY" ${secret}`],
      [`'status_access_key' ${secret}`],
    ]
  ) {
    throws(
      () => parse(...section, "REMOTE_SERVER_01 = a 1", ...lines),
      (err: Error) => {
        match(err.message, /Cannot parse line in \[BALANCE_SMART_CLIENT_DESKTOP\]: expected "KEY = value"/);
        equal(err.message.includes(secret), false, `the secret is in: ${err.message}`);
        return true;
      },
    );
  }
});

Deno.test("a duration that is not zero as written never rounds to 0, the 'off' value of some keys", () => {
  for (const line of ["HEALTH_CHECK_INTERVAL = 0.4ms", "DRAIN_TIMEOUT = 0.0001", "DRAIN_TIMEOUT = 0.1ms"]) {
    throws(
      () => parse(...section, "REMOTE_SERVER_01 = a 1", line),
      configError(/is out of range: expected 100ms to .*, or 0 \(/),
      line,
    );
  }
  equal(parse(...section, "REMOTE_SERVER_01 = a 1", "DRAIN_TIMEOUT = 0.0s").drainTimeoutMs, 0, "0 written as 0.0s");
});

Deno.test("REMOTE_SERVER: the same IPv6 address written two ways is a repeated address", () => {
  const twice = parse(
    ...section,
    "REMOTE_SERVER_01 = ::1 5000",
    "REMOTE_SERVER_02 = [0:0:0:0:0:0:0:1]:5000",
    "REMOTE_SERVER_03 = 2001:DB8::0:1 5000",
    "REMOTE_SERVER_04 = 2001:db8:0:0::1 5000",
  );
  deepEqual(
    twice.warnings.map((w) => /REMOTE_SERVER_\d+ names the same ERP server as REMOTE_SERVER_\d+/.exec(w)?.[0]),
    [
      "REMOTE_SERVER_02 names the same ERP server as REMOTE_SERVER_01",
      "REMOTE_SERVER_04 names the same ERP server as REMOTE_SERVER_03",
    ],
  );
});
